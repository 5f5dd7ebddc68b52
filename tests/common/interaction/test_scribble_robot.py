"""Tests of common.interaction.scribble_robot.BoxScribbleRobot (BIFSeg's simulated user: a box with a random margin,
then one foreground and one background stroke per round in the largest errors)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from monai.bundle import ConfigParser
from scipy import ndimage

from common.interaction.scribble_robot import BoxScribbleRobot
from common.interaction.state import InteractionState

SHAPE = (40, 36, 20)
EIGHT = np.ones((3, 3), dtype=bool)


def _label(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A box-shaped structure whose tight bounding box is [10, 30) x [8, 26) x [5, 15)."""
    label = np.zeros(shape, dtype=np.uint8)
    label[10:30, 8:26, 5:15] = 1
    return label


def _robot(label: np.ndarray, affine: np.ndarray | None = None, **kwargs: Any) -> BoxScribbleRobot:
    robot = BoxScribbleRobot(**kwargs)
    robot.reset(label.astype(np.float32), label, (1.0,) * label.ndim, affine=affine)
    return robot


def _box_state(robot: BoxScribbleRobot, label: np.ndarray) -> InteractionState:
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
    assert state is not None
    return state


def _assert_simple_curve(mask2d: np.ndarray) -> None:
    _, n = ndimage.label(mask2d, structure=EIGHT)
    assert n == 1
    neighbours = ndimage.convolve(mask2d.astype(int), EIGHT.astype(int), mode="constant") - 1
    assert neighbours[mask2d].max() <= 2


# ------------------------------------------------------------------------------------------------------------- box


