"""Inference datalists: a clear error for every malformed one, the input never modified."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.data.datalist import check_datalist


def test_valid_datalist_returns_copies(tmp_path: Path) -> None:
    image, annotation = tmp_path / "i.nii.gz", tmp_path / "a.nii.gz"
    image.touch()
    annotation.touch()
    items = [{"image": str(image), "annotation": str(annotation)}]
    out = check_datalist(items, ("image", "annotation"))
    assert out == items
    assert out[0] is not items[0]


@pytest.mark.parametrize("items", [[], None, "img.nii.gz", {}])
def test_empty_or_not_a_list(items: object) -> None:
    with pytest.raises(ValueError, match="--datalist"):
        check_datalist(items)


def test_item_not_a_dict_or_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="item 0 is a str"):
        check_datalist(["x.nii.gz"])
    with pytest.raises(ValueError, match=r"item 0 lacks \['annotation'\]"):
        check_datalist([{"image": "x"}], ("image", "annotation"))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.nii\.gz"):
        check_datalist([{"image": str(tmp_path / "nothere.nii.gz")}])
