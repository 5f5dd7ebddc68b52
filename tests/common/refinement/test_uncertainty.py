"""Tests for common.refinement.uncertainty: each case of BIFSeg's Eq. 12, the epsilon normalisation, inputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from common.refinement.uncertainty import WeightMapParams, uncertainty_sets, uncertainty_weights

# gamma = 0 and absolute units: "near" is the chamfer distance < epsilon, easy to reason about by hand
EUCLIDEAN = WeightMapParams(epsilon=2.5, gamma=0.0, distance_unit="absolute")


def _case_2d() -> dict[str, Any]:
    """A 9 x 12 case: labelled foreground in columns >= 6; a fg scribble at (4, 2) (in the labelled background, as a
    user correcting an under-segmentation would draw it) and a bg scribble at (4, 9) (in the labelled foreground)."""
    shape = (9, 12)
    labels = np.zeros(shape, dtype=bool)
    labels[:, 6:] = True
    prob = np.where(labels, 0.9, 0.1)
    prob[0, 0] = 0.5  # network-uncertain, far from the scribbles
    prob[4, 2] = 0.4  # network-uncertain *and* a scribble voxel
    fg = np.zeros(shape, dtype=bool)
    fg[4, 2] = True
    bg = np.zeros(shape, dtype=bool)
    bg[4, 9] = True
    return {"prob": prob, "labels": labels, "image": np.zeros(shape), "fg_scribbles": fg, "bg_scribbles": bg}


def test_each_case_of_eq12_in_2d() -> None:
    case = _case_2d()
    w = uncertainty_weights(**case, params=EUCLIDEAN)
    assert w.dtype == np.float32
    assert w.shape == (9, 12)
    assert w[4, 2] == 5.0  # fg scribble, even though 0.2 < p < 0.7
    assert w[4, 9] == 5.0  # bg scribble
    assert w[0, 0] == 0.0  # U_p
    # near the fg scribble (chamfer distance < 2.5) and labelled 0: U_s^f; labelled 1 beyond: outside it
    assert w[4, 4] == 0.0  # distance 2
    assert w[5, 4] == 0.0  # distance 1 + sqrt(2) = 2.41
    assert w[4, 5] == 1.0  # distance 3 >= epsilon
    assert w[6, 4] == 1.0  # distance 2 sqrt(2) = 2.83
    # near the bg scribble and labelled 1: U_s^b
    assert w[4, 7] == 0.0  # distance 2
    assert w[3, 8] == 0.0  # distance sqrt(2)
    far = np.ones((9, 12), dtype=bool)
    far[2:7, 0:5] = False
    far[2:7, 7:12] = False
    far[0, 0] = False
    assert (w[far] == 1.0).all()


def test_sets_match_the_definitions() -> None:
    case = _case_2d()
    sets = uncertainty_sets(**case, params=EUCLIDEAN)
    ii, jj = np.indices((9, 12))

    def chamfer(i0: int, j0: int) -> np.ndarray:
        a, b = np.abs(ii - i0), np.abs(jj - j0)
        return np.minimum(a, b) * math.sqrt(2) + np.abs(a - b)

    labels = case["labels"]
    scribbles = case["fg_scribbles"] | case["bg_scribbles"]
    np.testing.assert_array_equal(sets.scribbles, scribbles)
    np.testing.assert_array_equal(sets.network, (case["prob"] > 0.2) & (case["prob"] < 0.7))
    np.testing.assert_array_equal(sets.scribble_fg, (chamfer(4, 2) < 2.5) & ~labels & ~scribbles)
    np.testing.assert_array_equal(sets.scribble_bg, (chamfer(4, 9) < 2.5) & labels & ~scribbles)
    assert sets.scribble_fg.sum() == 20  # 21 voxels within 2.5 (chamfer), minus the scribble
    assert not (sets.scribble_bg & ~labels).any()
    # a voxel next to the fg scribble labelled 1 is not in U_s^f; next to the bg scribble labelled 0 not in U_s^b
    case["labels"] = labels.copy()
    case["labels"][4, 3] = True
    case["labels"][4, 8] = False
    moved = uncertainty_sets(**case, params=EUCLIDEAN)
    assert sets.scribble_fg[4, 3]
    assert not moved.scribble_fg[4, 3]
    assert sets.scribble_bg[4, 8]
    assert not moved.scribble_bg[4, 8]
    w = uncertainty_weights(**case, params=EUCLIDEAN)
    assert w[4, 3] == 1.0
    assert w[4, 8] == 1.0


def test_each_case_of_eq12_in_3d() -> None:
    shape = (6, 7, 5)
    labels = np.zeros(shape, dtype=bool)
    labels[3:] = True
    prob = np.where(labels, 0.95, 0.05).astype(np.float32)
    prob[5, 6, 4] = 0.3  # U_p
    fg = np.zeros(shape, dtype=bool)
    fg[1, 3, 2] = True
    bg = np.zeros(shape, dtype=bool)
    bg[4, 3, 2] = True
    # chamfer distance < 1.5 with 26 neighbours: the 3 x 3 x 3 block without its 8 corners (sqrt(3))
    params = WeightMapParams(epsilon=1.5, gamma=0.0, distance_unit="absolute", omega=3.0)
    w = uncertainty_weights(prob, labels.astype(np.uint8), np.zeros(shape), fg, bg, params)
    assert w[1, 3, 2] == 3.0
    assert w[4, 3, 2] == 3.0
    assert w[5, 6, 4] == 0.0  # U_p
    assert w[2, 3, 2] == 0.0  # next to the fg scribble, labelled 0
    assert w[1, 4, 3] == 0.0  # sqrt(2) from it, labelled 0
    assert w[3, 3, 2] == 0.0  # next to the bg scribble, labelled 1
    assert w[0, 4, 3] == 1.0  # sqrt(3) >= 1.5 from the fg scribble
    assert w[5, 0, 0] == 1.0
    sets = uncertainty_sets(prob, labels, np.zeros(shape), fg, bg, params)
    assert sets.scribble_fg.sum() == 18  # 19 voxels of the block, minus the scribble; all labelled 0
    assert sets.scribble_bg.sum() == 18  # all labelled 1
    assert not (sets.scribble_fg & sets.scribble_bg).any()
    assert (w == 0.0).sum() == 1 + 18 + 18
    assert (w == 1.0).sum() == w.size - 2 - 37
    # the bg scribble's block labelled 0 instead: nothing uncertain around it
    relabelled = uncertainty_sets(prob, np.zeros(shape, dtype=bool), np.zeros(shape), fg, bg, params)
    assert not relabelled.scribble_bg.any()


def test_ablation_is_ones_everywhere() -> None:
    case = _case_2d()
    w = uncertainty_weights(**case, params=EUCLIDEAN, use_uncertainty=False)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, np.ones((9, 12), dtype=np.float32))
    with pytest.raises(ValueError, match="both a foreground and a background"):
        uncertainty_weights(**{**case, "bg_scribbles": case["fg_scribbles"]}, use_uncertainty=False)


def test_without_scribbles_only_the_network_band_is_zero() -> None:
    case = _case_2d()
    expected = np.where((case["prob"] > 0.2) & (case["prob"] < 0.7), 0.0, 1.0)
    for fg, bg in [(None, None), (np.zeros((9, 12), dtype=bool), np.zeros((9, 12), dtype=bool))]:
        w = uncertainty_weights(case["prob"], case["labels"], case["image"], fg, bg)
        np.testing.assert_array_equal(w, expected)
    # boundaries: t0 and t1 themselves are certain
    prob = np.array([[0.2, 0.2001, 0.6999, 0.7]])
    w = uncertainty_weights(prob, prob > 0.5, np.zeros((1, 4)), None, None)
    np.testing.assert_array_equal(w, [[1.0, 0.0, 0.0, 1.0]])


def test_only_one_kind_of_scribble() -> None:
    case = _case_2d()
    w = uncertainty_weights(**{**case, "bg_scribbles": None}, params=EUCLIDEAN)
    assert w[4, 9] == 1.0
    assert w[4, 7] == 1.0
    assert w[4, 4] == 0.0


def test_the_geodesic_distance_stops_at_an_intensity_edge() -> None:
    case = _case_2d()
    case["image"] = np.zeros((9, 12))
    case["image"][:, 3:] = 4.0  # an edge between columns 2 and 3, right of the fg scribble
    euclid = uncertainty_sets(**case, params=EUCLIDEAN)
    geodesic = uncertainty_sets(**case, params=WeightMapParams(epsilon=2.5, gamma=1.0, distance_unit="absolute"))
    assert euclid.scribble_fg[4, 3]
    assert euclid.scribble_fg[4, 4]
    assert not geodesic.scribble_fg[:, 3:].any()  # across the edge: >= sqrt(1 + 16) > 2.5
    np.testing.assert_array_equal(geodesic.scribble_fg[:, :3], euclid.scribble_fg[:, :3])


@pytest.mark.parametrize(("shape", "diagonal"), [((96, 128), 160.0), ((80, 80, 40), 120.0)])
def test_epsilon_is_a_fraction_of_the_crop_diagonal(shape: tuple[int, ...], diagonal: float) -> None:
    """epsilon = 0.2: a radius of 32 pixels in a 96 x 128 crop and 24 voxels in an 80 x 80 x 40 crop, along an axis."""
    radius = 0.2 * diagonal
    seed = tuple(s // 2 for s in shape)
    fg = np.zeros(shape, dtype=bool)
    fg[seed] = True
    prob = np.full(shape, 0.05)
    params = WeightMapParams(gamma=0.0)
    sets = uncertainty_sets(prob, np.zeros(shape, dtype=bool), np.zeros(shape), fg, None, params)
    axis = int(np.argmax(shape))
    for offset, inside in [(math.ceil(radius) - 1, True), (math.ceil(radius), False)]:
        idx = list(seed)
        idx[axis] += offset
        assert sets.scribble_fg[tuple(idx)] == inside
    # the same crop with other voxel sizes (same geometry in voxels) gives the same set when the spacing is uniform
    scaled = uncertainty_sets(prob, np.zeros(shape, dtype=bool), np.zeros(shape), fg, None, params, (2.0,) * len(shape))
    np.testing.assert_array_equal(scaled.scribble_fg, sets.scribble_fg)


def test_absolute_units_use_the_spacing() -> None:
    shape = (1, 9)
    fg = np.zeros(shape, dtype=bool)
    fg[0, 0] = True
    params = WeightMapParams(epsilon=3.0, gamma=0.0, distance_unit="absolute")
    base = (np.full(shape, 0.0), np.zeros(shape, dtype=bool), np.zeros(shape), fg, None, params)
    voxels = uncertainty_sets(*base)
    mm = uncertainty_sets(*base, (1.0, 0.5))
    np.testing.assert_array_equal(np.flatnonzero(voxels.scribble_fg[0]), [1, 2])
    np.testing.assert_array_equal(np.flatnonzero(mm.scribble_fg[0]), [1, 2, 3, 4, 5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t0": 0.7, "t1": 0.2}, "0 <= t0 < t1 <= 1"),
        ({"t0": 0.5, "t1": 0.5}, "0 <= t0 < t1 <= 1"),
        ({"t0": -0.1}, "0 <= t0 < t1 <= 1"),
        ({"t1": 1.1}, "0 <= t0 < t1 <= 1"),
        ({"t0": float("nan")}, "t0 must be a finite number"),
        ({"epsilon": -0.1}, "epsilon must be >= 0"),
        ({"omega": 0.5}, "omega must be >= 1"),
        ({"gamma": -1.0}, "gamma must be >= 0"),
        ({"gamma": True}, "gamma must be a finite number"),
        ({"distance_unit": "mm"}, "distance_unit must be"),
        ({"connectivity": "edge"}, "connectivity must be"),
    ],
)
def test_bad_params_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WeightMapParams(**kwargs)


def test_bad_inputs_raise() -> None:
    case = _case_2d()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"prob": case["prob"] + 0.2}, r"probabilities in \[0, 1\]"),
        ({"prob": case["prob"] - 0.2}, r"probabilities in \[0, 1\]"),
        ({"prob": np.where(case["labels"], np.nan, 0.1)}, r"probabilities in \[0, 1\]"),
        ({"prob": case["labels"].astype(np.int64)}, "float array"),
        ({"prob": np.zeros(5)}, "2D or 3D"),
        ({"prob": np.zeros((2, 2, 2, 2))}, "2D or 3D"),
        ({"labels": case["labels"][:, :-1]}, "labels must have"),
        ({"labels": case["prob"]}, "labels must be a binary mask"),
        ({"image": case["image"][:-1]}, "image must have"),
        ({"image": np.full((9, 12), np.nan)}, "NaN or infinite"),
        ({"fg_scribbles": case["fg_scribbles"].T}, "fg_scribbles must have"),
        ({"bg_scribbles": np.full((9, 12), 2)}, "bg_scribbles must be a binary mask"),
        ({"bg_scribbles": case["fg_scribbles"]}, "both a foreground and a background"),
        ({"spacing": (1.0,)}, "spacing must be"),
        ({"spacing": (1.0, 0.0)}, "spacing must be"),
        ({"params": {"t0": 0.1}}, "params must be a WeightMapParams"),
    ]
    for change, match in bad:
        with pytest.raises(ValueError, match=match):
            uncertainty_weights(**{**case, **change})
        with pytest.raises(ValueError, match=match):
            uncertainty_sets(**{**case, **change})
