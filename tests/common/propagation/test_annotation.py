"""Tests of the annotation transforms of the slice-propagation inference pipeline.

``CheckAnnotationd`` (input validation), ``slice_axis_in_array`` (the stored array axis along a RAS axis) and
``RestoreUserSlicesd`` (the user's slices written back exactly after the prediction was inverted into the input
image's space), including an end-to-end check through MONAI's ``Orientationd`` and ``Invertd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, CopyItemsd, Invertd, Orientationd
from scipy import ndimage

from common.propagation import (
    CheckAnnotationd,
    RestoreUserSlicesd,
    StopAtEmptyUserSlicesd,
    reachable_slices,
    slice_axis_in_array,
)

SHAPE = (10, 12, 14)  # all dims differ: a wrong axis or a transpose cannot go unnoticed
IMG_FILE = "/data/imagesTs/case_007.nii.gz"
ANN_FILE = "/data/annotations/case_007_user.nii.gz"

#: RAS: array axes (x, y, z) along (R, A, S), anisotropic spacing.
RAS = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
#: Sagittal-ish storage: array axis 0 runs along S, axis 1 along L (-R), axis 2 along P (-A).
PERMUTED = np.array([[0, -0.8, 0, 10.0], [0, 0, -0.9, 20.0], [2.5, 0, 0, -30.0], [0, 0, 0, 1]])
#: LPS (DICOM-like) storage with S as array axis 0 running downwards (I): flipped and permuted.
LPS_S_FIRST = np.array([[0, -0.8, 0, 10.0], [0, 0, -0.9, 20.0], [-2.5, 0, 0, 30.0], [0, 0, 0, 1]])

TYPES: list[Callable[[np.ndarray], Any]] = [
    np.asarray,
    torch.as_tensor,
    lambda x: MetaTensor(x, affine=torch.as_tensor(RAS)),
]


def _meta(x: np.ndarray, affine: np.ndarray, filename: str) -> MetaTensor:
    return MetaTensor(torch.as_tensor(x), affine=torch.as_tensor(affine), meta={"filename_or_obj": filename})


def _image(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 300.0, (1, *shape)).astype(np.float32)


def _annotation(axis: int, slices: tuple[int, ...], shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """``(1, *shape)`` float annotation: an asymmetric blob on ``slices`` along array ``axis``, 0 elsewhere."""
    ann = np.zeros(shape, dtype=np.float32)
    for n, k in enumerate(slices):
        plane = np.zeros([s for i, s in enumerate(shape) if i != axis], dtype=np.float32)
        plane[1 + n : plane.shape[0] - 2, 2 : plane.shape[1] - 3 + n] = 1
        plane[2 + n, 3] = 0  # a hole: not symmetric, not convex
        idx: list[slice | int] = [slice(None)] * 3
        idx[axis] = k
        ann[tuple(idx)] = plane
    return ann[None]


def _take(x: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice ``k`` along spatial ``axis`` of a channel-first ``(1, H, W, D)`` array, channel dropped."""
    return np.take(np.asarray(x)[0], k, axis=axis)


# ---------------------------------------------------------------------------------------------- CheckAnnotationd


@pytest.mark.parametrize("to_type", TYPES)
def test_check_passes_good_pair_and_changes_nothing(to_type: Callable[[np.ndarray], Any]) -> None:
    image, ann = _image(), _annotation(2, (3, 9))
    data = {"image": to_type(image.copy()), "annotation": to_type(ann.copy()), "other": 1}
    out = CheckAnnotationd()(data)
    assert out is not data
    assert set(out) == {"image", "annotation", "other"}
    assert out["image"] is data["image"]
    assert out["annotation"] is data["annotation"]
    np.testing.assert_array_equal(np.asarray(out["image"]), image)
    np.testing.assert_array_equal(np.asarray(out["annotation"]), ann)


def test_check_accepts_bool_and_integer_annotations_with_their_affines() -> None:
    ann = _annotation(0, (4,))
    for dtype in (bool, np.uint8, np.int16):
        data = {
            "image": _meta(_image(), PERMUTED, IMG_FILE),
            "annotation": _meta(ann.astype(dtype), PERMUTED + 1e-5, ANN_FILE),  # within affine_atol
        }
        CheckAnnotationd()(data)


