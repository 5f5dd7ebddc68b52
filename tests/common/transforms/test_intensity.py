"""Tests of the per-modality intensity normalisation (CT window, percentile, z-score)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRanged

from common.transforms import INTENSITY_MODES, NormalizeIntensityByModalityd, normalize_intensity, otsu_threshold
from common.transforms.intensity import _kth_percentiles, _percentiles

HU_CLIP, HU_SCALE = 1024.0, 500.0


def _ct_like(seed: int = 0, shape: tuple[int, ...] = (1, 24, 20, 12)) -> np.ndarray:
    """Integer HU: air around a body of fat and soft tissue with a few bright (bone) voxels; float32."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, dtype=np.float32)
    body = (slice(None), slice(4, -4), slice(3, -3), slice(None))
    image[body] = rng.choice([-100.0, 40.0, 60.0], size=image[body].shape)
    image[:, 10:12, 9:11] = 700.0
    image += rng.normal(0.0, 15.0, shape).astype(np.float32)
    return np.rint(image)


def _bundle_scale() -> ScaleIntensityRanged:
    """The bundles' CT preprocessing (configs: a_min=-@hu_clip, b_min=-@hu_clip / @hu_scale, ...)."""
    return ScaleIntensityRanged(
        "image", a_min=-HU_CLIP, a_max=HU_CLIP, b_min=-HU_CLIP / HU_SCALE, b_max=HU_CLIP / HU_SCALE, clip=True
    )


# --------------------------------------------------------------------------------------------------- ct_window


