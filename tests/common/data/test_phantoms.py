"""Tests of the synthetic CT phantom generator (small grids to stay fast)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from common.data.phantoms import (
    NOISE_STD_HU_RANGE,
    PHANTOM_LABELS,
    PHANTOM_STRUCTURES,
    PHANTOM_VOLUME_FRACTION_RANGES,
    case_rng,
    dataset_json,
    generate_case,
    generate_dataset,
    main,
    phantom_affine,
)

SHAPE = (64, 64, 48)
SPACING = (2.5, 2.5, 3.5)
LABEL = {s.name: s.value for s in PHANTOM_STRUCTURES}
STRUCTURE_TABLE = {
    1: ("liver", "seen"),
    2: ("spleen", "seen"),
    3: ("kidney_left", "seen"),
    4: ("kidney_right", "unseen"),
    5: ("aorta", "unseen"),
    6: ("bowel", "seen"),
    7: ("iliac", "unseen"),
    8: ("adrenal", "unseen"),
    9: ("pancreas", "seen"),
    10: ("liver_lesion", "seen"),
}
N_CASES = 5


@pytest.fixture(scope="module")
def cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Cases 0..N_CASES-1 of seed 11 on the small grid."""
    return [generate_case(case_rng(11, i), SHAPE, SPACING) for i in range(N_CASES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-case phantom set (seed 3) with its montage; returns the dataset.json path."""
    return generate_dataset(tmp_path_factory.mktemp("phantom") / "set", 3, seed=3, shape=SHAPE, spacing=SPACING)


def _noise_std(image: np.ndarray) -> float:
    """Noise std from the air in the x-y corners (neighbour differences remove the smooth bias field)."""
    corner = image[:5, :5, :]
    return float(np.std(np.diff(corner, axis=0)) / np.sqrt(2.0))


def _ring(mask: np.ndarray, label: np.ndarray, inner: int = 1, outer: int = 3) -> np.ndarray:
    """Unlabelled voxels between ``inner`` and ``outer`` dilations of ``mask``, away from other labels."""
    ring = ndi.binary_dilation(mask, iterations=outer) & ~ndi.binary_dilation(mask, iterations=inner)
    return ring & (label == 0) & ~ndi.binary_dilation((label != 0) & ~mask)


def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image), f"{path} is not NIfTI-1"
    return img


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".png"
    }


# ----------------------------------------------------------------------------------------------- structure table


def test_structure_table_matches_the_specified_one() -> None:
    assert {s.value: (s.name, s.group) for s in PHANTOM_STRUCTURES} == STRUCTURE_TABLE
    expected_labels = {0: "background", **{v: n for v, (n, _) in STRUCTURE_TABLE.items()}}
    assert expected_labels == PHANTOM_LABELS
    assert set(PHANTOM_VOLUME_FRACTION_RANGES) == {n for n, _ in STRUCTURE_TABLE.values()}
    assert len({s.family for s in PHANTOM_STRUCTURES}) == len(PHANTOM_STRUCTURES)
    assert PHANTOM_VOLUME_FRACTION_RANGES["adrenal"][1] < 0.01


# ----------------------------------------------------------------------------------------------- case content


def test_case_types_and_values(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, label in cases:
        assert image.shape == label.shape == SHAPE
        assert image.dtype == np.float32
        assert label.dtype == np.uint8
        assert np.array_equal(image, np.rint(image)), "HU are rounded to integers (stored as int16)"
        assert image.min() >= -1024
        assert image.max() <= 3071
        assert set(np.unique(label)) <= set(PHANTOM_LABELS)


def test_every_class_present_within_expected_fraction(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for i, (_, label) in enumerate(cases):
        fractions = np.bincount(label.ravel(), minlength=len(PHANTOM_LABELS)) / label.size
        for s in PHANTOM_STRUCTURES:
            lo, hi = PHANTOM_VOLUME_FRACTION_RANGES[s.name]
            assert lo <= fractions[s.value] <= hi, f"case {i}: {s.name} fraction {fractions[s.value]:.5f}"
        assert fractions[LABEL["adrenal"]] < 0.01


@pytest.mark.parametrize("shape", [(32, 32, 32), (40, 36, 48)])
def test_every_class_present_on_smallest_grids(shape: tuple[int, int, int]) -> None:
    for i in range(3):
        _, label = generate_case(case_rng(2, i), shape, SPACING)
        assert set(np.unique(label)) == set(PHANTOM_LABELS), f"case {i} on {shape}"


def test_iliac_is_one_tube_above_and_two_below(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    eight = np.ones((3, 3), dtype=bool)
    for i, (_, label) in enumerate(cases):
        iliac = label == LABEL["iliac"]
        zs = np.nonzero(iliac.any(axis=(0, 1)))[0]
        assert zs.size >= 10
        counts = [ndi.label(iliac[:, :, k], structure=eight)[1] for k in zs]  # zs ascending: inferior first
        n_top, n_bottom = max(1, int(0.15 * zs.size)), max(1, int(0.4 * zs.size))
        assert set(counts[-n_top:]) == {1}, f"case {i}: upper slices {counts[-n_top:]}"
        assert set(counts[:n_bottom]) == {2}, f"case {i}: lower slices {counts[:n_bottom]}"


def test_aorta_is_straight_and_bowel_curves(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for i, (_, label) in enumerate(cases):
        for name in ("aorta", "bowel"):
            mask = label == LABEL[name]
            zs = np.nonzero(mask.any(axis=(0, 1)))[0]
            centres = np.array([ndi.center_of_mass(mask[:, :, k]) for k in zs])
            radius = np.sqrt(mask[:, :, zs].sum(axis=(0, 1)).min() / np.pi)  # smallest cross-section
            fit = np.polynomial.polynomial.polyfit(zs, centres, 1)
            residual = np.abs(centres - np.polynomial.polynomial.polyval(zs, fit).T).max()
            if name == "aorta":
                assert zs.size > 0.5 * SHAPE[2], f"case {i}: aorta spans {zs.size} slices"
                assert residual < radius + 1.5, f"case {i}: aorta bends {residual:.1f} voxels"
            else:
                assert residual > 2 * radius, f"case {i}: bowel centreline deviates only {residual:.1f} voxels"
                assert np.ptp(centres, axis=0).max() > 2 * radius


def test_pancreas_has_low_contrast_others_do_not(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for i, (image, label) in enumerate(cases):
        noise = _noise_std(image)
        assert NOISE_STD_HU_RANGE[0] - 2 < noise < NOISE_STD_HU_RANGE[1] + 2, f"case {i}: noise {noise:.1f}"
        contrast = {}
        for name in ("pancreas", "kidney_left", "adrenal", "aorta"):
            mask = label == LABEL[name]
            ring = _ring(mask, label)
            assert ring.sum() > 30
            contrast[name] = abs(float(image[mask].mean() - image[ring].mean())) / noise
        assert 0.2 < contrast["pancreas"] < 2.0, f"case {i}: pancreas contrast {contrast['pancreas']:.2f} std"
        for name, least in (("kidney_left", 4.0), ("aorta", 4.0), ("adrenal", 2.5)):  # thin adrenal: partial volume
            assert contrast[name] > least, f"case {i}: {name} contrast {contrast[name]:.2f} std"


def test_hu_values_are_plausible(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for image, label in cases:
        med = {n: float(np.median(image[label == v])) for n, v in LABEL.items()}
        assert 40 < med["liver"] < 85
        assert 30 < med["spleen"] < 70
        assert min(med["kidney_left"], med["kidney_right"]) > 100
        assert med["aorta"] > 150
        assert med["iliac"] > 100  # thin iliac: partial volume on the small grid
        assert med["liver_lesion"] < med["liver"] - 15
        assert -60 < med["bowel"] < 60
        assert np.median(image[:3, :3, :]) < -950, "air outside the body"


def test_lesions_lie_inside_the_liver(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for i, (_, label) in enumerate(cases):
        lesion = label == LABEL["liver_lesion"]
        neighbours = label[ndi.binary_dilation(lesion) & ~lesion]
        assert set(np.unique(neighbours)) <= {LABEL["liver"]}, f"case {i}: lesion touches {np.unique(neighbours)}"
        assert 1 <= ndi.label(lesion)[1] <= 3


def test_anatomical_sides_for_ras_axes(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Axis 0 points to the patient's right, axis 1 anterior, axis 2 superior (RAS+ affine)."""
    for _, label in cases:
        com = {n: np.array(ndi.center_of_mass(label == v)) for n, v in LABEL.items()}
        assert com["liver"][0] > SHAPE[0] / 2 > com["spleen"][0]
        assert com["kidney_right"][0] > SHAPE[0] / 2 > com["kidney_left"][0]
        assert com["kidney_left"][1] < com["pancreas"][1], "kidneys are posterior"
        assert com["iliac"][2] < com["kidney_left"][2] < com["liver"][2], "iliac below kidneys below liver"
        assert com["iliac"][2] < com["aorta"][2]


def test_anatomy_is_grid_independent() -> None:
    """The same generator state gives the same phantom on another grid (centroids in field-of-view units)."""
    shapes = [(64, 64, 48), (48, 56, 40)]
    coms = []
    for shape in shapes:
        _, label = generate_case(case_rng(4, 0), shape, SPACING)
        coms.append({v: (np.array(ndi.center_of_mass(label == v)) + 0.5) / shape for v in (1, 2, 3, 4, 5)})
    for v in coms[0]:
        assert np.abs(coms[0][v] - coms[1][v]).max() < 0.03, PHANTOM_LABELS[v]


def test_cases_differ_between_seeds_and_indices() -> None:
    a = generate_case(case_rng(0, 0), SHAPE, SPACING)[1]
    assert not np.array_equal(a, generate_case(case_rng(1, 0), SHAPE, SPACING)[1])
    assert not np.array_equal(a, generate_case(case_rng(0, 1), SHAPE, SPACING)[1])
    b = generate_case(case_rng(0, 0), SHAPE, SPACING)
    assert np.array_equal(a, b[1])


# ----------------------------------------------------------------------------------------------- written dataset


def test_dataset_json_is_valid(dataset: Path) -> None:
    data = json.loads(dataset.read_text())
    assert data == dataset_json(3, 3, SHAPE, SPACING)
    for key in ("name", "description", "reference", "licence", "release", "tensorImageSize", "modality"):
        assert key in data
    assert data["modality"] == {"0": "CT"}
    assert data["tensorImageSize"] == "3D"
    assert data["labels"] == {str(k): v for k, v in PHANTOM_LABELS.items()}
    assert data["numTraining"] == len(data["training"]) == 3
    assert data["numTest"] == len(data["test"]) == 0
    seen, unseen = set(data["structure_split"]["seen"]), set(data["structure_split"]["unseen"])
    names = set(data["labels"].values()) - {"background"}
    assert not seen & unseen
    assert seen | unseen == names
    assert seen == {"liver", "spleen", "kidney_left", "bowel", "pancreas", "liver_lesion"}
    for i, item in enumerate(data["training"]):
        assert item == {"image": f"./imagesTr/phantom_{i:03d}.nii.gz", "label": f"./labelsTr/phantom_{i:03d}.nii.gz"}
        assert (dataset.parent / item["image"]).is_file()
        assert (dataset.parent / item["label"]).is_file()


def test_nifti_files(dataset: Path) -> None:
    root = dataset.parent
    for i in range(3):
        img = _load(root / "imagesTr" / f"phantom_{i:03d}.nii.gz")
        lab = _load(root / "labelsTr" / f"phantom_{i:03d}.nii.gz")
        for im in (img, lab):
            assert im.shape == SHAPE
            np.testing.assert_allclose(im.affine, phantom_affine(SHAPE, SPACING))
            np.testing.assert_allclose(nib.affines.voxel_sizes(im.affine), np.array(SPACING))
            assert nib.aff2axcodes(im.affine) == ("R", "A", "S")
            raw = nib.Nifti1Header(binaryblock=gzip.decompress(Path(str(im.get_filename())).read_bytes())[:348])
            assert (float(raw["scl_slope"]), float(raw["scl_inter"])) == (1.0, 0.0)
        assert img.get_data_dtype() == np.int16
        assert lab.get_data_dtype() == np.uint8
        centre = img.affine @ np.array([*(np.array(SHAPE) - 1) / 2, 1.0])
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
        image, label = generate_case(case_rng(3, i), SHAPE, SPACING)
        assert np.array_equal(np.asanyarray(img.dataobj), image.astype(np.int16))
        assert np.array_equal(np.asanyarray(lab.dataobj), label)


def test_montage_png_written(dataset: Path) -> None:
    png = dataset.parent / "montage_phantom_000.png"
    pixels = mpimg.imread(png)
    assert pixels.ndim == 3
    assert min(pixels.shape[:2]) > 200
    assert pixels.shape[2] in (3, 4)
    assert not (dataset.parent / "montage_phantom_001.png").exists()


def test_same_seed_gives_identical_bytes_and_cases_do_not_depend_on_n(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 2, seed=7, shape=SHAPE, spacing=SPACING, montage=False).parent
    b = generate_dataset(tmp_path / "b", 2, seed=7, shape=SHAPE, spacing=SPACING, montage=False).parent
    c = generate_dataset(tmp_path / "c", 3, seed=7, shape=SHAPE, spacing=SPACING, montage=False).parent
    d = generate_dataset(tmp_path / "d", 2, seed=8, shape=SHAPE, spacing=SPACING, montage=False).parent
    files_a = _files(a)
    assert len(files_a) == 5
    assert files_a == _files(b)
    for name, data in files_a.items():
        if name.endswith(".gz"):  # gzip header: no modification time, no file name (flag bit 3)
            assert data[4:8] == b"\0\0\0\0", name
            assert not data[3] & 0x08, name
    files_c = _files(c)
    for name in ("imagesTr/phantom_001.nii.gz", "labelsTr/phantom_001.nii.gz"):
        assert files_c[name] == files_a[name], f"{name} depends on the number of cases"
    files_d = _files(d)
    for name in ("imagesTr/phantom_000.nii.gz", "labelsTr/phantom_000.nii.gz", "dataset.json"):
        assert files_d[name] != files_a[name]


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("shape", "spacing", "match"),
    [
        ((31, 64, 64), SPACING, "out of range"),
        ((64, 513, 64), SPACING, "out of range"),
        ((64, 64), SPACING, "3 integers"),
        ((64, 64, 48, 2), SPACING, "3 integers"),
        ((64.5, 64, 48), SPACING, "3 integers"),
        ("abc", SPACING, "3 integers"),
        (SHAPE, (2.5, 0.0, 3.5), "positive"),
        (SHAPE, (2.5, -1.0, 3.5), "positive"),
        (SHAPE, (2.5, float("nan"), 3.5), "positive"),
        (SHAPE, (2.5, 2.5), "3 positive"),
    ],
)
def test_bad_geometry_raises(shape: object, spacing: object, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        generate_case(case_rng(0, 0), shape, spacing)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path / "out", 1, shape=shape, spacing=spacing)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"


@pytest.mark.parametrize("n_cases", [0, -2, 1.5, True])
def test_bad_case_count_raises(n_cases: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_cases"):
        generate_dataset(tmp_path / "out", n_cases, shape=SHAPE)  # type: ignore[arg-type]


def test_bad_seed_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(tmp_path / "out", 1, seed=-1, shape=SHAPE)


def test_existing_folder_is_not_overwritten_without_flag(tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)):
        generate_dataset(out, 1, shape=(32, 32, 32))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        generate_dataset(a_file, 1, shape=(32, 32, 32))


def test_overwrite_removes_only_generated_files(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate_dataset(out, 3, seed=1, shape=(32, 32, 32))
    (out / "notes.txt").write_text("mine")
    (out / "imagesTr" / "extra.nii.gz").write_bytes(b"user file")
    (out / "other").mkdir()
    old = (out / "imagesTr" / "phantom_000.nii.gz").read_bytes()
    generate_dataset(out, 2, seed=2, shape=(32, 32, 32), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "imagesTr" / "extra.nii.gz").read_bytes() == b"user file"
    assert (out / "other").is_dir()
    assert not (out / "imagesTr" / "phantom_002.nii.gz").exists()
    assert not (out / "labelsTr" / "phantom_002.nii.gz").exists()
    assert (out / "imagesTr" / "phantom_000.nii.gz").read_bytes() != old
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    assert (out / "montage_phantom_000.png").is_file()


# ----------------------------------------------------------------------------------------------- command line


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert (
        main(
            ["--out", str(out), "--cases", "1", "--seed", "5", "--shape", "32", "32", "32", "--spacing", "3", "3", "4"]
        )
        == 0
    )
    assert str(out) in capsys.readouterr().out
    data = json.loads((out / "dataset.json").read_text())
    assert data["numTraining"] == 1
    assert data["phantom"] == {
        "seed": 5,
        "shape": [32, 32, 32],
        "spacing": [3.0, 3.0, 4.0],
        "generator": "common.data.phantoms",
    }
    img = _load(out / "imagesTr" / "phantom_000.nii.gz")
    np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), np.array([3.0, 3.0, 4.0]))
    assert (out / "montage_phantom_000.png").is_file()
    with pytest.raises(SystemExit) as err:  # existing dataset, no --overwrite
        main(["--out", str(out), "--cases", "1", "--shape", "32", "32", "32"])
    assert err.value.code != 0
    assert "not empty" in capsys.readouterr().err
    assert main(["--out", str(out), "--cases", "1", "--shape", "32", "32", "32", "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cases", "0"], "n_cases"),
        (["--cases", "-3"], "n_cases"),
        (["--seed", "-1"], "seed"),
        (["--shape", "16", "64", "64"], "out of range"),
        (["--shape", "64", "64"], "expected 3 arguments"),
        (["--spacing", "1", "0", "1"], "positive"),
        (["--bogus"], "unrecognized arguments"),
        (["--cases", "two"], "invalid int value"),
    ],
)
def test_cli_bad_arguments_exit_nonzero(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as err:
        main(["--out", str(tmp_path / "x"), *args])
    assert err.value.code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_requires_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main([])
    assert err.value.code != 0
    assert "--out" in capsys.readouterr().err
