"""The installed ``common`` is this repository's (the name is generic: another package could shadow it)."""

from __future__ import annotations

import re
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]


def test_common_is_this_repository_package() -> None:
    assert Path(common.__file__).resolve().parent == ROOT / "common"


def test_version_has_changelog_entry() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(common.__version__)}\]", changelog, flags=re.MULTILINE)


def test_subpackages_load_on_attribute_access() -> None:
    import importlib

    for name in common.SUBPACKAGES:
        assert getattr(common, name) is importlib.import_module(f"common.{name}")
