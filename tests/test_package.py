"""The installed ``common`` is this repository's (the name is generic: another package could shadow it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

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


#: Pointers to documents outside the repository (the workspace's ``shared/`` folder is not part of it): cite the
#: paper instead (author, title, venue or arXiv id, year).
_OUTSIDE_POINTERS = re.compile(
    r"shared/papers|shared/METHODS|shared/CONVENTIONS|METHODS\.md|CONVENTIONS\.md|\b(as|in) the brief\b"
)


def _tracked_text_files() -> list[Path]:
    """Tracked files of the checkout (``git ls-files``) that are text (no NUL byte in their first 8 KiB)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=60)
    if listing.returncode != 0:
        pytest.skip(f"not a git checkout: {listing.stderr.decode(errors='replace').strip()}")
    files = []
    for name in listing.stdout.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def _outside_pointers(files: list[Path]) -> list[str]:
    """``file:line: text`` of every line of ``files`` that points at a document outside the repository."""
    return [
        f"{path}:{number}: {line.strip()[:120]}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if _OUTSIDE_POINTERS.search(line)
    ]


def test_outside_pointer_check_finds_pointers(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("Method: see `shared/papers/x.txt`.\nDigest in METHODS.md (tag PROP).\nFine: Sakinis et al. 2019.\n")
    assert [hit.split(": ", 1)[0] for hit in _outside_pointers([doc])] == [f"{doc}:1", f"{doc}:2"]


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = [f for f in _tracked_text_files() if f != Path(__file__).resolve()]  # this file names the patterns
    assert ROOT / "README.md" in files  # the listing works (else the check would pass vacuously)
    hits = _outside_pointers(files)
    assert hits == [], "cite the paper instead of a file outside the repository:\n" + "\n".join(hits)
