"""The README's main job, ``python -m common.demo``, end to end on a small embedded set (slow: several minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "common.demo", "--data", str(data), "--out", str(out), "--cases", "5",
         "--rounds", "2", "--epochs", "1"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (data / "dataset.json").is_file()
    assert (data / "montage_phantom_000.png").is_file()
    for method in ("region_grow", "slice_propagation/interactive_nearest", "bifseg/interactive_bifseg_2d_bifseg"):
        summary = json.loads((out / method / "summary.json").read_text())
        assert summary["methods"], method
        assert (out / method / "curves.png").stat().st_size > 0
    assert (out / "slice_propagation" / "kidney_right_propagation.png").is_file()
    assert (out / "bifseg" / "kidney_right_box.png").is_file()
    report = json.loads((out / "active_learning" / "loop" / "report.json").read_text())
    assert report["annotated"]
    assert (out / "active_learning" / "loop" / "learning_curves.png").stat().st_size > 0
    assert "mean Dice per round" in result.stdout
