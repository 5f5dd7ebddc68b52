"""2D evaluation instances: one axial slice of one structure, from volume-level evaluation cases.

BIFSeg's 2D evaluation segments 2D instances (one structure on one slice, one box each). Each instance here keeps the
whole volume as the image (the request a viewer sends names the image file) and restricts the ground truth to the
chosen slice, so a method that segments only inside a one-slice box is scored exactly as in 2D (Dice and distances of
that slice). Slices are taken along the stored axis that runs I-S (from the case's affine).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np

from common.data.geometry import axial_axis
from common.evaluation.cases import EvalCase

__all__ = ["pick_slices", "single_slice_cases"]

logger = logging.getLogger(__name__)


def pick_slices(areas: np.ndarray, count: int, min_voxels: int) -> list[int]:
    """Up to ``count`` slice indices spread over the extent of a structure, the largest cross-section first.

    Args:
        areas: foreground voxels per slice, shape ``(D,)``.
        count: how many slices (>= 1): the largest slice, then slices at evenly spaced quantiles of the slices holding
            at least ``min_voxels`` voxels.
        min_voxels: minimum cross-section of a picked slice.

    Raises:
        ValueError: ``count < 1``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    candidates = np.flatnonzero(np.asarray(areas) >= min_voxels)
    if len(candidates) == 0:
        return []
    picked = [int(candidates[np.argmax(np.asarray(areas)[candidates])])]
    if count > 1:
        for q in np.linspace(0.0, 1.0, count + 1)[1:-1]:
            index = int(candidates[round(q * (len(candidates) - 1))])
            if index not in picked:
                picked.append(index)
    return picked[:count]


def single_slice_cases(
    cases: Iterable[EvalCase], slices_per_structure: int = 1, min_voxels: int = 20
) -> Iterator[EvalCase]:
    """One :class:`EvalCase` per picked axial slice of each case's structure, the label kept on that slice only.

    Args:
        cases: volume-level cases (e.g. :func:`common.evaluation.cases.load_eval_cases`).
        slices_per_structure: slices per structure (see :func:`pick_slices`).
        min_voxels: minimum cross-section of a picked slice; structures without such a slice are skipped (logged).

    Yields:
        Cases whose ``case_id`` is ``"<case_id>@<slice>"`` and whose ``meta`` holds ``source_case_id``, ``axis`` and
        ``slice``; the image array is shared with the source case.
    """
    for case in cases:
        axis = axial_axis(case.affine)
        areas = np.moveaxis(np.asarray(case.label) > 0, axis, -1).reshape(-1, case.label.shape[axis]).sum(axis=0)
        picked = pick_slices(areas, slices_per_structure, min_voxels)
        if not picked:
            logger.info(
                "%s %s: no axial slice with >= %d voxels, skipped", case.case_id, case.structure_name, min_voxels
            )
            continue
        for index in picked:
            label = np.zeros_like(case.label)
            where: list[slice | int] = [slice(None)] * case.label.ndim
            where[axis] = index
            label[tuple(where)] = case.label[tuple(where)]
            label.flags.writeable = False
            yield EvalCase(
                case_id=f"{case.case_id}@{index}",
                image=case.image,
                label=label,
                spacing=case.spacing,
                structure=case.structure,
                structure_name=case.structure_name,
                group=case.group,
                affine=case.affine,
                meta={**case.meta, "source_case_id": case.case_id, "axis": axis, "slice": index},
                image_path=case.image_path,
            )
