"""Tests of common.interaction.error_click_robot.ErrorClickRobot (DeepGrow's simulated user)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.evaluation import run_interactive_evaluation
from common.evaluation.cases import CaseInfo, EvalCase
from common.interaction import ErrorClickRobot, InteractionState

SHAPE = (20, 22, 10)
SLICES = list(range(2, 8))


def _label() -> np.ndarray:
    """A structure on slices 2..7 along axis 2 whose cross-section changes from slice to slice."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    for k in SLICES:
        label[4 : 10 + k, 5:16, k] = 1
    return label


def _robot(label: np.ndarray, **kwargs: object) -> ErrorClickRobot:
    robot = ErrorClickRobot(**kwargs)  # type: ignore[arg-type]
    robot.reset(label.astype(np.float32), label, (1.0, 1.0, 2.0)[: label.ndim])
    return robot


def _first_round(robot: ErrorClickRobot, label: np.ndarray) -> InteractionState:
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
    assert state is not None
    return state


def test_first_round_one_foreground_click_per_slice_inside_the_label() -> None:
    label = _label()
    empty = InteractionState()
    state = _robot(label).next_interaction(label, np.zeros_like(label), empty)
    assert state is not None
    assert state.background == []
    assert sorted(c[2] for c in state.foreground) == SLICES  # one click on every slice of the structure
    assert all(label[c] for c in state.foreground)
    assert all(len(c) == 3 and all(isinstance(v, int) for v in c) for c in state.foreground)
    assert state.n_interactions == 1  # a round counts as one interaction
    assert state.history[-1]["type"] == "click_round"
    assert state.history[-1]["foreground_clicks"] == len(SLICES)
    assert state.history[-1]["background_clicks"] == 0
    assert state.history[-1]["fn_voxels"] == int(label.sum())
    assert empty.foreground == []
    assert empty.n_interactions == 0


def test_later_rounds_click_in_the_errors_of_each_slice() -> None:
    label = _label()
    robot = _robot(label)
    state = _first_round(robot, label)
    pred = label.copy()
    pred[4:9, 5:16, 3] = 0  # slice 3: missed foreground
    pred[14:19, 17:21, 5] = 1  # slice 5: false positives (more than its missed voxels)
    pred[4, 5, 5] = 0
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.n_interactions == 2
    added_fg = new.foreground[len(state.foreground) :]
    added_bg = new.background[len(state.background) :]
    assert len(added_fg) == 1
    assert len(added_bg) == 1
    fg, bg = added_fg[0], added_bg[0]
    assert fg[2] == 3
    assert label[fg]
    assert not pred[fg]
    assert bg[2] == 5
    assert pred[bg]
    assert not label[bg]
    assert new.foreground[: len(state.foreground)] == state.foreground  # history of clicks kept
    assert new.history[-1]["foreground_clicks"] == 1
    assert new.history[-1]["background_clicks"] == 1


def test_returns_none_when_perfect() -> None:
    label = _label()
    robot = _robot(label)
    state = _first_round(robot, label)
    assert robot.next_interaction(label, label.copy(), state) is None


def test_reset_reseeds_the_draws() -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:18, 2:20, 1:9] = 1  # large slices: many voxels of similar depth, so draws matter
    robot = _robot(label, seed=3)
    first = _first_round(robot, label).foreground
    again = _first_round(robot, label).foreground  # the generator moved on
    robot.reset(label.astype(np.float32), label, (1.0, 1.0, 2.0))
    assert _first_round(robot, label).foreground == first
    assert again != first
    assert _first_round(_robot(label, seed=4), label).foreground != first


def test_per_slice_false_gives_one_click_per_round() -> None:
    label = _label()
    robot = _robot(label, per_slice=False)
    state = _first_round(robot, label)
    assert len(state.foreground) == 1
    assert state.background == []
    assert label[state.foreground[0]]
    pred = label.copy()
    pred[0:3, 0:3, 0:3] = 1  # false positives only
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert len(new.foreground) == 1
    assert len(new.background) == 1
    assert pred[new.background[0]]
    assert not label[new.background[0]]


def test_other_axis_and_2d() -> None:
    label = _label()
    state = _first_round(_robot(label, axis=0), label)
    assert sorted(c[0] for c in state.foreground) == list(range(4, 17))  # rows 4..16 hold the structure
    plane = label[..., 5]
    flat = _first_round(_robot(plane), plane)
    assert len(flat.foreground) == 1
    assert len(flat.foreground[0]) == 2
    assert plane[flat.foreground[0]]


def test_errors_and_config() -> None:
    label = _label()
    with pytest.raises(RuntimeError, match="reset"):
        ErrorClickRobot().next_interaction(label, label, InteractionState())
    with pytest.raises(ValueError, match="must match"):
        _robot(label).next_interaction(label, label[:, :, :5], InteractionState())
    with pytest.raises(ValueError, match="axis"):
        ErrorClickRobot(axis=3)
    config = ErrorClickRobot(per_slice=False, seed=7).config()
    assert config["name"] == "error_click"
    assert config["per_slice"] is False
    assert config["seed"] == 7
    json.dumps(config)


# --- end to end through the evaluation loop -------------------------------------------------------------------------


def _case(label: np.ndarray) -> EvalCase:
    return EvalCase(
        case_id="phantom_000",
        image=np.where(label > 0, 100.0, -100.0).astype(np.float32),
        label=label,
        spacing=(1.0, 1.0, 2.0),
        structure=2,
        structure_name="spleen",
        group="seen",
        affine=np.eye(4),
    )


class _SquaresAdapter:
    """Trivial method: a 7x7 in-plane square around each foreground click, minus squares around background clicks."""

    name = "squares"

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        out = np.zeros(image.shape, dtype=bool)
        for clicks, value in ((state.foreground, True), (state.background, False)):
            for i, j, k in clicks:
                out[max(i - 3, 0) : i + 4, max(j - 3, 0) : j + 4, k] = value
        return out


def test_run_interactive_evaluation_end_to_end(tmp_path: Path) -> None:
    label = _label()
    result = run_interactive_evaluation(
        [_case(label)],
        _SquaresAdapter(),
        ErrorClickRobot(seed=0),
        4,
        out_dir=tmp_path,
        method="squares",
        progress=False,
    )
    records = result.records
    assert [r.round for r in records] == [1, 2, 3, 4]
    live = [r for r in records if not r.carried]
    assert [r.n_interactions for r in live] == list(range(1, len(live) + 1))
    assert all(0.0 < r.dice <= 1.0 for r in records)
    assert records[-1].dice >= records[0].dice  # corrections do not make this method worse here
    final = result.interactions[0]["state"]
    assert len(final["foreground"]) >= len(SLICES)
    assert result.summary["run"]["robot"]["name"] == "error_click"
    assert (tmp_path / "interactions.json").is_file()


def test_per_slice_clicks_follow_the_stored_axial_axis() -> None:
    label = np.zeros((6, 12, 10), np.uint8)
    label[1:5, 3:9, 2:8] = 1
    affine = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    robot = ErrorClickRobot(per_slice=True, seed=0)
    robot.reset(label.astype(np.float32), label, (3.0, 1.0, 1.0), affine=affine)
    assert robot.slice_axis == 0
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState(axis=0))
    assert state is not None
    assert sorted(c[0] for c in state.foreground) == [1, 2, 3, 4]  # one click on each axial slice
    assert "slice_axis" not in robot.config()
