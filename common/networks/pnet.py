"""P-Net (2D) and PC-Net (3D): BIFSeg's resolution-preserving dilated CNNs with a separable classifier head.

Wang et al., "Interactive Medical Image Segmentation using Deep Learning with Image-specific Fine-tuning", IEEE TMI
2018 (BIFSeg), after the P-Net of DeepIGeoS (Wang et al., IEEE TPAMI 2019). No down-sampling: five blocks of dilated
3x3 (2D) / 3x3x3 or 3x3x1 (3D) convolutions keep the input's resolution; the outputs of blocks 1-5 are concatenated
and block 6, the classifier, maps them to class logits. Image-specific fine-tuning updates block 6 only, so the
concatenated features of a test image are computed once (:meth:`DilatedSegNet.features`) and cached; the classifier
(:meth:`DilatedSegNet.classify`) runs on them.

Layout (``convs_per_block = (2, 2, 3, 3, 3)``, every convolution followed by a normalisation and a ReLU):

- **P-Net** (``spatial_dims=2``, :func:`pnet`): 3x3 kernels with dilations 1, 2, 4, 8, 16; receptive field
  ``1 + 2 * (2*1 + 2*2 + 3*4 + 3*8 + 3*16) = 181`` pixels.
- **PC-Net** (``spatial_dims=3``, :func:`pcnet`): 3x3x3 kernels in blocks 1-2 (dilation 1, 2 in-plane and 1
  through-plane), 3x3x1 kernels in blocks 3-5 (dilations 3, 4, 5); receptive field ``85 x 85 x 9`` voxels (axes
  ``(H, W, D)``, ``D`` the through-plane axis after RAS re-orientation); a 1x1x1 convolution compresses each block's
  output before the concatenation (``compress_channels``), which keeps the cache small.
- **block 6**: dropout, 1x1(x1) convolution to ``head_channels``, ReLU, 1x1(x1) convolution to ``out_channels``.

The kernel sizes and channel counts are in the papers' figures, not their text; the receptive fields (181 and
85 x 85 x 9, stated in the text) fix the dilations and layer counts (see ``tests/common/networks/test_pnet.py``,
which measures them). Normalisation: instance norm by default (BIFSeg trains with batch size 1 on crops of varying
shape; instance norm behaves the same in training and at test time).

Inputs ``(B, in_channels, H, W[, D])`` of any size (no divisibility constraint); outputs ``(B, out_channels, H, W[,
D])`` logits (no softmax).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
from torch import nn

from common.networks.blocks import NORMS, conv_type, make_norm

__all__ = ["PCNET_DILATIONS", "PNET_DILATIONS", "DilatedSegNet", "pcnet", "pnet", "receptive_field"]

#: Dilations of blocks 1-5, P-Net (2D).
PNET_DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 16)
#: In-plane dilations of blocks 1-5, PC-Net (3D); through-plane dilation is 1 (blocks 1-2) and unused (3-5).
PCNET_DILATIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
_CONVS_PER_BLOCK: tuple[int, ...] = (2, 2, 3, 3, 3)


def _int_tuple(value: Sequence[int], name: str, length: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in value)
    if len(out) != length or any(v < 1 for v in out) or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must hold {length} positive integers, got {tuple(value)!r}")
    return out


def receptive_field(
    dilations: Sequence[int], convs_per_block: Sequence[int] = _CONVS_PER_BLOCK, kernel: int = 3
) -> int:
    """Receptive field (voxels) along one axis of stacked stride-1 convolutions: ``1 + sum (k - 1) * d * n``."""
    return 1 + sum((kernel - 1) * int(d) * int(n) for d, n in zip(dilations, convs_per_block, strict=True))


class _Block(nn.Sequential):
    """``n`` x [conv (kernel, dilation, 'same' padding) -> norm -> ReLU]."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        n_convs: int,
        kernel: tuple[int, ...],
        dilation: tuple[int, ...],
        norm: str,
    ) -> None:
        conv = conv_type(spatial_dims)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(n_convs):
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
            layers += [
                conv(channels, out_channels, kernel_size=kernel, dilation=dilation, padding=padding),
                make_norm(norm, spatial_dims, out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        super().__init__(*layers)


class DilatedSegNet(nn.Module):
    """P-Net / PC-Net: ``features`` (blocks 1-5, concatenated) then ``classify`` (block 6). Use :func:`pnet` or
    :func:`pcnet` for the papers' layouts.

    Args:
        spatial_dims: 2 (P-Net) or 3 (PC-Net).
        in_channels: input channels (1: the z-scored crop).
        out_channels: classes (2: background, foreground; softmax over channels gives p).
        features: channels of every convolution in blocks 1-5 (the papers: 64).
        compress_channels: if set, a 1x1(x1) convolution maps each block's output to this many channels before the
            concatenation (PC-Net); ``None`` concatenates the raw block outputs (P-Net).
        head_channels: hidden channels of block 6.
        dropout: dropout probability at the start of block 6 (active in training mode only).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.

    Raises:
        ValueError: bad sizes, ``spatial_dims`` not 2/3, unknown ``norm``.
    """

    __jit_unused_properties__: ClassVar[list[str]] = ["receptive_field"]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: int = 64,
        compress_channels: int | None = None,
        head_channels: int = 128,
        dropout: float = 0.5,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (P-Net) or 3 (PC-Net), got {spatial_dims!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("features", features),
            ("head_channels", head_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if compress_channels is not None and (
            isinstance(compress_channels, bool) or not isinstance(compress_channels, int) or compress_channels < 1
        ):
            raise ValueError(f"compress_channels must be a positive integer or None, got {compress_channels!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        conv = conv_type(spatial_dims)
        blocks: list[nn.Module] = []
        compress: list[nn.Module] = []
        channels = in_channels
        for index, n_convs in enumerate(_CONVS_PER_BLOCK):
            if spatial_dims == 2:
                kernel: tuple[int, ...] = (3, 3)
                dilation: tuple[int, ...] = (PNET_DILATIONS[index],) * 2
            elif index < 2:
                kernel, dilation = (3, 3, 3), (PCNET_DILATIONS[index], PCNET_DILATIONS[index], 1)
            else:
                kernel, dilation = (3, 3, 1), (PCNET_DILATIONS[index], PCNET_DILATIONS[index], 1)
            blocks.append(_Block(spatial_dims, channels, features, n_convs, kernel, dilation, norm))
            compress.append(nn.Identity() if compress_channels is None else conv(features, compress_channels, 1))
            channels = features
        self.blocks = nn.ModuleList(blocks)
        self.compress = nn.ModuleList(compress)
        #: channels of the cached feature tensor (input of block 6)
        self.feature_channels = len(blocks) * (features if compress_channels is None else compress_channels)
        self.head = nn.Sequential(
            nn.Dropout(float(dropout)),
            conv(self.feature_channels, head_channels, 1),
            nn.ReLU(inplace=True),
            conv(head_channels, out_channels, 1),
        )

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks 1-5: ``(B, in_channels, *spatial)`` -> concatenated ``(B, feature_channels, *spatial)``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = "H, W" if self.spatial_dims == 2 else "H, W, D"
            raise ValueError(f"expected input of shape (B, {self.in_channels}, {axes}), got {list(x.shape)}")
        outputs = []
        for block, squeeze in zip(self.blocks, self.compress, strict=True):
            x = block(x)
            outputs.append(squeeze(x))
        return torch.cat(outputs, dim=1)

    @torch.jit.export
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Block 6: cached features ``(B, feature_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    @torch.jit.unused
    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters image-specific fine-tuning updates (block 6)."""
        return self.head.parameters()

    @property
    def receptive_field(self) -> tuple[int, ...]:
        """Receptive field of one output voxel, per spatial axis (181 x 181 for P-Net; 85 x 85 x 9 for PC-Net)."""
        if self.spatial_dims == 2:
            rf = receptive_field(PNET_DILATIONS)
            return (rf, rf)
        in_plane = receptive_field(PCNET_DILATIONS)
        through = receptive_field((1, 1, 0, 0, 0))
        return (in_plane, in_plane, through)


def pnet(
    in_channels: int = 1,
    out_channels: int = 2,
    features: int = 64,
    head_channels: int = 128,
    dropout: float = 0.5,
    norm: str = "instance",
    compress_channels: int | None = None,
) -> DilatedSegNet:
    """BIFSeg's 2D P-Net (receptive field 181 x 181)."""
    return DilatedSegNet(2, in_channels, out_channels, features, compress_channels, head_channels, dropout, norm)


def pcnet(
    in_channels: int = 1,
    out_channels: int = 2,
    features: int = 64,
    compress_channels: int | None = 16,
    head_channels: int = 64,
    dropout: float = 0.5,
    norm: str = "instance",
) -> DilatedSegNet:
    """BIFSeg's 3D PC-Net (receptive field 85 x 85 x 9, 1x1x1 compression before the concatenation)."""
    return DilatedSegNet(3, in_channels, out_channels, features, compress_channels, head_channels, dropout, norm)
