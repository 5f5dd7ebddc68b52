"""Bounding boxes in voxel indices: parsing what viewers send, boxes around labels, box masks.

A box is ``(start, stop)``: two tuples of voxel indices of the array as stored, ``start`` inclusive and ``stop``
exclusive (Python slice semantics), so the box holds ``array[start[0]:stop[0], start[1]:stop[1], ...]``. This is the
convention of :class:`common.interaction.state.InteractionState.box`.

Viewers send boxes in two shapes, both accepted by :func:`parse_box`:

- ``[[i0, j0, k0], [i1, j1, k1]]`` (this project's requests: ``start``, ``stop``);
- MONAI Label's ``roi``, a flat ``[i_a, i_b, j_a, j_b, k_a, k_b]`` (3D Slicer's ``getROIPointsXYZ``: the ROI's two
  RAS corners mapped to IJK and rounded, so a pair may come in either order; MONAI Label's own scribbles transform
  slices ``roi[0]:roi[1]``). Each pair is sorted; a pair with equal ends (a flat ROI on one slice) spans that slice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Box", "box_from_mask", "box_mask", "box_size", "parse_box"]

logger = logging.getLogger(__name__)

#: ``(start, stop)`` voxel indices, start inclusive, stop exclusive.
Box = tuple[tuple[int, ...], tuple[int, ...]]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond the float range
        raise ValueError(f"{what} must be finite, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if abs(number - round(number)) > 1e-6:
        raise ValueError(f"{what} must be an integer voxel index, got {value!r}")
    return round(number)


def parse_box(value: Any, shape: Sequence[int], clip: bool = True) -> Box:
    """A viewer's box as ``(start, stop)`` voxel indices inside an image of spatial ``shape``.

    Args:
        value: ``[[start...], [stop...]]`` or a flat MONAI Label ``roi`` of ``2 * len(shape)`` numbers (see the
            module docstring). Numbers must be integral (``12.0`` is accepted).
        shape: the image's spatial shape as stored, ``(H, W[, D])``.
        clip: clip a box that sticks out of the image to the image (a logged warning); ``False`` raises instead.

    Returns:
        ``(start, stop)`` with ``0 <= start < stop <= shape`` on every axis.

    Raises:
        ValueError: wrong nesting or number of values, non-integer or non-finite values, a box of zero width after
            sorting its pairs, or a box outside the image (or partly outside when ``clip`` is false). Messages show
            the box and the image shape.
    """
    ndim = len(shape)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(f"box must be [[start...], [stop...]] or a flat roi of {2 * ndim} numbers, got {value!r}")
    items = list(value)
    if len(items) == 2 and all(isinstance(v, Sequence | np.ndarray) and not isinstance(v, str) for v in items):
        start_raw, stop_raw = list(items[0]), list(items[1])
        if len(start_raw) != ndim or len(stop_raw) != ndim:
            raise ValueError(
                f"box corners must have {ndim} coordinates for an image of shape {tuple(shape)}, got {value!r}"
            )
        pairs = [
            (_as_int(a, f"box start[{axis}]"), _as_int(b, f"box stop[{axis}]"))
            for axis, (a, b) in enumerate(zip(start_raw, stop_raw, strict=True))
        ]
        exclusive = True
    elif len(items) == 2 * ndim and not any(isinstance(v, Sequence | np.ndarray) for v in items):
        pairs = [
            (_as_int(items[2 * a], f"roi[{2 * a}]"), _as_int(items[2 * a + 1], f"roi[{2 * a + 1}]"))
            for a in range(ndim)
        ]
        exclusive = False
    else:
        raise ValueError(
            f"box must be [[start...], [stop...]] with {ndim} coordinates each or a flat roi of {2 * ndim} numbers "
            f"for an image of shape {tuple(shape)}, got {value!r}"
        )
    start: list[int] = []
    stop: list[int] = []
    for axis, (a, b) in enumerate(pairs):
        lo, hi = min(a, b), max(a, b)
        if not exclusive and lo == hi:
            hi = lo + 1  # a flat roi: the one slice it lies on
        if hi <= lo:
            raise ValueError(f"box {value!r} has zero width along axis {axis} (start {a}, stop {b})")
        start.append(lo)
        stop.append(hi)
    outside = [axis for axis in range(ndim) if stop[axis] <= 0 or start[axis] >= int(shape[axis])]
    if outside:
        raise ValueError(f"box {value!r} lies outside the image of shape {tuple(shape)} (axes {outside})")
    sticking_out = [axis for axis in range(ndim) if start[axis] < 0 or stop[axis] > int(shape[axis])]
    if sticking_out:
        if not clip:
            raise ValueError(f"box {value!r} sticks out of the image of shape {tuple(shape)} (axes {sticking_out})")
        logger.warning("box %r sticks out of the image of shape %s: clipped to the image", value, tuple(shape))
        start = [max(0, s) for s in start]
        stop = [min(int(n), s) for s, n in zip(stop, shape, strict=True)]
    return tuple(start), tuple(stop)


def box_size(box: Box) -> tuple[int, ...]:
    """Voxels along each axis of ``box``."""
    return tuple(b - a for a, b in zip(box[0], box[1], strict=True))


def box_from_mask(
    mask: np.ndarray,
    margin: int | Sequence[int] = 0,
    rng: np.random.Generator | None = None,
    margin_range: Sequence[tuple[int, int]] | None = None,
) -> Box:
    """The bounding box of the non-zero voxels of ``mask``, widened by a margin and clipped to the array.

    Args:
        mask: ``(H, W[, D])`` array; non-zero voxels are the object.
        margin: fixed margin in voxels on each side (one int for every axis, or one per axis).
        rng: generator for random margins; with ``margin_range`` each side of each axis gets its own margin drawn
            uniformly from ``margin_range[axis]`` (inclusive), as BIFSeg's training boxes (0 to 10 voxels).
        margin_range: ``(low, high)`` per axis for random margins (needs ``rng``); overrides ``margin``.

    Raises:
        ValueError: an empty mask, negative margins, or ``margin_range`` without ``rng``.
    """
    arr = np.asarray(mask)
    nonzero = np.nonzero(arr)
    if arr.size == 0 or len(nonzero[0]) == 0:
        raise ValueError("cannot make a box around an empty mask: the structure has no voxel")
    ndim = arr.ndim
    if margin_range is not None:
        if rng is None:
            raise ValueError("random margins (margin_range) need a numpy Generator rng")
        ranges = [tuple(int(v) for v in r) for r in margin_range]
        if len(ranges) != ndim or any(len(r) != 2 or r[0] < 0 or r[1] < r[0] for r in ranges):
            raise ValueError(
                f"margin_range must hold one (low, high) with 0 <= low <= high per axis, got {margin_range!r}"
            )
        before = [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]
        after = [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]
    else:
        margins = [int(margin)] * ndim if isinstance(margin, int | np.integer) else [int(m) for m in margin]
        if len(margins) != ndim or any(m < 0 for m in margins):
            raise ValueError(f"margin must be >= 0, one value or one per axis ({ndim}), got {margin!r}")
        before, after = margins, margins
    start = tuple(max(0, int(idx.min()) - b) for idx, b in zip(nonzero, before, strict=True))
    stop = tuple(min(int(n), int(idx.max()) + 1 + a) for idx, a, n in zip(nonzero, after, arr.shape, strict=True))
    return start, stop


def box_mask(shape: Sequence[int], box: Box) -> np.ndarray:
    """A bool array of ``shape``, True inside ``box``.

    Raises:
        ValueError: ``box`` has the wrong number of axes.
    """
    if len(box[0]) != len(shape) or len(box[1]) != len(shape):
        raise ValueError(f"box {box!r} does not have {len(shape)} axes like the shape {tuple(shape)}")
    out = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    out[tuple(slice(a, b) for a, b in zip(box[0], box[1], strict=True))] = True
    return out
