"""Tests of the dataset variants (re-stored axes, finer spacing, MRI contrast) on small phantoms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from common.data.mri_t2 import MRI_T2_BACKGROUND_CURVE, MRI_T2_INTENSITY
from common.data.msd import load_msd_dataset
from common.data.phantoms import PHANTOM_LABELS, generate_dataset, structure_split
from common.data.variants import (
    MRI_BACKGROUND_CURVE,
    MRI_T1_INTENSITY,
    MRI_UNKNOWN_RANGE,
    RESTORED_AXCODES,
    RESTORED_FLIP,
    RESTORED_ORDER,
    fine_affine,
    fine_shape,
    main,
    mri_contrast,
    mri_intensity_of,
    resample_image_in_plane,
    resample_label_in_plane,
    restore_array,
    restored_affine,
    write_variant,
)

SHAPE = (48, 40, 32)  # not cubic, so that a wrong axis order cannot go unnoticed
SPACING = (2.5, 2.5, 3.5)
CASE = "phantom_000"
#: (order, flip, expected axcodes): the default (exact qform quaternion) and one with a non-trivial quaternion
ORIENTATIONS = [
    (RESTORED_ORDER, RESTORED_FLIP, RESTORED_AXCODES),
    ((2, 1, 0), (True, True, True), ("I", "P", "L")),
]


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-case phantom set on a 48 x 40 x 32 grid."""
    root = tmp_path_factory.mktemp("variants") / "src"
    generate_dataset(root, n_cases=2, seed=5, shape=SHAPE, spacing=SPACING, montage=False)
    return root


