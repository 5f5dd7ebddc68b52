from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from common.propagation import propagate
from common.propagation.validation import (
    annotated_slice_indices,
    validate_binary,
    validate_image,
    validate_propagation_options,
    validate_slice_annotation,
    validate_volume_annotation,
    volume_annotation_slices,
)

SHAPE = (8, 6, 5)
CPU = torch.device("cpu")


def _ones() -> torch.Tensor:
    return torch.ones(SHAPE[:2])


def _copy(x: torch.Tensor) -> torch.Tensor:
    return x[:, 1]


def _image(value: float | None = None) -> torch.Tensor:
    img = torch.zeros(SHAPE)
    if value is not None:
        img[3, 2, 1] = value
    return img


@pytest.mark.parametrize(
    ("image", "annotation", "match"),
    [
        (_image(), {}, "annotation has no annotated slice"),
        (_image(), {2: torch.zeros(SHAPE[:2])}, r"annotation\[2\] is empty \(all zero\)"),
        (_image(), {2: torch.ones(6, 8)}, r"annotation\[2\] must have the in-plane shape \(8, 6\)"),
        (_image(), {2: torch.ones(8, 6, 1)}, r"annotation\[2\] must have the in-plane shape"),
        (torch.zeros(SHAPE[:2]), {0: _ones()}, r"image must have 3 dimensions, got shape \(8, 6\) \(2D\)"),
        (torch.zeros((1, *SHAPE)), {0: _ones()}, r"image must have 3 dimensions"),
        (_image(float("nan")), {2: _ones()}, "image contains non-finite values: 1 NaN and 0 infinite"),
        (_image(float("-inf")), {2: _ones()}, "image contains non-finite values: 0 NaN and 1 infinite"),
        (_image(), {5: _ones()}, r"annotation slice index 5 is outside the volume: valid indices .* are 0..4"),
        (_image(), {-1: _ones()}, r"annotation slice index -1 is outside the volume"),
        (_image(), {2: torch.arange(48).reshape(8, 6) % 3}, r"annotation\[2\] must be binary .* found e.g. \[2\]"),
        (_image(), {2: _ones() * 2}, r"annotation\[2\] must be binary .* found e.g. \[2.0\]"),
        (_image(), {2: torch.full(SHAPE[:2], float("nan"))}, "must be binary"),
        (_image(), {2.0: _ones()}, "annotation keys must be integer slice indices, got 2.0"),
        (_image(), {True: _ones()}, "annotation keys must be integer slice indices"),
        (_image(), {"2": _ones()}, "annotation keys must be integer slice indices"),
        (_image(), [_ones()], "annotation must be a mapping"),
        (_image(), {2: [[1]]}, r"annotation\[2\] must be a torch tensor or numpy array"),
        (SHAPE, {2: _ones()}, "image must be a torch tensor or numpy array"),
        (torch.zeros(SHAPE, dtype=torch.bool), {2: _ones()}, "image must be a real-valued numeric array"),
        (torch.zeros((8, 0, 5)), {2: _ones()}, "image has an empty dimension"),
    ],
)
def test_propagate_rejects_bad_input(image: Any, annotation: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        propagate(image, annotation, _copy)


def test_mixed_labels_are_rejected_with_a_hint() -> None:
    mask = np.zeros(SHAPE[:2], dtype=np.uint8)
    mask[:2] = 1
    mask[4:] = 2
    with pytest.raises(ValueError, match=r"found e.g. \[2\]; binarise multi-label annotations first"):
        validate_slice_annotation({1: mask}, SHAPE, CPU)


def test_accepted_annotations_become_bool_masks_in_the_given_order() -> None:
    half = np.zeros(SHAPE[:2], dtype=np.uint8)
    half[:4] = 1
    annotation: dict[Any, Any] = {
        np.int64(3): half,
        0: torch.from_numpy(half).bool(),
        4: torch.from_numpy(half).double(),
    }
    masks = validate_slice_annotation(annotation, SHAPE, CPU)
    assert list(masks) == [3, 0, 4]
    assert all(type(k) is int for k in masks)
    for m in masks.values():
        assert m.dtype == torch.bool
        assert torch.equal(m, torch.from_numpy(half).bool())


def test_validate_image_returns_tensor_and_checks_ndim() -> None:
    arr = np.arange(240, dtype=np.float32).reshape(SHAPE)
    t = validate_image(arr)
    assert isinstance(t, torch.Tensor)
    assert np.shares_memory(t.numpy(), arr)  # no copy
    assert validate_image(torch.zeros(4, 4), ndim=2).shape == (4, 4)
    with pytest.raises(ValueError, match="inputs must have 2 dimensions"):
        validate_image(torch.zeros(4), "inputs", ndim=2)
    validate_image(torch.zeros(SHAPE, dtype=torch.int16))  # integer images are fine


def test_validate_binary() -> None:
    assert validate_binary(torch.tensor([0.0, 1.0]), "m").tolist() == [False, True]
    assert validate_binary(torch.tensor([True, False]), "m").tolist() == [True, False]
    with pytest.raises(ValueError, match=r"m must be binary .* found e.g. \[-1, 3\]"):
        validate_binary(torch.tensor([0, 1, 3, -1]), "m")


def test_volume_annotation_checks_and_slice_indices() -> None:
    vol = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="has no annotated slice: it is all zero"):
        validate_volume_annotation(vol, SHAPE)
    with pytest.raises(ValueError, match=r"annotation shape \(8, 6, 4\) does not match the image shape \(8, 6, 5\)"):
        validate_volume_annotation(vol[..., :4], SHAPE)
    vol[1, 1, 3] = 1
    vol[0, 0, 1] = 1
    out = validate_volume_annotation(vol, SHAPE)
    assert out.dtype == torch.bool
    assert annotated_slice_indices(out) == [1, 3]
    vol[0, 0, 0] = 255
    with pytest.raises(ValueError, match=r"found e.g. \[255.0\]"):
        validate_volume_annotation(vol, SHAPE)


