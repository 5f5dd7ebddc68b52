"""Checks of the inference datalist a user passes to a bundle (``--datalist "[{'image': ..., ...}]"``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_datalist"]


def check_datalist(items: Any, keys: Sequence[str] = ("image",)) -> list[dict[str, Any]]:
    """Validate a datalist and return it as a list of dicts (the input is not modified).

    Args:
        items: list of dicts, each naming its input files under ``keys`` (paths as strings).
        keys: keys every item must hold; each must name an existing file.

    Raises:
        ValueError: not a non-empty list of dicts, or an item without one of ``keys``; the message shows how to
            pass a datalist.
        FileNotFoundError: a listed file does not exist (the message names it and the item).
    """
    example = "{" + ", ".join(f"'{k}': 'path/to/{k}.nii.gz'" for k in keys) + "}"
    hint = f'pass e.g. --datalist "[{example}]"'
    if not isinstance(items, Sequence) or isinstance(items, str | bytes) or len(items) == 0:
        raise ValueError(f"the datalist is empty or not a list: {hint}")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"datalist item {index} is a {type(item).__name__}, not a dict: {hint}")
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"datalist item {index} lacks {missing}: {hint}")
        for key in keys:
            if not Path(str(item[key])).is_file():
                raise FileNotFoundError(f"datalist item {index}: {key} file {item[key]} does not exist")
        checked.append(dict(item))
    return checked
