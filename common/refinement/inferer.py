"""MONAI ``Inferer`` of the BIFSeg bundle: the network on the box crop, then CRF or image-specific fine-tuning.

The bundle's pre-processing (:mod:`common.boxes.transforms`) hands the inferer a batch ``(B, 2, H, W, D)``: channel 0
the box crop resized to the network's size and z-scored inside the box, channel 1 the scribble codes (0 none, 1
foreground, 2 background) on the same grid. The inferer returns ``(B, 1, H, W, D)``: the foreground probability
(``mode="cnn"``) or the refined binary segmentation (``"crf"``, ``"bifseg"``), which the post-processing maps back into
the image's grid.

A 2D network (P-Net) segments each slice along the last axis (the box's one axial slice, after re-orientation to
RAS); a 3D network (PC-Net) the whole crop. Every request starts from the network as loaded: fine-tuning works on a
copy of block 6 (:func:`common.refinement.finetune.refine`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from common.refinement.finetune import MODES, RefinementParams, params_from, refine

__all__ = ["BoxRefinementInferer"]

logger = logging.getLogger(__name__)


def _head_of(network: Any) -> Any:
    """The fine-tunable head of a network with ``features``/``classify``: ``network.head``, or ``output_block`` for a
    TorchScript export of a MONAI ``DynUNet`` (:class:`common.networks.IsenseeUNet`, whose ``head`` is a property
    TorchScript does not keep); ``None`` for a network without the split."""
    if not (hasattr(network, "features") and hasattr(network, "classify")):
        return None
    return getattr(network, "head", None) or getattr(network, "output_block", None)


class BoxRefinementInferer(Inferer):
    """Box crop (+ scribbles) -> segmentation, with BIFSeg's refinement.

    Args:
        spatial_dims: the network's dimensionality: 2 (slices along the last axis) or 3.
        mode: ``"cnn"``, ``"crf"`` or ``"bifseg"`` (see :data:`common.refinement.finetune.MODES`).
        preset: ``"2d"`` or ``"3d"`` (the paper's parameters) as the base of ``params``.
        params: overrides of :class:`~common.refinement.finetune.RefinementParams` fields (e.g. ``{"lam": 5.0}``).

    Raises:
        ValueError: bad arguments; at call time a batch of the wrong shape or a network without the
            ``features``/``classify`` split (needed by ``"crf"``/``"bifseg"`` only for ``"bifseg"``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        mode: str = "bifseg",
        preset: str = "2d",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.spatial_dims = spatial_dims
        self.mode = mode
        self.params: RefinementParams = params_from(preset, **dict(params or {}))
        #: per call: the refinement history of each segmented crop (for reports and benchmarks)
        self.last_history: list[list[dict[str, Any]]] = []

    def _segment(self, network: Any, x: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
        """One crop ``x`` ``(1, 1, *spatial)`` -> ``spatial`` float tensor."""
        image = x[0, 0].detach().float().cpu().numpy()
        if not np.isfinite(image).all():
            raise ValueError("the image crop holds NaN or infinite values: check the input image")
        head = _head_of(network)
        if head is None:
            if self.mode != "cnn":
                raise ValueError(
                    f"mode {self.mode!r} needs a network with features/classify/head (P-Net, PC-Net, IsenseeUNet); "
                    f"got {type(network).__name__}"
                )
            with torch.no_grad():
                return torch.softmax(network(x), dim=1)[0, 1]
        with torch.no_grad():
            features = network.features(x)
        result = refine(features, head, image, codes, self.params, self.mode)
        self.last_history.append(result.history)
        out = result.prob if self.mode == "cnn" else result.label.astype(np.float32)
        return torch.as_tensor(out, dtype=torch.float32, device=x.device)

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``inputs`` ``(B, 2, H, W, D)`` (or ``(B, 2, H, W)`` for a 2D crop) -> ``(B, 1, H, W[, D])``."""
        if inputs.ndim not in (4, 5) or inputs.shape[1] != 2:
            raise ValueError(
                "BoxRefinementInferer expects (B, 2, H, W[, D]) batches: the z-scored crop and the scribble codes, "
                f"got {tuple(inputs.shape)}"
            )
        self.last_history = []
        module = getattr(network, "module", network)  # DistributedDataParallel
        was_training = getattr(module, "training", False)
        if hasattr(module, "eval"):
            module.eval()
        try:
            outputs = []
            for b in range(inputs.shape[0]):
                image = inputs[b : b + 1, :1].float()
                codes = inputs[b, 1].detach().round().to(torch.uint8).cpu().numpy()
                if self.spatial_dims == 3 or inputs.ndim == 4:
                    if self.spatial_dims == 3 and inputs.ndim != 5:
                        raise ValueError(f"a 3D network needs (B, 2, H, W, D) crops, got {tuple(inputs.shape)}")
                    outputs.append(self._segment(module, image, codes)[None])
                    continue
                slices = [
                    self._segment(module, image[..., k], codes[..., k]) for k in range(inputs.shape[-1])
                ]  # 2D network on each slice of the crop (BoxMaskd makes 2D boxes one slice thick)
                outputs.append(torch.stack(slices, dim=-1)[None])
            out = torch.stack(outputs, dim=0)
            # keep the input's meta data (affine, applied operations): Invertd maps the result back with them
            return convert_to_dst_type(out, inputs, dtype=torch.float32)[0]
        finally:
            if was_training and hasattr(module, "train"):
                module.train()
