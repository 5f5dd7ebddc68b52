"""Networks of the bundles: :class:`PropagationUNet` (slice propagation), :class:`DeepGrowUNet` (clicks),
:class:`DilatedSegNet` (BIFSeg's P-Net / PC-Net),
:class:`IsenseeUNet` (the active-learning bundle's general 3D model)."""

from __future__ import annotations

from common.networks.deepgrow_unet import DEEPGROW_CHANNELS, DeepGrowUNet
from common.networks.isensee_unet import (
    InferenceWeights,
    IsenseeUNet,
    StackedDeepSupervisionLoss,
    full_resolution_output,
    spatial_dropout_layers,
)
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
    "InferenceWeights",
    "IsenseeUNet",
    "PropagationUNet",
    "StackedDeepSupervisionLoss",
    "crop_to",
    "full_resolution_output",
    "load_weights",
    "pad_amounts",
    "pad_to_divisible",
    "pcnet",
    "pnet",
    "receptive_field",
    "spatial_dropout_layers",
]
