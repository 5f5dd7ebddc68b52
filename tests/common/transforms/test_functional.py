"""Tests of the pure array functions behind the slice-propagation prior transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms import (
    annotated_slice_indices,
    annotation_from_slices,
    foreground_per_slice,
    jitter_mask_about_centre,
    middle_slice_index,
)

TYPES = [np.asarray, torch.as_tensor, MetaTensor]
MODES = ["linear", "nearest"]


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.uint8)


def _centre(shape: tuple[int, int]) -> tuple[float, float]:
    return (shape[0] - 1) / 2, (shape[1] - 1) / 2


def _np(x: object) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _expected_position(point: tuple[float, float], shape: tuple[int, int], angle_deg: float, scale: float):
    """Documented forward map: offsets (u, v) -> scale * (u cos a - v sin a, u sin a + v cos a)."""
    cr, cc = _centre(shape)
    u, v = point[0] - cr, point[1] - cc
    a = math.radians(angle_deg)
    return cr + scale * (u * math.cos(a) - v * math.sin(a)), cc + scale * (u * math.sin(a) + v * math.cos(a))


# ---------------------------------------------------------------- jitter_mask_about_centre


@pytest.mark.parametrize("to_type", TYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(33, 40), (2, 33, 40)])
def test_identity_is_exact_and_keeps_type(to_type, mode, shape):
    rng = np.random.default_rng(0)
    mask = (rng.random(shape) > 0.6).astype(np.uint8)
    out = jitter_mask_about_centre(to_type(mask), angle_deg=0.0, scale=1.0, mode=mode)
    assert type(out) is type(to_type(mask))
    assert out.shape == mask.shape
    assert out.dtype == to_type(mask).dtype
    np.testing.assert_array_equal(_np(out), mask)


def test_metatensor_meta_is_kept():
    mask = MetaTensor(torch.as_tensor(_disc((32, 32), (15.5, 15.5), 6))[None], meta={"filename_or_obj": "a.nii.gz"})
    out = jitter_mask_about_centre(mask, 3.0, 1.1)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "a.nii.gz"


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int64, np.bool_])
def test_dtype_is_kept(dtype):
    mask = _disc((32, 32), (15.5, 15.5), 8).astype(dtype)
    out = jitter_mask_about_centre(mask, 10.0, 0.9)
    assert out.dtype == mask.dtype
    assert set(np.unique(out).tolist()) == {0, 1}


@pytest.mark.parametrize("shape", [(40, 40), (41, 41), (36, 45)])
@pytest.mark.parametrize("scale", [0.9, 1.15])
def test_mask_symmetric_about_centre_stays_symmetric(shape, scale):
    # an ellipse centred on the image centre is symmetric under both flips and under the 180 deg rotation
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cr, cc = _centre(shape)
    mask = (((rows - cr) / 9.3) ** 2 + ((cols - cc) / 13.7) ** 2 <= 1).astype(np.uint8)
    assert np.array_equal(mask, mask[::-1])
    assert np.array_equal(mask, mask[:, ::-1])
    scaled = jitter_mask_about_centre(mask, 0.0, scale)
    np.testing.assert_array_equal(scaled, scaled[::-1])
    np.testing.assert_array_equal(scaled, scaled[:, ::-1])
    rotated = jitter_mask_about_centre(mask, 7.0, scale)  # rotation keeps the point symmetry only
    np.testing.assert_array_equal(rotated, rotated[::-1, ::-1])
    assert not np.array_equal(rotated, rotated[::-1])
    centroid = np.argwhere(rotated).mean(axis=0)
    np.testing.assert_allclose(centroid, (cr, cc), atol=1e-9)


@pytest.mark.parametrize("scale", [0.8, 1.2])
@pytest.mark.parametrize("shape", [(96, 96), (95, 104)])
def test_scaling_a_centred_disc_scales_its_radius(shape, scale):
    radius = 25.0
    centre = _centre(shape)
    disc = _disc(shape, centre, radius)
    out = jitter_mask_about_centre(disc, 0.0, scale)
    # area-equivalent radius, relative to that of the (discrete) input disc, within 1 %
    assert math.sqrt(out.sum() / disc.sum()) == pytest.approx(scale, rel=0.01)
    # and pointwise: between the discs of radius scale * r -+ 1 pixel
    assert np.all(out >= _disc(shape, centre, scale * radius - 1))
    assert np.all(out <= _disc(shape, centre, scale * radius + 1))
    np.testing.assert_allclose(np.argwhere(out).mean(axis=0), centre, atol=1e-9)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("shape", "dot", "expected"),
    [
        ((41, 41), (20, 30), (10, 20)),  # right of the centre -> above it (counter-clockwise as displayed)
        ((31, 41), (15, 25), (10, 20)),  # non-square: rotation is isotropic in pixels, not in [-1, 1] coordinates
        ((32, 32), (10, 20), (11, 10)),  # even size: centre (15.5, 15.5); offsets (-5.5, 4.5) -> (-4.5, -5.5)
    ],
)
def test_rotating_an_off_centre_dot_by_90_degrees(mode, shape, dot, expected):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[dot] = 1
    out = jitter_mask_about_centre(mask, 90.0, 1.0, mode=mode)
    assert np.argwhere(out).tolist() == [list(expected)]
    assert np.argwhere(jitter_mask_about_centre(out, -90.0, 1.0, mode=mode)).tolist() == [list(dot)]


@pytest.mark.parametrize(("angle", "scale"), [(30.0, 1.0), (-25.0, 1.0), (10.0, 1.1), (0.0, 0.9)])
def test_off_centre_blob_moves_about_the_image_centre_not_its_own(angle, scale):
    shape = (64, 72)
    blob_centre = (20.0, 50.0)
    mask = _disc(shape, blob_centre, 4.0)
    out = jitter_mask_about_centre(mask, angle, scale)
    np.testing.assert_allclose(
        np.argwhere(out).mean(axis=0), _expected_position(blob_centre, shape, angle, scale), atol=0.25
    )


def test_channels_get_the_same_transform():
    a = _disc((40, 40), (15.0, 25.0), 6)
    b = _disc((40, 40), (25.0, 12.0), 4)
    out = jitter_mask_about_centre(np.stack([a, b]), 12.0, 1.07)
    np.testing.assert_array_equal(out[0], jitter_mask_about_centre(a, 12.0, 1.07))
    np.testing.assert_array_equal(out[1], jitter_mask_about_centre(b, 12.0, 1.07))


def test_linear_binarises_and_nearest_keeps_values():
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:20, 10:30] = 3
    mask[22:30, 5:35] = 7
    nearest = jitter_mask_about_centre(mask, 4.0, 1.05, mode="nearest")
    assert set(np.unique(nearest).tolist()) == {0, 3, 7}
    linear = jitter_mask_about_centre(mask, 4.0, 1.05, mode="linear")
    assert set(np.unique(linear).tolist()) == {0, 1}
    np.testing.assert_array_equal(linear, jitter_mask_about_centre((mask > 0).astype(np.uint8), 4.0, 1.05))


def test_content_leaving_the_image_is_lost():
    mask = np.ones((20, 20), dtype=np.uint8)
    out = jitter_mask_about_centre(mask, 45.0, 1.0)
    assert out[0, 0] == 0
    assert out[10, 10] == 1
    assert jitter_mask_about_centre(mask, 0.0, 3.0).all()  # growing a full mask keeps it full


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"angle_deg": 0.0, "scale": 0.0}, "scale must be > 0"),
        ({"angle_deg": 0.0, "scale": -1.1}, "scale must be > 0"),
        ({"angle_deg": 0.0, "scale": float("nan")}, "scale must be finite"),
        ({"angle_deg": float("inf"), "scale": 1.0}, "angle_deg must be finite"),
        ({"angle_deg": True, "scale": 1.0}, "angle_deg must be a real number"),
        ({"angle_deg": 0.0, "scale": 1.0, "mode": "bicubic"}, "mode must be one of"),
    ],
)
def test_jitter_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jitter_mask_about_centre(np.zeros((8, 8)), **kwargs)


@pytest.mark.parametrize("shape", [(8,), (1, 1, 8, 8), (0, 8)])
def test_jitter_bad_shapes(shape):
    with pytest.raises(ValueError, match="mask must"):
        jitter_mask_about_centre(np.zeros(shape), 1.0, 1.0)


# ---------------------------------------------------------------- slice helpers


def _volume() -> np.ndarray:
    vol = np.zeros((6, 7, 12), dtype=np.uint8)
    vol[2:4, 3:5, [3, 4, 8]] = 1
    return vol


@pytest.mark.parametrize("to_type", TYPES)
def test_annotated_slice_indices(to_type):
    vol = _volume()
    assert annotated_slice_indices(to_type(vol)) == [3, 4, 8]
    assert annotated_slice_indices(to_type(vol), axis=0) == [2, 3]
    assert annotated_slice_indices(to_type(vol), axis=-2) == [3, 4]
    assert annotated_slice_indices(to_type(np.zeros((4, 4, 4)))) == []
    assert all(type(i) is int for i in annotated_slice_indices(to_type(vol)))
    np.testing.assert_array_equal(foreground_per_slice(to_type(vol)), [k in (3, 4, 8) for k in range(12)])


@pytest.mark.parametrize(("shape", "axis"), [((1, 6, 7, 12), 2), ((6, 7), 0), ((6, 7, 12), 3), ((6, 7, 12), True)])
def test_annotated_slice_indices_errors(shape, axis):
    with pytest.raises(ValueError, match=r"volume must be 3D|axis must be"):
        annotated_slice_indices(np.zeros(shape), axis=axis)


@pytest.mark.parametrize("to_type", TYPES)
def test_annotation_from_slices_places_masks(to_type):
    rng = np.random.default_rng(1)
    a, b = (rng.random((6, 7)) > 0.5), (rng.random((6, 7)) * 3).astype(np.int64)
    vol = annotation_from_slices((6, 7, 12), {2: to_type(a), 9: to_type(b)})
    assert vol.dtype == np.uint8
    assert vol.shape == (6, 7, 12)
    np.testing.assert_array_equal(vol[..., 2], a)
    np.testing.assert_array_equal(vol[..., 9], b > 0)
    assert vol.sum() == a.sum() + (b > 0).sum()
    assert annotated_slice_indices(vol) == [2, 9]


def test_annotation_from_slices_other_axis_and_round_trip():
    mask = np.ones((7, 12), dtype=np.uint8)
    vol = annotation_from_slices([6, 7, 12], {4: mask}, axis=0)
    assert vol[4].all()
    assert vol.sum() == mask.sum()
    assert annotated_slice_indices(vol, axis=0) == [4]
    assert annotation_from_slices((6, 7, 12), {}).sum() == 0


@pytest.mark.parametrize(
    ("shape", "slices", "match"),
    [
        ((6, 7, 12), {3: np.ones((7, 6))}, r"mask of slice 3 has shape \(7, 6\), expected \(6, 7\)"),
        ((6, 7, 12), {3: np.ones((6, 7, 1))}, "mask of slice 3 has shape"),
        ((6, 7, 12), {12: np.ones((6, 7))}, "slice index 12 is outside the volume"),
        ((6, 7, 12), {-1: np.ones((6, 7))}, "slice index -1 is negative"),
        ((6, 7, 12), {1.0: np.ones((6, 7))}, "slice index must be an integer"),
        ((6, 7), {0: np.ones((6,))}, "shape must be three positive integers"),
        ((6, 0, 12), {}, "shape must be three positive integers"),
    ],
)
def test_annotation_from_slices_errors(shape, slices, match):
    with pytest.raises(ValueError, match=match):
        annotation_from_slices(shape, slices)


@pytest.mark.parametrize("to_type", TYPES)
def test_middle_slice_index(to_type):
    vol = np.zeros((4, 4, 20), dtype=np.uint8)
    vol[1:3, 1:3, 3:8] = 1  # slices 3..7 -> 5
    assert middle_slice_index(to_type(vol)) == 5
    vol[1:3, 1:3, 8] = 1  # slices 3..8 -> 5.5 rounds up to 6
    assert middle_slice_index(to_type(vol)) == 6
    vol[1:3, 1:3, 3] = 0
    vol[1:3, 1:3, 9] = 1  # slices 4..9 -> 6.5 rounds up to 7 (not to the even 6)
    assert middle_slice_index(to_type(vol)) == 7
    assert middle_slice_index(to_type(vol), axis=0) == 2  # rows 1..2 -> 1.5 -> 2


def test_middle_slice_index_of_a_gap_is_the_nearest_non_empty_slice():
    vol = np.zeros((4, 4, 20), dtype=np.uint8)
    vol[1, 1, [2, 3, 9, 10]] = 1  # middle 6 is empty; 3 and 9 are both 3 away -> the lower one
    assert middle_slice_index(vol) == 3
    vol[1, 1, 8] = 1  # middle 6, nearest non-empty 8
    assert middle_slice_index(vol) == 8


def test_middle_slice_index_of_empty_label_raises():
    with pytest.raises(ValueError, match="label is empty"):
        middle_slice_index(np.zeros((4, 4, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_device_and_match_cpu():
    mask = torch.as_tensor(_disc((40, 48), (15.0, 30.0), 7))[None]
    out = jitter_mask_about_centre(mask.cuda(), 3.0, 1.1)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), jitter_mask_about_centre(mask, 3.0, 1.1))
    vol = torch.as_tensor(_volume()).cuda()
    assert annotated_slice_indices(vol) == [3, 4, 8]
    assert middle_slice_index(vol) == 4