def test_check_custom_keys() -> None:
    data = {"img": _image(), "ann": _annotation(2, (5,))}
    assert CheckAnnotationd(image_key="img", annotation_key="ann")(data)["ann"] is data["ann"]
    with pytest.raises(KeyError):
        CheckAnnotationd()(data)


@pytest.mark.parametrize(
    ("image", "annotation", "match"),
    [
        (_image(shape=SHAPE[:2]), _annotation(2, (3,))[..., 0], r"single-channel 3D volume.*2D image"),
        (_image()[0], _annotation(2, (3,))[0], r"single-channel 3D volume"),  # channel missing
        (np.concatenate([_image(), _image(1)]), _annotation(2, (3,)), r"single-channel 3D volume.*\(2, 10, 12, 14\)"),
        (_image(), _annotation(2, (3,))[..., :-1], r"annotation.*shape \(10, 12, 13\) does not match.*\(10, 12, 14\)"),
        (_image(), _annotation(2, (3,)) * 2, r"annotation.*must be binary.*2\.0"),
        (_image(), np.where(_annotation(2, (3,)) > 0, 1.0, 0.5), r"annotation.*must be binary"),
        (_image(), np.zeros((1, *SHAPE)), r"annotation.*no annotated slice"),
    ],
    ids=["2d_image", "no_channel", "two_channels", "shape_mismatch", "multi_label", "soft_mask", "all_zero"],
)
def test_check_rejects_bad_input(image: np.ndarray, annotation: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CheckAnnotationd()({"image": image, "annotation": annotation})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_rejects_non_finite_image_naming_the_file(bad: float) -> None:
    image = _image()
    image[0, 3, 4, 5] = bad
    data = {"image": _meta(image, RAS, IMG_FILE), "annotation": _meta(_annotation(2, (3,)), RAS, ANN_FILE)}
    with pytest.raises(ValueError, match=rf"image \({IMG_FILE}\) contains non-finite values") as err:
        CheckAnnotationd()(data)
    assert ("1 NaN" if np.isnan(bad) else "1 infinite") in str(err.value)


def test_check_2d_image_error_names_the_file() -> None:
    data = {"image": _meta(_image(shape=(10, 12)), np.eye(4), IMG_FILE), "annotation": _annotation(2, (3,))}
    with pytest.raises(ValueError, match=rf"image \({IMG_FILE}\) must be a single-channel 3D volume"):
        CheckAnnotationd()(data)


def test_check_rejects_annotation_in_another_space_naming_the_files() -> None:
    data = {
        "image": _meta(_image(), RAS, IMG_FILE),
        "annotation": _meta(_annotation(2, (3,)), PERMUTED, ANN_FILE),
    }
    with pytest.raises(ValueError, match="affines differ") as err:
        CheckAnnotationd()(data)
    assert ANN_FILE in str(err.value)
    assert IMG_FILE in str(err.value)


def test_check_affine_tolerance_is_configurable() -> None:
    shifted = RAS.copy()
    shifted[0, 3] += 0.01  # 0.01 mm
    data = {"image": _meta(_image(), RAS, IMG_FILE), "annotation": _meta(_annotation(2, (3,)), shifted, ANN_FILE)}
    with pytest.raises(ValueError, match="affines differ"):
        CheckAnnotationd()(data)
    CheckAnnotationd(affine_atol=0.1)(data)


# ------------------------------------------------------------------------------------------- slice_axis_in_array


@pytest.mark.parametrize(
    ("affine", "world_axis", "expected"),
    [
        (np.eye(4), 2, 2),
        (RAS, 2, 2),
        (RAS, 0, 0),
        (np.diag([-1.0, -1.0, 1.0, 1.0]), 2, 2),  # LPS, axial storage
        (PERMUTED, 2, 0),
        (PERMUTED, 0, 1),
        (PERMUTED, 1, 2),
        (LPS_S_FIRST, 2, 0),
        (nib.affines.from_matvec(np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])), 2, 1),  # coronal
    ],
)
def test_slice_axis_in_array(affine: np.ndarray, world_axis: int, expected: int) -> None:
    assert slice_axis_in_array(affine, world_axis) == expected


