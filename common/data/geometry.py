"""Voxel geometry of stored images: which array axis is axial, and voxel indices carried from one grid to another.

Conventions: affines map voxel indices ``(i, j, k)`` of the array *as stored* to world coordinates in mm, RAS+
(nibabel's and MONAI's convention; MONAI's ITK reader converts ITK's LPS to RAS). World axis 0 runs L -> R, 1 runs
P -> A, 2 runs I -> S (axial slices are perpendicular to world axis 2).

A scan may be stored in any axis order (e.g. slices first, as many DICOM-to-NIfTI converters write sagittal or
coronal acquisitions), so nothing here assumes that the axial axis is the last array axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["affine_of", "axial_axis", "map_voxel_indices", "slice_axis_in_array"]


def affine_of(x: Any) -> np.ndarray | None:
    """The ``(4, 4)`` float64 affine of a ``MetaTensor`` (or any object with ``.affine``), ``None`` without one."""
    affine = getattr(x, "affine", None)
    if affine is None:
        return None
    if hasattr(affine, "detach"):
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def slice_axis_in_array(affine: np.ndarray, world_axis: int = 2) -> int:
    """The array axis of an image with ``affine`` that runs along ``world_axis`` (0 = L-R, 1 = P-A, 2 = I-S).

    Slice-wise models run along the RAS axis ``world_axis`` of the re-oriented image; this finds the same axis in
    the image as it was stored (e.g. axis 0 for a volume stored with S first). Slightly oblique affines map to the
    closest axis (nibabel's ``io_orientation``).

    Raises:
        ValueError: ``world_axis`` is not 0, 1 or 2, or no single array axis runs along it (a degenerate affine).
    """
    if isinstance(world_axis, bool) or world_axis not in (0, 1, 2):
        raise ValueError(f"world_axis must be 0 (L-R), 1 (P-A) or 2 (I-S), got {world_axis!r}")
    orientation = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    # rows of a degenerate (e.g. singular) affine's orientation are NaN: those array axes match no world axis
    matches = [i for i, (w, _) in enumerate(orientation) if np.isfinite(w) and int(w) == world_axis]
    if len(matches) != 1:
        raise ValueError(f"cannot find the array axis along world axis {world_axis} in affine\n{affine}")
    return matches[0]


def axial_axis(affine: np.ndarray | None, default: int = 2) -> int:
    """The stored array axis that runs I-S (across axial slices); ``default`` when ``affine`` is ``None``.

    Args:
        affine: ``(4, 4)`` voxel-to-world (RAS) affine of a 3D image, or ``None`` (no geometry known).
        default: the axis returned without an affine.

    Raises:
        ValueError: a degenerate affine (see :func:`slice_axis_in_array`).
    """
    return default if affine is None else slice_axis_in_array(affine, 2)


def map_voxel_indices(
    points: np.ndarray | Sequence[Sequence[float]],
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
) -> np.ndarray:
    """Carry voxel indices of one grid to the nearest voxel of another grid of the same world.

    ``dst = round(inv(dst_affine) @ src_affine @ [i, j, k, 1])``, clipped into ``dst_shape``: a voxel of the source
    image lands on the destination voxel whose centre is nearest to it in mm, exactly (no interpolation of a sparse
    map, so a click can never vanish when the destination grid is coarser). Clipping only moves points that lie
    within half a destination voxel outside the destination grid (the border voxels of a resampled field of view).

    Args:
        points: ``(N, 3)`` voxel indices (or continuous voxel coordinates) in the source grid.
        src_affine: ``(4, 4)`` voxel-to-world affine of the source grid.
        dst_affine: ``(4, 4)`` voxel-to-world affine of the destination grid.
        dst_shape: spatial shape of the destination grid.

    Returns:
        ``int64 (N, 3)`` voxel indices in the destination grid.

    Raises:
        ValueError: points not of shape ``(N, 3)``, non-finite points, singular or non-``(4, 4)`` affines, or a
            point that lands more than one voxel outside the destination grid (the two grids do not cover the same
            world).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"points must be finite, got {pts.tolist()}")
    src = np.asarray(src_affine, dtype=np.float64)
    dst = np.asarray(dst_affine, dtype=np.float64)
    if src.shape != (4, 4) or dst.shape != (4, 4):
        raise ValueError(f"affines must be (4, 4), got {src.shape} and {dst.shape}")
    try:
        to_dst = np.linalg.inv(dst) @ src
    except np.linalg.LinAlgError as err:
        raise ValueError(f"the destination affine is singular:\n{dst}") from err
    mapped = pts @ to_dst[:3, :3].T + to_dst[:3, 3]
    shape = np.asarray(dst_shape, dtype=np.int64)
    if shape.shape != (3,):
        raise ValueError(f"dst_shape must hold 3 sizes, got {tuple(dst_shape)}")
    rounded = np.rint(mapped).astype(np.int64)
    far = (rounded < -1) | (rounded > shape)
    if far.any():
        row = int(np.flatnonzero(far.any(axis=1))[0])
        raise ValueError(
            f"voxel {pts[row].tolist()} maps to {mapped[row].round(2).tolist()} in a destination grid of shape "
            f"{tuple(int(s) for s in shape)}: the two grids do not cover the same part of the world"
        )
    return np.clip(rounded, 0, shape - 1)
