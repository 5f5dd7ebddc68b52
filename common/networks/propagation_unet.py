"""2D (or 3D) U-Net of the slice-propagation method (the Master's thesis cited in
``bundles/slice_propagation/docs/README.md``).

The network receives an image slice and the prior mask of a neighbouring slice as two input channels and returns
**logits** for background and foreground. It does *not* apply a softmax: the loss (e.g.
``monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)`` or ``torch.nn.CrossEntropyLoss``) and the
post-processing (``monai.transforms.Activations(softmax=True)`` / ``AsDiscrete(argmax=True)``) do.

Example (MONAI bundle config)::

    "network_def": {
        "_target_": "common.networks.PropagationUNet",
        "spatial_dims": 2, "in_channels": 2, "out_channels": 2, "depth": 4, "base_channels": 32
    }
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from common.networks.blocks import NORMS, VARIANTS, UpBlock, make_block, make_downsample

__all__ = ["MAX_DEPTH", "MIN_DEPTH", "PropagationUNet"]

logger = logging.getLogger(__name__)

#: Range of ``depth`` (number of resolution levels) studied in the paper.
MIN_DEPTH = 2
MAX_DEPTH = 5
_DEFAULT_DEPTH = 4


class _EncoderLevel(nn.Module):
    """One encoder level: down-sampling (identity at the top level), then the level's block."""

    def __init__(self, down: nn.Module, block: nn.Module):
        super().__init__()
        self.down = down
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(x))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PropagationUNet(nn.Module):
    """U-Net (or FusionNet-like residual U-Net) mapping ``(image, prior mask)`` to per-class logits.

    Architecture, with ``depth`` resolution levels of widths ``channels[0] .. channels[depth - 1]``:

    - encoder level 0: block ``in_channels -> channels[0]`` at full resolution;
    - encoder level ``l = 1 .. depth - 1``: down-sample by 2 (``"unet"``: 2x2 max-pool; ``"residual"``: strided
      3x3 conv -> norm -> ReLU), then block ``channels[l-1] -> channels[l]``; the deepest level is the bottleneck;
    - decoder level ``l = depth - 2 .. 0``: 2x2 transposed conv (stride 2) ``channels[l+1] -> channels[l]``,
      concatenation with the encoder output of level ``l``, block ``2 channels[l] -> channels[l]``;
    - head: 1x1 conv ``channels[0] -> out_channels`` giving logits (no softmax).

    Blocks: ``"unet"`` = 2 x [3x3 conv -> norm -> ReLU]; ``"residual"`` = conv-norm-ReLU, conv-norm, plus the
    1x1-projected input, ReLU (see :mod:`common.networks.blocks`). With ``dropout > 0`` every block ends with
    dropout. Convolutions followed by a normalisation have no bias. Initialisation: Xavier (Glorot) uniform for all
    conv and transposed-conv weights, zero biases, normalisation weight 1 and bias 0.

    Args:
        spatial_dims: 2 (slices ``(H, W)``, the propagation method) or 3 (volumes ``(H, W, D)``).
        in_channels: input channels; 2 for (image, prior mask).
        out_channels: output channels (classes); 2 for (background, foreground).
        depth: number of resolution levels, ``MIN_DEPTH`` (2) to ``MAX_DEPTH`` (5). Default 4, or ``len(channels)``
            when ``channels`` is given.
        base_channels: width of level 0; level ``l`` has ``base_channels * 2**l`` channels.
        variant: ``"unet"`` or ``"residual"``.
        dropout: dropout probability at the end of each block, in ``[0, 1)``.
        norm: ``"batch"``, ``"instance"`` or ``"none"`` (``None`` is read as ``"none"``).
        channels: explicit width of every level (``depth`` entries), overriding ``base_channels``.

    Shapes:
        input ``(B, in_channels, *spatial)``, each spatial size divisible by :attr:`required_divisor`
        (``2 ** (depth - 1)``); output ``(B, out_channels, *spatial)`` logits.

    Attributes:
        required_divisor: ``2 ** (depth - 1)``; pad inputs to a multiple of it (``monai.transforms.DivisiblePad``).
            Read-only by convention; a plain ``int`` attribute so that it is also readable on the TorchScript
            module written by ``monai.bundle ckpt_export`` (``torch.jit.load(path).required_divisor``).
        depth, channels, spatial_dims, in_channels, out_channels, variant, norm, dropout: the resolved arguments.

    Raises:
        ValueError: on an invalid argument (message names it and its value), and in ``forward`` on an input of the
            wrong rank, channel count or spatial size.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        out_channels: int = 2,
        depth: int | None = None,
        base_channels: int = 32,
        variant: str = "unet",
        dropout: float = 0.0,
        norm: str | None = "batch",
        channels: Sequence[int] | None = None,
    ):
        super().__init__()
        norm = "none" if norm is None else norm
        widths = self._resolve_channels(depth, base_channels, channels)
        if spatial_dims not in (2, 3) or not _is_int(spatial_dims):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS} or None, got {norm!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        self.spatial_dims: int = spatial_dims
        self.in_channels: int = in_channels
        self.out_channels: int = out_channels
        self.depth: int = len(widths)
        self.channels: tuple[int, ...] = widths
        self.variant: str = variant
        self.norm: str = norm
        self.dropout: float = float(dropout)
        # a plain attribute (not a property) so it survives torch.jit.script and torch.jit.save/load
        self.required_divisor: int = 2 ** (self.depth - 1)

        self.encoders = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(widths):
            down = nn.Identity() if level == 0 else make_downsample(variant, spatial_dims, previous, norm)
            self.encoders.append(
                _EncoderLevel(down, make_block(variant, spatial_dims, previous, width, norm, self.dropout))
            )
            previous = width
        # deepest first: decoders[i] goes from level depth-1-i up to level depth-2-i
        self.decoders = nn.ModuleList(
            UpBlock(variant, spatial_dims, widths[level + 1], widths[level], norm, self.dropout)
            for level in reversed(range(self.depth - 1))
        )
        conv: type[nn.Module] = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.head = conv(widths[0], out_channels, kernel_size=1)
        self.reset_parameters()
        logger.debug(
            "PropagationUNet(%s, %dD, channels=%s, norm=%s, dropout=%s): %d parameters",
            variant,
            spatial_dims,
            widths,
            norm,
            self.dropout,
            sum(p.numel() for p in self.parameters()),
        )

    @staticmethod
    def _resolve_channels(depth: int | None, base_channels: int, channels: Sequence[int] | None) -> tuple[int, ...]:
        """Level widths from ``channels`` or from ``depth``/``base_channels``; validates all three."""
        if depth is not None and (not _is_int(depth) or not MIN_DEPTH <= depth <= MAX_DEPTH):
            raise ValueError(f"depth must be an integer in [{MIN_DEPTH}, {MAX_DEPTH}], got {depth!r}")
        if channels is not None:
            widths = tuple(channels)
            if not MIN_DEPTH <= len(widths) <= MAX_DEPTH:
                raise ValueError(
                    f"channels must have {MIN_DEPTH} to {MAX_DEPTH} entries (one per level), got {list(widths)}"
                )
            if not all(_is_int(c) and c >= 1 for c in widths):
                raise ValueError(f"channels must be positive integers, got {list(widths)}")
            if depth is not None and depth != len(widths):
                raise ValueError(f"depth={depth} does not match channels={list(widths)} ({len(widths)} levels)")
            return widths
        if not _is_int(base_channels) or base_channels < 1:
            raise ValueError(f"base_channels must be a positive integer, got {base_channels!r}")
        n_levels = _DEFAULT_DEPTH if depth is None else depth
        return tuple(base_channels * 2**level for level in range(n_levels))

    def reset_parameters(self) -> None:
        """Xavier-uniform conv/transposed-conv weights, zero biases; normalisation weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d | nn.InstanceNorm2d | nn.InstanceNorm3d):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        shape = list(x.shape)
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"PropagationUNet({self.spatial_dims}D) expects input (B, C, {self.spatial_dims} spatial sizes), "
                f"got shape {shape}"
            )
        if shape[1] != self.in_channels:
            raise ValueError(
                f"PropagationUNet expects {self.in_channels} input channels (image, prior), got {shape[1]} "
                f"in input of shape {shape}"
            )
        for size in shape[2:]:
            if size % self.required_divisor != 0:
                raise ValueError(
                    f"PropagationUNet(depth={self.depth}): spatial sizes of input shape {shape} must be divisible "
                    f"by {self.required_divisor} (= 2**(depth-1)); pad first, e.g. with monai.transforms.DivisiblePad"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)`` (no softmax)."""
        self._check_input(x)
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        n_skips = len(skips)
        for i, decoder in enumerate(self.decoders):
            x = decoder(x, skips[n_skips - 2 - i])
        return self.head(x)
