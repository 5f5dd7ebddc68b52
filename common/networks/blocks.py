"""Building blocks of :class:`common.networks.PropagationUNet`, for 2D or 3D inputs.

Every block takes and returns channel-first batches ``(B, C, *spatial)`` with ``spatial = (H, W)`` for
``spatial_dims=2`` and ``(H, W, D)`` for ``spatial_dims=3``. The blocks are TorchScript-compatible.

Two block families implement the two encoder/decoder styles of the slice-propagation method
(the Master's thesis cited in ``bundles/slice_propagation/docs/README.md``):

- ``"unet"``: :class:`ConvBlock` (2 x [3x3 conv -> norm -> ReLU]) with 2x2 max-pooling to go down a level;
- ``"residual"`` (FusionNet-like): :class:`ResidualBlock` (conv-norm-ReLU, conv-norm, + projected input, ReLU)
  with a strided (stride 2) 3x3 conv -> norm -> ReLU to go down a level.

Both use :class:`UpBlock` to go up a level: 2x2 transposed conv (stride 2), concatenation with the encoder skip,
then one block of the same family.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "NORMS",
    "VARIANTS",
    "ConvBlock",
    "ResidualBlock",
    "UpBlock",
    "conv_type",
    "make_block",
    "make_downsample",
    "make_norm",
]

#: Accepted ``norm`` names: batch norm, instance norm (affine) and no normalisation.
NORMS: tuple[str, ...] = ("batch", "instance", "none")
#: Accepted ``variant`` names.
VARIANTS: tuple[str, ...] = ("unet", "residual")

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAX_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE_NORM: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def conv_type(spatial_dims: int, transposed: bool = False) -> type[nn.Module]:
    """The ``torch.nn`` convolution class for ``spatial_dims`` (2 or 3), transposed or not."""
    _check_dims(spatial_dims)
    return _CONV_T[spatial_dims] if transposed else _CONV[spatial_dims]


def make_norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` channels.

    Args:
        norm: ``"batch"`` (BatchNorm), ``"instance"`` (InstanceNorm with learnable affine) or ``"none"`` (identity).
        spatial_dims: 2 or 3.
        channels: number of channels normalised.

    Raises:
        ValueError: unknown ``norm`` or ``spatial_dims``.
    """
    _check_dims(spatial_dims)
    if norm == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    if norm == "instance":
        return _INSTANCE_NORM[spatial_dims](channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _conv_norm(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: str
) -> list[nn.Module]:
    """``[conv, norm]``; the conv has a bias only without normalisation (a bias before a norm is redundant)."""
    conv = conv_type(spatial_dims)(
        in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=norm == "none"
    )
    return [conv, make_norm(norm, spatial_dims, out_channels)]


class ConvBlock(nn.Sequential):
    """U-Net block: 2 x [3x3 conv -> norm -> ReLU], then dropout if ``dropout > 0``. Keeps the spatial size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C_in`` of the input ``(B, C_in, *spatial)``.
        out_channels: channels ``C_out`` of the output ``(B, C_out, *spatial)``.
        norm: see :func:`make_norm`.
        dropout: dropout probability applied to the block's output.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float = 0.0):
        layers: list[nn.Module] = [
            *_conv_norm(spatial_dims, in_channels, out_channels, 3, 1, norm),
            nn.ReLU(inplace=True),
            *_conv_norm(spatial_dims, out_channels, out_channels, 3, 1, norm),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Residual block: ``ReLU(norm(conv(ReLU(norm(conv(x))))) + proj(x))``, then dropout if ``dropout > 0``.

    Both convs are 3x3; ``proj`` is a 1x1 conv -> norm when the channel count changes, else the identity.
    Keeps the spatial size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C_in`` of the input ``(B, C_in, *spatial)``.
        out_channels: channels ``C_out`` of the output ``(B, C_out, *spatial)``.
        norm: see :func:`make_norm`.
        dropout: dropout probability applied to the block's output.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm(spatial_dims, in_channels, out_channels, 3, 1, norm),
            nn.ReLU(inplace=True),
            *_conv_norm(spatial_dims, out_channels, out_channels, 3, 1, norm),
        )
        self.proj: nn.Module = (
            nn.Sequential(*_conv_norm(spatial_dims, in_channels, out_channels, 1, 1, norm))
            if in_channels != out_channels
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial)`` -> ``(B, C_out, *spatial)``."""
        return self.dropout(self.act(self.body(x) + self.proj(x)))


def make_block(
    variant: str, spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float = 0.0
) -> nn.Module:
    """The level block of ``variant``: :class:`ConvBlock` (``"unet"``) or :class:`ResidualBlock` (``"residual"``)."""
    if variant == "unet":
        return ConvBlock(spatial_dims, in_channels, out_channels, norm, dropout)
    if variant == "residual":
        return ResidualBlock(spatial_dims, in_channels, out_channels, norm, dropout)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def make_downsample(variant: str, spatial_dims: int, channels: int, norm: str) -> nn.Module:
    """Halve every spatial size, keeping ``channels``: ``(B, C, *spatial)`` -> ``(B, C, *spatial // 2)``.

    ``"unet"``: 2x2 max-pooling. ``"residual"``: 3x3 conv with stride 2 (padding 1) -> norm -> ReLU.
    """
    _check_dims(spatial_dims)
    if variant == "unet":
        return _MAX_POOL[spatial_dims](kernel_size=2, stride=2)
    if variant == "residual":
        return nn.Sequential(*_conv_norm(spatial_dims, channels, channels, 3, 2, norm), nn.ReLU(inplace=True))
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


class UpBlock(nn.Module):
    """Decoder level: 2x2 transposed conv (stride 2) ``C_in -> C_out``, concat the skip, block ``2 C_out -> C_out``.

    Args:
        variant: block family, see :func:`make_block`.
        spatial_dims: 2 or 3.
        in_channels: channels ``C_in`` of the deeper feature map ``(B, C_in, *spatial)``.
        out_channels: channels ``C_out`` of the skip ``(B, C_out, *2 spatial)`` and of the output.
        norm: see :func:`make_norm`.
        dropout: dropout probability applied to the block's output.
    """

    def __init__(
        self, variant: str, spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float = 0.0
    ):
        super().__init__()
        self.up = conv_type(spatial_dims, transposed=True)(in_channels, out_channels, kernel_size=2, stride=2)
        self.block = make_block(variant, spatial_dims, 2 * out_channels, out_channels, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C_in, *spatial)`` and ``skip`` ``(B, C_out, *2 spatial)`` -> ``(B, C_out, *2 spatial)``."""
        return self.block(torch.cat([self.up(x), skip], dim=1))