@pytest.mark.parametrize(
    "image",
    [
        torch.full(SHAPE, 3e38),  # the float32 sum overflows to inf: the exact check must accept it
        torch.full(SHAPE, -3e38),
        torch.full(SHAPE, 60000.0, dtype=torch.float16),
        torch.tensor([[[3e38, -3e38, 3e38]]]).expand(*SHAPE[:2], 3).contiguous(),
        torch.full(SHAPE, torch.finfo(torch.float64).max, dtype=torch.float64),
    ],
)
def test_large_finite_images_are_accepted(image: torch.Tensor) -> None:
    assert not bool(torch.isfinite(image.sum()))
    assert validate_image(image) is image


@pytest.mark.parametrize(
    ("values", "n_nan", "n_inf"),
    [
        ({(0, 0, 0): float("inf"), (1, 1, 1): float("-inf")}, 0, 2),  # inf - inf: the sum is NaN
        ({(0, 0, 0): float("nan"), (1, 1, 1): float("inf"), (2, 2, 2): float("nan")}, 2, 1),
        ({(7, 5, 4): float("-inf")}, 0, 1),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_non_finite_values_are_counted(
    values: dict[tuple[int, int, int], float], n_nan: int, n_inf: int, dtype: torch.dtype
) -> None:
    image = torch.zeros(SHAPE, dtype=dtype)
    for index, value in values.items():
        image[index] = value
    with pytest.raises(ValueError, match=rf"image contains non-finite values: {n_nan} NaN and {n_inf} infinite"):
        validate_image(image)
    with pytest.raises(ValueError, match=rf"{n_nan} NaN and {n_inf} infinite"):
        validate_image(torch.cat([image, torch.full(SHAPE, torch.finfo(dtype).max, dtype=dtype)]))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ((0.5, None, None), None),
        ((0, 1, 1), None),
        ((True, None, None), "threshold must be a number"),
        ((0.5, True, None), "max_empty_slices must be an integer"),
        ((0.5, None, 2.0), "max_batch_size must be an integer >= 1 or None, got 2.0"),
    ],
)
def test_validate_propagation_options(options: tuple[Any, Any, Any], match: str | None) -> None:
    if match is None:
        validate_propagation_options(*options)
    else:
        with pytest.raises(ValueError, match=match):
            validate_propagation_options(*options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"connect_tolerance": None, "min_area_ratio": None, "max_area_ratio": None}, None),
        ({"connect_tolerance": 0, "min_area_ratio": 0.01, "max_area_ratio": 1.01}, None),
        ({"connect_tolerance": 100, "min_area_ratio": 0.999, "max_area_ratio": 1e6}, None),
        ({"min_area_ratio": np.float64(0.2), "max_area_ratio": 3}, None),
        ({"connect_tolerance": -1}, r"connect_tolerance must be an integer >= 0 .* got -1\."),
        ({"connect_tolerance": 1.0}, r"connect_tolerance must be an integer >= 0 .* got 1\.0\."),
        ({"connect_tolerance": False}, "connect_tolerance must be an integer >= 0"),
        ({"connect_tolerance": "2"}, "connect_tolerance must be an integer >= 0"),
        ({"min_area_ratio": 0.0}, r"min_area_ratio must be a number in \(0, 1\) .* got 0\.0\."),
        ({"min_area_ratio": 1}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"min_area_ratio": -0.5}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"min_area_ratio": float("nan")}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"min_area_ratio": True}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"max_area_ratio": 1}, r"max_area_ratio must be a finite number > 1 .* got 1\."),
        ({"max_area_ratio": 0.5}, "max_area_ratio must be a finite number > 1"),
        ({"max_area_ratio": float("inf")}, "max_area_ratio must be a finite number > 1"),
        ({"max_area_ratio": float("nan")}, "max_area_ratio must be a finite number > 1"),
        ({"max_area_ratio": [3.0]}, "max_area_ratio must be a finite number > 1"),
    ],
)
def test_validate_continuity_options(options: dict[str, Any], match: str | None) -> None:
    if match is None:
        validate_propagation_options(0.5, 2, None, **options)
    else:
        with pytest.raises(ValueError, match=match):
            validate_propagation_options(0.5, 2, None, **options)