def test_slice_axis_in_array_slightly_oblique() -> None:
    rotation = nib.eulerangles.euler2mat(z=0.1, y=0.05)  # a few degrees: still clearly sagittal storage
    affine = nib.affines.from_matvec(rotation @ PERMUTED[:3, :3], PERMUTED[:3, 3])
    assert slice_axis_in_array(affine, 2) == 0


def test_slice_axis_in_array_agrees_with_orientationd() -> None:
    """The array axis found is the one ``Orientationd("RAS")`` moves to the last place."""
    x = MetaTensor(torch.arange(np.prod(SHAPE), dtype=torch.float32).reshape(1, *SHAPE), affine=LPS_S_FIRST)
    ras = Orientationd(keys="x", axcodes="RAS")({"x": x})["x"]
    assert ras.shape[-1] == SHAPE[slice_axis_in_array(LPS_S_FIRST, 2)]


def test_slice_axis_in_array_rejects_degenerate_affine() -> None:
    with pytest.raises(ValueError, match="cannot find the array axis along world axis 2"):
        slice_axis_in_array(np.diag([1.0, 1.0, 0.0, 1.0]), 2)


@pytest.mark.parametrize("world_axis", [-1, 3, True])
def test_slice_axis_in_array_rejects_bad_world_axis(world_axis: int) -> None:
    with pytest.raises(ValueError, match="world_axis must be 0"):
        slice_axis_in_array(RAS, world_axis)


# --------------------------------------------------------------------------------------------- RestoreUserSlicesd


def _check_restored(out: np.ndarray, pred: np.ndarray, ann: np.ndarray, axis: int, slices: tuple[int, ...]) -> None:
    """User slices equal the annotation exactly; every other slice is the binarised prediction."""
    assert out.shape == pred.shape
    assert set(np.unique(out)) <= {0.0, 1.0}
    for k in range(out.shape[axis + 1]):
        expected = _take(ann, axis, k) if k in slices else (_take(pred, axis, k) > 0.5)
        np.testing.assert_array_equal(_take(out, axis, k), expected.astype(np.float32), err_msg=f"slice {k}")


@pytest.mark.parametrize("to_type", [np.asarray, torch.as_tensor, lambda x: _meta(x, RAS, "pred.nii.gz")])
@pytest.mark.parametrize(
    ("affine", "axis", "slices"),
    [(RAS, 2, (3, 9)), (PERMUTED, 0, (2, 7)), (LPS_S_FIRST, 0, (0, 5, 9))],
    ids=["ras", "permuted", "lps_s_first"],
)
def test_restore_writes_user_slices_exactly(
    to_type: Callable[[np.ndarray], Any], affine: np.ndarray, axis: int, slices: tuple[int, ...]
) -> None:
    ann = _annotation(axis, slices)
    pred = np.random.default_rng(1).random((1, *SHAPE)).astype(np.float32)  # disagrees with the user everywhere
    assert all(not np.array_equal(_take(pred, axis, k) > 0.5, _take(ann, axis, k) > 0) for k in slices)
    user = _meta(ann, affine, ANN_FILE)
    out = RestoreUserSlicesd(keys="pred", annotation_key="user_annotation")(
        {"pred": to_type(pred), "user_annotation": user}
    )
    _check_restored(np.asarray(out["pred"]), pred, ann, axis, slices)
    assert type(out["pred"]) is type(to_type(pred))


def test_restore_keeps_annotation_and_prediction_inputs_unchanged() -> None:
    ann = _annotation(0, (2, 7))
    user = _meta(ann.copy(), PERMUTED, ANN_FILE)
    pred_array = np.random.default_rng(2).random((1, *SHAPE)).astype(np.float32)
    pred = _meta(pred_array.copy(), PERMUTED, "pred.nii.gz")
    data = {"pred": pred, "user_annotation": user}
    out = RestoreUserSlicesd()(data)
    assert out is not data
    assert data["pred"] is pred
    assert out["user_annotation"] is user
    np.testing.assert_array_equal(user.numpy(), ann)
    np.testing.assert_array_equal(user.affine.numpy(), PERMUTED)
    assert user.meta["filename_or_obj"] == ANN_FILE
    np.testing.assert_array_equal(pred.numpy(), pred_array)


