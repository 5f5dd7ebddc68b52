"""Tests of the slice-propagation prior transforms (slice sampling, prior jitter, annotation volumes)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, ConcatItemsd, RandFlipd

from common.transforms import (
    MaskPriorJitterd,
    RandMaskPriorJitterd,
    RandPriorSliced,
    SliceAnnotationFromLabeld,
    annotated_slice_indices,
    jitter_mask_about_centre,
)

TYPES = [np.asarray, torch.as_tensor, MetaTensor]
H, W, D = 16, 18, 12


def _np(x: object) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _prior(shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    prior = np.zeros((1, *shape), dtype=np.uint8)
    prior[0, 10:25, 12:30] = 1
    return prior


def _volume(first: int = 4, last: int = 6, gap: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Image (1, H, W, D) with a distinct value per slice; label with a box on slices first..last (minus gap)."""
    image = np.broadcast_to(np.arange(D, dtype=np.float32), (1, H, W, D)) + np.random.default_rng(0).random(
        (1, H, W, D), dtype=np.float32
    )
    label = np.zeros((1, H, W, D), dtype=np.uint8)
    for k in range(first, last + 1):
        if k not in gap:
            label[0, 3 : 8 + k % 3, 5:12, k] = 1  # shape varies with the slice
    return {"image": np.ascontiguousarray(image), "label": label}


# ---------------------------------------------------------------- MaskPriorJitterd / RandMaskPriorJitterd


@pytest.mark.parametrize("to_type", TYPES)
def test_mask_prior_jitter_matches_functional_and_keeps_type(to_type):
    prior = _prior()
    data = {"prior": to_type(prior), "image": to_type(prior * 5)}
    out = MaskPriorJitterd("prior", angle_deg=8.0, scale=0.9)(data)
    assert type(out["prior"]) is type(data["prior"])
    assert out["prior"].dtype == data["prior"].dtype
    np.testing.assert_array_equal(_np(out["prior"]), jitter_mask_about_centre(prior, 8.0, 0.9))
    assert out["image"] is data["image"]  # other keys untouched
    assert not np.array_equal(_np(out["prior"]), prior)
    np.testing.assert_array_equal(_np(data["prior"]), prior)  # caller's data not mutated


def test_mask_prior_jitter_defaults_are_identity():
    prior = _prior()
    np.testing.assert_array_equal(MaskPriorJitterd()({"prior": prior})["prior"], prior)


@pytest.mark.parametrize("shape", [(40, 40), (1, 40, 40, 4)])
def test_mask_prior_jitter_needs_channel_first_2d(shape):
    with pytest.raises(ValueError, match=r"'prior' .* must be a channel-first 2D mask \(C, H, W\)"):
        MaskPriorJitterd("prior", angle_deg=1.0)({"prior": np.zeros(shape)})


@pytest.mark.parametrize("to_type", TYPES)
def test_rand_jitter_applies_the_drawn_parameters(to_type):
    prior = _prior()
    t = RandMaskPriorJitterd("prior", rotate_range_deg=10.0, scale_range=0.2).set_random_state(seed=3)
    out = t({"prior": to_type(prior)})
    assert type(out["prior"]) is type(to_type(prior))
    assert -10.0 <= t.angle_deg <= 10.0
    assert 0.8 <= t.scale <= 1.2
    assert (t.angle_deg, t.scale) != (0.0, 1.0)
    np.testing.assert_array_equal(_np(out["prior"]), jitter_mask_about_centre(prior, t.angle_deg, t.scale))


def test_rand_jitter_draws_cover_both_signs_within_ranges():
    t = RandMaskPriorJitterd("prior", rotate_range_deg=1.0, scale_range=0.1).set_random_state(seed=0)
    angles, scales = [], []
    for _ in range(200):
        t.randomize()
        angles.append(t.angle_deg)
        scales.append(t.scale)
    assert min(angles) >= -1.0
    assert max(angles) <= 1.0
    assert min(angles) < -0.8
    assert max(angles) > 0.8
    assert min(scales) >= 0.9
    assert max(scales) <= 1.1
    assert min(scales) < 0.92
    assert max(scales) > 1.08


