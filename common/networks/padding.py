"""Pad network inputs to sizes a U-Net accepts, and crop its outputs back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["crop_to", "pad_amounts", "pad_to_divisible"]


def pad_amounts(size: int, divisor: int) -> tuple[int, int]:
    """Symmetric padding ``(before, after)`` making ``size`` divisible by ``divisor`` (as MONAI ``DivisiblePad``)."""
    total = (-size) % divisor
    return total // 2, total - total // 2


def pad_to_divisible(
    x: torch.Tensor, divisor: int | Sequence[int], mode: str = "constant"
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial dims of ``x`` ``(B, C, *spatial)`` symmetrically to multiples of ``divisor``.

    Args:
        x: input batch, 2 or 3 spatial dims.
        divisor: one int, or one per spatial dim (1 = no padding).
        mode: ``torch.nn.functional.pad`` mode (``"constant"`` pads with zeros).

    Returns:
        ``(padded, crop)``: the padded tensor and the index tuple that cuts an output of the padded size back to
        the input's spatial size (``out[crop]``).
    """
    spatial = tuple(int(s) for s in x.shape[2:])
    divisors = (int(divisor),) * len(spatial) if isinstance(divisor, int) else tuple(int(v) for v in divisor)
    if len(divisors) != len(spatial) or any(v < 1 for v in divisors):
        raise ValueError(f"divisor must be a positive int or {len(spatial)} positive ints, got {divisor!r}")
    amounts = [pad_amounts(s, v) for s, v in zip(spatial, divisors, strict=True)]
    crop = (slice(None), slice(None), *(slice(lo, lo + s) for (lo, _), s in zip(amounts, spatial, strict=True)))
    if not any(lo or hi for lo, hi in amounts):
        return x, crop
    pad: list[int] = []
    for lo, hi in reversed(amounts):  # F.pad takes the last dim first
        pad += [lo, hi]
    return F.pad(x, pad, mode=mode), crop


def crop_to(out: torch.Tensor, crop: tuple[slice, ...]) -> torch.Tensor:
    """``out[crop]``, made contiguous."""
    return out[crop].contiguous()
