"""Tests for common.evaluation.records: files and summary statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.evaluation.records import (
    RECORD_FIELDS,
    RoundRecord,
    metric_stats,
    read_records,
    summarise,
    to_jsonable,
    write_json,
    write_records_csv,
    write_records_json,
)


def _rec(case: str = "c0", rnd: int = 1, dice: float = 0.5, hd: float = 3.0, **kw: Any) -> RoundRecord:
    base: dict[str, Any] = {
        "method": "m",
        "case_id": case,
        "structure": 1,
        "structure_name": "liver",
        "group": "seen",
        "round": rnd,
        "n_interactions": rnd,
        "dice": dice,
        "hd95": hd,
        "msd": hd / 2,
        "seconds": 0.25,
        "carried": False,
    }
    base.update(kw)
    return RoundRecord(**base)


def _strict_loads(text: str) -> Any:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def test_metric_stats_known_values() -> None:
    st = metric_stats([1.0, 2.0, 3.0, 4.0, math.inf])
    assert st["n_finite"] == 4
    assert st["n_undefined"] == 1
    assert st["mean"] == pytest.approx(2.5)
    assert st["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert st["median"] == pytest.approx(2.5)
    assert st["q25"] == pytest.approx(1.75)
    assert st["q75"] == pytest.approx(3.25)


def test_metric_stats_undefined_and_single() -> None:
    assert metric_stats([math.inf, math.inf]) == {
        "n_finite": 0,
        "n_undefined": 2,
        "mean": None,
        "std": None,
        "median": None,
        "q25": None,
        "q75": None,
    }
    single = metric_stats([0.7])
    assert single["mean"] == pytest.approx(0.7)
    assert single["std"] is None
    assert single["median"] == pytest.approx(0.7)
    nan = metric_stats([float("nan"), 1.0])
    assert nan["n_undefined"] == 1
    assert nan["mean"] == pytest.approx(1.0)


def test_csv_and_json_round_trip_with_undefined(tmp_path: Path) -> None:
    recs = [_rec("c0", 1, 0.25, math.inf), _rec("c0", 2, 0.75, 1.5, carried=True, seconds=0.0)]
    write_records_csv(recs, tmp_path / "r.csv")
    write_records_json(recs, tmp_path / "r.json")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].split(",") == list(RECORD_FIELDS)
    assert ",inf," in lines[1]
    assert lines[1].endswith(",false")
    assert lines[2].endswith(",true")
    data = _strict_loads((tmp_path / "r.json").read_text())
    assert data[0]["hd95"] is None
    assert data[0]["msd"] is None
    assert data[1]["carried"] is True
    assert list(data[0]) == list(RECORD_FIELDS)
    assert read_records(tmp_path / "r.csv") == recs
    assert read_records(tmp_path / "r.json") == recs


def test_read_records_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "none.csv")
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown records file type"):
        read_records(tmp_path / "r.txt")
    (tmp_path / "bad.json").write_text(json.dumps([{"method": "m"}]))
    with pytest.raises(ValueError, match="missing fields"):
        read_records(tmp_path / "bad.json")
    row = {k: v for k, v in _rec().__dict__.items()}
    row["dice"] = None
    (tmp_path / "nulldice.json").write_text(json.dumps([row]))
    with pytest.raises(ValueError, match="dice is null"):
        read_records(tmp_path / "nulldice.json")


def test_to_jsonable_and_write_json(tmp_path: Path) -> None:
    obj = {"a": np.float32(1.5), "b": (np.int64(2), math.inf), "c": np.array([1, 2]), "d": Path("/x"), 3: np.bool_(1)}
    assert to_jsonable(obj) == {"a": 1.5, "b": [2, None], "c": [1, 2], "d": "/x", "3": True}
    write_json(obj, tmp_path / "o.json")
    assert _strict_loads((tmp_path / "o.json").read_text())["b"] == [2, None]


def test_summarise_groups_rounds_structures() -> None:
    recs = [
        _rec("c0", 1, 0.2, 4.0),
        _rec("c0", 2, 0.6, 2.0),
        _rec("c1", 1, 0.4, math.inf),
        _rec("c1", 2, 0.8, 1.0, carried=True),
        _rec("c0", 1, 0.1, 9.0, structure=4, structure_name="kidney_right", group="unseen"),
        _rec("c0", 2, 0.3, 7.0, structure=4, structure_name="kidney_right", group="unseen"),
    ]
    s = summarise(recs)
    assert s["metrics"] == ["dice", "hd95", "msd"]
    m = s["methods"]["m"]
    assert m["n_curves"] == 3
    assert m["n_rounds"] == 2
    assert list(m["per_group"]) == ["all", "seen", "unseen"]
    seen1 = m["per_group"]["seen"]["1"]
    assert seen1["n"] == 2
    assert seen1["n_carried"] == 0
    assert seen1["dice"]["mean"] == pytest.approx(0.3)
    assert seen1["hd95"]["n_undefined"] == 1
    assert seen1["hd95"]["mean"] == pytest.approx(4.0)
    seen2 = m["per_group"]["seen"]["2"]
    assert seen2["n_carried"] == 1
    assert seen2["dice"]["mean"] == pytest.approx(0.7)
    assert seen2["mean_seconds"] == pytest.approx(0.25)  # carried rows excluded from timing
    all1 = m["per_group"]["all"]["1"]
    assert all1["n"] == 3
    assert all1["dice"]["mean"] == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert all1["dice"]["median"] == pytest.approx(0.2)
    assert m["per_group"]["unseen"]["2"]["hd95"]["mean"] == pytest.approx(7.0)
    assert set(m["per_structure"]) == {"liver", "kidney_right"}
    assert m["per_structure"]["kidney_right"]["1"]["dice"]["mean"] == pytest.approx(0.1)
    _strict_loads(json.dumps(to_jsonable(s), allow_nan=False))


def test_summarise_separates_methods() -> None:
    recs = [_rec("c0", 1, 0.2), _rec("c0", 1, 0.9, method="baseline")]
    s = summarise(recs)
    assert set(s["methods"]) == {"m", "baseline"}
    assert s["methods"]["baseline"]["per_group"]["all"]["1"]["dice"]["mean"] == pytest.approx(0.9)


def test_summarise_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        summarise([])
    with pytest.raises(ValueError, match="unknown metrics"):
        summarise([_rec()], metrics=("iou",))
    with pytest.raises(ValueError, match="duplicate"):
        summarise([_rec("c0", 1), _rec("c0", 1)])
    with pytest.raises(ValueError, match="different rounds"):
        summarise([_rec("c0", 1), _rec("c0", 2), _rec("c1", 1)])
    with pytest.raises(ValueError, match="reserved"):
        summarise([_rec(group="all")])