def test_rand_jitter_is_deterministic_with_a_seed():
    prior = _prior()
    a = [
        RandMaskPriorJitterd(rotate_range_deg=10, scale_range=0.2).set_random_state(seed=s)({"prior": prior})
        for s in (5, 5, 6)
    ]
    np.testing.assert_array_equal(a[0]["prior"], a[1]["prior"])
    assert not np.array_equal(a[0]["prior"], a[2]["prior"])


def test_rand_jitter_prob_zero_is_a_no_op():
    prior = _prior()
    t = RandMaskPriorJitterd(prob=0.0, rotate_range_deg=45.0, scale_range=0.5).set_random_state(seed=0)
    for _ in range(5):
        out = t({"prior": prior})
        assert out["prior"] is prior
        assert (t.angle_deg, t.scale) == (0.0, 1.0)


def test_rand_jitter_prob_is_respected():
    t = RandMaskPriorJitterd(prob=0.3).set_random_state(seed=0)
    applied = 0
    for _ in range(400):
        t.randomize()
        applied += t._do_transform
    assert 0.22 < applied / 400 < 0.38


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prob": 1.5}, "prob must be in"),
        ({"rotate_range_deg": -1.0}, "rotate_range_deg must be >= 0"),
        ({"scale_range": 1.0}, "scale_range must be in"),
        ({"scale_range": -0.1}, "scale_range must be in"),
        ({"mode": "cubic"}, "mode must be one of"),
    ],
)
def test_rand_jitter_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandMaskPriorJitterd(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scale": 0.0}, "scale must be > 0"), ({"angle_deg": "1"}, "angle_deg must be a real number")],
)
def test_mask_prior_jitter_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskPriorJitterd(**kwargs)


# ---------------------------------------------------------------- RandPriorSliced


@pytest.mark.parametrize("to_type", TYPES)
def test_rand_prior_slice_semantics_and_types(to_type):
    vol = _volume()
    data = {k: to_type(v) for k, v in vol.items()} | {"case_id": "c0"}
    samples = RandPriorSliced(num_samples=8).set_random_state(seed=0)(data)
    assert isinstance(samples, list)
    assert len(samples) == 8
    for s in samples:
        t, p = s["slice"], s["prior_slice"]
        assert type(t) is int
        assert type(p) is int
        assert s["axis"] == 2
        assert s["case_id"] == "c0"
        for key in ("image", "label", "prior"):
            assert type(s[key]) is type(data[key if key != "prior" else "label"])
            assert tuple(s[key].shape) == (1, H, W)
        np.testing.assert_array_equal(_np(s["image"]), vol["image"][..., t])
        np.testing.assert_array_equal(_np(s["label"]), vol["label"][..., t])
        np.testing.assert_array_equal(_np(s["prior"]), vol["label"][..., p])
        assert s["label"].dtype == data["label"].dtype
    assert "prior" not in data
    assert tuple(data["image"].shape) == (1, H, W, D)


def test_rand_prior_slice_outputs_are_copies_not_views():
    vol = {k: torch.as_tensor(v) for k, v in _volume().items()}
    before = vol["image"].clone()
    for s in RandPriorSliced(num_samples=4).set_random_state(seed=0)(vol):
        s["image"] += 100
        s["prior"].zero_()
    torch.testing.assert_close(vol["image"], before)
    assert vol["label"].sum() > 0


def test_rand_prior_slice_metatensor_meta_and_in_plane_affine():
    vol = _volume()
    affine = torch.tensor(
        [[0.8, 0.1, 0.3, -10.0], [0.0, 0.7, 0.2, 5.0], [0.05, 0.0, 2.5, 30.0], [0, 0, 0, 1]], dtype=torch.float64
    )
    meta = {"filename_or_obj": "/data/lab.nii.gz", "spatial_shape": np.asarray((H, W, D))}
    image = MetaTensor(vol["image"], affine=affine, meta=dict(meta), applied_operations=[{"class": "Fake"}])
    label = MetaTensor(vol["label"], affine=affine, meta=dict(meta))
    samples = RandPriorSliced(num_samples=6).set_random_state(seed=1)({"image": image, "label": label})
    for s in samples:
        for key, index in (("image", s["slice"]), ("label", s["slice"]), ("prior", s["prior_slice"])):
            out = s[key]
            assert out.meta["filename_or_obj"] == "/data/lab.nii.gz"
            assert out.applied_operations == []
            assert out.affine.shape == (3, 3)
            assert out.spatial_ndim == 2
            np.testing.assert_array_equal(out.meta["spatial_shape"], (H, W))
            for i, j in [(0, 0), (3, 7), (H - 1, W - 1)]:  # 2D voxel -> in-plane world coords of the 3D voxel
                world = affine @ torch.tensor([i, j, index, 1.0], dtype=torch.float64)
                torch.testing.assert_close(
                    out.affine @ torch.tensor([i, j, 1.0], dtype=torch.float64), world[[0, 1, 3]]
                )
    assert image.affine.shape == (4, 4)
    assert len(image.applied_operations) == 1


