"""Tests of the slice-correction robot user and its correction schedule (middle slice first, then a fixed step of
10 % of the structure's extent, alternating up and down, only slices that contain the structure)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.bundle import ConfigParser

from common.interaction import InteractionState, SliceCorrectionRobot, correction_schedule

SHAPE = (16, 14, 60)
FIRST, LAST = 10, 49  # extent 40 slices -> step 4 at 10 %
SCHEDULE = [30, 34, 26, 38, 22, 42, 18, 46, 14, 10]  # middle (10 + 49 + 1) // 2 = 30, then +-4, +-8, ...


def _label(
    shape: tuple[int, ...] = SHAPE, axis: int = 2, slices: range | list[int] = range(FIRST, LAST + 1)
) -> np.ndarray:
    """uint8 label whose non-empty slices along ``axis`` are exactly ``slices``; the blob differs per slice."""
    lab = np.zeros(shape, dtype=np.uint8)
    moved = np.moveaxis(lab, axis, -1)  # a view: writing into it writes into lab
    h, w = moved.shape[:2]
    for k in slices:
        r = 2 + k % 4
        moved[h // 2 - r : h // 2 + r, 1 : 3 + k % (w - 3), k] = 1
    return lab


def _image(label: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).normal(size=label.shape).astype(np.float32)


# ------------------------------------------------------------------------------------------- correction_schedule


def test_schedule_middle_first_then_alternating() -> None:
    assert correction_schedule(_label()) == SCHEDULE


def test_schedule_properties_on_random_labels() -> None:
    rng = np.random.default_rng(42)
    for _ in range(20):
        axis = int(rng.integers(0, 3))
        shape = [12, 12, 12]
        shape[axis] = int(rng.integers(20, 70))
        first = int(rng.integers(0, shape[axis] - 5))
        last = int(rng.integers(first, shape[axis]))
        slices = [k for k in range(first, last + 1) if k in (first, last) or rng.random() > 0.3]
        label = _label(tuple(shape), axis, slices)
        fraction = float(rng.uniform(0.05, 1.0))
        schedule = correction_schedule(label, axis, fraction)
        assert len(schedule) == len(set(schedule))
        assert set(schedule) <= set(slices)
        step = max(1, round(fraction * (last - first + 1)))
        middle = schedule[0]
        assert all((k - middle) % step == 0 for k in schedule)
        distances = [abs(k - middle) for k in schedule]
        assert distances == sorted(distances)  # from the middle outwards
        reachable = {k for k in slices if (k - middle) % step == 0}
        assert set(schedule) == reachable  # every non-empty slice on the grid is scheduled


def test_schedule_step_fraction_extremes() -> None:
    assert correction_schedule(_label(), step_fraction=1.0) == [30]
    fine = correction_schedule(_label(), step_fraction=0.01)  # step 1: every slice
    assert fine[:5] == [30, 31, 29, 32, 28]
    assert sorted(fine) == list(range(FIRST, LAST + 1))
    assert correction_schedule(_label(), step_fraction=0.2)[:3] == [30, 38, 22]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, 2.0, float("nan")])
def test_schedule_rejects_bad_step_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="step_fraction must lie in"):
        correction_schedule(_label(), step_fraction=fraction)


def test_schedule_rejects_empty_label() -> None:
    with pytest.raises(ValueError, match="the label is empty"):
        correction_schedule(np.zeros(SHAPE, dtype=np.uint8))


@pytest.mark.parametrize("axis", [3, -1, 2.0])
def test_schedule_rejects_bad_axis(axis: int) -> None:
    with pytest.raises(ValueError, match="axis must be an array axis"):
        correction_schedule(_label(), axis=axis)


def test_schedule_split_structure_starts_at_nearest_non_empty_slice() -> None:
    # non-empty 10..19 and 40..49: the middle 30 is empty, 40 is nearer than 19
    label = _label(slices=[*range(10, 20), *range(40, 50)])
    schedule = correction_schedule(label)
    assert schedule == [40, 44, 48, 16, 12]
    # tie (24 and 36 both 6 slices from 30): the lower slice
    tie = correction_schedule(_label(slices=[*range(10, 25), *range(36, 50)]))
    assert tie[0] == 24


def test_schedule_along_other_axes_and_for_multi_label_values() -> None:
    label = _label((50, 12, 10), axis=0, slices=range(5, 25))  # extent 20 -> step 2, middle 15
    assert correction_schedule(label, axis=0)[:5] == [15, 17, 13, 19, 11]
    assert correction_schedule(label * 7, axis=0) == correction_schedule(label, axis=0)  # values > 0 count
    label1 = _label((10, 30, 12), axis=1, slices=range(0, 30))  # extent 30 -> step 3, middle 15
    assert correction_schedule(label1, axis=1)[:3] == [15, 18, 12]
    assert correction_schedule(label1, axis=1)[-1] == 0


# ------------------------------------------------------------------------------------------ SliceCorrectionRobot


def _run(robot: SliceCorrectionRobot, label: np.ndarray, max_rounds: int = 100) -> list[InteractionState]:
    """Rounds with an all-zero prediction (nothing is ever right) until the robot stops."""
    robot.reset(_image(label), label, (1.0, 1.0, 2.5))
    state = InteractionState(axis=robot.axis)
    states = []
    for _ in range(max_rounds):
        new = robot.next_interaction(label, np.zeros_like(label), state)
        if new is None:
            return states
        states.append(new)
        state = new
    raise AssertionError("the robot never stopped")


def test_robot_adds_ground_truth_slices_in_schedule_order() -> None:
    label = _label()
    states = _run(SliceCorrectionRobot(), label)
    assert [s.history[-1]["slice"] for s in states] == SCHEDULE
    for n, state in enumerate(states, start=1):
        assert state.n_interactions == n
        assert list(state.slices) == SCHEDULE[:n]  # in the order given: "overwrite" merging relies on it
        assert len(state.history) == n
        assert state.axis == 2
        for k, mask in state.slices.items():
            assert mask.shape == SHAPE[:2]
            assert mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, label[..., k])
        k = SCHEDULE[n - 1]
        assert state.history[-1] == {"type": "slice", "slice": k, "axis": 2, "voxels": int(label[..., k].sum())}
        json.dumps(state.to_json())


def test_robot_does_not_mutate_the_given_state() -> None:
    label = _label()
    robot = SliceCorrectionRobot()
    robot.reset(_image(label), label, (1.0, 1.0, 1.0))
    given = InteractionState(slices={30: label[..., 30].copy()}, n_interactions=1, history=[{"type": "slice"}])
    before = given.copy()
    new = robot.next_interaction(label, np.zeros_like(label), given)
    assert new is not None
    assert new is not given
    assert list(new.slices) == [30, 34]  # continues with the next scheduled slice not yet given
    assert list(given.slices) == [30]
    np.testing.assert_array_equal(given.slices[30], before.slices[30])
    assert given.n_interactions == 1
    assert given.history == [{"type": "slice"}]
    new.slices[30][:] = 0  # the new state does not share arrays with the given one
    np.testing.assert_array_equal(given.slices[30], label[..., 30])


def test_robot_stops_when_prediction_is_perfect_after_a_slice() -> None:
    label = _label()
    robot = SliceCorrectionRobot()
    robot.reset(_image(label), label, (1.0, 1.0, 1.0))
    empty = InteractionState()
    first = robot.next_interaction(label, label.copy(), empty)  # perfect, but nothing given yet: annotate anyway
    assert first is not None
    assert list(first.slices) == [30]
    assert robot.next_interaction(label, label.astype(bool), first) is None
    assert robot.next_interaction(label, label * 3, first) is None  # values > 0 count as foreground
    almost = label.copy()
    almost[8, 5, 40] ^= 1
    second = robot.next_interaction(label, almost, first)
    assert second is not None
    assert list(second.slices) == [30, 34]


def test_robot_stops_when_schedule_is_exhausted() -> None:
    label = _label()
    robot = SliceCorrectionRobot(step_fraction=0.5)  # step 20: 30, 50 is out, 10
    states = _run(robot, label)
    assert [s.history[-1]["slice"] for s in states] == [30, 10]
    assert robot.next_interaction(label, np.zeros_like(label), states[-1]) is None


@pytest.mark.parametrize("axis", [0, 1])
def test_robot_other_axes(axis: int) -> None:
    shape = [20, 22, 18]
    shape[axis] = 50
    label = _label(tuple(shape), axis, range(5, 45))  # extent 40 -> step 4, middle 25
    states = _run(SliceCorrectionRobot(axis=axis), label)
    assert [s.history[-1]["slice"] for s in states][:3] == [25, 29, 21]
    last = states[-1]
    assert last.axis == axis
    for k, mask in last.slices.items():
        np.testing.assert_array_equal(mask, np.take(label, k, axis=axis))
    assert last.history[0]["axis"] == axis


def test_robot_requires_reset_and_a_3d_label() -> None:
    label = _label()
    robot = SliceCorrectionRobot()
    with pytest.raises(RuntimeError, match="reset"):
        robot.next_interaction(label, np.zeros_like(label), InteractionState())
    label2d = label[..., 30]
    with pytest.raises(ValueError, match="3D label"):
        robot.reset(label2d.astype(np.float32), label2d, (1.0, 1.0))
    with pytest.raises(ValueError, match="the label is empty"):
        robot.reset(_image(label), np.zeros_like(label), (1.0, 1.0, 1.0))


def test_robot_reset_recomputes_the_schedule() -> None:
    robot = SliceCorrectionRobot()
    a, b = _label(), _label(slices=range(0, 20))  # middle 10, step 2
    robot.reset(_image(a), a, (1.0, 1.0, 1.0))
    robot.reset(_image(b), b, (1.0, 1.0, 1.0))
    new = robot.next_interaction(b, np.zeros_like(b), InteractionState())
    assert new is not None
    assert list(new.slices) == [10]


def test_robot_config_is_json_and_excludes_the_schedule() -> None:
    robot = SliceCorrectionRobot(step_fraction=0.2, axis=1)
    label = _label((20, 50, 18), 1, range(5, 45))
    robot.reset(_image(label), label, (1.0, 1.0, 1.0))
    config = json.loads(json.dumps(robot.config()))
    assert config == {"name": "slice_correction", "class": "SliceCorrectionRobot", "step_fraction": 0.2, "axis": 1}


@pytest.mark.parametrize(("kwargs", "match"), [({"step_fraction": 0.0}, "step_fraction"), ({"axis": 3}, "axis")])
def test_robot_rejects_bad_parameters_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SliceCorrectionRobot(**kwargs)


def test_robot_instantiable_from_bundle_config() -> None:
    parser = ConfigParser({"robot": {"_target_": "common.interaction.SliceCorrectionRobot", "step_fraction": 0.1}})
    robot = parser.get_parsed_content("robot")
    assert isinstance(robot, SliceCorrectionRobot)
    assert robot.step_fraction == 0.1
    assert robot.axis is None  # the axial axis of each case, from its affine


def test_slice_axis_comes_from_the_affine_when_not_given() -> None:
    """A volume stored slices-first is corrected along its stored axis 0 (the axial one)."""
    label = np.zeros((12, 10, 8), np.uint8)
    label[3:9, 2:6, 2:6] = 1
    affine = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [2.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    robot = SliceCorrectionRobot()
    robot.reset(label.astype(np.float32), label, (2.5, 1.0, 1.0), affine=affine)
    assert robot.slice_axis == 0
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState(axis=0))
    assert state is not None
    assert state.axis == 0
    assert list(state.slices) == [6]
    assert state.slices[6].shape == (10, 8)
    robot.reset(label.astype(np.float32), label, (1.0, 1.0, 1.0))  # no affine: the last stored axis
    assert robot.slice_axis == 2
    assert SliceCorrectionRobot(axis=1).config()["axis"] == 1
    with pytest.raises(ValueError, match="axis"):
        SliceCorrectionRobot(axis=3)
