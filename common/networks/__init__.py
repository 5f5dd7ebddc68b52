"""Networks of the bundles: :class:`PropagationUNet` (slice propagation), :class:`DeepGrowUNet` (clicks),
:class:`DilatedSegNet` (BIFSeg's P-Net / PC-Net)."""

from __future__ import annotations

from common.networks.deepgrow_unet import DEEPGROW_CHANNELS, DeepGrowUNet
from common.networks.padding import crop_to, pad_amounts, pad_to_divisible
from common.networks.pnet import PCNET_DILATIONS, PNET_DILATIONS, DilatedSegNet, pcnet, pnet, receptive_field
from common.networks.propagation_unet import MAX_DEPTH, MIN_DEPTH, PropagationUNet
from common.networks.weights import load_weights

__all__ = [
    "DEEPGROW_CHANNELS",
    "MAX_DEPTH",
    "MIN_DEPTH",
    "PCNET_DILATIONS",
    "PNET_DILATIONS",
    "DeepGrowUNet",
    "DilatedSegNet",
    "PropagationUNet",
    "crop_to",
    "load_weights",
    "pad_amounts",
    "pad_to_divisible",
    "pcnet",
    "pnet",
    "receptive_field",
]
