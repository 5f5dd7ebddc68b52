"""End to end: phantom dataset -> expanded samples -> EvalCase -> robot x region-grow baseline -> result files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.evaluation import (
    IntensityRegionGrowAdapter,
    load_eval_cases,
    read_records,
    run_interactive_evaluation,
)
from common.interaction import CentreOfErrorClickRobot


def test_benchmark_on_phantoms(tiny_phantoms: Path, tmp_path: Path) -> None:
    from common.data import expand_structures, load_msd_dataset

    dataset = load_msd_dataset(tiny_phantoms)
    samples = expand_structures(dataset.training[:1], dataset, structures=["liver", "kidney_right", "aorta"])
    cases = list(load_eval_cases(samples))
    assert [c.structure_name for c in cases] == ["liver", "kidney_right", "aorta"]
    assert [c.group for c in cases] == ["seen", "unseen", "unseen"]
    assert cases[0].image is cases[1].image  # one read per case
    assert all(c.label.any() and c.label.shape == c.image.shape for c in cases)

    out = tmp_path / "eval"
    result = run_interactive_evaluation(
        cases, IntensityRegionGrowAdapter(), CentreOfErrorClickRobot(), 3, out_dir=out, method="region_grow"
    )
    assert len(result.records) == 9
    # a foreground click always yields a non-empty prediction that overlaps the structure
    assert all(r.dice > 0.0 and np.isfinite(r.hd95) for r in result.records if not r.carried)
    assert read_records(out / "rounds.csv") == result.records
    summary = json.loads((out / "summary.json").read_text())
    groups = summary["methods"]["region_grow"]["per_group"]
    assert set(groups) == {"all", "seen", "unseen"}
    assert groups["unseen"]["1"]["n"] == 2
    assert summary["run"]["n_structures"] == 3
    assert (out / "curves.png").stat().st_size > 1000
