"""Refinement of a segmentation (BIFSeg, shared with the active-learning bundle).

- :mod:`~common.refinement.graphcut`: the graph-cut CRF (unary -log p, contrast-sensitive pairwise term, scribbles
  as hard constraints), 2D and 3D;
- :mod:`~common.refinement.geodesic`: geodesic distance to scribbles;
- :mod:`~common.refinement.uncertainty`: BIFSeg's uncertainty weight map;
- :mod:`~common.refinement.finetune`: image-specific fine-tuning of the classifier head;
- :mod:`~common.refinement.inferer`: the bundle's MONAI inferer (box crop -> CNN / CNN + CRF / BIFSeg);
- :mod:`~common.refinement.grabcut`: GrabCut (grey-level, 2D and 3D), a baseline.

Re-exports resolved lazily (PEP 562): ``import common.refinement`` does not import torch or SciPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from common.refinement.finetune import (
        MODES,
        PRESETS,
        RefinementParams,
        RefinementResult,
        params_from,
        refine,
        weighted_cross_entropy,
    )
    from common.refinement.geodesic import geodesic_distance
    from common.refinement.grabcut import grabcut
    from common.refinement.graphcut import available_backends, graph_cut
    from common.refinement.inferer import BoxRefinementInferer
    from common.refinement.uncertainty import WeightMapParams, uncertainty_sets, uncertainty_weights

_SOURCES = {
    "MODES": "finetune",
    "PRESETS": "finetune",
    "RefinementParams": "finetune",
    "RefinementResult": "finetune",
    "params_from": "finetune",
    "refine": "finetune",
    "weighted_cross_entropy": "finetune",
    "geodesic_distance": "geodesic",
    "grabcut": "grabcut",
    "available_backends": "graphcut",
    "graph_cut": "graphcut",
    "BoxRefinementInferer": "inferer",
    "WeightMapParams": "uncertainty",
    "uncertainty_sets": "uncertainty",
    "uncertainty_weights": "uncertainty",
}

__all__ = [
    "MODES",
    "PRESETS",
    "BoxRefinementInferer",
    "RefinementParams",
    "RefinementResult",
    "WeightMapParams",
    "available_backends",
    "geodesic_distance",
    "grabcut",
    "graph_cut",
    "params_from",
    "refine",
    "uncertainty_sets",
    "uncertainty_weights",
    "weighted_cross_entropy",
]

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
