"""Fixtures writing small fake MSD folders (24x24x16 NIfTI volumes) with nibabel.

Two layouts:

* ``spleen_task``: a fake ``Task09_Spleen`` exactly like the real one's ``dataset.json`` (labels {0 background,
  1 spleen}, ``"test"`` as a list of strings, macOS ``._`` junk files in ``imagesTr``), 5 training and 2 test cases.
* ``multi_task``: a multi-label set with ``"structure_split"`` whose label volumes are given by ``MULTI_CASES``, so
  tests know exactly which slices contain which structure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pytest

SHAPE = (24, 24, 16)
SPACING = (1.5, 1.5, 3.0)
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = [-10.0, 5.0, 20.0]

MULTI_LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right"}
MULTI_SPLIT = {"seen": ["liver", "spleen", "kidney_left"], "unseen": ["kidney_right"]}

# case -> list of (label value, (x0, x1, y0, y1, z0, z1)) boxes, half-open voxel ranges.
MULTI_BOXES: dict[str, list[tuple[int, tuple[int, int, int, int, int, int]]]] = {
    # liver z 0-7 (8 slices), spleen z 5-8 (4), kidney_right z 10-11 (2); no kidney_left
    "case_a": [(1, (2, 10, 2, 10, 0, 8)), (2, (14, 20, 14, 20, 5, 9)), (4, (2, 5, 18, 22, 10, 12))],
    # liver z 3-5 (3), spleen one voxel at z 0 (1), kidney_left z 12-15 (4), kidney_right z 12-15 (4)
    "case_b": [
        (1, (2, 10, 2, 10, 3, 6)),
        (2, (20, 21, 20, 21, 0, 1)),
        (3, (15, 18, 2, 5, 12, 16)),
        (4, (15, 18, 18, 21, 12, 16)),
    ],
    # background only
    "case_c": [],
}


def box_label(
    boxes: list[tuple[int, tuple[int, int, int, int, int, int]]], shape: tuple[int, ...] = SHAPE
) -> np.ndarray:
    """uint8 label volume with the given boxes painted in order."""
    label = np.zeros(shape, dtype=np.uint8)
    for value, (x0, x1, y0, y1, z0, z1) in boxes:
        label[x0:x1, y0:y1, z0:z1] = value
    return label


MULTI_CASES: dict[str, np.ndarray] = {case: box_label(boxes) for case, boxes in MULTI_BOXES.items()}


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write ``array`` as NIfTI at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_msd(
    root: Path,
    labels_by_case: Mapping[str, np.ndarray],
    labels: Mapping[int, str],
    name: str = "Fake",
    structure_split: Mapping[str, list[str]] | None = None,
    test_cases: int = 0,
    affine: np.ndarray = AFFINE,
    rng_seed: int = 0,
) -> Path:
    """Write an MSD folder: float32 images (label * 100 + noise), uint8 labels and a standard ``dataset.json``."""
    rng = np.random.default_rng(rng_seed)
    training = []
    for case, label in labels_by_case.items():
        image = (label.astype(np.float32) * 100.0 + rng.normal(0.0, 5.0, label.shape)).astype(np.float32)
        save_nifti(root / "imagesTr" / f"{case}.nii.gz", image, affine)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label.astype(np.uint8), affine)
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    test = []
    for i in range(test_cases):
        case = f"test_{i}"
        save_nifti(root / "imagesTs" / f"{case}.nii.gz", rng.normal(0.0, 1.0, SHAPE).astype(np.float32), affine)
        test.append(f"./imagesTs/{case}.nii.gz")
    data: dict[str, Any] = {
        "name": name,
        "description": "fake dataset for tests",
        "reference": "none",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 01/01/2024",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in labels.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    if structure_split is not None:
        data["structure_split"] = {k: list(v) for k, v in structure_split.items()}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data, indent=2))
    return root


def edit_json(root: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``edit`` to the parsed ``dataset.json`` of ``root`` and write it back."""
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def spleen_label(index: int) -> np.ndarray:
    """Spleen label of case ``index``: a box covering slices ``index .. index + 3``."""
    return box_label([(1, (6, 14, 8, 16, index, index + 4))])


@pytest.fixture
def spleen_task(tmp_path: Path) -> Path:
    """Fake ``<tmp>/Task09_Spleen`` with 5 training cases ``spleen_{2..6}``, 2 test images and ``._`` junk files."""
    root = write_msd(
        tmp_path / "Task09_Spleen",
        {f"spleen_{i}": spleen_label(i) for i in range(2, 7)},
        {0: "background", 1: "spleen"},
        name="Spleen",
        test_cases=2,
    )
    # macOS AppleDouble junk as shipped in the real MSD tars: not NIfTI, not listed in dataset.json.
    (root / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "labelsTr" / "._spleen_2.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    return root


@pytest.fixture
def multi_task(tmp_path: Path) -> Path:
    """Multi-label folder ``<tmp>/multi`` with cases ``MULTI_CASES`` and ``MULTI_SPLIT``."""
    return write_msd(tmp_path / "multi", MULTI_CASES, MULTI_LABELS, name="Multi", structure_split=MULTI_SPLIT)


@pytest.fixture
def msd_tools() -> SimpleNamespace:
    """The helpers and constants of this conftest, for tests (conftest modules should not be imported directly)."""
    return SimpleNamespace(
        SHAPE=SHAPE,
        AFFINE=AFFINE.copy(),
        MULTI_LABELS=dict(MULTI_LABELS),
        MULTI_SPLIT={k: list(v) for k, v in MULTI_SPLIT.items()},
        MULTI_BOXES=MULTI_BOXES,
        MULTI_CASES=MULTI_CASES,
        box_label=box_label,
        save_nifti=save_nifti,
        write_msd=write_msd,
        edit_json=edit_json,
        spleen_label=spleen_label,
    )