def test_continuity_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        validate_propagation_options(0.5, 2, None, 1)  # type: ignore[misc]


def _annotation_volume(dtype: torch.dtype) -> torch.Tensor:
    vol = torch.zeros(SHAPE, dtype=dtype)
    vol[2:6, 1:4, 1] = 1
    vol[0, 0, 3] = 1
    vol[7, 5, 0] = 1
    return vol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_volume_annotation_slices_along_each_axis(dtype: torch.dtype, axis: int) -> None:
    vol = _annotation_volume(dtype)
    slices = volume_annotation_slices(vol, SHAPE, axis)
    moved = validate_volume_annotation(vol, SHAPE).movedim(axis, -1)
    expected = [k for k in range(moved.shape[-1]) if bool(moved[..., k].any())]
    assert list(slices) == expected
    assert expected == sorted(expected)
    for k, m in slices.items():
        assert m.dtype == torch.bool
        assert torch.equal(m, moved[..., k])
    assert volume_annotation_slices(vol.numpy(), SHAPE, axis).keys() == slices.keys()


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, float("nan"), float("inf")])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_non_binary_values_are_found_in_any_slice(bad: float, axis: int) -> None:
    """Including a slice whose only non-zero value is the bad one, and a bad value next to valid 1s."""
    for where in ((4, 4, 4), (2, 2, 1)):  # alone in its slices / inside the annotated block
        vol = _annotation_volume(torch.float32)
        vol[where] = bad
        shown = "nan" if bad != bad else ("inf" if bad == float("inf") else str(bad))
        with pytest.raises(ValueError, match=rf"annotation must be binary .* found e.g. \[{shown}\]"):
            volume_annotation_slices(vol, SHAPE, axis)
        with pytest.raises(ValueError, match=rf"found e.g. \[{shown}\]"):
            validate_volume_annotation(vol, SHAPE)


def test_volume_annotation_slices_errors() -> None:
    with pytest.raises(ValueError, match="has no annotated slice: it is all zero"):
        volume_annotation_slices(torch.zeros(SHAPE), SHAPE, 2)
    with pytest.raises(ValueError, match=r"annotation shape \(8, 6, 4\) does not match the image shape"):
        volume_annotation_slices(torch.zeros((8, 6, 4)), SHAPE, 2)
    with pytest.raises(ValueError, match="axis must be a dimension of the volume shape"):
        volume_annotation_slices(_annotation_volume(torch.float32), SHAPE, 3)
    with pytest.raises(ValueError, match="must be binary"):
        volume_annotation_slices(_annotation_volume(torch.float32).to(torch.complex64), SHAPE, 2)
    with pytest.raises(ValueError, match=r"found e.g. \[255\]"):
        volume_annotation_slices(_annotation_volume(torch.uint8) * 255, SHAPE, 0)
