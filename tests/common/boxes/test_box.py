"""Tests of common.boxes.box: parsing viewers' boxes, boxes around masks, box masks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from common.boxes import box_from_mask, box_mask, box_size, parse_box

SHAPE = (20, 30, 10)


def test_parse_start_stop_and_roi_agree() -> None:
    assert parse_box([[2, 3, 4], [12, 13, 6]], SHAPE) == ((2, 3, 4), (12, 13, 6))
    assert parse_box([2, 12, 3, 13, 4, 6], SHAPE) == ((2, 3, 4), (12, 13, 6))
    assert parse_box([12.0, 2.0, 13, 3, 6, 4], SHAPE) == ((2, 3, 4), (12, 13, 6))  # Slicer: pairs in any order


def test_flat_roi_on_one_slice_spans_that_slice() -> None:
    assert parse_box([2, 12, 3, 13, 5, 5], SHAPE) == ((2, 3, 5), (12, 13, 6))


def test_box_sticking_out_is_clipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_box([[-3, 0, 0], [25, 30, 10]], SHAPE) == ((0, 0, 0), (20, 30, 10))
    assert "clipped" in caplog.text
    with pytest.raises(ValueError, match="sticks out"):
        parse_box([[-3, 0, 0], [25, 30, 10]], SHAPE, clip=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[2, 3, 4], [2, 13, 6]], "zero width along axis 0"),
        ([[30, 3, 4], [40, 13, 6]], "outside the image"),
        ([[2, 3], [12, 13]], "3 coordinates"),
        ([1, 2, 3], "flat roi of 6 numbers"),
        ("0,1,2,3,4,5", "flat roi"),
        (None, "flat roi"),
        ([[2, 3, 4.5], [12, 13, 6]], "integer voxel index"),
        ([[2, 3, float("nan")], [12, 13, 6]], "finite"),
        ([[2, 3, 1e400], [12, 13, 6]], "finite"),
        ([[2, 3, "a"], [12, 13, 6]], "must be a number"),
        ([[2, 3, True], [12, 13, 6]], "must be a number"),
    ],
)
def test_bad_boxes_are_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_box(value, SHAPE)


def test_box_from_mask_fixed_and_random_margins() -> None:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:8, 10:20, 3:5] = True
    assert box_from_mask(mask) == ((5, 10, 3), (8, 20, 5))
    assert box_from_mask(mask, margin=2) == ((3, 8, 1), (10, 22, 7))
    assert box_from_mask(mask, margin=(0, 100, 0)) == ((5, 0, 3), (8, 30, 5))  # clipped to the array
    rng = np.random.default_rng(0)
    boxes = {box_from_mask(mask, rng=rng, margin_range=[(0, 3), (0, 3), (0, 0)]) for _ in range(40)}
    assert len(boxes) > 5
    for start, stop in boxes:
        assert 2 <= start[0] <= 5
        assert 8 <= stop[0] <= 11
        assert start[2] == 3
        assert stop[2] == 5
    again = np.random.default_rng(0)
    assert box_from_mask(mask, rng=again, margin_range=[(0, 3)] * 3) == box_from_mask(
        mask, rng=np.random.default_rng(0), margin_range=[(0, 3)] * 3
    )


def test_box_from_mask_errors() -> None:
    with pytest.raises(ValueError, match="empty mask"):
        box_from_mask(np.zeros(SHAPE))
    mask = np.ones((3, 3))
    with pytest.raises(ValueError, match="rng"):
        box_from_mask(mask, margin_range=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="margin"):
        box_from_mask(mask, margin=-1)


def test_box_mask_and_size() -> None:
    box = ((1, 2), (4, 3))
    mask = box_mask((5, 5), box)
    assert mask.sum() == 3
    assert mask[1:4, 2].all()
    assert box_size(box) == (3, 1)
    with pytest.raises(ValueError, match="axes"):
        box_mask((5, 5, 5), box)
