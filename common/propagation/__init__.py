"""Slice propagation: segment a volume slice by slice from user-annotated slices with a 2D (image, prior) model.

- :func:`~common.propagation.engine.propagate`: the algorithm (torch only), with per-slice provenance.
- :mod:`~common.propagation.merge`: how propagations from several user slices combine (``"nearest"``,
  ``"overwrite"``, ``"fusion"``, or a custom :class:`~common.propagation.merge.MergeRule`).
- :class:`~common.propagation.inferer.SlicePropagationInferer`: MONAI ``Inferer`` for bundles and MONAI Label.
- :mod:`~common.propagation.validation`: the input checks both use.
"""

from __future__ import annotations

from common.propagation.annotation import (
    CheckAnnotationd,
    RestoreUserSlicesd,
    StopAtEmptyUserSlicesd,
    reachable_slices,
    slice_axis_in_array,
)
from common.propagation.engine import FrontRecord, PredictFn, PropagationResult, propagate
from common.propagation.inferer import SlicePropagationInferer
from common.propagation.merge import (
    MERGE_RULES,
    FusionMerge,
    MergeContext,
    MergeRule,
    NearestMerge,
    OverwriteMerge,
    get_merge_rule,
)

__all__ = [
    "MERGE_RULES",
    "CheckAnnotationd",
    "FrontRecord",
    "FusionMerge",
    "MergeContext",
    "MergeRule",
    "NearestMerge",
    "OverwriteMerge",
    "PredictFn",
    "PropagationResult",
    "RestoreUserSlicesd",
    "SlicePropagationInferer",
    "StopAtEmptyUserSlicesd",
    "get_merge_rule",
    "propagate",
    "reachable_slices",
    "slice_axis_in_array",
]
