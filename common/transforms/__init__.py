"""Transforms shared by the bundles: pure array functions (:mod:`.functional`) and MONAI dictionary transforms.

Config-facing names are re-exported here, e.g. ``"_target_": "common.transforms.RandPriorSliced"``.
"""

from __future__ import annotations

from common.transforms.functional import (
    JITTER_MODES,
    annotated_slice_indices,
    annotation_from_slices,
    foreground_per_slice,
    jitter_mask_about_centre,
    middle_slice_index,
)
from common.transforms.priors import (
    MaskPriorJitterd,
    RandMaskPriorJitterd,
    RandPriorSliced,
    SliceAnnotationFromLabeld,
)

__all__ = [
    "JITTER_MODES",
    "MaskPriorJitterd",
    "RandMaskPriorJitterd",
    "RandPriorSliced",
    "SliceAnnotationFromLabeld",
    "annotated_slice_indices",
    "annotation_from_slices",
    "foreground_per_slice",
    "jitter_mask_about_centre",
    "middle_slice_index",
]