def test_restore_preserves_prediction_meta() -> None:
    ann = _annotation(0, (4,))
    pred = _meta(np.random.default_rng(3).random((1, *SHAPE)).astype(np.float32), PERMUTED, "pred.nii.gz")
    pred.meta["spatial_shape"] = np.array(SHAPE)
    pred.meta["custom"] = "kept"
    out = RestoreUserSlicesd()({"pred": pred, "user_annotation": _meta(ann, PERMUTED, ANN_FILE)})["pred"]
    assert isinstance(out, MetaTensor)
    assert out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "pred.nii.gz"
    assert out.meta["custom"] == "kept"
    np.testing.assert_array_equal(out.meta["spatial_shape"], SHAPE)
    np.testing.assert_allclose(out.affine.numpy(), PERMUTED)
    _check_restored(out.numpy(), pred.numpy(), ann, 0, (4,))


def test_restore_without_affine_uses_the_given_axis() -> None:
    ann = _annotation(1, (5,))
    pred = np.zeros((1, *SHAPE), dtype=np.float32)
    out = RestoreUserSlicesd(axis=1)({"pred": pred, "user_annotation": ann})["pred"]
    _check_restored(out, pred, ann, 1, (5,))


def test_restore_several_keys() -> None:
    ann = _annotation(2, (6,))
    preds = {f"p{i}": np.random.default_rng(i).random((1, *SHAPE)).astype(np.float32) for i in range(2)}
    out = RestoreUserSlicesd(keys=["p0", "p1"])({**preds, "user_annotation": _meta(ann, RAS, ANN_FILE)})
    for key, pred in preds.items():
        _check_restored(out[key], pred, ann, 2, (6,))


def test_restore_shape_mismatch_raises() -> None:
    ann = _meta(_annotation(2, (3,)), RAS, ANN_FILE)
    with pytest.raises(ValueError, match=r"pred shape \(1, 10, 12, 13\) differs from user_annotation"):
        RestoreUserSlicesd()({"pred": np.zeros((1, 10, 12, 13), dtype=np.float32), "user_annotation": ann})
    with pytest.raises(ValueError, match=r"user_annotation must be \(1, H, W, D\)"):
        RestoreUserSlicesd()({"pred": np.zeros((1, *SHAPE)), "user_annotation": np.zeros(SHAPE)})


def test_restore_end_to_end_through_orientation_and_invertd() -> None:
    """As in the inference config: keep a copy of the annotation, orient to RAS, predict in RAS, invert the
    prediction into the input space with ``Invertd``, restore the user's slices."""
    ann = _annotation(0, (2, 7))  # axial slices of an S-first LPS volume are array axis 0
    data = {"image": _meta(_image(), LPS_S_FIRST, IMG_FILE), "annotation": _meta(ann, LPS_S_FIRST, ANN_FILE)}
    preprocessing = Compose(
        [
            CheckAnnotationd(),
            CopyItemsd(keys="annotation", names="user_annotation"),
            Orientationd(keys=["image", "annotation"], axcodes="RAS"),
        ]
    )
    d = preprocessing(data)
    ras_ann = d["annotation"].numpy()[0] > 0
    assert ras_ann.shape == (SHAPE[1], SHAPE[2], SHAPE[0])  # S last
    assert np.flatnonzero(ras_ann.any(axis=(0, 1))).tolist() == [SHAPE[0] - 1 - 7, SHAPE[0] - 1 - 2]  # flipped

    # a prediction in RAS space that is wrong on the user's slices: dilated, with a hole punched in
    pred = ndimage.binary_dilation(ras_ann, iterations=2)
    pred[:, :, :] &= ~(np.arange(pred.shape[0])[:, None, None] == 4)
    d["pred"] = MetaTensor(torch.as_tensor(pred[None].astype(np.float32)), affine=d["image"].affine)
    post = Compose(
        [
            Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True, to_tensor=True),
            RestoreUserSlicesd(keys="pred", annotation_key="user_annotation"),
        ]
    )
    out = post(d)
    restored = out["pred"]
    assert tuple(restored.shape) == (1, *SHAPE)
    np.testing.assert_allclose(restored.affine.numpy(), LPS_S_FIRST, atol=1e-6)
    inverted = np.transpose(pred[:, :, ::-1], (2, 0, 1))[None]  # RAS (L->R... ) back to the stored layout
    inverted = inverted[:, :, ::-1, ::-1]  # axes 1, 2 of the stored array run along L and P
    _check_restored(restored.numpy(), inverted.astype(np.float32), ann, 0, (2, 7))
    # the dilation is kept next to the user's slices: the output is not just the annotation
    assert ann[0, 3].sum() == 0
    assert restored.numpy()[0, 3].sum() > 0


