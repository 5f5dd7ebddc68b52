"""Pure array functions behind the slice-propagation prior transforms.

Coordinate conventions (shared by every function here):

* Volumes are ``(H, W, D)`` arrays indexed ``[i, j, k]`` = NIfTI voxel axes as stored; ``axis`` is the slice axis
  (2 = axial by default). A slice along ``axis`` is the 2D array with that axis removed.
* 2D masks are ``(H, W)`` (or channel-first ``(C, H, W)``), indexed ``[row, col]``. Geometry is in pixel units:
  rotation and scaling act about the **image centre** ``((H - 1) / 2, (W - 1) / 2)`` (the midpoint between the
  centres of the first and last pixel), never about the mask's centre of mass, and never translate.

The functions accept numpy arrays, torch tensors (any device) and ``MetaTensor`` and, where they return an array of
the input's shape, return the input's type, dtype and device (``MetaTensor`` meta data kept).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_dst_type, convert_to_numpy, convert_to_tensor

__all__ = [
    "JITTER_MODES",
    "annotated_slice_indices",
    "annotation_from_slices",
    "foreground_per_slice",
    "jitter_mask_about_centre",
    "middle_slice_index",
]

logger = logging.getLogger(__name__)

#: Interpolation modes of :func:`jitter_mask_about_centre`.
JITTER_MODES: tuple[str, ...] = ("linear", "nearest")

# Bilinear values within this distance below 0.5 count as foreground ("at least half covered"): exact ties then
# resolve identically everywhere despite float64 rounding.
_TIE_TOLERANCE = 1e-9


def _check_number(value: Any, name: str) -> float:
    """``float(value)`` for a finite real number (not a bool), else a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _check_axis(axis: Any, ndim: int = 3) -> int:
    """A spatial axis in ``[-ndim, ndim)`` as a non-negative int, else a ValueError."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer spatial axis in [{-ndim}, {ndim}), got {axis!r}")
    return int(axis) % ndim


def _source_grid(
    height: int, width: int, angle_deg: float, scale: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``grid_sample`` grid ``(1, H, W, 2)`` (``align_corners=True``) of the inverse of the centred rotation/scaling.

    The forward map sends the offset ``(u, v) = (row - (H-1)/2, col - (W-1)/2)`` to
    ``scale * (u cos a - v sin a, u sin a + v cos a)``; output pixel ``p`` therefore samples the input at
    ``R(-a) p / scale``. Offsets are normalised by the half extents so that the geometry is isotropic in pixels even
    when ``H != W`` (a rotation in normalised ``[-1, 1]`` coordinates would shear non-square images).
    """
    half_h, half_w = (height - 1) / 2.0, (width - 1) / 2.0
    u = torch.arange(height, dtype=torch.float64, device=device) - half_h
    v = torch.arange(width, dtype=torch.float64, device=device) - half_w
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    angle = math.radians(angle_deg)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    u_src = cos * uu + sin * vv
    v_src = -sin * uu + cos * vv
    # A single-pixel axis has nothing to sample between: with align_corners=True any coordinate maps to pixel 0.
    x = v_src / half_w if width > 1 else torch.zeros_like(v_src)
    y = u_src / half_h if height > 1 else torch.zeros_like(u_src)
    return torch.stack([x, y], dim=-1)[None].to(dtype)


