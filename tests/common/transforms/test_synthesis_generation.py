"""Tests of the generation labels (HU tissue classes) and the training chain of the domain-randomised configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from common.transforms import HUTissueClassesd, hu_tissue_classes, synthetic_training_transforms
from common.transforms.synthesis_generation import GENERATION_LABEL_KEY, TISSUE_CLASS_OFFSET


def _body(shape: tuple[int, int, int] = (40, 36, 12)) -> tuple[np.ndarray, np.ndarray]:
    """CT-like body: air outside an ellipse, fat ring, soft tissue inside, a bone disc and one labelled organ."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot((x - shape[0] / 2) / 17, (y - shape[1] / 2) / 15)
    image = np.full(shape, -1000.0, np.float32)
    label = np.zeros(shape, np.uint8)
    image[r < 1.0] = -100.0  # fat
    image[r < 0.8] = 40.0  # soft tissue
    bone = np.hypot(x - shape[0] / 2, y - shape[1] * 0.75) < 3
    image[bone] = 700.0
    organ = np.hypot(x - shape[0] * 0.4, y - shape[1] * 0.4) < 5
    image[organ] = 60.0
    label[organ] = 3
    return image, label


def test_tissue_classes_follow_the_thresholds_and_keep_the_structures() -> None:
    image, label = _body()
    out = hu_tissue_classes(image, label, smooth_sigma=0.0)
    assert out.dtype == np.int32
    assert out.shape == label.shape
    np.testing.assert_array_equal(out[label == 3], 3)
    unlabelled = label == 0
    expected = np.select(
        [image < -400, image < -30, image < 200],
        [0, TISSUE_CLASS_OFFSET + 1, TISSUE_CLASS_OFFSET + 2],
        TISSUE_CLASS_OFFSET + 3,
    )
    np.testing.assert_array_equal(out[unlabelled], expected[unlabelled])
    assert set(np.unique(out)) == {0, 3, TISSUE_CLASS_OFFSET + 1, TISSUE_CLASS_OFFSET + 2, TISSUE_CLASS_OFFSET + 3}


def test_smoothing_removes_noise_speckle() -> None:
    image, label = _body()
    noisy = image + np.random.default_rng(0).normal(0.0, 60.0, image.shape).astype(np.float32)
    speckled = hu_tissue_classes(noisy, label, smooth_sigma=0.0) != hu_tissue_classes(image, label, smooth_sigma=0.0)
    smoothed = hu_tissue_classes(noisy, label, smooth_sigma=1.0) != hu_tissue_classes(image, label, smooth_sigma=1.0)
    assert smoothed.mean() < 0.5 * speckled.mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thresholds_hu": (0.0, -10.0)}, "increasing finite numbers"),
        ({"thresholds_hu": ()}, "increasing finite numbers"),
        ({"thresholds_hu": "abc"}, "increasing finite numbers"),
        ({"smooth_sigma": -1.0}, "smooth_sigma must be a non-negative"),
        ({"offset": 2}, "collides with the tissue classes"),
    ],
)
def test_tissue_classes_reject_bad_options(kwargs: dict, message: str) -> None:
    image, label = _body()
    with pytest.raises(ValueError, match=message):
        hu_tissue_classes(image, label, **kwargs)


def test_tissue_classes_reject_bad_images() -> None:
    image, label = _body()
    with pytest.raises(ValueError, match="same shape"):
        hu_tissue_classes(image[:-1], label)
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        hu_tissue_classes(bad, label)


def test_dictionary_transform_keeps_the_grid_and_names_the_case() -> None:
    image, label = _body()
    affine = torch.diag(torch.tensor([2.5, 2.5, 4.0, 1.0], dtype=torch.float64))
    data = {
        "image": MetaTensor(torch.from_numpy(image[None]), affine=affine),
        "label": MetaTensor(torch.from_numpy(label[None]), affine=affine),
    }
    out = HUTissueClassesd()(data)
    assert isinstance(out[GENERATION_LABEL_KEY], MetaTensor)
    assert torch.equal(out[GENERATION_LABEL_KEY].affine, affine)
    assert out["label"] is data["label"]
    assert out["image"] is data["image"]
    with pytest.raises(KeyError, match="no 'image' key"):
        HUTissueClassesd()({"label": data["label"]})
    with pytest.raises(ValueError, match="channel-first"):
        HUTissueClassesd()({"image": image, "label": label})
    nan = image[None].copy()
    nan[0, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"HUTissueClassesd: .*NaN or infinite"):
        HUTissueClassesd()({"image": nan, "label": label[None]})


def _chain(seed: int, **options: object) -> dict:
    image, label = _body()
    data = {"image": torch.from_numpy(image[None]), "label": torch.from_numpy(label[None])}
    return Compose(synthetic_training_transforms("label", "image", **options)).set_random_state(seed)(data)


def test_training_chain_replaces_the_image_and_keeps_the_label() -> None:
    image, label = _body()
    out = _chain(0)
    assert set(out) == {"image", "label"}  # the generation label is removed
    np.testing.assert_array_equal(out["label"][0].numpy(), label)
    synthetic = out["image"][0].numpy()
    assert synthetic.shape == image.shape
    assert synthetic.dtype == np.float32
    assert synthetic.min() > -1.0
    assert synthetic.max() < 2.0
    np.testing.assert_array_equal(_chain(0)["image"].numpy(), out["image"].numpy())
    assert not np.allclose(_chain(1)["image"].numpy(), out["image"].numpy())


def test_training_chain_draws_the_tissue_classes_independently() -> None:
    """Fat and soft tissue (both label 0) get their own intensities: the body outline is in the synthetic image."""
    image, label = _body()
    fat, tissue = (label == 0) & (image == -100.0), (label == 0) & (image == 40.0)
    gaps = []
    for seed in range(6):
        synthetic = _chain(seed, resolution_prob=0.0, noise_prob=0.0, bias_prob=0.0)["image"][0].numpy()
        gaps.append(abs(float(np.median(synthetic[fat]) - np.median(synthetic[tissue]))))
    assert np.median(gaps) > 0.05
    # without tissue classes fat and soft tissue are one background, split only by random sub-regions
    assert _chain(0, tissue_classes_from_hu=False)["image"].shape == (1, *image.shape)


def test_with_synthesis_goes_before_the_first_normalisation_or_selection() -> None:
    from monai.transforms import EnsureTyped, Identityd, NormalizeIntensityd

    from common.data import SelectStructured
    from common.transforms import with_synthesis

    marker = Identityd("image")
    spatial, normalise, select = Identityd("image"), NormalizeIntensityd("image"), SelectStructured("label")
    assert with_synthesis([spatial, normalise, select], [marker]) == [spatial, marker, normalise, select]
    assert with_synthesis([spatial, select, EnsureTyped("image")], [marker])[1] is marker
    with pytest.raises(ValueError, match="none of"):
        with_synthesis([spatial], [marker])
