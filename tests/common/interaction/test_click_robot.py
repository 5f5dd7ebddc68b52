"""Tests for common.interaction.click_robot."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import common.interaction.click_robot as click_module
from common.interaction.click_robot import CentreOfErrorClickRobot, deepest_voxel
from common.interaction.state import InteractionState


def _box(shape: tuple[int, ...], start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = 1
    return m


def _robot(label: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0), **kw: float) -> CentreOfErrorClickRobot:
    robot = CentreOfErrorClickRobot(**kw)
    robot.reset(label.astype(np.float32), label, spacing)
    return robot


def test_first_click_is_deepest_point_of_label() -> None:
    """An odd 7^3 box [4:11, 6:13, 8:15] has a unique centre (7, 9, 11), 4 voxels from outside on every side."""
    label = _box((20, 20, 20), (4, 6, 8), (11, 13, 15))
    robot = _robot(label)
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
    assert state is not None
    assert state.foreground == [(7, 9, 11)]
    assert state.background == []
    assert state.n_interactions == 1
    entry = state.history[-1]
    assert entry["type"] == "click"
    assert entry["kind"] == "foreground"
    assert entry["coord"] == [7, 9, 11]
    assert entry["depth_mm"] == pytest.approx(4.0)
    assert entry["fn_voxels"] == 343
    assert entry["fp_voxels"] == 0


def test_spacing_decides_which_region_is_deepest() -> None:
    """Region A: 7^3 cube (depth 4 voxels). Region B: 11 x 11 x 3 slab (depth 2 voxels along axis 2).
    Isotropic: A is deeper. With spacing (1, 1, 3) mm: A's depth = min(4, 4, 12) = 4 mm, B's = min(6, 6, 6) = 6 mm."""
    label = np.zeros((30, 30, 12), np.uint8)
    label[2:9, 2:9, 2:9] = 1
    label[15:26, 15:26, 4:7] = 1
    iso = _robot(label).next_interaction(label, np.zeros_like(label), InteractionState())
    assert iso is not None
    assert iso.foreground == [(5, 5, 5)]
    aniso = _robot(label, (1.0, 1.0, 3.0)).next_interaction(label, np.zeros_like(label), InteractionState())
    assert aniso is not None
    assert aniso.foreground == [(20, 20, 5)]
    assert aniso.history[0]["depth_mm"] == pytest.approx(6.0)


def test_false_negatives_dominate_gives_foreground_click_in_fn() -> None:
    label = _box((24, 24, 24), (4, 4, 4), (20, 20, 20))
    pred = _box((24, 24, 24), (4, 4, 4), (12, 20, 20))  # misses the half i >= 12
    pred[0:2, 0:2, 0:2] = 1  # 8 false positives, far fewer than the 1024 false negatives
    state = _robot(label).next_interaction(label, pred, InteractionState())
    assert state is not None
    assert state.background == []
    assert len(state.foreground) == 1
    click = state.foreground[0]
    assert label[click] == 1
    assert pred[click] == 0
    # FN box [12:20, 4:20, 4:20] (8 x 16 x 16): the depth min(i - 11, 20 - i, j - 3, 20 - j, k - 3, 20 - k) is
    # at most 4 (i = 15 or 16, j and k in 7..16); the first maximum in C order is (15, 7, 7)
    assert click == (15, 7, 7)
    assert state.history[0]["depth_mm"] == pytest.approx(4.0)


def test_false_positives_dominate_gives_background_click_in_fp() -> None:
    label = _box((24, 24, 24), (4, 4, 4), (10, 10, 10))
    pred = label.copy()
    pred[14:21, 14:21, 14:21] = 1  # 343 false positives
    pred[4, 4, 4] = 0  # 1 false negative
    robot = _robot(label)
    prior = InteractionState(foreground=[(7, 7, 7)], n_interactions=1)
    state = robot.next_interaction(label, pred, prior)
    assert state is not None
    assert state.foreground == [(7, 7, 7)]
    assert state.background == [(17, 17, 17)]
    assert label[state.background[0]] == 0
    assert pred[state.background[0]] == 1
    assert state.n_interactions == 2
    assert state.history[-1]["kind"] == "background"
    # the input state is untouched
    assert prior.background == []
    assert prior.n_interactions == 1
    assert prior.history == []


def test_equal_error_volumes_give_foreground_click() -> None:
    label = _box((10, 10, 10), (0, 0, 0), (1, 1, 1))
    pred = _box((10, 10, 10), (9, 9, 9), (10, 10, 10))
    state = _robot(label).next_interaction(label, pred, InteractionState())
    assert state is not None
    assert state.foreground == [(0, 0, 0)]
    assert state.background == []


def test_perfect_prediction_returns_none() -> None:
    label = _box((12, 12, 12), (3, 3, 3), (8, 8, 8))
    assert _robot(label).next_interaction(label, label.copy(), InteractionState()) is None


def test_stop_at_dice() -> None:
    label = _box((12, 12, 12), (2, 2, 2), (10, 10, 10))  # 512 voxels
    pred = label.copy()
    pred[2, 2, 2:10] = 0  # 8 FN -> Dice = 2*504 / (504 + 512) = 0.992
    assert _robot(label, stop_at_dice=0.99).next_interaction(label, pred, InteractionState()) is None
    assert _robot(label, stop_at_dice=0.995).next_interaction(label, pred, InteractionState()) is not None
    with pytest.raises(ValueError, match="stop_at_dice"):
        CentreOfErrorClickRobot(stop_at_dice=1.5)


def test_deterministic_and_ties_broken_by_lowest_index() -> None:
    """A 4^3 box [2:6]^3 has 8 equally deep central voxels (depth 2); the lowest index (3, 3, 3) wins."""
    label = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    first = _robot(label).next_interaction(label, np.zeros_like(label), InteractionState())
    again = _robot(label).next_interaction(label, np.zeros_like(label), InteractionState())
    assert first is not None
    assert again is not None
    assert first.foreground == again.foreground == [(3, 3, 3)]


def test_image_border_counts_as_boundary() -> None:
    """Slab [0:7, 0:12, 0:12] filling the array in j and k: with the outside counted as boundary the depth is
    min(i + 1, 7 - i, j + 1, 12 - j, k + 1, 12 - k), maximal (4) first at (3, 3, 3)."""
    region = np.zeros((12, 12, 12), bool)
    region[0:7] = True
    coord, depth = deepest_voxel(region, (1.0, 1.0, 1.0))
    assert coord == (3, 3, 3)
    assert depth == pytest.approx(4.0)
    with pytest.raises(ValueError, match="empty"):
        deepest_voxel(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0))


def test_works_in_2d() -> None:
    label = _box((15, 15), (2, 4), (9, 11))
    robot = CentreOfErrorClickRobot()
    robot.reset(label.astype(np.float32), label, (1.0, 1.0))
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
    assert state is not None
    assert state.foreground == [(5, 7)]


def test_requires_reset_and_matching_shapes() -> None:
    label = _box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    with pytest.raises(RuntimeError, match="reset"):
        CentreOfErrorClickRobot().next_interaction(label, label, InteractionState())
    robot = _robot(label)
    with pytest.raises(ValueError, match="same shape"):
        robot.next_interaction(label, label[:, :, :4], InteractionState())
    other = np.zeros((9, 9, 9), np.uint8)
    with pytest.raises(ValueError, match="reset"):
        robot.next_interaction(other, other, InteractionState())


def test_docstring_examples() -> None:
    result = doctest.testmod(click_module)
    assert result.attempted > 0
    assert result.failed == 0


def test_deepest_click_per_slice_clicks_every_slice_of_the_structure_along_any_axis() -> None:
    from common.interaction import deepest_click_per_slice

    mask = np.zeros((7, 9, 11), bool)
    mask[2:6, 1:8, 3:9] = True
    clicks = deepest_click_per_slice(mask, axis=0)
    assert [c[0] for c in clicks] == [2, 3, 4, 5]
    assert all(mask[tuple(c)] for c in clicks)
    assert all(c[1:] == clicks[0][1:] for c in clicks)  # the same centre on each identical slice
    assert len(deepest_click_per_slice(mask)) == 6
    with pytest.raises(ValueError, match="3D"):
        deepest_click_per_slice(mask[0])
