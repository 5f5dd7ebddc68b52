"""Smoke test of ``bench/al_strategies.py`` on a tiny network and crop (``--quick``).

No timing assertions: the benchmark runs end to end, prints its side-by-side table and writes its JSON report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType

import pytest


def test_al_strategies_bench_times_every_strategy_against_a_forward(
    load_bench_script: Callable[[str], ContextManager[ModuleType]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "al.json"
    with load_bench_script("al_strategies") as bench:
        bench.main(["--quick", "--samples", "3", "--warmup", "0", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "x forward" in printed
    assert "batching speed-up" in printed
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["forward"]["x_forward_per_sample"] == 1.0
    assert {"random", "first", "last", "entropy", "mc_dropout loop", "mc_dropout batched", "tta loop",
            "tta batched"} <= set(rows)  # fmt: skip
    assert rows["mc_dropout batched"]["samples"] == 3
    assert rows["entropy"]["samples"] == 1
    assert set(report["batching_speedup"]) == {"mc_dropout", "tta"}
    assert sum(r["default"] for r in report["rows"]) == 2  # one default row per sampled strategy