def test_ct_window_clips_then_divides() -> None:
    x = np.array([[-3000.0, -1024.0, -500.0, 0.0, 250.0, 1024.0, 1500.0]], dtype=np.float32)
    out = normalize_intensity(x, "ct_window")
    np.testing.assert_allclose(out, [[-2.048, -2.048, -1.0, 0.0, 0.5, 2.048, 2.048]], atol=1e-6)
    narrow = normalize_intensity(x, "ct_window", ct_window=(-200.0, 300.0), ct_scale=100.0)
    np.testing.assert_allclose(narrow, [[-2.0, -2.0, -2.0, 0.0, 2.5, 3.0, 3.0]], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_ct_window_equals_the_bundles_scale_intensity_ranged_bitwise(dtype: type) -> None:
    x = np.concatenate([_ct_like(1).ravel(), [-1024, 1024, -1025, 1025, 0, 3071, -2000]]).astype(dtype)
    x = x.reshape(1, -1)
    expected = _bundle_scale()({"image": MetaTensor(torch.as_tensor(x))})["image"]
    ours = NormalizeIntensityByModalityd("image")({"image": MetaTensor(torch.as_tensor(x))})["image"]
    assert ours.dtype == expected.dtype == torch.float32
    assert torch.equal(ours.as_tensor(), expected.as_tensor())
    assert np.array_equal(normalize_intensity(x), expected.numpy())


# --------------------------------------------------------------------------------------------------- percentile


def test_percentile_maps_the_percentile_range_onto_out_range_per_channel() -> None:
    ramp = np.arange(1001, dtype=np.float32)
    x = np.stack([ramp, 10.0 * ramp + 7.0, ramp[::-1]])  # channel 1: same ranks, other scale
    out = normalize_intensity(x, "percentile", percentiles=(10.0, 90.0), out_range=(0.0, 1.0))
    np.testing.assert_allclose(out[0, [0, 100, 500, 900, 1000]], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[1], out[0], atol=1e-6)
    np.testing.assert_allclose(out[2], out[0][::-1], atol=1e-6)
    default = normalize_intensity(x, "percentile")
    assert default.min() == pytest.approx(-2.048)
    assert default.max() == pytest.approx(2.048)


def test_percentiles_match_numpy_on_both_code_paths() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=1001).astype(np.float32)
    for qs in [(0.5, 99.5), (0.0, 100.0), (10.0, 37.3)]:
        expected = np.percentile(values, qs)
        np.testing.assert_allclose(_percentiles(torch.from_numpy(values), qs), expected, rtol=1e-6)
        np.testing.assert_allclose(_kth_percentiles(torch.from_numpy(values), qs), expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------------- zscore


def test_zscore_uses_body_statistics_and_maps_the_clip_range() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((1, 40, 40, 10), dtype=np.float32)  # air = 0
    x[:, 10:30, 10:30] = rng.normal(100.0, 10.0, (20, 20, 10))
    body = x[:, 10:30, 10:30]
    mean, std = float(body.astype(np.float64).mean()), float(body.astype(np.float64).std())
    as_z = normalize_intensity(x, "zscore", body_threshold=50.0, zscore_clip=5.0, out_range=(-5.0, 5.0))
    np.testing.assert_allclose(as_z[:, 10:30, 10:30], (body - mean) / std, atol=1e-4)
    np.testing.assert_allclose(as_z[:, :10], -5.0)  # air: z ~ -10, clipped
    mapped = normalize_intensity(x, "zscore", body_threshold=50.0)  # [-5, 5] -> [-2.048, 2.048]
    np.testing.assert_allclose(mapped, as_z * 2.048 / 5.0, atol=1e-5)
    otsu = normalize_intensity(x, "zscore", out_range=(-5.0, 5.0))  # Otsu separates air from the body here
    np.testing.assert_allclose(otsu, as_z, atol=1e-5)
    whole = normalize_intensity(x, "zscore", body_threshold=-1.0, out_range=(-5.0, 5.0))
    assert not np.allclose(whole, as_z, atol=1e-2)  # statistics of the whole image differ


def test_otsu_threshold_separates_two_modes() -> None:
    rng = np.random.default_rng(1)
    values = torch.from_numpy(np.concatenate([rng.normal(0, 5, 5000), rng.normal(300, 30, 3000)]).astype(np.float32))
    threshold = otsu_threshold(values)
    assert 30.0 < threshold < 150.0  # the middle of the empty gap between the modes (any split there is optimal)
    above = values > threshold
    assert int(above.sum()) == 3000
    assert bool(above[5000:].all())
    assert otsu_threshold(torch.full((10,), 3.0)) == 3.0


def test_zscore_falls_back_to_the_whole_channel_when_nothing_is_above_the_threshold() -> None:
    x = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    out = normalize_intensity(x, "zscore", body_threshold=10.0, out_range=(-5.0, 5.0))
    np.testing.assert_allclose(out, (x - 1.5) / np.std(x), atol=1e-6)


# --------------------------------------------------------------------------------------------------- shared


@pytest.mark.parametrize("mode", ["percentile", "zscore"])
@pytest.mark.parametrize(("scale", "offset"), [(3.0, 100.0), (0.01, -5.0), (250.0, 0.0)])
def test_statistics_modes_are_invariant_to_an_affine_intensity_change(mode: str, scale: float, offset: float) -> None:
    x = _ct_like(2).astype(np.float64)
    reference = normalize_intensity(x, mode)
    changed = normalize_intensity(scale * x + offset, mode)
    np.testing.assert_allclose(changed, reference, atol=1e-4)
    assert not np.allclose(normalize_intensity(scale * x + offset, "ct_window"), normalize_intensity(x, "ct_window"))


@pytest.mark.parametrize("mode", INTENSITY_MODES)
def test_constant_channels_map_to_the_middle_of_out_range(mode: str) -> None:
    x = np.stack([np.full((4, 5), 7.0), np.arange(20.0).reshape(4, 5)]).astype(np.float32)
    out = normalize_intensity(x, mode, out_range=(-1.0, 3.0))
    assert np.isfinite(out).all()
    if mode == "ct_window":
        np.testing.assert_allclose(out[0], 7.0 / HU_SCALE, rtol=1e-5)
    else:
        np.testing.assert_array_equal(out[0], 1.0)
        assert out[1].min() < 0.0 < 2.0 < out[1].max() if mode == "percentile" else out[1].min() < 1.0 < out[1].max()


@pytest.mark.parametrize("mode", INTENSITY_MODES)
def test_input_types_are_kept_with_float32_output(mode: str) -> None:
    x = _ct_like(4)
    numpy_out = normalize_intensity(x.astype(np.float64), mode)
    assert isinstance(numpy_out, np.ndarray)
    assert numpy_out.dtype == np.float32
    tensor_out = normalize_intensity(torch.from_numpy(x.astype(np.int16)), mode)
    assert type(tensor_out) is torch.Tensor
    assert tensor_out.dtype == torch.float32
    np.testing.assert_allclose(tensor_out.numpy(), numpy_out, atol=1e-5)
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    meta = MetaTensor(torch.from_numpy(x), affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    meta_out = normalize_intensity(meta, mode)
    assert isinstance(meta_out, MetaTensor)
    assert meta_out.meta["filename_or_obj"] == "ct.nii.gz"
    torch.testing.assert_close(meta_out.affine, affine)
    assert tuple(meta_out.shape) == x.shape


def test_dictionary_transform_keeps_other_keys_and_meta() -> None:
    image = MetaTensor(torch.from_numpy(_ct_like(5)), meta={"filename_or_obj": "mri.nii.gz"})
    label = torch.zeros(1, 2, 2)
    data = {"image": image, "label": label, "case_id": "c"}
    out = NormalizeIntensityByModalityd("image", mode="percentile")(data)
    assert out is not data
    assert data["image"] is image  # the input dict is not modified
    assert out["label"] is label
    assert out["case_id"] == "c"
    assert out["image"].meta["filename_or_obj"] == "mri.nii.gz"
    assert float(out["image"].min()) == pytest.approx(-2.048)
    with pytest.raises(KeyError):
        NormalizeIntensityByModalityd("other")(data)
    assert NormalizeIntensityByModalityd("other", allow_missing_keys=True)(data).keys() == data.keys()


@pytest.mark.parametrize("mode", INTENSITY_MODES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_raises_naming_the_key_and_file(mode: str, bad: float) -> None:
    x = _ct_like(6)
    x[0, 1, 2, 3] = bad
    image = MetaTensor(torch.from_numpy(x), meta={"filename_or_obj": "scan_7.nii.gz"})
    kind = "1 NaN and 0 infinite" if np.isnan(bad) else "0 NaN and 1 infinite"
    with pytest.raises(ValueError, match=rf"key 'image' of scan_7\.nii\.gz has {kind} values"):
        NormalizeIntensityByModalityd("image", mode=mode)({"image": image})
    with pytest.raises(ValueError, match="volume has"):
        normalize_intensity(x, mode, name="volume")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "minmax"}, r"mode must be one of \('ct_window', 'percentile', 'zscore'\), got 'minmax'"),
        ({"ct_window": (100.0, -100.0)}, "ct_window must be"),
        ({"ct_window": (-100.0,)}, r"ct_window must be a pair \(low, high\)"),
        ({"ct_scale": 0.0}, "ct_scale must be > 0"),
        ({"percentiles": (99.5, 0.5)}, "percentiles must be"),
        ({"percentiles": (-1.0, 50.0)}, r"percentiles must be \(low, high\) with low < high within \[0, 100\]"),
        ({"out_range": (1.0, 1.0)}, "out_range must be"),
        ({"out_range": (0.0, float("nan"))}, r"out_range\[1\] must be finite"),
        ({"zscore_clip": -1.0}, "zscore_clip must be > 0"),
        ({"body_threshold": "otsu"}, "body_threshold must be a real number"),
    ],
)
def test_bad_options_raise_value_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NormalizeIntensityByModalityd("image", **kwargs)
    with pytest.raises(ValueError, match=match):
        normalize_intensity(np.zeros((1, 4), dtype=np.float32), **kwargs)


