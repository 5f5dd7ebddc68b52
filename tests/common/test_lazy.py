"""Lazy package exports resolve names from their sub-modules on first access only."""

from __future__ import annotations

import sys

import pytest

from common._lazy import lazy_exports


def test_names_and_submodules_resolve_lazily() -> None:
    sys.modules.pop("common.transforms.provenance", None)
    getattr_, dir_ = lazy_exports("common.transforms", {"source_name": "provenance", "provenance": "provenance"})
    assert "common.transforms.provenance" not in sys.modules
    func = getattr_("source_name")
    assert func({}, None) == "<unknown source>"
    assert getattr_("provenance").source_name is func
    assert dir_() == ["provenance", "source_name"]


def test_unknown_name_raises_attribute_error_naming_the_package() -> None:
    getattr_, _ = lazy_exports("common.data", {})
    with pytest.raises(AttributeError, match=r"'common\.data' has no attribute 'nope'"):
        getattr_("nope")
