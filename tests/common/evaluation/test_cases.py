"""Tests for common.evaluation.cases (NIfTI loading into EvalCase)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from common.evaluation.cases import CaseInfo, EvalCase, load_eval_cases

AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])


def _write_case(root: Path, case_id: str, shape: tuple[int, ...] = (12, 10, 6), seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 100.0, size=shape).astype(np.float32)
    label = np.zeros(shape[:3], dtype=np.uint8)
    label[2:6, 2:6, 1:4] = 1
    label[7:10, 3:8, 2:5] = 4
    (root / "imagesTr").mkdir(exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    img_path = root / "imagesTr" / f"{case_id}.nii.gz"
    lab_path = root / "labelsTr" / f"{case_id}.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(img_path))
    nib.save(nib.Nifti1Image(label, AFFINE), str(lab_path))
    return {"image": str(img_path), "label": str(lab_path)}


def _sample(paths: dict[str, str], case_id: str, structure: int, **extra: Any) -> dict[str, Any]:
    names = {1: ("liver", "seen"), 4: ("kidney_right", "unseen"), 2: ("spleen", "seen")}
    name, group = names[structure]
    return {**paths, "case_id": case_id, "structure": structure, "structure_name": name, "group": group, **extra}


def test_loads_and_binarises(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000", seed=0)
    p1 = _write_case(tmp_path, "phantom_001", seed=1)
    samples = [
        _sample(p0, "phantom_000", 1),
        _sample(p0, "phantom_000", 4, axis=2, slice=3),
        _sample(p1, "phantom_001", 4),
    ]
    cases = list(load_eval_cases(samples))
    assert [(c.case_id, c.structure, c.group) for c in cases] == [
        ("phantom_000", 1, "seen"),
        ("phantom_000", 4, "unseen"),
        ("phantom_001", 4, "unseen"),
    ]
    c0, c1, c2 = cases
    assert c0.image.dtype == np.float32
    assert c0.image.shape == (12, 10, 6)
    assert c0.label.dtype == np.uint8
    assert set(np.unique(c0.label)) == {0, 1}
    assert int(c0.label.sum()) == 4 * 4 * 3
    assert int(c1.label.sum()) == 3 * 5 * 3
    assert c0.spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(c0.affine, AFFINE)
    expected = np.asarray(nib.load(p0["image"]).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(c0.image, expected)
    assert c1.meta == {"axis": 2, "slice": 3}
    assert c0.meta == {}
    # image read once and shared between the structures of a case; a new case gets its own
    assert c0.image is c1.image
    assert c2.image is not c0.image
    assert not np.array_equal(c2.image, c0.image)
    # read-only so no adapter can corrupt the shared array
    with pytest.raises(ValueError, match="read-only"):
        c0.image[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        c0.label[0, 0, 0] = 1


def test_info_has_no_ground_truth(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    case = next(load_eval_cases([_sample(p0, "phantom_000", 1, slice=2)]))
    info = case.info
    assert isinstance(info, CaseInfo)
    assert not hasattr(info, "label")
    assert not hasattr(info, "image")
    assert (info.case_id, info.structure, info.structure_name, info.group) == ("phantom_000", 1, "liver", "seen")
    assert info.spacing == case.spacing
    assert info.meta == {"slice": 2}


def test_lazy(tmp_path: Path) -> None:
    """Errors in later samples surface only when reached: the first case is usable before that."""
    p0 = _write_case(tmp_path, "phantom_000")
    it = load_eval_cases([_sample(p0, "phantom_000", 1), {"image": "x"}])
    assert isinstance(next(it), EvalCase)
    with pytest.raises(ValueError, match="missing keys"):
        next(it)


def test_missing_file(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    bad = {**p0, "image": str(tmp_path / "nope.nii.gz")}
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz"):
        list(load_eval_cases([_sample(bad, "phantom_000", 1)]))


def test_unreadable_file(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a nifti file")
    with pytest.raises(ValueError, match=r"cannot read label file .*garbage"):
        list(load_eval_cases([_sample({**p0, "label": str(garbage)}, "phantom_000", 1)]))


def test_shape_mismatch(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    other = _write_case(tmp_path, "phantom_009", shape=(12, 10, 7))
    with pytest.raises(ValueError, match="shape"):
        list(load_eval_cases([_sample({**p0, "label": other["label"]}, "phantom_000", 1)]))


def test_affine_mismatch(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    lab = np.asarray(nib.load(p0["label"]).dataobj)  # type: ignore[attr-defined]
    moved = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([1.0, 1.0, 1.0, 1.0])), str(moved))
    with pytest.raises(ValueError, match="affines"):
        list(load_eval_cases([_sample({**p0, "label": str(moved)}, "phantom_000", 1)]))


def test_empty_structure(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    with pytest.raises(ValueError, match=r"structure 2 \(spleen\) is empty"):
        list(load_eval_cases([_sample(p0, "phantom_000", 2)]))


def test_four_dimensional_image_rejected(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000", shape=(12, 10, 6, 2))
    with pytest.raises(ValueError, match="3D"):
        list(load_eval_cases([_sample(p0, "phantom_000", 1)]))


def test_non_integer_label_map_rejected(tmp_path: Path) -> None:
    p0 = _write_case(tmp_path, "phantom_000")
    frac = tmp_path / "frac.nii.gz"
    data = np.full((12, 10, 6), 0.5, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), str(frac))
    with pytest.raises(ValueError, match="non-integer"):
        list(load_eval_cases([_sample({**p0, "label": str(frac)}, "phantom_000", 1)]))
