"""Networks of the bundles: :class:`PropagationUNet` (slice propagation) and its building blocks."""

from __future__ import annotations

from common.networks.propagation_unet import MAX_DEPTH, MIN_DEPTH, PropagationUNet
from common.networks.weights import load_weights

__all__ = ["MAX_DEPTH", "MIN_DEPTH", "PropagationUNet", "load_weights"]