@pytest.fixture(scope="module")
def variants(src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant of ``src`` with default options."""
    out = tmp_path_factory.mktemp("variant_out")
    return {v: write_variant(src, out / v, v) for v in ("restored", "fine", "mri")}


def _load(root: Path, case: str = CASE, kind: str = "imagesTr") -> Any:
    return nib.load(str(root / kind / f"{case}.nii.gz"))


def _array(img: Any) -> np.ndarray:
    return np.asanyarray(img.dataobj)


def _assert_same_world(old: Any, new: Any) -> None:
    """Every new voxel centre is an old voxel centre (bijectively) holding the same value."""
    old_data, new_data = _array(old), _array(new)
    assert old_data.dtype == new_data.dtype
    assert sorted(old_data.shape) == sorted(new_data.shape)
    index = np.indices(new_data.shape).reshape(3, -1)
    homog = np.vstack([index, np.ones(index.shape[1])])
    world = new.affine @ homog
    old_index = np.linalg.inv(old.affine) @ world
    rounded = np.rint(old_index[:3]).astype(np.int64)
    assert np.abs(old_index[:3] - rounded).max() < 1e-4
    np.testing.assert_allclose(old.affine @ np.vstack([rounded, homog[3]]), world, atol=1e-4)
    flat = np.ravel_multi_index(tuple(rounded), old_data.shape)  # raises if out of bounds
    assert len(np.unique(flat)) == flat.size
    np.testing.assert_array_equal(new_data.reshape(-1), old_data[tuple(rounded)])


def _monai_ras(path_root: Path, reader: str, case: str = CASE) -> dict[str, Any]:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    keys = ["image", "label"]
    transform = Compose(
        [
            LoadImaged(keys, reader=reader),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        ]
    )
    return transform(
        {
            "image": str(path_root / "imagesTr" / f"{case}.nii.gz"),
            "label": str(path_root / "labelsTr" / f"{case}.nii.gz"),
        }
    )


# --------------------------------------------------------------------------------------------------- common


@pytest.mark.parametrize("variant", ["restored", "fine", "mri"])
def test_dataset_json_keeps_labels_split_and_points_at_new_files(
    variants: dict[str, Path], src: Path, variant: str
) -> None:
    root = variants[variant]
    dataset = load_msd_dataset(root, check_content=True)
    source = load_msd_dataset(src)
    assert dataset.labels == PHANTOM_LABELS == source.labels
    assert (dataset.seen, dataset.unseen) == (source.seen, source.unseen)
    assert [item["case_id"] for item in dataset.training] == ["phantom_000", "phantom_001"]
    for item in dataset.training:
        assert Path(item["image"]).parent == root / "imagesTr"
        assert Path(item["label"]).parent == root / "labelsTr"
    data = json.loads((root / "dataset.json").read_text())
    assert data["structure_split"] == structure_split()
    assert data["numTraining"] == 2
    assert data["variant"]["name"] == variant
    assert data["variant"]["source"] == str(src.resolve())
    assert data["modality"] == ({"0": "MRI"} if variant == "mri" else {"0": "CT"})
    for case in ("phantom_000", "phantom_001"):
        image, label = _load(root, case), _load(root, case, "labelsTr")
        assert _array(label).dtype == np.uint8
        assert _array(image).dtype == (np.float32 if variant == "mri" else np.int16)
        np.testing.assert_array_equal(image.affine, label.affine)
        for img in (image, label):  # both header transforms hold the affine (nibabel uses the sform, ITK may not)
            assert int(img.header["sform_code"]) == 1
            assert int(img.header["qform_code"]) == 1
            np.testing.assert_allclose(img.header.get_qform(), img.header.get_sform(), atol=1e-5)


def test_cases_select_a_subset(src: Path, tmp_path: Path) -> None:
    root = write_variant(src, tmp_path / "one", "restored", cases=1)
    assert [i["case_id"] for i in load_msd_dataset(root).training] == ["phantom_000"]
    assert not (root / "imagesTr" / "phantom_001.nii.gz").exists()
    root = write_variant(src, tmp_path / "named", "restored", cases=["phantom_001"])
    assert [i["case_id"] for i in load_msd_dataset(root).training] == ["phantom_001"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "upside_down"}, "unknown variant 'upside_down'"),
        ({"variant": "fine", "spacing": 1.0}, r"variant 'fine' has no option\(s\) \['spacing'\]"),
        ({"variant": "fine", "in_plane_spacing": 0.0}, "in_plane_spacing must be a positive"),
        ({"variant": "restored", "order": (0, 0, 1)}, "order must be a permutation"),
        ({"variant": "restored", "flip": (True, False)}, "flip must be 3 booleans"),
        ({"variant": "mri", "seed": -1}, "seed must be a non-negative integer"),
        ({"variant": "mri", "cases": ["phantom_042"]}, r"unknown case id\(s\) \['phantom_042'\]"),
        ({"variant": "mri", "cases": 0}, "cases must be a positive number"),
        ({"variant": "mri", "noise_std": -1.0}, "noise_std must be a non-negative"),
        ({"variant": "mri", "gain_range": (1.2, 0.8)}, r"gain_range must be \(low, high\) with 0 < low <= high"),
    ],
)
def test_bad_arguments_raise_value_error(src: Path, tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_variant(src, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_output_folder_rules(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is the source folder"):
        write_variant(src, src, "restored")
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_variant(src, out, "restored", cases=1)
    write_variant(src, out, "restored", cases=1, overwrite=True)
    assert (out / "keep.txt").exists()
    assert (out / "imagesTr" / f"{CASE}.nii.gz").exists()


def test_command_line(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--src", str(src), "--out", str(tmp_path / "cli"), "--variant", "fine", "--cases", "1"]) == 0
    assert "wrote the fine variant" in capsys.readouterr().out
    assert len(load_msd_dataset(tmp_path / "cli").training) == 1
    with pytest.raises(SystemExit):
        main(["--src", str(src), "--out", str(tmp_path / "cli2"), "--variant", "mri", "--cases", "nope"])
    assert "unknown case id" in capsys.readouterr().err


def test_test_images_are_converted_for_geometry_variants(tmp_path: Path, msd_tools: Any) -> None:
    src = msd_tools.write_msd(tmp_path / "task", msd_tools.MULTI_CASES, msd_tools.MULTI_LABELS, test_cases=1)
    fine = load_msd_dataset(write_variant(src, tmp_path / "fine", "fine"), check_content=True)
    assert [i["case_id"] for i in fine.test] == ["test_0"]
    assert nib.load(fine.test[0]["image"]).shape == (36, 36, 16)  # 24 x 1.5 mm -> 36 x 1.0 mm; 3 mm slices kept
    mri = load_msd_dataset(write_variant(src, tmp_path / "mri", "mri"), check_content=True)
    assert mri.test == []  # the contrast is made from labels, which test images lack


# --------------------------------------------------------------------------------------------------- restored


def test_restore_array_and_affine_by_hand() -> None:
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    new = restore_array(array, (2, 0, 1), (False, True, True))
    assert new.shape == (4, 2, 3)
    assert new[1, 0, 0] == array[1, 2, 1]  # new (k, i', j') = old (n0-1-i', n1-1-j', k)
    affine = np.diag([2.0, 3.0, 5.0, 1.0])
    new_affine = restored_affine(affine, array.shape, (2, 0, 1), (False, True, True))
    expected = np.array([[0, -2, 0, 2], [0, 0, -3, 6], [5, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(new_affine, expected)
    assert nib.aff2axcodes(new_affine) == RESTORED_AXCODES


@pytest.mark.parametrize(("order", "flip", "axcodes"), ORIENTATIONS)
def test_restored_keeps_every_voxel_at_its_world_position(
    src: Path, tmp_path: Path, order: tuple[int, ...], flip: tuple[bool, ...], axcodes: tuple[str, ...]
) -> None:
    root = write_variant(src, tmp_path / "r", "restored", cases=1, order=order, flip=flip)
    for kind in ("imagesTr", "labelsTr"):
        old, new = _load(src, kind=kind), _load(root, kind=kind)
        assert nib.aff2axcodes(old.affine) == ("R", "A", "S")
        assert nib.aff2axcodes(new.affine) == axcodes
        assert axcodes.index("S" if "S" in axcodes else "I") != 2  # the axial axis is not last
        assert new.shape == tuple(SHAPE[a] for a in order)
        _assert_same_world(old, new)
        canonical = nib.as_closest_canonical(new)
        np.testing.assert_array_equal(_array(canonical), _array(old))
        np.testing.assert_allclose(canonical.affine, old.affine, atol=1e-4)


@pytest.mark.parametrize("reader", ["ITKReader", "NibabelReader"])
@pytest.mark.parametrize(("order", "flip", "axcodes"), ORIENTATIONS)
def test_monai_orientation_of_restored_gives_the_original(
    src: Path, tmp_path: Path, reader: str, order: tuple[int, ...], flip: tuple[bool, ...], axcodes: tuple[str, ...]
) -> None:
    root = write_variant(src, tmp_path / "r", "restored", cases=1, order=order, flip=flip)
    original, restored = _monai_ras(src, reader), _monai_ras(root, reader)
    for key in ("image", "label"):
        assert torch.equal(original[key].as_tensor(), restored[key].as_tensor())
        torch.testing.assert_close(restored[key].affine, original[key].affine, atol=1e-4, rtol=0.0)
    np.testing.assert_allclose(original["image"].affine.numpy(), _load(src).affine, atol=1e-4)


def test_restored_four_dimensional_image_keeps_the_channel_axis(tmp_path: Path, msd_tools: Any) -> None:
    src = msd_tools.write_msd(tmp_path / "task", msd_tools.MULTI_CASES, msd_tools.MULTI_LABELS)
    image_path = src / "imagesTr" / "case_a.nii.gz"
    image = _array(nib.load(image_path))
    multi = np.stack([image, -image], axis=-1)
    msd_tools.save_nifti(image_path, multi)
    root = write_variant(src, tmp_path / "r", "restored", cases=["case_a"])
    new = _load(root, "case_a")
    assert new.shape == (16, 24, 24, 2)
    np.testing.assert_array_equal(_array(nib.as_closest_canonical(new)), multi)


# --------------------------------------------------------------------------------------------------- fine


def test_fine_geometry_keeps_the_field_of_view_and_the_slices(variants: dict[str, Path], src: Path) -> None:
    old, new = _load(src), _load(variants["fine"])
    assert new.shape == (120, 100, 32)  # 48 x 2.5 = 120 x 1.0 mm, 40 x 2.5 = 100 x 1.0 mm
    np.testing.assert_allclose(new.header.get_zooms(), (1.0, 1.0, 3.5))
    for old_corner, new_corner in [((-0.5, -0.5, -0.5), (-0.5, -0.5, -0.5)), ((47.5, 39.5, 31.5), (119.5, 99.5, 31.5))]:
        np.testing.assert_allclose(old.affine @ [*old_corner, 1], new.affine @ [*new_corner, 1], atol=1e-5)
    slices_old = (old.affine @ np.array([[0, 0, k, 1] for k in range(32)]).T)[2]
    slices_new = (new.affine @ np.array([[0, 0, k, 1] for k in range(32)]).T)[2]
    np.testing.assert_array_equal(slices_old, slices_new)
    assert fine_shape(SHAPE, old.affine, 1.0) == (120, 100, 32)
    np.testing.assert_array_equal(fine_affine(old.affine, SHAPE, new.shape), new.affine)


def test_fine_spacing_is_adjusted_to_tile_the_field_of_view() -> None:
    affine = np.diag([2.5, 2.5, 3.5, 1.0])
    assert fine_shape((48, 40, 32), affine, 0.7) == (171, 143, 32)  # 120 / 0.7 = 171.4 -> 171 voxels of 0.702 mm
    new = fine_affine(affine, (48, 40, 32), (171, 143, 32))
    np.testing.assert_allclose(np.diag(new)[:3], (120 / 171, 100 / 143, 3.5))
    stored_axial_first = np.array([[0, 0, 2.5, 0], [0, 2.5, 0, 0], [3.5, 0, 0, 0], [0, 0, 0, 1.0]])
    assert fine_shape((32, 40, 48), stored_axial_first, 1.0) == (32, 100, 120)  # the slice axis found from the affine


def test_fine_image_interpolation_is_linear_in_world_coordinates(tmp_path: Path, msd_tools: Any) -> None:
    src = msd_tools.write_msd(tmp_path / "task", {"ramp": msd_tools.MULTI_CASES["case_b"]}, msd_tools.MULTI_LABELS)
    path = src / "imagesTr" / "ramp.nii.gz"
    affine = nib.load(path).affine
    index = np.indices(msd_tools.SHAPE).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    ramp = (2.0 * world[0] - 3.0 * world[1] + 0.5 * world[2]).reshape(msd_tools.SHAPE).astype(np.float32)
    msd_tools.save_nifti(path, ramp, affine)
    root = write_variant(src, tmp_path / "fine", "fine")
    new = _load(root, "ramp")
    data = _array(new)
    assert data.dtype == np.float32
    assert data.shape == (36, 36, 16)
    new_world = new.affine[:3, :3] @ np.indices(data.shape).reshape(3, -1) + new.affine[:3, 3:]
    expected = (2.0 * new_world[0] - 3.0 * new_world[1] + 0.5 * new_world[2]).reshape(data.shape)
    inner = (slice(1, -1), slice(1, -1), slice(None))  # the outermost half voxel takes the edge value
    np.testing.assert_allclose(data[inner], expected[inner], atol=1e-3)
    assert not np.allclose(data[0], expected[0], atol=1e-3)


def test_fine_labels_keep_structure_volumes(tmp_path: Path) -> None:
    src = tmp_path / "p"
    generate_dataset(src, n_cases=1, seed=0, shape=(96, 80, 48), spacing=SPACING, montage=False)
    root = write_variant(src, tmp_path / "fine", "fine")
    old, new = _load(src, kind="labelsTr"), _load(root, kind="labelsTr")
    old_mm3, new_mm3 = np.prod(old.header.get_zooms()), np.prod(new.header.get_zooms())
    old_counts = np.bincount(_array(old).ravel(), minlength=11)
    new_counts = np.bincount(_array(new).ravel(), minlength=11)
    assert (new_counts[1:] > 0).all()
    for value in range(1, 11):
        ratio = new_counts[value] * new_mm3 / (old_counts[value] * old_mm3)
        tolerance = 0.02 if old_counts[value] >= 1000 else 0.06
        assert abs(ratio - 1) < tolerance, (PHANTOM_LABELS[value], old_counts[value], ratio)


def test_resample_label_never_loses_a_single_voxel_and_resolves_ties_without_bias() -> None:
    label = np.zeros((5, 5, 2), dtype=np.uint8)
    label[2, 2, 0] = 7
    out = resample_label_in_plane(label, (15, 15, 2))
    assert out.dtype == np.uint8
    assert (out[..., 0] == 7).sum() >= 1
    assert not out[..., 1].any()
    # a half-and-half 1D edge: 4 old voxels -> 8 new voxels, no half-way ties; the edge stays in the middle
    line = np.zeros((4, 1, 1), dtype=np.uint8)
    line[2:] = 3
    np.testing.assert_array_equal(resample_label_in_plane(line, (8, 1, 1)).ravel(), [0, 0, 0, 0, 3, 3, 3, 3])
    # 2 -> 5 voxels puts new voxel 2 exactly on the old boundary (old position 0.5): the tie goes to the nearest
    # voxel with half-way rounding to even, i.e. old voxel 0 -- to the background here, to the structure mirrored
    pair = np.array([0, 4], dtype=np.uint8).reshape(2, 1, 1)
    np.testing.assert_array_equal(resample_label_in_plane(pair, (5, 1, 1)).ravel(), [0, 0, 0, 4, 4])
    np.testing.assert_array_equal(resample_label_in_plane(pair[::-1], (5, 1, 1)).ravel(), [4, 4, 4, 0, 0])
    with pytest.raises(ValueError, match="label must be a 3D integer array"):
        resample_label_in_plane(label.astype(np.float32), (15, 15, 2))


def test_resample_image_keeps_constant_and_carries_trailing_axes() -> None:
    image = np.full((4, 6, 3, 2), 5.0, dtype=np.float32)
    out = resample_image_in_plane(image, (10, 15, 3))
    assert out.shape == (10, 15, 3, 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 5.0)
    with pytest.raises(ValueError, match="new_shape must be 3 positive sizes"):
        resample_image_in_plane(image, (10, 0, 3))


@pytest.mark.parametrize("reader", ["ITKReader", "NibabelReader"])
def test_monai_reads_the_fine_geometry(variants: dict[str, Path], reader: str) -> None:
    data = _monai_ras(variants["fine"], reader)
    assert tuple(data["image"].shape) == (1, 120, 100, 32) == tuple(data["label"].shape)
    np.testing.assert_allclose(data["image"].affine.numpy(), _load(variants["fine"]).affine, atol=1e-4)


# --------------------------------------------------------------------------------------------------- mri


def test_mri_keeps_geometry_and_labels(variants: dict[str, Path], src: Path) -> None:
    for case in ("phantom_000", "phantom_001"):
        old, new = _load(src, case), _load(variants["mri"], case)
        assert new.shape == old.shape
        np.testing.assert_array_equal(new.affine, old.affine)
        np.testing.assert_array_equal(
            _array(_load(variants["mri"], case, "labelsTr")), _array(_load(src, case, "labelsTr"))
        )
        data = _array(new)
        assert data.dtype == np.float32
        assert np.isfinite(data).all()
        assert data.min() >= 0.0
        assert np.percentile(data, 99.9) < 1300.0


def test_mri_is_deterministic_and_seeded(variants: dict[str, Path], src: Path, tmp_path: Path) -> None:
    again = write_variant(src, tmp_path / "again", "mri")
    for kind in ("imagesTr", "labelsTr"):
        assert (again / kind / f"{CASE}.nii.gz").read_bytes() == (
            variants["mri"] / kind / f"{CASE}.nii.gz"
        ).read_bytes()
    other = write_variant(src, tmp_path / "other", "mri", seed=1)
    assert not np.array_equal(_array(_load(other)), _array(_load(variants["mri"])))
    case_0, case_1 = _array(_load(variants["mri"])), _array(_load(variants["mri"], "phantom_001"))
    assert not np.allclose(case_0[:8, :8], case_1[:8, :8])  # cases get their own noise


def _clean_mri(src: Path, case: str = CASE, **options: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ct, label, mri) with neither jitter, gain, bias nor noise unless ``options`` say otherwise."""
    image, label = _load(src, case), _load(src, case, "labelsTr")
    params: dict[str, Any] = {"tissue_jitter": 0.0, "gain_range": (1.0, 1.0), "bias_strength": 0.0, "noise_std": 0.0}
    params.update(options)
    ct = _array(image).astype(np.float32)
    mri = mri_contrast(ct, _array(label), PHANTOM_LABELS, image.affine, np.random.default_rng(0), **params)
    return ct, _array(label), mri


def test_mri_tissue_means_follow_the_table_and_keep_the_texture(src: Path) -> None:
    ct, label, mri = _clean_mri(src)
    for value, name in PHANTOM_LABELS.items():
        if value == 0:
            continue
        inside = label == value
        assert np.median(mri[inside]) == pytest.approx(mri_intensity_of(name), abs=1e-3)
        deviation = ct[inside] - np.median(ct[inside])
        sigma = 1.4826 * np.median(np.abs(deviation))
        expected = np.maximum(mri_intensity_of(name) + 1.5 * np.clip(deviation, -3 * sigma, 3 * sigma), 0.0)
        np.testing.assert_allclose(mri[inside], expected, atol=1e-3)
    medians = {n: float(np.median(mri[label == v])) for v, n in PHANTOM_LABELS.items() if v}
    fat = float(np.median(mri[(label == 0) & (ct > -130) & (ct < -70)]))
    air = float(np.median(mri[(label == 0) & (ct < -900)]))
    assert fat > medians["liver"] > medians["spleen"] > medians["kidney_left"] > medians["aorta"] > air
    np.testing.assert_allclose(
        mri[label == 0], np.interp(ct[label == 0], *np.array(MRI_BACKGROUND_CURVE).T), rtol=1e-6, atol=1e-3
    )


def test_mri_gain_bias_and_noise(src: Path) -> None:
    ct, label, clean = _clean_mri(src)
    _, _, biased = _clean_mri(src, bias_strength=0.2)
    assert (clean > 5).mean() > 0.999  # only a few dark vessel voxels are clipped to 0
    log_ratio = np.log(np.maximum(biased, 1e-3) / np.maximum(clean, 1e-3))
    log_ratio[clean <= 5] = np.nan  # undefined where the clean image is ~0: left out of the checks
    assert np.nanmax(np.abs(log_ratio)) == pytest.approx(0.2, abs=2e-3)  # exp(0.2 * p) with max |p| = 1
    for axis in range(3):
        assert np.nanmax(np.abs(np.diff(log_ratio, axis=axis))) < 0.03  # smooth: < 3 % per voxel
    _, _, noisy = _clean_mri(src, noise_std=20.0)
    air = (label == 0) & (ct < -900)
    assert noisy.min() >= 0.0
    assert noisy[air].mean() > clean[air].mean() + 10.0  # Rician: noise lifts a dark background
    liver = label == 1
    assert np.std(noisy[liver] - clean[liver]) == pytest.approx(20.0, rel=0.1)
    _, _, gained = _clean_mri(src, gain_range=(1.1, 1.1))
    np.testing.assert_allclose(gained, 1.1 * clean, rtol=1e-5, atol=1e-3)


def test_mri_intensity_of_names() -> None:
    assert mri_intensity_of("Kidney Left") == MRI_T1_INTENSITY["kidney"]
    assert mri_intensity_of("kidney-right") == MRI_T1_INTENSITY["kidney"]
    assert mri_intensity_of("liver") == MRI_T1_INTENSITY["liver"]
    unknown = mri_intensity_of("zorblax", seed=3)
    assert MRI_UNKNOWN_RANGE[0] <= unknown <= MRI_UNKNOWN_RANGE[1]
    assert mri_intensity_of("zorblax", seed=3) == unknown != mri_intensity_of("zorblax", seed=4)
    assert mri_intensity_of("zorblax", seed=3) != mri_intensity_of("quux", seed=3)


def test_mri_uses_the_dataset_label_names(tmp_path: Path, msd_tools: Any) -> None:
    labels = {0: "background", 1: "liver", 2: "zorblax", 3: "kidney_left", 4: "kidney_right"}
    src = msd_tools.write_msd(tmp_path / "task", msd_tools.MULTI_CASES, labels)
    root = write_variant(src, tmp_path / "mri", "mri", tissue_jitter=0.0, gain_range=(1, 1), noise_std=0.0)
    for case in ("case_a", "case_b"):
        image, label = _array(_load(root, case)), _array(_load(root, case, "labelsTr"))
        bias = image[label == 1] / MRI_T1_INTENSITY["liver"]
        assert 0.75 < np.median(bias) < 1.3
        zorblax = np.median(image[label == 2]) / np.median(bias)
        assert zorblax == pytest.approx(mri_intensity_of("zorblax", 0), rel=0.3)


def test_mri_rejects_bad_inputs(src: Path) -> None:
    ct, label, _ = _clean_mri(src)
    rng = np.random.default_rng(0)
    bad = label.copy()
    bad[0, 0, 0] = 42
    with pytest.raises(ValueError, match="label values \\[42\\] are not in the labels table"):
        mri_contrast(ct, bad, PHANTOM_LABELS, np.eye(4), rng)
    with pytest.raises(ValueError, match="same shape"):
        mri_contrast(ct[:-1], label, PHANTOM_LABELS, np.eye(4), rng)
    with pytest.raises(ValueError, match="weighting must be 't1' or 't2'"):
        mri_contrast(ct, label, PHANTOM_LABELS, np.eye(4), rng, weighting="flair")
    ct[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        mri_contrast(ct, label, PHANTOM_LABELS, np.eye(4), rng)


def test_mri_t2_orders_the_tissues_unlike_ct_and_t1(src: Path) -> None:
    """The second held-out contrast: fluid-like lesions bright on a dark liver, the reverse of T1."""
    ct, label, t1 = _clean_mri(src)
    _, _, t2 = _clean_mri(src, weighting="t2")
    for value, name in PHANTOM_LABELS.items():
        if value:
            assert np.median(t2[label == value]) == pytest.approx(mri_intensity_of(name, 0, MRI_T2_INTENSITY), abs=1e-3)
    t1_med = {n: float(np.median(t1[label == v])) for v, n in PHANTOM_LABELS.items() if v}
    t2_med = {n: float(np.median(t2[label == v])) for v, n in PHANTOM_LABELS.items() if v}
    ct_med = {n: float(np.median(ct[label == v])) for v, n in PHANTOM_LABELS.items() if v}
    assert t2_med["liver_lesion"] > t2_med["spleen"] > t2_med["liver"] > t2_med["aorta"]
    assert t1_med["liver_lesion"] < t1_med["liver"]
    assert ct_med["liver_lesion"] < ct_med["liver"]
    assert t2_med["spleen"] > t2_med["liver"]
    assert t1_med["spleen"] < t1_med["liver"]
    background = label == 0
    np.testing.assert_allclose(
        t2[background], np.interp(ct[background], *np.array(MRI_T2_BACKGROUND_CURVE).T), rtol=1e-6, atol=1e-3
    )


def test_mri_t2_variant_writes_an_mri_dataset(src: Path, tmp_path: Path) -> None:
    root = write_variant(src, tmp_path / "t2", "mri_t2", cases=1)
    data = json.loads((root / "dataset.json").read_text())
    assert data["modality"] == {"0": "MRI"}
    assert data["variant"]["name"] == "mri_t2"
    assert data["test"] == []
    t1 = write_variant(src, tmp_path / "t1", "mri", cases=1)
    image_t2, image_t1 = _array(_load(root)), _array(_load(t1))
    assert image_t2.shape == image_t1.shape
    assert not np.allclose(image_t2, image_t1)
    np.testing.assert_array_equal(_array(_load(root, kind="labelsTr")), _array(_load(src, kind="labelsTr")))