def test_rand_prior_slice_statistics():
    vol = _volume(first=4, last=6)  # a structure spanning only 3 slices
    nonempty = {4, 5, 6}
    t = RandPriorSliced(max_offset=2, num_samples=400).set_random_state(seed=0)
    pairs = [(s["slice"], s["prior_slice"]) for s in t(vol)]
    offsets = {ti - p for ti, p in pairs}
    assert offsets <= {-2, -1, 1, 2}
    assert offsets == {-2, -1, 1, 2}
    assert all(p in nonempty for _, p in pairs)  # the prior is never empty
    targets = [ti for ti, _ in pairs]
    assert all(3 <= ti <= 7 for ti in targets)  # include_outside=1: at most one slice beyond the structure
    empty = sum(ti not in nonempty for ti in targets)
    assert 0.2 < empty / len(targets) < 0.7  # empty targets (teach the network to stop) are common here
    # uniform over the admissible (t, p) pairs: every one of them is drawn
    assert set(pairs) == {(ti, p) for p in nonempty for ti in range(3, 8) if 0 < abs(ti - p) <= 2}

    restricted = RandPriorSliced(num_samples=200, include_outside=0).set_random_state(seed=0)(vol)
    assert all(s["slice"] in nonempty and s["label"].sum() > 0 and s["prior"].sum() > 0 for s in restricted)

    wide = RandPriorSliced(num_samples=400, include_outside=2).set_random_state(seed=0)(vol)
    assert {s["slice"] for s in wide} == {2, 3, 4, 5, 6, 7, 8}


def test_rand_prior_slice_gap_and_volume_edges():
    vol = _volume(first=0, last=D - 1, gap=(5, 6, 7))  # structure touching both ends of the volume, with a gap
    samples = RandPriorSliced(max_offset=2, num_samples=300).set_random_state(seed=2)(vol)
    targets = {s["slice"] for s in samples}
    assert all(0 <= s["slice"] < D for s in samples)
    assert 6 not in targets  # two slices from the nearest non-empty slice
    assert {5, 7} <= targets  # one slice from it


def test_rand_prior_slice_explicit_offsets_and_other_axis():
    vol = _volume(first=2, last=9)
    samples = RandPriorSliced(offsets=[3], num_samples=50).set_random_state(seed=0)(vol)
    assert {s["slice"] - s["prior_slice"] for s in samples} == {3}
    image = np.moveaxis(vol["image"], 3, 1)  # slice axis 0 of the spatial dims
    label = np.moveaxis(vol["label"], 3, 1)
    for s in RandPriorSliced(axis=0, num_samples=10).set_random_state(seed=0)({"image": image, "label": label}):
        assert s["image"].shape == (1, H, W)
        assert s["axis"] == 0
        np.testing.assert_array_equal(s["prior"], label[:, s["prior_slice"]])
        assert s["prior"].sum() > 0


def test_rand_prior_slice_is_deterministic_with_a_seed():
    vol = _volume(first=2, last=9)

    def draw(seed: int) -> list[tuple[int, int]]:
        return [(s["slice"], s["prior_slice"]) for s in RandPriorSliced(num_samples=20).set_random_state(seed)(vol)]

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


def test_rand_prior_slice_multichannel_image():
    vol = _volume()
    image = np.concatenate([vol["image"], -vol["image"]])
    s = RandPriorSliced().set_random_state(seed=0)({"image": image, "label": vol["label"]})[0]
    assert s["image"].shape == (2, H, W)
    np.testing.assert_array_equal(s["image"], image[..., s["slice"]])


