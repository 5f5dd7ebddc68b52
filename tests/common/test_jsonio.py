"""Tests of the atomic JSON writer and the lenient reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.jsonio import read_json_object, write_json_atomic


def test_write_is_atomic_and_writes_numpy_scalars_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "stats.json"
    assert write_json_atomic({"best": np.float32(0.5), "epoch": np.int64(3)}, path) == path
    assert json.loads(path.read_text()) == {"best": 0.5, "epoch": 3}
    write_json_atomic({"best": 0.75}, path)
    assert read_json_object(path) == {"best": 0.75}
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.json"]  # no partial file left


def test_read_is_lenient(tmp_path: Path) -> None:
    assert read_json_object(tmp_path / "missing.json") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert read_json_object(tmp_path / "bad.json") == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json_object(tmp_path / "list.json") == {}
