"""Tests of common.evaluation.comparison: methods side by side, tables and the paired t-test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from common.evaluation.cases import CaseInfo, EvalCase
from common.evaluation.comparison import compare_methods, paired_t_test, tables_markdown
from common.interaction.scribble_robot import BoxScribbleRobot
from common.interaction.state import InteractionState


def _cases() -> list[EvalCase]:
    cases = []
    for i, group in enumerate(["seen", "seen", "unseen", "unseen"]):
        label = np.zeros((24, 24, 6), np.uint8)
        label[4 : 10 + 3 * i, 5:17, 1:5] = 1
        cases.append(EvalCase(f"c{i}", label.astype(np.float32), label, (1.0, 1.0, 1.0), 1, "blob", group, np.eye(4)))
    return cases


def box_filler(image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
    """Everything inside the box, plus foreground scribbles, minus background scribbles."""
    out = np.zeros(image.shape, bool)
    assert state.box is not None
    out[tuple(slice(a, b) for a, b in zip(*state.box, strict=True))] = True
    if state.scribbles_fg is not None:
        out |= state.scribbles_fg
    if state.scribbles_bg is not None:
        out &= ~state.scribbles_bg
    return out


def thresholder(image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
    """The true object inside the box (the images are the labels)."""
    return box_filler(image, state, case) & (image > 0.5)


def test_paired_t_test_matches_scipy() -> None:
    a, b = [0.9, 0.8, 0.85, 0.95], [0.7, 0.75, 0.8, 0.7]
    out = paired_t_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert out["n"] == 4
    assert out["p"] == pytest.approx(ref.pvalue)
    assert out["t"] == pytest.approx(ref.statistic)
    assert out["mean_difference"] == pytest.approx(0.1375)
    assert paired_t_test([1.0, 1.0], [1.0, 1.0])["p"] is None
    with pytest.raises(ValueError, match="same length"):
        paired_t_test([1.0], [1.0, 2.0])


def test_compare_methods_writes_tables_and_tests(tmp_path: Path) -> None:
    robot = lambda: BoxScribbleRobot(margin=2, slice_margin=0, seed=0)  # noqa: E731
    tables = compare_methods(
        _cases(),
        {"box": box_filler, "oracle": thresholder},
        robot,
        n_rounds=2,
        out_dir=tmp_path,
        reference="box",
        progress=False,
    )
    oracle = tables["methods"]["oracle"]
    assert oracle["all"]["1"]["dice_mean"] == pytest.approx(1.0)
    assert tables["methods"]["box"]["all"]["1"]["dice_mean"] < 0.9
    assert oracle["seen"]["1"]["n"] == 2
    assert oracle["unseen"]["1"]["n"] == 2
    assert oracle["all"]["1"]["t_test"]["p"] < 0.05
    assert oracle["all"]["1"]["t_test"]["mean_difference"] > 0
    for name in ("comparison.json", "comparison.md", "comparison.png", "box/summary.json", "oracle/rounds.csv"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "comparison.json").read_text())["reference"] == "box"
    markdown = tables_markdown(tables)
    row = next(line for line in markdown.splitlines() if line.startswith("| oracle | 100.00"))
    assert row.endswith("100.00 ± 0.00 * |")  # significantly better than the reference over all 4 cases


def test_compare_methods_argument_errors(tmp_path: Path) -> None:
    robot = lambda: BoxScribbleRobot(margin=2, seed=0)  # noqa: E731
    with pytest.raises(ValueError, match="reference"):
        compare_methods(_cases(), {"box": box_filler}, robot, 1, tmp_path, reference="nope")
    with pytest.raises(ValueError, match="at least one"):
        compare_methods([], {"box": box_filler}, robot, 1, tmp_path)
    with pytest.raises(ValueError, match="report_rounds"):
        compare_methods(_cases(), {"box": box_filler}, robot, 1, tmp_path, report_rounds=[2])


def test_dice_after_strokes_takes_the_last_round_within_the_budget() -> None:
    from common.evaluation.comparison import budget_markdown, dice_after_strokes
    from common.evaluation.records import RoundRecord

    def rec(case: str, rnd: int, n: int, dice: float, group: str = "unseen") -> RoundRecord:
        return RoundRecord("m", case, 1, "liver", group, rnd, n, dice, 1.0, 1.0, 0.1, False)

    # box (1 interaction) then 2 strokes per round; case b stops early (carried rows keep its last count)
    records = [rec("a", 1, 1, 0.5), rec("a", 2, 3, 0.6), rec("a", 3, 5, 0.7), rec("a", 4, 7, 0.8)]
    records += [rec("b", 1, 1, 0.4), rec("b", 2, 2, 0.9), rec("b", 3, 2, 0.9), rec("b", 4, 2, 0.9)]
    table = dice_after_strokes({"m": records}, [0, 4, 10])
    assert table["m"]["unseen"]["0"]["dice_mean"] == pytest.approx((0.5 + 0.4) / 2)
    assert table["m"]["unseen"]["4"]["dice_mean"] == pytest.approx((0.7 + 0.9) / 2)
    assert table["m"]["all"]["10"]["dice_mean"] == pytest.approx((0.8 + 0.9) / 2)
    assert table["m"]["all"]["10"]["n"] == 2
    assert "| m |" in budget_markdown(table)
    assert "unseen, 4 strokes" in budget_markdown(table)
    with pytest.raises(ValueError, match="budgets must be >= 0"):
        dice_after_strokes({"m": records}, [-1])