def _meta_label(label: np.ndarray) -> MetaTensor:
    return MetaTensor(label, meta={"filename_or_obj": "/data/case_007_label.nii.gz"})


@pytest.mark.parametrize(
    ("image", "label", "exc", "match"),
    [
        (np.zeros((1, H, W, D)), _meta_label(np.zeros((1, H, W, D))), ValueError, r"'label' of /data/case_007.*empty"),
        (np.zeros((1, H, W)), np.ones((1, H, W)), ValueError, r"'image' .* must be a channel-first 3D volume"),
        (np.zeros((1, H, W, D)), np.ones((H, W, D)), ValueError, r"'label' .* must be a channel-first 3D volume"),
        (np.zeros((1, H, W, D + 1)), np.ones((1, H, W, D)), ValueError, "spatial shapes of 'image'.*differ"),
        (np.zeros((1, H, W, D)), np.ones((2, H, W, D)), ValueError, "must have one channel"),
        (np.zeros((1, H, W, D)), _meta_label(np.full((1, H, W, D), 4)), ValueError, "must be a binary mask.*Select"),
    ],
)
def test_rand_prior_slice_bad_input(image, label, exc, match):
    with pytest.raises(exc, match=match):
        RandPriorSliced()({"image": image, "label": label})


def test_rand_prior_slice_missing_key_and_no_valid_pair():
    vol = _volume()
    with pytest.raises(KeyError, match="'label'"):
        RandPriorSliced()({"image": vol["image"]})
    one_slice = _volume(first=5, last=5)
    with pytest.raises(ValueError, match=r"no \(current, prior\) slice pair .*include_outside=0.*\[5\]"):
        RandPriorSliced(include_outside=0)(one_slice | {"case_id": "c3"})
    assert RandPriorSliced(include_outside=True).include_outside == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_offset": 0},
        {"num_samples": 0},
        {"offsets": []},
        {"offsets": [1.5]},
        {"offsets": "12"},
        {"include_outside": -1},
        {"axis": 3},
    ],
)
def test_rand_prior_slice_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="must be"):
        RandPriorSliced(**kwargs)


@pytest.mark.parametrize("to_type", [np.asarray, MetaTensor])
def test_rand_prior_slice_in_compose_and_monai_dataloader(to_type):
    items = [{k: to_type(v) for k, v in _volume(first=f, last=f + 3).items()} | {"case_id": f"c{f}"} for f in (2, 5)]
    pipeline = Compose(
        [
            RandPriorSliced(num_samples=3),
            RandFlipd(["image", "label", "prior"], prob=0.5, spatial_axis=0),
            RandMaskPriorJitterd("prior", rotate_range_deg=1.0, scale_range=0.1),
            ConcatItemsd(["image", "prior"], "image"),
        ]
    ).set_random_state(seed=0)
    batches = list(DataLoader(Dataset(items, transform=pipeline), batch_size=2, num_workers=0, shuffle=False))
    assert len(batches) == 1
    batch = batches[0]
    assert tuple(batch["image"].shape) == (6, 2, H, W)
    assert tuple(batch["label"].shape) == (6, 1, H, W)
    assert tuple(batch["slice"].shape) == (6,)
    assert tuple(batch["prior_slice"].shape) == (6,)
    assert batch["case_id"] == ["c2"] * 3 + ["c5"] * 3
    assert torch.all(batch["image"][:, 1].flatten(1).sum(1) > 0)  # the prior channel is never empty
    assert torch.all((batch["slice"] - batch["prior_slice"]).abs() <= 2)


# ---------------------------------------------------------------- SliceAnnotationFromLabeld


@pytest.mark.parametrize("to_type", TYPES)
def test_slice_annotation_middle_slice(to_type):
    label = _volume(first=3, last=8)["label"]  # middle round(5.5) = 6
    out = SliceAnnotationFromLabeld(slices_key="annotated")({"label": to_type(label)})
    ann = out["annotation"]
    assert type(ann) is type(to_type(label))
    assert ann.dtype == to_type(label).dtype
    assert tuple(ann.shape) == label.shape
    assert annotated_slice_indices(ann[0]) == [6]
    assert out["annotated"] == [6]
    np.testing.assert_array_equal(_np(ann)[..., 6], label[..., 6])
    assert _np(ann).sum() == label[..., 6].sum()
    assert "annotation" not in {"label": label}