def test_bad_arrays_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"channel-first array \(C, \*spatial\), got shape \(5,\)"):
        normalize_intensity(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        normalize_intensity(np.zeros((1, 0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="real numeric dtype"):
        normalize_intensity(torch.zeros(1, 3, dtype=torch.bool))


@pytest.mark.parametrize("mode", INTENSITY_MODES)
def test_config_instantiation(mode: str) -> None:
    parser = ConfigParser(
        {
            "intensity_mode": mode,
            "normalize": {
                "_target_": "common.transforms.NormalizeIntensityByModalityd",
                "keys": "image",
                "mode": "@intensity_mode",
                "percentiles": [1.0, 99.0],
            },
        }
    )
    transform = parser.get_parsed_content("normalize")
    assert isinstance(transform, NormalizeIntensityByModalityd)
    x = _ct_like(7)
    expected = normalize_intensity(x, mode, percentiles=(1.0, 99.0))
    np.testing.assert_array_equal(transform({"image": x})["image"], expected)


def test_percentile_and_zscore_spread_an_mri_like_image_that_the_ct_window_squashes() -> None:
    rng = np.random.default_rng(8)
    mri = np.concatenate([rng.normal(20, 5, 3000), rng.normal(300, 20, 3000), rng.normal(800, 30, 3000)])
    mri = np.abs(mri).astype(np.float32).reshape(1, -1)
    tissue = slice(3000, 6000)
    fat = slice(6000, 9000)
    for mode in ("percentile", "zscore"):
        out = normalize_intensity(mri, mode)
        assert float(np.mean(out[0, fat]) - np.mean(out[0, tissue])) > 0.5
    ct = normalize_intensity(mri, "ct_window")
    assert float(ct.min()) >= 0.0  # all MRI values land in the upper half of the CT range
