"""Model adapter that plugs a trained propagation network into the shared evaluation loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.propagation.inferer import SlicePropagationInferer

__all__ = ["PropagationAdapter"]


class PropagationAdapter:
    """``(image, interaction state) -> prediction`` for :func:`common.evaluation.run_interactive_evaluation`.

    The image arrives in HU as stored ``(H, W, D)``; it is clipped to ``[-hu_clip, hu_clip]`` and divided by
    ``hu_scale`` (the training pre-processing), the user's slices (``state.slices`` along ``state.axis``) form the
    annotation channel, and the inferer propagates them through the volume.

    Args:
        network: the trained 2D network (switched to eval mode here).
        inferer: the propagation inferer; its ``axis`` must match the robot's slice axis.
        device: where the network runs.
        hu_clip: intensity clip (HU).
        hu_scale: divisor after clipping.
        name: method name written into result files.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: SlicePropagationInferer,
        device: str | torch.device = "cpu",
        hu_clip: float = 1024.0,
        hu_scale: float = 500.0,
        name: str = "slice_propagation",
    ) -> None:
        self.network = network.eval()
        self.inferer = inferer
        self.device = torch.device(device)
        self.hu_clip = float(hu_clip)
        self.hu_scale = float(hu_scale)
        self.name = name

    def __call__(self, image: np.ndarray, state: Any, case: Any) -> np.ndarray:
        """Propagate ``state.slices`` through ``image``; returns a bool ``(H, W, D)`` mask."""
        if not state.slices:
            raise ValueError(f"{self.name}: case {getattr(case, 'case_id', '?')} has no annotated slice to propagate")
        if state.axis != self.inferer.axis:
            raise ValueError(
                f"{self.name}: the user's slices lie along axis {state.axis}, the inferer propagates along "
                f"axis {self.inferer.axis}; configure both with the same axis"
            )
        volume = np.clip(np.asarray(image, dtype=np.float32), -self.hu_clip, self.hu_clip) / self.hu_scale
        # Slices go to the inferer as a mapping, in the order the user gave them (the "overwrite" rule needs it).
        slices = {k: np.asarray(m) for k, m in state.slices.items()}
        inputs = torch.from_numpy(volume)[None, None].to(self.device)
        with torch.no_grad():
            pred = self.inferer(inputs, self.network, annotation=slices)
        return np.asarray(pred[0, 0].detach().cpu().numpy() > 0.5)