def jitter_mask_about_centre(
    mask: NdarrayOrTensor, angle_deg: float, scale: float, mode: Literal["linear", "nearest"] | str = "linear"
) -> NdarrayOrTensor:
    """Rotate and scale a 2D mask about the image centre, without translation.

    This is the "mask-prior jitter" of the slice-propagation method: the prior is rotated by ``angle_deg`` and scaled
    by ``scale`` about the **image centre** ``((H - 1) / 2, (W - 1) / 2)`` (so a mask away from the centre also moves a
    little), not about its centre of mass. Everything is computed with one affine sampling grid
    (``torch.nn.functional.grid_sample``, ``align_corners=True``, zero padding: content leaving the image is lost and
    uncovered pixels are background).

    Sign convention: a positive angle turns the mask **counter-clockwise when the array is displayed with row 0 at the
    top** (matplotlib ``imshow`` default), i.e. from the ``+col`` direction towards the ``-row`` direction. In offsets
    ``(u, v) = (row - (H - 1) / 2, col - (W - 1) / 2)`` a pixel moves to
    ``scale * (u cos a - v sin a, u sin a + v cos a)``; e.g. +90 deg takes a dot right of the centre to above it.

    Args:
        mask: ``(H, W)`` or channel-first ``(C, H, W)`` numpy array, torch tensor or MetaTensor. Every channel gets
            the same transform.
        angle_deg: rotation in degrees (positive = counter-clockwise as displayed, see above).
        scale: isotropic scale factor > 0 (1.1 = 10 % larger, 0.9 = 10 % smaller).
        mode: ``"linear"`` (default): the foreground ``mask > 0`` is interpolated bilinearly and thresholded at 0.5,
            which gives smoother outlines than nearest-neighbour; the output is binary (0/1 in the input dtype). A
            pixel whose interpolated value is exactly 0.5 is foreground, so a mask symmetric about the centre stays
            exactly symmetric.
            ``"nearest"``: nearest-neighbour sampling, which keeps the input values (labels, probabilities).

    Returns:
        The transformed mask, same shape, type, dtype and device as ``mask`` (MetaTensor meta data kept). With
        ``angle_deg=0`` and ``scale=1`` a binary mask is returned unchanged (as a copy).

    Raises:
        ValueError: ``mask`` is not 2D/3D, ``scale`` is not a positive finite number, ``angle_deg`` is not finite, or
            ``mode`` is unknown.

    Example:
        >>> disc = np.zeros((64, 64), np.uint8); disc[24:40, 24:40] = 1
        >>> jitter_mask_about_centre(disc, angle_deg=1.0, scale=1.1).sum() > disc.sum()
        True
    """
    angle = _check_number(angle_deg, "angle_deg")
    factor = _check_number(scale, "scale")
    if factor <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if mode not in JITTER_MODES:
        raise ValueError(f"mode must be one of {JITTER_MODES}, got {mode!r}")
    shape = tuple(mask.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"mask must be a 2D (H, W) or channel-first (C, H, W) array, got shape {shape}")
    if 0 in shape:
        raise ValueError(f"mask must not be empty, got shape {shape}")
    t = convert_to_tensor(mask, track_meta=False)
    height, width = shape[-2:]
    x = t.reshape(1, -1, height, width)
    # float64 throughout: masks are 2D and small, and exact ties (bilinear value 0.5) must resolve the same way on
    # both sides of the centre, which float32 rounding (~1e-6) does not guarantee.
    work_dtype = torch.float64
    x = (x > 0).to(work_dtype) if mode == "linear" else x.to(work_dtype)
    grid = _source_grid(height, width, angle, factor, work_dtype, x.device)
    out = F.grid_sample(
        x, grid, mode="bilinear" if mode == "linear" else "nearest", padding_mode="zeros", align_corners=True
    )
    if mode == "linear":
        out = (out >= 0.5 - _TIE_TOLERANCE).to(work_dtype)
    result, *_ = convert_to_dst_type(out.reshape(shape), dst=mask)
    return result


def foreground_per_slice(volume: NdarrayOrTensor, axis: int = 2) -> np.ndarray:
    """Which slices along ``axis`` hold any foreground (``volume > 0``).

    Args:
        volume: ``(H, W, D)`` numpy array, torch tensor or MetaTensor.
        axis: slice axis (0, 1 or 2; negative values count from the end).

    Returns:
        Boolean numpy array of length ``volume.shape[axis]``.

    Raises:
        ValueError: ``volume`` is not 3D or ``axis`` is invalid.
    """
    shape = tuple(volume.shape)
    if len(shape) != 3:
        raise ValueError(
            f"volume must be 3D (H, W, D), got shape {shape} (for a channel-first (1, H, W, D) array pass volume[0])"
        )
    ax = _check_axis(axis)
    t = convert_to_tensor(volume, track_meta=False)
    fg = torch.movedim(t > 0, ax, 0).reshape(shape[ax], -1).any(dim=1)
    return np.asarray(convert_to_numpy(fg), dtype=bool)