def test_transforms_instantiable_from_bundle_config() -> None:
    parser = ConfigParser(
        {
            "check": {"_target_": "common.propagation.CheckAnnotationd", "image_key": "image", "annotation_key": "a"},
            "restore": {"_target_": "common.propagation.RestoreUserSlicesd", "keys": "pred", "annotation_key": "u"},
        }
    )
    check, restore = parser.get_parsed_content("check"), parser.get_parsed_content("restore")
    assert isinstance(check, CheckAnnotationd)
    assert check.annotation_key == "a"
    assert isinstance(restore, RestoreUserSlicesd)
    assert restore.annotation_key == "u"
    assert restore.axis == 2


@pytest.mark.parametrize(
    ("annotated", "empty", "reached"),
    [
        ([5], [], list(range(10))),
        ([5], [7], [0, 1, 2, 3, 4, 5, 6]),
        ([5], [2, 7], [3, 4, 5, 6]),
        ([1, 8], [5], [0, 1, 2, 3, 4, 6, 7, 8, 9]),  # each side reached from its own annotated slice
        ([4], [5, 3], [4]),
    ],
)
def test_reachable_slices_stop_at_empty_user_slices(annotated: list[int], empty: list[int], reached: list[int]) -> None:
    assert np.flatnonzero(reachable_slices(10, annotated, empty)).tolist() == reached


def test_reachable_slices_rejects_bad_indices() -> None:
    with pytest.raises(ValueError, match=r"empty slice indices \[10\] lie outside"):
        reachable_slices(10, [2], [10])
    with pytest.raises(ValueError, match=r"slices \[2\] are both annotated and marked empty"):
        reachable_slices(10, [2], [2])


@pytest.mark.parametrize("stored_axis", [2, 0])
def test_stop_at_empty_user_slices_clears_beyond_the_erased_slice(stored_axis: int) -> None:
    # a volume whose I-S axis is stored as array axis `stored_axis`; the user drew slice 3, erased slice 6
    affine = np.eye(4) if stored_axis == 2 else np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    shape = [8, 8, 8]
    annotation = np.zeros(shape, dtype=np.float32)
    pred = np.zeros(shape, dtype=np.float32)
    index: list[Any] = [slice(2, 5), slice(2, 5), slice(2, 5)]
    index[stored_axis] = slice(0, 8)
    pred[tuple(index)] = 1.0  # the structure predicted on every slice along the axis
    index[stored_axis] = 3
    annotation[tuple(index)] = 1.0
    data = {
        "pred": MetaTensor(torch.as_tensor(pred)[None], affine=torch.as_tensor(affine)),
        "user_annotation": MetaTensor(torch.as_tensor(annotation)[None], affine=torch.as_tensor(affine)),
        "empty_slices": [6],
    }
    out = StopAtEmptyUserSlicesd()(data)["pred"]
    kept = np.moveaxis(np.asarray(out[0]), stored_axis, -1).any(axis=(0, 1))
    assert np.flatnonzero(kept).tolist() == [0, 1, 2, 3, 4, 5]
    assert isinstance(out, MetaTensor)
    no_barrier = StopAtEmptyUserSlicesd()({**data, "empty_slices": []})["pred"]
    np.testing.assert_array_equal(np.asarray(no_barrier[0]), pred)
