"""The U-Net of DeepGrow: image + foreground/background guidance -> structure logits.

Method: Sakinis et al., "Interactive segmentation of medical images through fully convolutional neural networks",
arXiv:1903.08205, 2019.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.networks.propagation_unet import PropagationUNet

__all__ = ["DEEPGROW_CHANNELS", "DeepGrowUNet"]

#: Default level widths: 4 down-sampling blocks, the bottleneck, 4 up-sampling blocks mirror them.
DEEPGROW_CHANNELS: tuple[int, ...] = (32, 64, 128, 256, 512)


class DeepGrowUNet(PropagationUNet):
    """The paper's U-Net: 4 down blocks, a bottleneck block and 4 up blocks.

    Each block is 2 x [3x3 conv (padded) -> batch norm -> ReLU]; down-sampling by 2x2 max-pool (stride 2),
    up-sampling by 2x2 transposed conv (stride 2) followed by concatenation with the encoder block of the same
    resolution; a 1x1 conv gives the logits at full resolution. The paper does not state the widths: they are
    configurable (``channels``, five entries; default :data:`DEEPGROW_CHANNELS`). This is
    :class:`~common.networks.PropagationUNet` fixed to ``depth=5``, ``variant="unet"``, ``norm="batch"``.

    Args:
        spatial_dims: 2 (the paper) or 3 (DeepGrow 3D).
        in_channels: image channels + 2 guidance channels (3 for CT).
        out_channels: 1 (logits for a sigmoid, the default) or 2 (softmax logits).
        channels: width of each of the 5 levels.
        dropout: dropout probability at the end of every block.

    Shapes:
        input ``(B, in_channels, *spatial)``, each spatial size divisible by 16; output ``(B, out_channels,
        *spatial)`` logits.

    Example:
        >>> net = DeepGrowUNet(spatial_dims=2, channels=(8, 16, 32, 64, 128))
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = DEEPGROW_CHANNELS,
        dropout: float = 0.0,
    ) -> None:
        if len(tuple(channels)) != 5:
            raise ValueError(
                f"DeepGrowUNet has 5 levels (4 down blocks + bottleneck): channels needs 5 widths, got {list(channels)}"
            )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            variant="unet",
            norm="batch",
            dropout=dropout,
            channels=channels,
        )
