"""Smoke test of ``bench/propagation_leak.py`` on the tiny phantoms: both settings run and are scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_bench_script: Any) -> Any:
    with load_bench_script("propagation_leak") as module:
        yield module


def test_leak_and_dice_count_slices_outside_the_structure(bench: Any) -> None:
    gt = np.zeros((4, 4, 10), bool)
    gt[1:3, 1:3, 3:6] = True
    pred = gt.copy()
    pred[1:3, 1:3, 6:8] = True  # two slices beyond the structure
    leak, dice = bench.leak_and_dice(pred, gt)
    assert leak == 2
    assert dice == pytest.approx(2 * 12 / (20 + 12))


def test_main_compares_old_and_new_settings(
    bench: Any, tiny_phantoms: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = bench.main(["--data", str(tiny_phantoms), "--cases", "phantom_000", "--structures", "kidney_right"])
    out = capsys.readouterr().out
    assert "kidney_right" in out
    assert "max_intensity_shift" in out
    (old,) = result["old"]["kidney_right"]
    (new,) = result["new"]["kidney_right"]
    assert new.leak <= old.leak
    assert 0.0 <= new.dice <= 1.0
