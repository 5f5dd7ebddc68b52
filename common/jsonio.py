"""JSON files written atomically and read leniently: state, records and stats that other processes read while they
are rewritten (an active-learning loop's state, a training's stats read by the MONAI Label server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_object", "write_json_atomic"]


def _plain(value: Any) -> Any:
    """Numpy / torch scalars as numbers (their ``item()``), anything else as its ``str``."""
    return value.item() if hasattr(value, "item") else str(value)


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename (readers never see half a file).

    The folder is created if needed; numpy / torch scalars are written as numbers. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")
    os.replace(partial, path)
    return path


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is missing, unreadable or not a JSON object."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}
