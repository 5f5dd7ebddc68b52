"""Networks of the bundles: :class:`PropagationUNet` (slice propagation) and its building blocks."""

from __future__ import annotations

from common.networks.propagation_unet import MAX_DEPTH, MIN_DEPTH, PropagationUNet

__all__ = ["MAX_DEPTH", "MIN_DEPTH", "PropagationUNet"]
