"""Where an array came from, for error messages that name the offending file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["UNKNOWN_SOURCE", "source_name"]

#: Returned by :func:`source_name` when nothing names the source.
UNKNOWN_SOURCE = "<unknown source>"


def source_name(d: Mapping[Hashable, Any], *arrays: Any) -> str:
    """The first ``meta["filename_or_obj"]`` among ``arrays`` (MetaTensors), else ``case <d["case_id"]>``, else
    :data:`UNKNOWN_SOURCE`."""
    for array in arrays:
        meta = getattr(array, "meta", None)
        if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
    if "case_id" in d:
        return f"case {d['case_id']}"
    return UNKNOWN_SOURCE