def test_slice_annotation_keeps_meta_and_finds_nearest_non_empty_slice():
    label = _volume(first=2, last=10, gap=(5, 6, 7))["label"]  # middle 6 is empty; 4 and 8 tie -> 4
    meta_label = MetaTensor(label, meta={"filename_or_obj": "lab.nii.gz"})
    ann = SliceAnnotationFromLabeld()({"label": meta_label})["annotation"]
    assert ann.meta["filename_or_obj"] == "lab.nii.gz"
    assert annotated_slice_indices(ann[0]) == [4]


def test_slice_annotation_explicit_slices_and_axis(caplog):
    label = _volume(first=2, last=9)["label"]
    ann = SliceAnnotationFromLabeld(slices=[7, 3])({"label": label})["annotation"]
    assert annotated_slice_indices(ann[0]) == [3, 7]
    np.testing.assert_array_equal(ann[..., [3, 7]], label[..., [3, 7]])
    with caplog.at_level(logging.WARNING):
        ann = SliceAnnotationFromLabeld(slices=[0, 5])({"label": label})["annotation"]
    assert annotated_slice_indices(ann[0]) == [5]
    assert "hold no foreground" in caplog.text
    moved = np.moveaxis(label, 3, 1)
    ann = SliceAnnotationFromLabeld(axis=0, slices=4)({"label": moved})["annotation"]
    assert annotated_slice_indices(ann[0], axis=0) == [4]
    np.testing.assert_array_equal(ann[:, 4], moved[:, 4])


@pytest.mark.parametrize(
    ("kwargs", "label", "exc", "match"),
    [
        ({}, MetaTensor(np.zeros((1, H, W, D)), meta={"filename_or_obj": "x.nii.gz"}), ValueError, "x.nii.gz is empty"),
        ({"slices": [D]}, _volume()["label"], ValueError, rf"slices \[{D}\] are outside"),
        ({}, _volume()["label"][0], ValueError, "channel-first 3D volume"),
        ({}, np.ones((2, H, W, D)), ValueError, "must have one channel"),
    ],
)
def test_slice_annotation_errors(kwargs, label, exc, match):
    with pytest.raises(exc, match=match):
        SliceAnnotationFromLabeld(**kwargs)({"label": label})


@pytest.mark.parametrize("slices", ["first", [], [-1], [1.5]])
def test_slice_annotation_bad_slices(slices):
    with pytest.raises(ValueError, match="slice"):
        SliceAnnotationFromLabeld(slices=slices)


def test_slice_annotation_missing_key():
    with pytest.raises(KeyError, match="'label'"):
        SliceAnnotationFromLabeld()({"image": np.zeros((1, H, W, D))})
    assert SliceAnnotationFromLabeld(allow_missing_keys=True)({"image": 1}) == {"image": 1}


# ---------------------------------------------------------------- bundle configs


@pytest.mark.parametrize(
    ("config", "cls"),
    [
        (
            {"_target_": "common.transforms.RandMaskPriorJitterd", "keys": "prior", "rotate_range_deg": 1.0},
            RandMaskPriorJitterd,
        ),
        (
            {"_target_": "common.transforms.MaskPriorJitterd", "keys": ["prior"], "angle_deg": 2, "scale": 1.1},
            MaskPriorJitterd,
        ),
        ({"_target_": "common.transforms.RandPriorSliced", "max_offset": 2, "num_samples": 4}, RandPriorSliced),
        ({"_target_": "common.transforms.SliceAnnotationFromLabeld", "slices": "middle"}, SliceAnnotationFromLabeld),
    ],
)
def test_instantiable_from_bundle_config(config, cls):
    parser = ConfigParser({"t": config})
    assert isinstance(parser.get_parsed_content("t"), cls)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_volumes_give_cuda_slices_and_annotations():
    vol = {k: torch.as_tensor(v).cuda() for k, v in _volume().items()}
    for s in RandPriorSliced(num_samples=3).set_random_state(seed=0)(vol):
        assert s["image"].device.type == "cuda"
        assert s["prior"].device.type == "cuda"
    assert SliceAnnotationFromLabeld()(vol)["annotation"].device.type == "cuda"
