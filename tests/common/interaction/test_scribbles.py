"""Tests of common.interaction.scribbles: the stroke geometry of simulated scribbles (erode -> skeleton -> longest
path -> middle part), a 1-pixel-wide 8-connected curve inside the region."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from common.interaction.scribbles import (
    largest_component,
    longest_skeleton_path,
    stroke_in_region,
    stroke_path_in_region,
    truncate_path,
)

EIGHT = np.ones((3, 3), dtype=bool)


def assert_simple_curve(mask: np.ndarray) -> None:
    """``mask`` is one 8-connected simple curve, 1 pixel wide: every pixel has at most two 8-neighbours in the
    curve, and (for more than one pixel) exactly two pixels, its ends, have one."""
    _, n = ndimage.label(mask, structure=EIGHT)
    assert n == 1
    neighbours = ndimage.convolve(mask.astype(int), EIGHT.astype(int), mode="constant") - 1
    counts = neighbours[mask]
    assert counts.max() <= 2
    if mask.sum() > 1:
        assert counts.min() == 1
        assert int((counts == 1).sum()) == 2
    assert not ndimage.binary_erosion(mask, structure=np.ones((2, 2), bool)).any()  # no 2x2 block


def assert_ordered_path(path: np.ndarray) -> None:
    """Consecutive points are 8-neighbours, non-consecutive points never are."""
    diff = np.abs(path[:, None, :] - path[None, :, :]).max(axis=-1)
    n = len(path)
    for a in range(n):
        for b in range(a + 1, n):
            assert (diff[a, b] == 1) == (b == a + 1), (a, b, path.tolist())


def _inner(region: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` whose four 4-neighbours are all in it (>= 1 pixel from the border)."""
    return ndimage.binary_erosion(region, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def test_rectangle_gives_a_straight_stroke_on_the_middle_row() -> None:
    region = np.zeros((9, 40), dtype=bool)
    region[1:8, 2:38] = True  # 7 rows x 36 columns
    stroke = stroke_in_region(region, max_length=20)
    assert stroke.dtype == bool
    assert stroke.shape == region.shape
    assert int(stroke.sum()) == 20
    assert np.flatnonzero(stroke.any(axis=1)).tolist() == [4]  # the middle row, along the long axis
    cols = np.flatnonzero(stroke[4])
    assert cols.tolist() == list(range(cols[0], cols[0] + 20))  # contiguous
    assert abs((cols[0] + cols[-1]) / 2 - 19.5) <= 1.5  # centred on the rectangle
    assert not (stroke & ~_inner(region)).any()


def test_rectangle_with_long_max_length_runs_along_its_long_axis() -> None:
    region = np.zeros((9, 40), dtype=bool)
    region[1:8, 2:38] = True
    path = stroke_path_in_region(region, max_length=1000)
    assert 28 <= len(path) <= 34  # the eroded rectangle is 34 long; the skeleton ends are a little shorter
    assert np.ptp(path[:, 0]) <= 2
    assert np.ptp(path[:, 1]) >= 27
    assert_ordered_path(path)
    stroke = stroke_in_region(region, max_length=1000)
    assert_simple_curve(stroke)
    assert not (stroke & ~_inner(region)).any()


@pytest.mark.parametrize("max_length", [1, 2, 7, 20])
def test_length_is_capped(max_length: int) -> None:
    region = np.zeros((12, 60), dtype=bool)
    region[2:10, 3:57] = True
    stroke = stroke_in_region(region, max_length=max_length)
    assert int(stroke.sum()) == max_length
    assert_simple_curve(stroke)


def test_l_shaped_region_stroke_follows_both_arms() -> None:
    region = np.zeros((30, 30), dtype=bool)
    region[2:26, 2:8] = True  # vertical arm
    region[20:26, 2:28] = True  # horizontal arm
    path = stroke_path_in_region(region, max_length=1000)
    assert len(path) >= 35
    assert_ordered_path(path)
    ends = {tuple(path[0]), tuple(path[-1])}
    assert any(i < 8 for i, _ in ends)
    assert any(j > 20 for _, j in ends)
    stroke = stroke_in_region(region, max_length=1000)
    assert_simple_curve(stroke)
    assert not (stroke & ~_inner(region)).any()
    short = stroke_in_region(region, max_length=20)
    assert int(short.sum()) == 20
    assert_simple_curve(short)
    assert not (short & ~stroke).any()  # the middle part of the full path


def test_one_pixel_region_gives_that_pixel() -> None:
    region = np.zeros((5, 6), dtype=np.uint8)
    region[3, 4] = 1
    assert stroke_path_in_region(region, 20).tolist() == [[3, 4]]
    assert np.array_equal(stroke_in_region(region, 20), region > 0)


@pytest.mark.parametrize(("rows", "cols"), [(2, 2), (2, 3), (3, 3), (1, 2)])
def test_tiny_regions_give_a_short_stroke_inside(rows: int, cols: int) -> None:
    region = np.zeros((8, 8), dtype=bool)
    region[2 : 2 + rows, 3 : 3 + cols] = True
    stroke = stroke_in_region(region, 20)
    assert 1 <= stroke.sum() <= 3
    assert not (stroke & ~region).any()
    assert_simple_curve(stroke)


def test_thin_band_gets_a_stroke_along_it() -> None:
    region = np.zeros((8, 40), dtype=bool)
    region[3:5, 1:39] = True  # 2 pixels thick: the erosion is empty, the band itself is skeletonised
    stroke = stroke_in_region(region, max_length=20)
    assert int(stroke.sum()) == 20
    assert len(np.flatnonzero(stroke.any(axis=1))) == 1
    assert not (stroke & ~region).any()
    diagonal = np.eye(30, dtype=bool) | np.eye(30, k=1, dtype=bool)  # a thin diagonal band
    stroke = stroke_in_region(diagonal, max_length=15)
    assert int(stroke.sum()) == 15
    assert not (stroke & ~diagonal).any()
    assert_simple_curve(stroke)


def test_blobs_get_a_line_across_not_a_dot() -> None:
    grid = np.indices((30, 30))
    disk = ((grid[0] - 15) ** 2 + (grid[1] - 14) ** 2) <= 81  # radius 9: its skeleton is (nearly) a point
    stroke = stroke_in_region(disk, max_length=12)
    assert int(stroke.sum()) == 12
    assert_simple_curve(stroke)
    assert not (stroke & ~_inner(disk)).any()
    path = stroke_path_in_region(disk, max_length=1000)
    assert len(path) >= 15  # across the eroded disk (diameter 17)
    middle = path[len(path) // 2]
    assert abs(middle[0] - 15) <= 2
    assert abs(middle[1] - 14) <= 2
    square = np.zeros((20, 20), dtype=bool)
    square[3:17, 3:17] = True
    assert int(stroke_in_region(square, 20).sum()) == 12  # the eroded 12 x 12 square, across
    three = np.zeros((7, 7), dtype=bool)
    three[2:5, 2:5] = True
    assert stroke_path_in_region(three, 20).tolist() == [[3, 3]]  # the centre, the only pixel left by the erosion


def test_stroke_goes_into_the_largest_part() -> None:
    region = np.zeros((30, 30), dtype=bool)
    region[2:6, 2:6] = True
    region[10:25, 8:28] = True
    stroke = stroke_in_region(region, 20)
    assert stroke[10:25, 8:28].sum() == stroke.sum()


def test_random_regions_give_simple_curves_inside() -> None:
    rng = np.random.default_rng(0)
    for trial in range(25):
        field = ndimage.gaussian_filter(rng.normal(size=(48, 48)), sigma=float(rng.uniform(1.5, 5.0)))
        region = field > np.quantile(field, float(rng.uniform(0.5, 0.95)))
        max_length = int(rng.integers(1, 40))
        path = stroke_path_in_region(region, max_length)
        stroke = stroke_in_region(region, max_length)
        assert np.array_equal(stroke_in_region(region, max_length), stroke)  # deterministic
        assert 1 <= len(path) <= max_length
        assert int(stroke.sum()) == len(path)
        assert not (stroke & ~largest_component(region)).any(), trial
        assert_simple_curve(stroke)
        assert_ordered_path(path)
        if _inner(largest_component(region)).any():
            assert not (stroke & ~_inner(region)).any(), trial  # thick enough: away from the border


def test_longest_skeleton_path_of_a_tree_joins_its_two_longest_arms() -> None:
    tree = np.zeros((40, 40), dtype=bool)
    tree[20, 5:36] = True  # horizontal line, 31 pixels, arms 15 left and 15 right of (20, 20)
    tree[21:28, 20] = True  # short branch down (7)
    tree[8:20, 12] = True  # branch up from (20, 12), 12 pixels
    path = longest_skeleton_path(tree)
    ends = sorted([tuple(path[0].tolist()), tuple(path[-1].tolist())])
    assert ends == [(8, 12), (20, 35)]  # the diameter of the tree
    assert len(path) == 12 + (35 - 12)  # 8-connected: the corner (20, 12) is cut diagonally
    assert_ordered_path(path)
    assert longest_skeleton_path(np.zeros((4, 4), bool)).shape == (0, 2)


def test_truncate_path_keeps_the_middle() -> None:
    path = np.arange(20).reshape(10, 2)
    assert np.array_equal(truncate_path(path, 4), path[3:7])
    assert np.array_equal(truncate_path(path, 3), path[3:6])
    assert np.array_equal(truncate_path(path, 10), path)
    assert np.array_equal(truncate_path(path, 50), path)


def test_largest_component_uses_full_connectivity() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # diagonal: one 8-connected component
    mask[4:6, 4:6] = True  # 4 pixels
    assert largest_component(mask).sum() == 4
    mask[3, 3] = True  # now all connected
    assert largest_component(mask).sum() == 8
    assert not largest_component(np.zeros((3, 3, 3))).any()


@pytest.mark.parametrize("max_length", [0, -3, 2.5, True])
def test_bad_max_length_is_rejected(max_length: object) -> None:
    region = np.ones((5, 5), dtype=bool)
    with pytest.raises(ValueError, match="max_length must be an int >= 1"):
        stroke_in_region(region, max_length)  # type: ignore[arg-type]


def test_bad_regions_are_rejected() -> None:
    with pytest.raises(ValueError, match="region is empty"):
        stroke_in_region(np.zeros((5, 5), dtype=bool), 5)
    with pytest.raises(ValueError, match=r"2D \(H, W\) mask"):
        stroke_in_region(np.ones((3, 3, 3), dtype=bool), 5)
    with pytest.raises(ValueError, match=r"2D \(H, W\) mask"):
        longest_skeleton_path(np.ones(5, dtype=bool))
