"""Inference of a click-guided network on a 2D slice, a 3D volume, or a volume slice by slice (2D network)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from common.networks.padding import pad_to_divisible

__all__ = ["ClickInferer"]

logger = logging.getLogger(__name__)


class ClickInferer(Inferer):
    """Run a click-guided network on inputs that already carry the guidance channels.

    Input ``(B, C_img + 2, *spatial)``: the image channels followed by foreground and background guidance (from
    :class:`common.transforms.AddGuidanced`). Output: logits ``(B, C_out, *spatial)`` of the network, at the input's
    spatial size (the input is zero-padded to multiples of ``divisible_by`` and the output cropped back).

    - Same dimensionality (``network_dims`` equals the input's number of spatial dims): one forward pass.
    - A 2D network (``network_dims=2``) on a volume ``(B, C, H, W, D)``: only the slices along ``axis`` whose
      guidance channels hold a click are predicted (batched ``max_batch`` slices at a time); every other slice gets
      ``fill_logit`` in each output channel (1-channel sigmoid output: probability ~0; 2 channels: background and
      foreground get the same value, so use 1-channel networks or threshold the foreground channel). This is the
      DeepGrow 2D protocol: the user clicks on the slices they want segmented, and the per-slice predictions
      assemble into the volume.

    Args:
        network_dims: spatial dimensionality of the network (2 or 3).
        axis: spatial axis of the input's slices for a 2D network on a volume. The DeepGrow bundle uses 2, the last
            axis of its pre-processed grid: the axial axis, or the axis across the viewer's slices when the request
            names one (:class:`common.transforms.guidance.SliceAxisLastd` puts it last), so clicks, guidance and
            inferer agree on the plane per request.
        guidance_channels: number of trailing guidance channels (2: foreground, background).
        divisible_by: pad spatial sizes to multiples of this (``2 ** (levels - 1)`` for a U-Net); 1 disables.
        max_batch: most slices per forward pass.
        fill_logit: logit written for slices without clicks.

    Raises:
        ValueError: bad arguments; at call time an input of the wrong rank or without guidance channels.
    """

    def __init__(
        self,
        network_dims: int = 2,
        axis: int = 2,
        guidance_channels: int = 2,
        divisible_by: int | Sequence[int] = 16,
        max_batch: int = 32,
        fill_logit: float = -20.0,
    ) -> None:
        super().__init__()
        if network_dims not in (2, 3):
            raise ValueError(f"network_dims must be 2 or 3, got {network_dims!r}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if guidance_channels < 1 or max_batch < 1:
            raise ValueError(f"guidance_channels and max_batch must be >= 1, got {guidance_channels}, {max_batch}")
        self.network_dims = network_dims
        self.axis = axis
        self.guidance_channels = guidance_channels
        self.divisible_by = divisible_by
        self.max_batch = max_batch
        self.fill_logit = float(fill_logit)

    def _forward(self, network: Callable[..., Any], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        padded, crop = pad_to_divisible(x, self.divisible_by)
        out = network(padded, *args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.shape[0] != x.shape[0] or out.shape[2:] != padded.shape[2:]:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network must return (B, C, *spatial) for input {list(padded.shape)}, got {shape}")
        return out[crop].contiguous()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Predict logits for ``inputs`` ``(B, C_img + guidance_channels, *spatial)``."""
        spatial_dims = inputs.dim() - 2
        if spatial_dims not in (2, 3) or inputs.shape[1] <= self.guidance_channels:
            raise ValueError(
                f"inputs must be (B, C_img + {self.guidance_channels} guidance, H, W[, D]), got {list(inputs.shape)}"
            )
        if spatial_dims == self.network_dims:
            return self._forward(network, inputs, *args, **kwargs)
        if self.network_dims == 3:
            raise ValueError(f"a 3D network needs a volume (B, C, H, W, D), got {list(inputs.shape)}")
        return self._by_slice(inputs, network, *args, **kwargs)

    def _by_slice(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        b, c = inputs.shape[:2]
        moved = torch.movedim(inputs, self.axis + 2, 2)  # (B, C, S, P, Q)
        n_slices = moved.shape[2]
        guidance = moved[:, c - self.guidance_channels :]
        clicked = guidance.flatten(3).amax(dim=3).amax(dim=1) > 0  # (B, S)
        b_idx, s_idx = clicked.nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            raise ValueError("no slice carries a click: a 2D model on a volume predicts only the clicked slices")
        slices = moved[b_idx, :, s_idx]  # (N, C, P, Q): the clicked slices as one batch
        logits = torch.cat(
            [self._forward(network, chunk, *args, **kwargs) for chunk in torch.split(slices, self.max_batch)]
        )
        result = torch.full(
            (b, logits.shape[1], n_slices, *moved.shape[3:]), self.fill_logit, dtype=logits.dtype, device=logits.device
        )
        result[b_idx, :, s_idx] = logits
        logger.debug("predicted %d clicked slice(s) of %d", b_idx.numel(), b * n_slices)
        return torch.movedim(result, 2, self.axis + 2).contiguous()
