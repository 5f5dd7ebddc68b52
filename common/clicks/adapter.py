"""Model adapter that plugs a trained click-guided network into the shared evaluation loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from common.clicks.inferer import ClickInferer
from common.clicks.training import binarize_logits
from common.transforms.guidance import click_map_from_points, render_guidance, render_slice_guidance

__all__ = ["ClickAdapter"]


class ClickAdapter:
    """``(image, interaction state) -> prediction`` for :func:`common.evaluation.run_interactive_evaluation`.

    The image arrives in HU as stored ``(H, W, D)``; it is clipped to ``[-hu_clip, hu_clip]`` and divided by
    ``hu_scale`` (the bundle's pre-processing), the clicks of ``state`` (``(i, j, k)`` voxel indices) become
    guidance exactly as in the bundle (:func:`common.transforms.click_map_from_points`, then per-slice 2D guidance
    for a 2D network or 3D guidance for a 3D one), and the bundle's :class:`ClickInferer` predicts: a 2D network
    segments the clicked slices, a 3D network the volume.

    Args:
        network: the trained network (switched to eval mode here).
        inferer: the click inferer (its ``network_dims`` says 2D or 3D).
        device: where the network runs.
        sigma: guidance Gaussian standard deviation in voxels (as in training).
        hu_clip: intensity clip (HU).
        hu_scale: divisor after clipping.
        name: method name written into result files.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: ClickInferer,
        device: str | torch.device = "cpu",
        sigma: float | Sequence[float] = 2.0,
        hu_clip: float = 1024.0,
        hu_scale: float = 500.0,
        name: str = "deepgrow",
    ) -> None:
        self.network = network.eval()
        self.inferer = inferer
        self.device = torch.device(device)
        self.sigma = sigma
        self.hu_clip = float(hu_clip)
        self.hu_scale = float(hu_scale)
        self.name = name

    def __call__(self, image: np.ndarray, state: Any, case: Any) -> np.ndarray:
        """Segment from ``state.foreground`` / ``state.background``; returns a bool ``(H, W, D)`` mask."""
        volume = np.asarray(image, dtype=np.float32)
        maps = click_map_from_points(state.foreground, state.background, volume.shape, device=self.device)[None]
        if self.inferer.network_dims == 2 and volume.ndim == 3:
            guidance = render_slice_guidance(maps, self.inferer.axis, self.sigma)
        else:
            guidance = render_guidance(maps, self.sigma)
        scaled = np.clip(volume, -self.hu_clip, self.hu_clip) / self.hu_scale
        inputs = torch.cat([torch.from_numpy(scaled)[None, None].to(self.device), guidance], dim=1)
        with torch.no_grad():
            logits = self.inferer(inputs, self.network)
        return np.asarray(binarize_logits(logits)[0, 0].cpu().numpy())
