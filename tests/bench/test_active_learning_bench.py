"""Smoke test of ``bench/active_learning.py`` on the tiny network of ``quick.json`` and tiny phantoms (``--quick``).

No timing assertions: the benchmark runs its three measurements end to end through the real bundle, prints its
side-by-side tables and writes its JSON report with consistent figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType

import pytest


def test_active_learning_bench_times_retraining_strategies_and_a_round(
    load_bench_script: Callable[[str], ContextManager[ModuleType]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "al.json"
    with load_bench_script("active_learning") as bench:
        bench.main(["--quick", "--warmup", "0", "--threads", "1", "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    for header in ("s per iteration vs the general model's training", "Strategy score per pool case", "loop round"):
        assert header in printed
    report = json.loads(out.read_text())
    base, retrain = report["training"]
    assert base["x_training_per_iteration"] == 1.0
    assert base["iterations"] == base["items"] > retrain["items"] == report["k"] == 2  # one epoch vs 2 cases
    assert retrain["iterations"] == report["settings"]["retrain_iterations"] == 4
    assert retrain["init"] == "general weights"
    assert retrain["train_s"] > 0
    assert retrain["setup_s"] > 0
    strategies = {r["name"]: r for r in report["strategies"]["rows"]}
    assert set(strategies) == {"preprocessing", "forward", "entropy", "mc_dropout", "tta"}
    assert strategies["forward"]["x_forward"] == 1.0
    assert strategies["mc_dropout"]["forward_passes"] == strategies["tta"]["forward_passes"] == 3
    assert strategies["entropy"]["n"] == len(report["pool"]) == 3  # every pool case, one repeat
    round_ = report["round"]
    parts = {r["part"]: r for r in round_["rows"]}
    assert parts["select"]["calls"] == parts["annotate"]["calls"] == 2  # n_per_round cases, then one retraining
    assert parts["retrain"]["calls"] == parts["heldout"]["calls"] == 1
    assert parts["retrain"]["iterations"] == 4
    assert len(parts["annotate"]["record_s"]) == 2
    assert sum(r["seconds"] for r in round_["rows"] if r["part"] != "round") == pytest.approx(parts["round"]["seconds"])
    assert parts["other"]["seconds"] >= 0
    assert len(round_["heldout_dice"]) == 2  # the general model, then the retrained one
    assert all(a["interactions"] >= 1 for a in round_["annotated"])
