"""The robot-user evaluation's model adapter for any bundle: the viewer's request through the bundle's own pipeline.

Per round, the user's state becomes the request a viewer would send (:func:`common.interaction.requests.
state_request`), the bundle's interaction kind turns it into the datalist item (the same
:class:`~common.monailabel.kinds.InteractionKind` the MONAI Label app uses), and the bundle's parsed
``preprocessing`` -> ``inferer`` -> ``postprocessing`` (:class:`~common.bundle.pipeline.BundleInferencePipeline`)
returns the mask in the image's grid as stored. Evaluation, ``inference.json`` and the app therefore run one
implementation of re-orientation, resampling, intensity normalisation and slicing.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_numpy

from common.bundle.pipeline import BundleInferencePipeline
from common.evaluation.cases import CaseInfo
from common.interaction.requests import state_request
from common.interaction.state import InteractionState
from common.monailabel.kinds import InteractionKind, get_kind

__all__ = ["BundleAdapter"]

logger = logging.getLogger(__name__)


class BundleAdapter:
    """``(image, state, case) -> mask`` for :func:`common.evaluation.run_interactive_evaluation`, through a bundle.

    Args:
        pipeline: the bundle's inference pipeline (its ``inference.json`` parts and weights).
        kind: the bundle's interaction kind (name in :func:`common.monailabel.kinds.registered_kinds`, e.g.
            ``"slice_propagation"`` or ``"clicks"``, or the kind itself).
        name: method name used in error messages.
        threshold: foreground where the post-processed prediction is ``> threshold``.

    Raises:
        ValueError: an unknown kind.
    """

    def __init__(
        self,
        pipeline: BundleInferencePipeline,
        kind: str | InteractionKind,
        name: str = "bundle",
        threshold: float = 0.5,
    ) -> None:
        self.pipeline = pipeline
        self.kind = get_kind(kind) if isinstance(kind, str) else kind
        self.name = name
        self.threshold = float(threshold)

    def _item(self, shape: tuple[int, ...], state: InteractionState, case: CaseInfo, workdir: Path) -> dict[str, Any]:
        """The datalist item of the viewer's request for ``state`` (temporary files in ``workdir``)."""
        if not case.image_path:
            raise ValueError(f"{self.name}: case {case.case_id} has no image file; the bundle reads images from files")
        request = state_request(state, case.image_path, shape, workdir)
        return {**request, **self.kind.build_item(request, workdir)}

    def network_input(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> torch.Tensor:
        """The network's input for ``state`` after the bundle's pre-processing: ``(1, C, *spatial)`` float32.

        The same request and pre-processing as :meth:`__call__`, stopped before the inferer (query strategies score
        cases on it). ``C`` is the pre-processing's channel count (for the box bundles: the z-scored crop and the
        scribble codes).
        """
        with tempfile.TemporaryDirectory(prefix="isb_eval_") as workdir:
            data = self.pipeline.preprocess(
                self._item(tuple(int(s) for s in np.shape(image)), state, case, Path(workdir))
            )
        x = data[self.pipeline.image_key]
        return torch.as_tensor(x, dtype=torch.float32)[None]

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        """Segment ``case`` from ``state``; returns a bool mask of ``image``'s shape (the image as stored).

        Raises:
            ValueError: the case has no image file, or the bundle rejects the request (message of its check).
        """
        shape = tuple(int(s) for s in np.shape(image))
        with tempfile.TemporaryDirectory(prefix="isb_eval_") as workdir:
            out = self.pipeline(self._item(shape, state, case, Path(workdir)))
        pred = np.asarray(convert_to_numpy(out[self.pipeline.pred_key]))
        if pred.ndim == len(shape) + 1 and pred.shape[0] == 1:
            pred = pred[0]
        if pred.shape != shape:
            raise ValueError(
                f"{self.name}: the bundle returned shape {pred.shape} for image {case.image_path} of shape {shape}; "
                "its postprocessing must invert the pre-processing (Invertd) into the input grid"
            )
        return np.asarray(pred > self.threshold)