def test_box_contains_the_label_with_margins_in_range() -> None:
    label = _label()
    for seed in range(20):
        robot = _robot(label, seed=seed)
        empty = InteractionState()
        state = robot.next_interaction(label, np.zeros_like(label), empty)
        assert state is not None
        assert empty.box is None
        assert empty.n_interactions == 0
        assert state.box is not None
        start, stop = state.box
        entry = state.history[-1]
        assert entry["type"] == "box"
        assert [start, stop] == [tuple(entry["start"]), tuple(entry["stop"])]
        tight_lo, tight_hi = (10, 8, 5), (30, 26, 15)
        for a in range(3):
            limit = 2 if a == 2 else 10  # slice axis 2 (no affine): slice_margin (0, 2)
            assert 0 <= entry["margin_lo"][a] <= limit
            assert 0 <= entry["margin_hi"][a] <= limit
            assert start[a] == max(tight_lo[a] - entry["margin_lo"][a], 0)
            assert stop[a] == min(tight_hi[a] + entry["margin_hi"][a], SHAPE[a])
        box = np.zeros(SHAPE, dtype=bool)
        box[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = True
        assert not (label.astype(bool) & ~box).any()
        assert state.n_interactions == 1
        assert state.scribbles_fg is None
        assert state.scribbles_bg is None
        assert all(isinstance(v, int) for v in (*start, *stop))
        json.dumps(state.to_json())


def test_margins_cover_the_range_and_are_reproducible() -> None:
    label = _label((60, 60, 30))
    drawn = []
    for seed in range(60):
        robot = _robot(label, seed=seed)
        first = _box_state(robot, label)
        again = _box_state(robot, label)  # same state, same generator position: a different draw...
        robot.reset(label.astype(np.float32), label, (1.0, 1.0, 1.0))
        assert _box_state(robot, label).box == first.box  # ...but reset re-seeds: the same box again
        assert _box_state(_robot(label, seed=seed), label).box == first.box  # reproducible
        drawn += first.history[-1]["margin_lo"][:2] + first.history[-1]["margin_hi"][:2]
        del again
    assert min(drawn) == 0
    assert max(drawn) == 10
    assert len(set(drawn)) == 11


def test_fixed_margin_and_clipping_to_the_image() -> None:
    label = _label()
    state = _box_state(_robot(label, margin=3, slice_margin=1), label)
    assert state.box == ((7, 5, 4), (33, 29, 16))
    edge = np.zeros(SHAPE, dtype=np.uint8)
    edge[0:5, 30:36, 18:20] = 1  # touches three borders
    state = _box_state(_robot(edge, margin=4, slice_margin=2), edge)
    assert state.box == ((0, 26, 16), (9, 36, 20))
    tight = _box_state(_robot(label, margin=0, slice_margin=0), label)
    assert tight.box == ((10, 8, 5), (30, 26, 15))


def test_box_dims_2_spans_exactly_the_labelled_slice() -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[12:22, 9:20, 7] = 1
    state = _box_state(_robot(label, box_dims=2, margin=(0, 10), slice_margin=(2, 2), seed=1), label)
    assert state.box is not None
    start, stop = state.box
    assert (start[2], stop[2]) == (7, 8)
    assert start[0] <= 12
    assert stop[0] >= 22
    assert start[1] <= 9
    assert stop[1] >= 20
    assert state.history[-1]["margin_lo"][2] == state.history[-1]["margin_hi"][2] == 0


def test_box_dims_2_rejects_a_volume_label() -> None:
    with pytest.raises(ValueError, match="exactly one slice along axis 2"):
        _robot(_label(), box_dims=2)
    single = np.zeros(SHAPE, dtype=np.uint8)
    single[5, 9:20, 3:9] = 1  # one slice along axis 0, many along axis 2
    with pytest.raises(ValueError, match="exactly one slice"):
        _robot(single, box_dims=2)
    _robot(single, box_dims=2, axis=0)  # fine along axis 0


def test_two_dimensional_image() -> None:
    label = np.zeros((40, 50), dtype=np.uint8)
    label[10:30, 12:40] = 1
    robot = _robot(label, margin=2, box_dims=3)  # box_dims plays no role in 2D
    state = _box_state(robot, label)
    assert state.box == ((8, 10), (32, 42))
    pred = label.copy()
    pred[12:20, 14:38] = 0  # missed foreground
    pred[0:6, 0:20] = 1  # wrongly added
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.scribbles_fg is not None
    assert new.scribbles_bg is not None
    assert new.scribbles_fg.shape == label.shape
    assert not (new.scribbles_fg & ~((label > 0) & (pred == 0))).any()
    assert not (new.scribbles_bg & ~((pred > 0) & (label == 0))).any()
    assert [e["slice"] for e in new.history[1:]] == [None, None]
    assert [e["axis"] for e in new.history[1:]] == [None, None]
    _assert_simple_curve(new.scribbles_fg)
    _assert_simple_curve(new.scribbles_bg)


# ------------------------------------------------------------------------------------------------------- scribbles


def _errors_case() -> tuple[np.ndarray, np.ndarray]:
    """Label and a prediction with two FN components (big: slices 6-9, small) and two FP components."""
    label = _label()
    pred = label.copy()
    pred[12:26, 10:22, 6:10] = 0  # big FN, 14 x 12 x 4; cross-section largest... everywhere equal
    pred[12:26, 10:24, 8] = 0  # ...but slice 8 a bit larger: 14 x 14
    pred[28:30, 24:26, 13] = 0  # small FN (4 voxels)
    pred[32:38, 2:30, 2:5] = 1  # big FP, slices 2-4
    pred[0:3, 0:3, 0:2] = 1  # small FP (18 voxels)
    pred[2:8, 30:36, 17] = 1  # medium FP on slice 17 (36 voxels)
    return label, pred


def test_strokes_land_in_the_largest_error_regions() -> None:
    label, pred = _errors_case()
    robot = _robot(label)
    state = _box_state(robot, label)
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.n_interactions == 3  # box + one stroke per label
    fg, bg = new.scribbles_fg, new.scribbles_bg
    assert fg is not None
    assert bg is not None
    assert fg.dtype == bool
    assert bg.dtype == bool
    big_fn = np.zeros(SHAPE, dtype=bool)
    big_fn[12:26, 10:24, 6:10] = True
    big_fn &= (label > 0) & (pred == 0)
    big_fp = np.zeros(SHAPE, dtype=bool)
    big_fp[32:38, 2:30, 2:5] = True
    assert fg.any()
    assert not (fg & ~big_fn).any()
    assert bg.any()
    assert not (bg & ~big_fp).any()
    assert np.flatnonzero(fg.any(axis=(0, 1))).tolist() == [8]  # the slice of the largest cross-section
    assert len(np.flatnonzero(bg.any(axis=(0, 1)))) == 1
    fg_entry, bg_entry = new.history[1], new.history[2]
    assert fg_entry == {
        "type": "scribble",
        "label": "foreground",
        "slice": 8,
        "axis": 2,
        "voxels": int(fg.sum()),
        "region_voxels": int(big_fn.sum()),
        "total_voxels": int(fg.sum()),
    }
    assert bg_entry["label"] == "background"
    assert bg_entry["region_voxels"] == int(big_fp.sum())
    assert bg_entry["total_voxels"] == int(fg.sum() + bg.sum())
    summary = new.to_json()
    assert summary["scribbles_fg_voxels"] + summary["scribbles_bg_voxels"] == bg_entry["total_voxels"]
    for mask, entry in ((fg, fg_entry), (bg, bg_entry)):
        plane = mask[:, :, entry["slice"]]
        _assert_simple_curve(plane)
        assert 1 <= plane.sum() <= 20
    assert fg[:, :, 8].sum() == 12  # a 14 x 14 region, eroded to 12 x 12: a line across it
    json.dumps(summary)


def test_earlier_scribbles_are_kept_and_never_both_labels() -> None:
    label, pred = _errors_case()
    robot = _robot(label, max_stroke_length=8)
    state = _box_state(robot, label)
    state.scribbles_fg = np.zeros(SHAPE, dtype=np.uint8)
    state.scribbles_fg[1, 1, 1] = 1  # an earlier (odd) foreground scribble
    state.scribbles_bg = np.zeros(SHAPE, dtype=bool)
    state.scribbles_bg[12:26, 10:24, 8] = True  # background already marked over the whole FN cross-section
    state.scribbles_bg[12:26, 10:24, 8][5, 5] = False  # ...except one voxel
    before_fg, before_bg = state.scribbles_fg.copy(), state.scribbles_bg.copy()
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.scribbles_fg is not None
    assert new.scribbles_bg is not None
    assert np.array_equal(state.scribbles_fg, before_fg)
    assert np.array_equal(state.scribbles_bg, before_bg)
    assert not (new.scribbles_fg & new.scribbles_bg).any()
    assert new.scribbles_fg[1, 1, 1]
    assert not (before_bg & ~new.scribbles_bg).any()
    added = new.scribbles_fg & ~(before_fg > 0)
    assert added[:, :, 8].sum() == 1
    assert added[17, 15, 8]
    for _ in range(3):  # more rounds: scribbles only grow
        previous = new
        new = robot.next_interaction(label, pred, previous)
        assert new is not None
        assert new.scribbles_fg is not None
        assert new.scribbles_bg is not None
        assert previous.scribbles_fg is not None
        assert previous.scribbles_bg is not None
        assert not (previous.scribbles_fg & ~new.scribbles_fg).any()
        assert not (previous.scribbles_bg & ~new.scribbles_bg).any()
        assert not (new.scribbles_fg & new.scribbles_bg).any()
        assert new.n_interactions == previous.n_interactions + 2


def test_stops_when_nothing_is_left() -> None:
    label = _label()
    robot = _robot(label)
    state = _box_state(robot, label)
    assert robot.next_interaction(label, label, state) is None
    pred = label.copy()
    pred[10:12, 8, 5] = 0  # 2 FN voxels
    pred[0, 0:3, 0] = 1  # 3 FP voxels
    assert robot.next_interaction(label, pred, state) is None  # below min_region (4)
    assert _robot(label, min_region=2).next_interaction(label, pred, state) is not None
    pred[0:2, 0:3, 0] = 1  # FP now 6 voxels: a background stroke only
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.n_interactions == state.n_interactions + 1
    assert new.scribbles_fg is not None
    assert not new.scribbles_fg.any()
    assert [e["label"] for e in new.history[1:]] == ["background"]


def test_first_round_is_always_the_box() -> None:
    label = _label()
    robot = _robot(label)
    state = robot.next_interaction(label, label, InteractionState())  # even if the prediction were perfect
    assert state is not None
    assert state.box is not None
    assert state.history[-1]["type"] == "box"


def test_strokes_lie_on_the_stored_axial_axis_of_a_permuted_volume() -> None:
    label = np.transpose(_label(), (2, 0, 1)).copy()  # stored slices first: (20, 40, 36)
    pred = np.transpose(_errors_case()[1], (2, 0, 1)).copy()
    affine = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    robot = _robot(label, affine=affine, margin=(5, 5), slice_margin=(1, 1))
    assert robot.slice_axis == 0
    state = _box_state(robot, label)
    assert state.box == ((4, 5, 3), (16, 35, 31))  # slice margin 1 on axis 0, margin 5 in-plane
    assert state.axis == 0
    new = robot.next_interaction(label, pred, state)
    assert new is not None
    assert new.scribbles_fg is not None
    assert new.scribbles_bg is not None
    assert np.flatnonzero(new.scribbles_fg.any(axis=(1, 2))).tolist() == [8]
    assert len(np.flatnonzero(new.scribbles_bg.any(axis=(1, 2)))) == 1
    assert all(e["axis"] == 0 for e in new.history[1:])
    assert not (new.scribbles_fg & ~((label > 0) & (pred == 0))).any()


def test_robot_is_deterministic() -> None:
    label, pred = _errors_case()
    runs = []
    for _ in range(2):
        robot = _robot(label, seed=5)
        state = _box_state(robot, label)
        state = robot.next_interaction(label, pred, state)
        assert state is not None
        runs.append(state)
    assert runs[0].to_json() == runs[1].to_json()
    assert runs[0].scribbles_fg is not None
    assert runs[1].scribbles_fg is not None
    assert np.array_equal(runs[0].scribbles_fg, runs[1].scribbles_fg)


# ------------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin": -1}, "margin must satisfy"),
        ({"margin": (5, 2)}, "margin must satisfy"),
        ({"margin": (0, 1, 2)}, "margin must be an int or a pair"),
        ({"margin": 2.5}, "margin must be an int or a pair"),
        ({"slice_margin": (0, -1)}, "slice_margin must satisfy"),
        ({"slice_margin": True}, "slice_margin must be an int or a pair"),
        ({"box_dims": 1}, "box_dims must be 2"),
        ({"axis": 3}, "axis must be 0, 1, 2 or None"),
        ({"max_stroke_length": 0}, "max_stroke_length must be an int >= 1"),
        ({"min_region": 0}, "min_region must be an int >= 1"),
        ({"seed": 1.5}, "seed must be an int"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoxScribbleRobot(**kwargs)


def test_bad_calls_are_rejected() -> None:
    label = _label()
    with pytest.raises(RuntimeError, match="reset"):
        BoxScribbleRobot().next_interaction(label, label, InteractionState())
    with pytest.raises(ValueError, match="label is empty"):
        _robot(np.zeros(SHAPE, dtype=np.uint8))
    robot = _robot(label)
    with pytest.raises(ValueError, match="must match the case"):
        robot.next_interaction(label, label[:-1], InteractionState())
    state = _box_state(robot, label)
    state.scribbles_fg = np.zeros((3, 3, 3), dtype=bool)
    pred = label.copy()
    pred[10:20, 8:20, 5:9] = 0
    with pytest.raises(ValueError, match=r"state.scribbles_fg has shape"):
        robot.next_interaction(label, pred, state)


def test_config_is_json_and_instantiable_from_a_bundle_config() -> None:
    config = BoxScribbleRobot(margin=(1, 4), seed=3).config()
    assert config == {
        "name": "box_scribble",
        "class": "BoxScribbleRobot",
        "margin": [1, 4],
        "slice_margin": [0, 2],
        "box_dims": 3,
        "axis": None,
        "max_stroke_length": 20,
        "min_region": 4,
        "seed": 3,
    }
    json.dumps(config)
    parser = ConfigParser(
        {"robot": {"_target_": "common.interaction.scribble_robot.BoxScribbleRobot", "margin": [0, 10], "seed": 1}}
    )
    robot = parser.get_parsed_content("robot")
    assert isinstance(robot, BoxScribbleRobot)
    assert robot.margin == (0, 10)