def annotated_slice_indices(annotation: NdarrayOrTensor, axis: int = 2) -> list[int]:
    """Indices of the slices along ``axis`` that hold any foreground (``annotation > 0``), ascending.

    Args:
        annotation: ``(H, W, D)`` annotation (or label) volume; numpy, torch or MetaTensor.
        axis: slice axis (0, 1 or 2).

    Returns:
        Sorted list of Python ints (empty when the volume is all background).

    Raises:
        ValueError: ``annotation`` is not 3D or ``axis`` is invalid.
    """
    return [int(k) for k in np.flatnonzero(foreground_per_slice(annotation, axis))]


def middle_slice_index(label: NdarrayOrTensor, axis: int = 2) -> int:
    """The slice a user would annotate first: the middle of the structure's extent along ``axis``.

    The middle is ``round((first + last) / 2)`` over the slices holding foreground (``label > 0``), halves rounded up
    (towards ``last``). If that slice is empty (a structure with a gap), the nearest non-empty slice is returned; at
    equal distance the lower index wins.

    Args:
        label: ``(H, W, D)`` binary (or any, foreground = ``> 0``) volume; numpy, torch or MetaTensor.
        axis: slice axis (0, 1 or 2).

    Returns:
        Slice index (Python int) of a non-empty slice.

    Raises:
        ValueError: ``label`` is empty, not 3D, or ``axis`` is invalid.
    """
    nonempty = np.flatnonzero(foreground_per_slice(label, axis))
    if nonempty.size == 0:
        raise ValueError("label is empty (no voxel > 0): there is no middle slice to annotate")
    middle = math.floor((int(nonempty[0]) + int(nonempty[-1])) / 2 + 0.5)
    return int(nonempty[np.argmin(np.abs(nonempty - middle))])  # argmin takes the first (lower) on ties


def annotation_from_slices(
    shape: tuple[int, int, int] | list[int],
    slices: Mapping[int, NdarrayOrTensor],
    axis: int = 2,
) -> np.ndarray:
    """Build an annotation volume that holds user masks on some slices and background elsewhere.

    Args:
        shape: spatial shape ``(H, W, D)`` of the volume.
        slices: ``{slice index along axis: 2D mask}``; each mask has the volume shape with ``axis`` removed
            (``(H, W)`` for ``axis=2``) and counts as foreground where ``> 0``. Numpy, torch or MetaTensor.
        axis: slice axis (0, 1 or 2).

    Returns:
        ``uint8`` numpy array of ``shape``: 1 on the foreground of the given slices, 0 elsewhere. A slice given with an
        empty mask is indistinguishable from an unannotated one (see :func:`annotated_slice_indices`).

    Raises:
        ValueError: ``shape`` is not 3 positive ints, ``axis`` is invalid, a slice index is not an int, negative or
            outside the volume, or a mask has the wrong shape.
    """
    dims = tuple(shape)
    if len(dims) != 3 or any(
        isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1 for n in dims
    ):
        raise ValueError(f"shape must be three positive integers (H, W, D), got {shape!r}")
    ax = _check_axis(axis)
    depth = int(dims[ax])
    plane = tuple(int(n) for i, n in enumerate(dims) if i != ax)
    volume = np.zeros(tuple(int(n) for n in dims), dtype=np.uint8)
    moved = np.moveaxis(volume, ax, 0)  # a view: writing into it fills ``volume``
    for index, mask in slices.items():
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"slice index must be an integer, got {index!r}")
        if index < 0:
            raise ValueError(f"slice index {index} is negative; indices count from 0 along axis {ax}")
        if index >= depth:
            raise ValueError(f"slice index {index} is outside the volume: axis {ax} of shape {dims} has {depth} slices")
        m = convert_to_numpy(mask)
        if m.shape != plane:
            raise ValueError(
                f"mask of slice {index} has shape {m.shape}, expected {plane} (volume {dims} without axis {ax})"
            )
        moved[int(index)] = m > 0
    return volume
