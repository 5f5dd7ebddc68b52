"""Tests of the arms x test sets comparison tables and curves."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.evaluation.contrast_comparison import grid_figure, grid_table, load_grid, main, mean_metric, primary_table
from common.evaluation.records import RoundRecord, write_records_json


def _records(method: str, dice: dict[str, list[float]], hd95: float = 5.0) -> list[RoundRecord]:
    """Two cases x one structure per group, ``dice[group][round - 1]`` for case a, 0.1 less for case b."""
    rows = []
    for group, values in dice.items():
        for case, offset in (("a", 0.0), ("b", -0.1)):
            for k, value in enumerate(values, start=1):
                rows.append(
                    RoundRecord(method, case, 1 if group == "seen" else 2, group, group, k, k, value + offset,
                                math.inf if case == "b" and k == 1 else hd95, 1.0, 0.1, False)
                )  # fmt: skip
    return rows


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for arm, scale in (("ct", 1.0), ("synth", 0.9)):
        for key, factor in (("CT", 1.0), ("T1", 0.5 if arm == "ct" else 1.0)):
            dice = {"seen": [0.6 * scale * factor, 0.9 * scale * factor], "unseen": [0.5 * factor, 0.8 * factor]}
            folder = tmp_path / arm / key / "interactive"
            folder.mkdir(parents=True)
            write_records_json(_records(arm, dice), folder / "rounds.json")
    (tmp_path / "rg" / "CT" / "interactive").mkdir(parents=True)
    write_records_json(
        _records("rg", {"seen": [0.3, 0.4], "unseen": [0.2, 0.3]}), tmp_path / "rg/CT/interactive/rounds.json"
    )
    return tmp_path


def _arms(root: Path) -> dict[str, str]:
    return {name: str(root / name / "{set}" / "interactive") for name in ("ct", "synth", "rg")}


def test_means_tables_and_missing_runs(runs: Path) -> None:
    grid = load_grid(_arms(runs), ["CT", "T1"])
    assert ("rg", "T1") not in grid
    assert mean_metric(grid[("ct", "CT")], 2, "seen") == pytest.approx(0.85)
    assert mean_metric(grid[("ct", "CT")], 2, None) == pytest.approx((0.85 + 0.75) / 2)
    assert mean_metric(grid[("ct", "CT")], 1, "seen", "hd95") == pytest.approx(5.0)  # the inf curve is left out
    sets = {"CT": "CT", "T1": "T1-like"}
    table = grid_table(grid, ["ct", "synth", "rg"], sets, [1, 2])
    assert "| T1-like | 2 | 0.400 / 0.350 | 0.760 / 0.750 | not run |" in table
    hd = grid_table(grid, ["ct"], sets, [1], "hd95")
    assert "| CT | 1 | 5.0 (1 undefined) / 5.0 (1 undefined) |" in hd
    primary = primary_table(grid, ["ct", "synth", "rg"], sets, ["CT", "T1"], 2)
    assert "| ct | 0.800 | 0.375 | **0.588** | 0.425 |" in primary
    assert "| synth | 0.755 | 0.755 | **0.755** | 0.000 |" in primary
    assert "| rg | 0.300 | n/a | **n/a** | n/a |" in primary


def test_errors_name_the_problem(runs: Path) -> None:
    with pytest.raises(ValueError, match="no '\\{set\\}' placeholder"):
        load_grid({"ct": str(runs / "ct")}, ["CT"])
    with pytest.raises(FileNotFoundError, match="arm 'x' has no run"):
        load_grid({"x": str(runs / "nowhere" / "{set}")}, ["CT"])
    with pytest.raises(ValueError, match="no test sets"):
        load_grid(_arms(runs), [])


def test_command_line_writes_markdown_and_png(runs: Path, tmp_path: Path) -> None:
    arms = _arms(runs)
    out, png = tmp_path / "out" / "cmp.md", tmp_path / "out" / "cmp.png"
    argv = ["--set", "CT", "CT", "--set", "T1", "T1-like", "--contrasts", "CT", "T1", "--rounds", "1", "2",
            "--primary-round", "2", "--out", str(out), "--png", str(png)]  # fmt: skip
    for name, pattern in arms.items():
        argv += ["--arm", name, pattern]
    assert main(argv) == 0
    text = out.read_text()
    assert "Primary figure: mean Dice over all structures at round 2" in text
    assert "HD95 in mm" in text
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main([*argv, "--contrasts", "MRI"])


def test_figure_is_curves_over_rounds_and_bars_for_one_round(runs: Path) -> None:
    sets = {"CT": "CT", "T1": "T1-like"}
    grid = load_grid(_arms(runs), list(sets))
    curves = grid_figure(grid, ["ct", "synth", "rg"], sets)
    assert len(curves.axes) == 2  # a panel per test set
    assert len(curves.axes[0].lines) == 6  # 3 arms x seen / unseen on CT
    assert len(curves.axes[1].lines) == 4  # no region-growing run on T1
    one_round = {pair: [r for r in records if r.round == 2] for pair, records in grid.items()}
    bars = grid_figure(one_round, ["ct", "synth", "rg"], sets)
    assert len(bars.axes) == 1
    ax = bars.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CT", "T1-like"]
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert heights["ct (seen)"] == pytest.approx([0.85, 0.40])
    assert heights["synth (unseen)"] == pytest.approx([0.75, 0.75])
    assert heights["rg (seen)"] == pytest.approx([0.35])  # the missing T1 run leaves its slot empty
    assert "round 2" in ax.get_ylabel()
