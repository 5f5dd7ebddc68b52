"""Tests of common.evaluation.slice_cases: 2D instances (one structure on one axial slice) from volume cases."""

from __future__ import annotations

import numpy as np
import pytest

from common.evaluation.cases import EvalCase
from common.evaluation.slice_cases import pick_slices, single_slice_cases


def _case(affine: np.ndarray, label: np.ndarray) -> EvalCase:
    return EvalCase(
        case_id="c0",
        image=np.zeros(label.shape, np.float32),
        label=label,
        spacing=(1.0, 1.0, 1.0),
        structure=3,
        structure_name="blob",
        group="unseen",
        affine=affine,
        meta={"extra": 1},
        image_path="/x/img.nii.gz",
    )


def test_pick_slices_largest_first_then_spread() -> None:
    areas = np.array([0, 5, 30, 50, 40, 30, 25, 0])
    assert pick_slices(areas, 1, 20) == [3]
    picked = pick_slices(areas, 3, 20)
    assert picked[0] == 3
    assert 2 <= len(picked) <= 3  # "up to": a quantile slice equal to the largest one is not repeated
    assert len(set(picked)) == len(picked)
    assert all(areas[i] >= 20 for i in picked)
    assert pick_slices(areas, 2, 1000) == []
    with pytest.raises(ValueError, match="count"):
        pick_slices(areas, 0, 1)


@pytest.mark.parametrize("axial", [2, 0])
def test_single_slice_cases_keep_one_axial_slice(axial: int) -> None:
    shape = (10, 12, 14)
    label = np.zeros(shape, np.uint8)
    label[2:8, 3:9, 4:11] = 1
    affine = np.eye(4)
    if axial == 0:  # the first stored axis runs I-S
        affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]])
    cases = list(single_slice_cases([_case(affine, label)], slices_per_structure=2, min_voxels=5))
    assert len(cases) == 2
    for case in cases:
        assert case.meta["axis"] == axial
        assert case.meta["source_case_id"] == "c0"
        assert case.meta["extra"] == 1
        k = case.meta["slice"]
        assert case.case_id == f"c0@{k}"
        kept = np.take(case.label, k, axis=axial)
        assert kept.sum() == np.take(label, k, axis=axial).sum() > 0
        assert case.label.sum() == kept.sum()
        assert not case.label.flags.writeable


def test_structures_without_a_big_enough_slice_are_skipped() -> None:
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0] = 1
    assert list(single_slice_cases([_case(np.eye(4), label)], min_voxels=2)) == []
