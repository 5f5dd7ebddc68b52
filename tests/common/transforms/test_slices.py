"""Tests of common.transforms.slices: deterministic slices of a structure (validation of 2D click models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from common.transforms import StructureSlicesd, evenly_spaced

TYPES: list[Callable[[Any], Any]] = [np.asarray, torch.as_tensor, MetaTensor]


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """Image ``(1, 6, 7, 12)`` with distinct values everywhere; label on slices 2..9 along axis 2, 1..3 along 0."""
    image = np.arange(6 * 7 * 12, dtype=np.float32).reshape(1, 6, 7, 12)
    label = np.zeros((1, 6, 7, 12), dtype=np.uint8)
    label[0, 1:4, 2:5, 2:10] = 1
    return image, label


# --- evenly_spaced --------------------------------------------------------------------------------------------------


def test_evenly_spaced_spreads_from_first_to_last() -> None:
    idx = np.arange(10, 30)
    out = evenly_spaced(idx, 5)
    assert out.tolist() == [10, 15, 20, 24, 29]
    assert evenly_spaced(idx, 2).tolist() == [10, 29]
    assert evenly_spaced(idx, 1).tolist() == [10]


def test_evenly_spaced_returns_all_when_few_and_never_duplicates() -> None:
    idx = np.array([3, 4, 8])
    assert evenly_spaced(idx, 3).tolist() == [3, 4, 8]
    assert evenly_spaced(idx, 10).tolist() == [3, 4, 8]
    out = evenly_spaced(np.arange(7), 6)
    assert len(out) == len(set(out.tolist())) == 6
    assert out[0] == 0
    assert out[-1] == 6


def test_evenly_spaced_rejects_count_below_one() -> None:
    with pytest.raises(ValueError, match="count must be >= 1"):
        evenly_spaced(np.arange(5), 0)


# --- StructureSlicesd -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to_type", TYPES)
def test_slices_hold_the_structure_and_match_the_volume(to_type: Callable[[Any], Any]) -> None:
    image, label = _volume()
    data = {"image": to_type(image), "label": to_type(label), "case_id": "phantom_000"}
    out = StructureSlicesd(keys=["image", "label"], num_slices=3)(data)
    assert isinstance(out, list)
    assert [d["slice"] for d in out] == [2, 6, 9]  # evenly spaced over slices 2..9, first and last included
    for d in out:
        k = d["slice"]
        assert tuple(d["image"].shape) == (1, 6, 7)
        assert tuple(d["label"].shape) == (1, 6, 7)
        np.testing.assert_array_equal(np.asarray(d["image"]), image[..., k])
        np.testing.assert_array_equal(np.asarray(d["label"]), label[..., k])
        assert np.asarray(d["label"]).any()
        assert d["case_id"] == "phantom_000"  # other keys are carried along
    assert "slice" not in data  # the input dict is not modified
    assert data["image"].shape == (1, 6, 7, 12)


@pytest.mark.parametrize(("axis", "expected"), [(0, [1, 2, 3]), (1, [2, 3, 4]), (2, [2, 4, 6, 7, 9])])
def test_slices_along_each_axis(axis: int, expected: list[int]) -> None:
    image, label = _volume()
    out = StructureSlicesd(keys=["image", "label"], axis=axis, num_slices=5, slice_key="k")(
        {"image": image, "label": label}
    )
    assert [d["k"] for d in out] == expected
    for d in out:
        np.testing.assert_array_equal(np.asarray(d["image"]), np.take(image, d["k"], axis=axis + 1))


def test_slices_keep_meta_tensor() -> None:
    image, label = _volume()
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))
    out = StructureSlicesd(keys=["image", "label"], num_slices=2)(
        {"image": MetaTensor(image, affine=affine, meta={"filename_or_obj": "img.nii.gz"}), "label": label}
    )
    assert isinstance(out[0]["image"], MetaTensor)
    assert out[0]["image"].meta["filename_or_obj"] == "img.nii.gz"
    torch.testing.assert_close(
        torch.diagonal(out[0]["image"].affine)[:2], torch.tensor([0.8, 0.8], dtype=torch.float64)
    )


def test_slices_use_every_label_channel() -> None:
    """A multi-channel (e.g. one-hot) label: a slice holds the structure if any channel has foreground there."""
    image, label = _volume()
    two = np.concatenate([np.zeros_like(label), label])
    out = StructureSlicesd(keys=["image"], num_slices=20)({"image": image, "label": two})
    assert [d["slice"] for d in out] == list(range(2, 10))


def test_slices_are_deterministic() -> None:
    image, label = _volume()
    t = StructureSlicesd(keys=["image", "label"], num_slices=4)
    a, b = t({"image": image, "label": label}), t({"image": image, "label": label})
    assert [d["slice"] for d in a] == [d["slice"] for d in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x["image"]), np.asarray(y["image"]))


def test_single_slice_structure_gives_one_slice() -> None:
    image, _ = _volume()
    label = np.zeros((1, 6, 7, 12), dtype=np.uint8)
    label[0, 3, 3, 5] = 1
    out = StructureSlicesd(keys=["image", "label"], num_slices=4)({"image": image, "label": label})
    assert [d["slice"] for d in out] == [5]


def test_slices_errors() -> None:
    image, label = _volume()
    with pytest.raises(ValueError, match="no foreground"):
        StructureSlicesd(keys=["image"])({"image": image, "label": np.zeros_like(label)})
    with pytest.raises(ValueError, match=r"must be \(C, H, W, D\)"):
        StructureSlicesd(keys=["image"])({"image": image[..., 0], "label": label[..., 0]})
    with pytest.raises(ValueError, match="axis"):
        StructureSlicesd(keys=["image"], axis=3)
    with pytest.raises(ValueError, match="num_slices"):
        StructureSlicesd(keys=["image"], num_slices=0)


def test_instantiable_from_bundle_config() -> None:
    parser = ConfigParser(
        {"t": {"_target_": "common.transforms.StructureSlicesd", "keys": ["image", "label"], "num_slices": 2}}
    )
    t = parser.get_parsed_content("t")
    assert isinstance(t, StructureSlicesd)
    assert t.num_slices == 2
