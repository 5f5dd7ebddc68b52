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
    validate_slice_annotation,
    validate_volume_annotation,
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
