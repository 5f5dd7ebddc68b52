"""Tests of the domain-randomised image generator (SynthSeg-style synthesis from label maps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy.stats import ks_2samp

from common.transforms import (
    RandContrastInversiond,
    RandResolutiond,
    RandSynthBiasFieldd,
    RandSynthGammad,
    RandSynthNoised,
    SynthesizeIntensitiesd,
    background_subregions,
    simulate_acquisition,
    synthesize_image,
    synthetic_image_transforms,
)
from common.transforms.synthesis_corruption import minmax_normalise
from common.transforms.synthesis_montage import synthesis_montage
from common.transforms.synthesis_resolution import low_resolution_size

TYPES = [np.asarray, torch.as_tensor, MetaTensor]


def _np(x: object) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _label(shape: tuple[int, ...] = (32, 32, 24)) -> np.ndarray:
    """Channel-first label map with three boxes (values 1, 2, 5) on a background of 0."""
    label = np.zeros((1, *shape), dtype=np.uint8)
    label[(0, slice(2, 14), slice(3, 20))] = 1
    label[(0, slice(16, 30), slice(4, 12))] = 2
    label[(0, slice(16, 30), slice(14, 30))] = 5
    return label


def _image(shape: tuple[int, ...] = (1, 32, 32, 24), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=shape).astype(np.float32)


def _diff_energy(x: np.ndarray, axis: int) -> float:
    """Mean squared neighbour difference along ``axis`` over twice the variance (1 for white noise, < 1 if smooth)."""
    return float(np.mean(np.diff(x, axis=axis) ** 2) / (2.0 * np.var(x)))


# ------------------------------------------------------------------------------------------ determinism, types, meta


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 24)])
@pytest.mark.parametrize("to_type", TYPES)
def test_same_seed_same_image_other_seed_differs(shape, to_type):
    label = to_type(_label(shape))
    first, again, other = synthesize_image(label, 3), synthesize_image(label, 3), synthesize_image(label, 4)
    assert type(first) is type(label)
    assert tuple(first.shape) == (1, *shape)
    assert first.dtype in (np.float32, torch.float32)
    np.testing.assert_array_equal(_np(first), _np(again))
    assert not np.allclose(_np(first), _np(other))
    np.testing.assert_array_equal(_np(label), _label(shape))  # the label is untouched


def test_compose_and_single_transforms_are_reproducible_via_set_random_state():
    data = {"label": _label()}
    chain = synthetic_image_transforms()
    a = Compose(chain).set_random_state(seed=11)(data)["image"]
    b = Compose(synthetic_image_transforms()).set_random_state(seed=11)(data)["image"]
    np.testing.assert_array_equal(a, b)
    t = SynthesizeIntensitiesd().set_random_state(seed=1)
    x = t(data)["image"]
    assert not np.array_equal(x, t(data)["image"])  # the state advances: a new image per call
    np.testing.assert_array_equal(x, SynthesizeIntensitiesd().set_random_state(seed=1)(data)["image"])


def test_metatensor_meta_and_affine_kept_on_the_label_grid():
    affine = torch.tensor([[0.0, -2.0, 0.0, 10.0], [3.0, 0.0, 0.0, -5.0], [0.0, 0.0, 4.0, 1.0], [0, 0, 0, 1]])
    label = MetaTensor(torch.as_tensor(_label()), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    out = Compose(synthetic_image_transforms()).set_random_state(seed=0)({"label": label, "case_id": "c"})
    image = out["image"]
    assert isinstance(image, MetaTensor)
    assert image.dtype == torch.float32
    assert image.shape == label.shape
    torch.testing.assert_close(image.affine, label.affine)
    assert image.meta["filename_or_obj"] == "case.nii.gz"
    assert out["label"] is label
    assert out["case_id"] == "c"
    image.affine[0, 0] = 99.0  # the image's meta data is a copy
    assert float(label.affine[0, 0]) == 0.0


def test_spacing_from_the_affine_drives_the_resolution():
    label = MetaTensor(torch.as_tensor(_label()), affine=torch.diag(torch.tensor([3.0, 3.0, 3.0, 1.0])))
    t = RandResolutiond(slice_spacing_range=(1.0, 3.0), inplane_spacing_range=(1.0, 3.0)).set_random_state(seed=0)
    image = label.float()
    out = t({"image": image})["image"]
    assert t.grid_spacing == (3.0, 3.0, 3.0)
    assert t.sigma == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(_np(out), _np(image))
    torch.testing.assert_close(out.affine, image.affine)


def test_config_factory_and_target():
    parser = ConfigParser(
        {
            "imports": ["$import common"],
            "chain": {"_target_": "Compose", "transforms": "$common.transforms.synthetic_image_transforms()"},
            "res": {"_target_": "common.transforms.RandResolutiond", "keys": "image", "axes": [2]},
        }
    )
    chain = parser.get_parsed_content("chain")
    assert chain({"label": _label()})["image"].shape == (1, 32, 32, 24)
    assert parser.get_parsed_content("res").axes == (2,)


# ------------------------------------------------------------------------------------- intensities: independence


def test_order_preserving_relabelling_gives_the_identical_image():
    label = _label()
    relabelled = np.select([label == 1, label == 2, label == 5], [10, 20, 250], 0).astype(np.int32)
    for seed in (0, 1):
        np.testing.assert_array_equal(synthesize_image(label, seed), synthesize_image(relabelled, seed))


def test_permuted_label_values_give_the_same_distribution():
    """Region A is labelled 1 in one map and 2 in the other (B the reverse): its intensity distribution is the same."""
    a_first = np.zeros((1, 12, 12), dtype=np.uint8)
    a_first[0, :, :6], a_first[0, :, 6:] = 1, 2
    a_second = 3 - a_first
    t = SynthesizeIntensitiesd(background_classes=(1, 1))
    means = {}
    for name, label, seeds in (("first", a_first, range(300)), ("second", a_second, range(1000, 1300))):
        values = []
        for seed in seeds:
            image = t.set_random_state(seed=seed)({"label": label})["image"]
            values.append(float(image[0, :, :6].mean()))
        means[name] = np.asarray(values)
    assert ks_2samp(means["first"], means["second"]).pvalue > 0.01
    for values in means.values():  # both ~ U(0, 255): mean 127.5, std 73.6
        assert abs(values.mean() - 127.5) < 12.0
        assert abs(values.std() - 73.6) < 9.0


def test_region_means_do_not_depend_on_the_label_value():
    label = np.repeat(np.arange(1, 21, dtype=np.int32), 2)[None, :, None] * np.ones((1, 1, 4), dtype=np.int32)
    t = SynthesizeIntensitiesd()
    values, means = [], []
    for seed in range(60):
        t.set_random_state(seed=seed)({"label": label})
        values += list(t.means)
        means += list(t.means.values())
    assert abs(np.corrcoef(values, means)[0, 1]) < 0.1


def test_regions_are_piecewise_gaussian_with_the_drawn_parameters():
    label = _label((40, 40, 24))
    t = SynthesizeIntensitiesd(background_classes=(2, 2)).set_random_state(seed=5)
    image = t({"label": label})["image"][0]
    assert t.label_values == [1, 2, 5]
    assert t.n_background_classes == 2
    regions = [(label[0] == v, t.means[v], t.stds[v]) for v in t.label_values]
    regions += [(_np(t.background_regions(label)) == k, t.background_means[k], t.background_stds[k]) for k in range(2)]
    for mask, mean, std in regions:
        x = image[mask]
        assert abs(x.mean() - mean) < 5 * std / math.sqrt(x.size) + 1e-3
        assert abs(x.std() - std) < 0.1 * std + 1e-3


def test_drawn_means_and_stds_stay_in_their_ranges():
    t = SynthesizeIntensitiesd(mean_range=(10.0, 20.0), std_range=(1.0, 2.0), background_classes=(1, 4))
    means, stds, counts = [], [], set()
    for seed in range(40):
        t.set_random_state(seed=seed)({"label": _label((16, 16, 8))})
        means += [*t.means.values(), *t.background_means]
        stds += [*t.stds.values(), *t.background_stds]
        counts.add(t.n_background_classes)
    assert 10.0 <= min(means) < 11.0
    assert 19.0 < max(means) <= 20.0
    assert 1.0 <= min(stds) < 1.1
    assert 1.9 < max(stds) <= 2.0
    assert counts == {1, 2, 3, 4}


def test_background_subregions_are_coherent_and_about_equal():
    t = SynthesizeIntensitiesd(background_classes=(3, 3)).set_random_state(seed=2)
    label = np.zeros((1, 32, 32, 24), dtype=np.uint8)
    image = t({"label": label})["image"][0]
    regions = _np(t.background_regions(label))
    assert sorted(np.unique(regions).tolist()) == [0, 1, 2]
    assert np.allclose(np.bincount(regions.ravel()) / regions.size, 1 / 3, atol=0.05)
    same = [np.mean(np.diff(regions, axis=a) == 0) for a in range(3)]
    assert min(same) > 0.85  # blobs, not salt and pepper
    for k in range(3):
        assert abs(image[regions == k].mean() - t.background_means[k]) < 2.0
    # the function itself: -1 outside the mask
    field = torch.linspace(0, 1, 10).repeat(4, 1)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[0] = False
    out = background_subregions(field, mask, 2)
    assert (out[0] == -1).all()
    assert set(out[1:].unique().tolist()) == {0, 1}


def test_float_labels_with_integer_values_are_accepted_others_rejected():
    label = _label().astype(np.float32)
    np.testing.assert_array_equal(synthesize_image(label, 0), synthesize_image(_label(), 0))
    with pytest.raises(ValueError, match="integer label values"):
        synthesize_image(label + 0.5, 0)


# ------------------------------------------------------------------------------------------------- corruptions


def test_bias_field_is_smooth_multiplicative_and_bounded():
    ones = np.ones((1, 32, 32, 24), dtype=np.float32)
    t = RandSynthBiasFieldd(std_range=(0.0, 0.5))
    low, high = t.factor_bounds
    assert (low, high) == pytest.approx((math.exp(-1.5), math.exp(1.5)))
    stds = []
    for seed in range(20):
        factor = t.set_random_state(seed=seed)({"image": ones})["image"]
        stds.append(t.field_std)
        assert low <= factor.min()
        assert factor.max() <= high
        assert np.max(np.abs(np.diff(np.log(factor), axis=1))) < 3 * 0.5 * 2 / (32 / 3)  # smooth
        doubled = t.set_random_state(seed=seed)({"image": 2.0 * ones})["image"]
        np.testing.assert_allclose(doubled, 2.0 * factor, rtol=1e-6)
    assert min(stds) >= 0.0
    assert max(stds) <= 0.5
    assert max(stds) - min(stds) > 0.2
    unchanged = RandSynthBiasFieldd(prob=0.0)({"image": ones})["image"]
    np.testing.assert_array_equal(unchanged, ones)


def test_gamma_normalises_and_draws_log_gamma_with_the_given_std():
    image = _image()
    t = RandSynthGammad(gamma_std=0.4)
    logs = []
    for seed in range(300):
        out = t.set_random_state(seed=seed)({"image": image})["image"]
        logs.append(math.log(t.gamma))
        if seed < 3:
            assert out.min() == 0.0
            assert out.max() == 1.0
            expected = minmax_normalise(torch.as_tensor(image)).numpy() ** t.gamma
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert abs(np.mean(logs)) < 0.07
    assert abs(np.std(logs) - 0.4) < 0.05
    low, high = t.gamma_bounds
    assert all(math.log(low) - 1e-9 <= g <= math.log(high) + 1e-9 for g in logs)
    out = RandSynthGammad(prob=0.0)({"image": image})["image"]  # gamma = 1: normalisation only
    np.testing.assert_allclose(out, minmax_normalise(torch.as_tensor(image)).numpy(), rtol=1e-6)


def test_inversion_happens_with_the_given_probability():
    image = _image((1, 8, 8, 4))
    t = RandContrastInversiond(prob=0.3)
    flips = 0
    for seed in range(400):
        out = t.set_random_state(seed=seed)({"image": image})["image"]
        if t.inverted:
            flips += 1
            np.testing.assert_allclose(out, image.min() + image.max() - image, rtol=1e-6)
        else:
            np.testing.assert_array_equal(out, image)
    assert abs(flips / 400 - 0.3) < 0.07


def test_noise_std_in_range_and_the_same_for_all_keys():
    zeros = np.zeros((1, 32, 32, 24), dtype=np.float32)
    t = RandSynthNoised(["image", "other"], std_range=(0.1, 0.2))
    for seed in range(5):
        out = t.set_random_state(seed=seed)({"image": zeros, "other": zeros + 1.0})
        assert 0.1 <= t.noise_std <= 0.2
        assert abs(out["image"].std() - t.noise_std) < 0.03 * t.noise_std
        np.testing.assert_allclose(out["other"] - 1.0, out["image"], atol=1e-6)


# ------------------------------------------------------------------------------------------------- resolution


def test_resolution_axis_and_spacings_are_drawn_in_range():
    image = {"image": _image((1, 16, 16, 12))}
    t = RandResolutiond(slice_spacing_range=(2.0, 9.0), inplane_spacing_range=(1.0, 3.0))
    axes = set()
    for seed in range(30):
        t.set_random_state(seed=seed)(image)
        axes.add(t.axis)
        assert 2.0 <= t.acquisition_spacing[t.axis] <= 9.0
        assert all(1.0 <= s <= 3.0 for a, s in enumerate(t.acquisition_spacing) if a != t.axis)
    assert axes == {0, 1, 2}
    fixed = RandResolutiond(axes=[2])
    assert {fixed.set_random_state(seed=s)(image) and fixed.axis for s in range(10)} == {2}


@pytest.mark.parametrize("shape", [(1, 40, 40), (1, 32, 32, 24)])
def test_blur_and_downsampling_act_along_the_chosen_axis_only(shape):
    image = _image(shape)
    t = RandResolutiond(slice_spacing_range=(6.0, 6.0), inplane_spacing_range=(1.0, 1.0)).set_random_state(seed=1)
    out = t({"image": image})["image"][0]
    ndim = len(shape) - 1
    assert t.sigma[t.axis] == pytest.approx(0.75 * 6.0)
    n = shape[t.axis + 1]
    assert t.low_resolution_shape[t.axis] == low_resolution_size(n, 6.0) == round((n - 1) / 6) + 1
    assert _diff_energy(out, t.axis) < 0.05  # high frequencies gone along the slice axis
    for a in range(ndim):
        if a != t.axis:
            assert t.sigma[a] == 0.0
            assert _diff_energy(out, a) > 0.85
    lines = np.moveaxis(out, t.axis, -1).reshape(-1, n)
    assert np.linalg.matrix_rank(lines, tol=1e-3 * np.abs(lines).max()) == t.low_resolution_shape[t.axis]


def test_simulate_acquisition_keeps_constants_and_shape():
    image = torch.full((1, 20, 18, 10), 7.0)
    out = simulate_acquisition(image, (1.0, 1.0, 1.0), (2.5, 1.0, 8.0))
    assert out.shape == image.shape
    torch.testing.assert_close(out, image)


# ------------------------------------------------------------------------------------------------- options, montage


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SynthesizeIntensitiesd(mean_range=(10, 5)), "mean_range"),
        (lambda: SynthesizeIntensitiesd(mean_range=(0, 1, 2)), "mean_range"),
        (lambda: SynthesizeIntensitiesd(std_range=(-1, 5)), "std_range"),
        (lambda: SynthesizeIntensitiesd(std_range=(0, float("nan"))), "std_range"),
        (lambda: SynthesizeIntensitiesd(background_classes=(0, 3)), "background_classes"),
        (lambda: SynthesizeIntensitiesd(background_classes=(1.5, 3)), "background_classes"),
        (lambda: SynthesizeIntensitiesd(background_grid=1), "background_grid"),
        (lambda: SynthesizeIntensitiesd(background="0"), "background"),
        (lambda: RandSynthBiasFieldd(std_range=(0, 5)), "std_range"),
        (lambda: RandSynthBiasFieldd(control_points=1), "control_points"),
        (lambda: RandSynthBiasFieldd(prob=1.5), "prob"),
        (lambda: RandSynthGammad(gamma_std=-0.1), "gamma_std"),
        (lambda: RandContrastInversiond(prob=-0.1), "prob"),
        (lambda: RandSynthNoised(std_range=(-0.1, 0.1)), "std_range"),
        (lambda: RandResolutiond(slice_spacing_range=(0.0, 9.0)), "slice_spacing_range"),
        (lambda: RandResolutiond(inplane_spacing_range="1,3"), "inplane_spacing_range"),
        (lambda: RandResolutiond(axes=[3]), "axes"),
        (lambda: RandResolutiond(axes=[]), "axes"),
        (lambda: RandResolutiond(spacing=-1.0), "spacing"),
        (lambda: RandResolutiond(sigma_factor=0.0), "sigma_factor"),
        (lambda: synthetic_image_transforms(invert_prob=2.0), "invert_prob"),
        (lambda: synthesize_image(_label(), seed=-1), "seed"),
    ],
)
def test_bad_options_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="channel-first"):
        synthesize_image(_label()[0], 0)  # no channel axis
    with pytest.raises(ValueError, match="channel-first"):
        synthesize_image(np.concatenate([_label(), _label()]), 0)
    with pytest.raises(KeyError, match="label"):
        SynthesizeIntensitiesd()({"image": _label()})
    with pytest.raises(ValueError, match="axes"):
        RandResolutiond(axes=[2])({"image": _image((1, 16, 16))})
    with pytest.raises(ValueError, match="spacing"):
        RandResolutiond(spacing=(1.0, 2.0))({"image": _image((1, 8, 8, 8))})


def test_montage_is_small_and_reproducible(tmp_path):
    label = _label((48, 48, 16))[0]
    first = synthesis_montage(label, tmp_path / "a.png", seeds=[0, 1], image=label * 50.0, spacing=(1.0, 1.0, 3.0))
    second = synthesis_montage(label, tmp_path / "b.png", seeds=[0, 1], image=label * 50.0, spacing=(1.0, 1.0, 3.0))
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.stat().st_size < 300_000
    with pytest.raises(ValueError, match="png"):
        synthesis_montage(label, tmp_path / "a.jpg", seeds=[0])
