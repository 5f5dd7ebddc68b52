"""Copies of an MSD-layout dataset in another storage geometry or contrast, with the anatomy unchanged in the world.

The bundles must work on scans the project did not make: another voxel axis order, finer spacing, MRI contrast.
This module writes such copies of a dataset (usually the embedded phantoms, :mod:`common.data.phantoms`), keeping
"what is where in the world" fixed, so that results on a variant can be compared with results on the original:

* ``"restored"`` -- the same voxels re-stored in another axis order with flips (lossless). The default
  (:data:`RESTORED_ORDER`, :data:`RESTORED_FLIP`) stores the axial axis first: new voxel axes are
  ``(old axis 2, old axis 0 reversed, old axis 1 reversed)``, which turns the phantoms' RAS storage (axcodes
  ``('R', 'A', 'S')``) into axcodes ``('S', 'L', 'P')`` (:data:`RESTORED_AXCODES`): an LPS-like orientation with the
  axial axis not last. The affine changes so that every voxel centre keeps its world position.
* ``"fine"`` -- resampled to a finer in-plane spacing (default 1.0 mm) keeping the slices (the axial voxel axis,
  its spacing and its slice positions). Field-of-view convention: the edge-to-edge extent of the volume along each
  in-plane axis is preserved exactly ("align corners = False"): an axis of ``n`` voxels of spacing ``s`` becomes
  ``n' = round(n * s / in_plane_spacing)`` voxels of spacing ``s' = n * s / n'`` (so ``s'`` is the requested spacing
  whenever ``n * s`` is a multiple of it; 128 x 2.5 mm -> 320 x 1.0 mm), with new voxel ``i'`` centred on old voxel
  coordinate ``(i' + 0.5) * n / n' - 0.5``. Images are interpolated linearly (integer images are rounded back to
  their dtype); labels by linear interpolation of each label's one-hot mask and arg-max (ties within ``1e-3``
  go to the nearest-neighbour label), which keeps each structure's physical volume and smooth boundaries.
* ``"mri_t2"`` -- as ``"mri"`` with a T2-weighted-MRI-like contrast (:mod:`common.data.mri_t2`: fluid and liver
  lesions bright, liver and muscle dark, flowing blood dark), the second held-out contrast.
* ``"mri"`` -- the same geometry with a T1-weighted-MRI-like contrast: every labelled tissue gets the mean
  intensity of :data:`MRI_T1_INTENSITY` (looked up by the label's name in ``dataset.json``; unknown names get a
  deterministic intensity in :data:`MRI_UNKNOWN_RANGE` from a seeded generator) plus the original image's texture
  (``mean + texture_scale * (orig - median_orig)``, the deviation clipped to 3 robust standard deviations); the
  unlabelled background is mapped from HU through :data:`MRI_BACKGROUND_CURVE` (fat bright, air and cortical bone
  dark). A per-case gain, a smooth multiplicative bias field and Rician noise follow. Values are non-negative and
  mostly below 1000; they have no HU meaning.

Outputs are NIfTI-1 ``.nii.gz`` with the source's file names, labels as uint8, images in the source's integer dtype
(``"restored"``, ``"fine"``) or float32 (``"mri"``, or float sources), sform and qform both set (code 1) to the same
affine so that nibabel and ITK read the same geometry, and a ``dataset.json`` with the source's labels and
``structure_split``, paths pointing at the new files and a ``"variant"`` entry describing the transformation.

Command line::

    python -m common.data.variants --src data/phantom --out data/phantom_mri --variant mri [--cases 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from common.data.geometry import axial_axis
from common.data.mri_t2 import MRI_T2_BACKGROUND_CURVE, MRI_T2_INTENSITY
from common.data.msd import load_msd_dataset
from common.data.phantoms import nifti_gz_bytes, write_atomic

__all__ = [
    "DEFAULT_IN_PLANE_SPACING",
    "MRI_BACKGROUND_CURVE",
    "MRI_T1_INTENSITY",
    "MRI_UNKNOWN_RANGE",
    "RESTORED_AXCODES",
    "RESTORED_FLIP",
    "RESTORED_ORDER",
    "VARIANTS",
    "fine_affine",
    "fine_shape",
    "main",
    "mri_contrast",
    "mri_intensity_of",
    "resample_image_in_plane",
    "resample_label_in_plane",
    "restore_array",
    "restored_affine",
    "write_variant",
]

logger = logging.getLogger(__name__)

#: The variant names accepted by :func:`write_variant`.
VARIANTS: tuple[str, ...] = ("restored", "fine", "mri", "mri_t2")

#: ``"restored"``: new voxel axis ``a`` is old voxel axis ``RESTORED_ORDER[a]`` (axial axis first).
RESTORED_ORDER: tuple[int, int, int] = (2, 0, 1)
#: ``"restored"``: whether new voxel axis ``a`` runs opposite to the old axis it comes from.
RESTORED_FLIP: tuple[bool, bool, bool] = (False, True, True)
#: Orientation codes (``nib.aff2axcodes``) of a RAS-stored source after the default re-storing.
RESTORED_AXCODES: tuple[str, str, str] = ("S", "L", "P")

#: ``"fine"``: default target in-plane spacing (mm).
DEFAULT_IN_PLANE_SPACING = 1.0

#: ``"mri"``: T1-weighted-like mean intensity per structure name (arbitrary units, 0..1000). Ordering as on a
#: T1 scan: fat brightest, then pancreas, liver, spleen, kidneys, muscle; fluid, lesions and flowing blood dark.
#: Names are matched after lower-casing and turning spaces/hyphens into underscores; a trailing ``_left``,
#: ``_right``, ``_l`` or ``_r`` is dropped when the full name is not listed.
MRI_T1_INTENSITY: dict[str, float] = {
    "fat": 850.0,
    "pancreas": 560.0,
    "liver": 620.0,
    "adrenal": 450.0,
    "adrenal_gland": 450.0,
    "spleen": 480.0,
    "kidney": 400.0,
    "prostate": 380.0,
    "muscle": 320.0,
    "heart": 300.0,
    "stomach": 240.0,
    "bowel": 180.0,
    "colon": 180.0,
    "small_bowel": 180.0,
    "duodenum": 200.0,
    "esophagus": 260.0,
    "liver_lesion": 260.0,
    "lesion": 260.0,
    "tumour": 260.0,
    "tumor": 260.0,
    "cancer": 260.0,
    "hepatic_vessel": 110.0,
    "portal_vein": 110.0,
    "inferior_vena_cava": 110.0,
    "ivc": 110.0,
    "aorta": 90.0,
    "iliac": 90.0,
    "iliac_artery": 90.0,
    "gallbladder": 120.0,
    "bladder": 60.0,
    "urinary_bladder": 60.0,
    "lung": 30.0,
}

#: ``"mri"``: range of the deterministic intensity given to structure names not in :data:`MRI_T1_INTENSITY`.
MRI_UNKNOWN_RANGE: tuple[float, float] = (150.0, 700.0)

#: ``"mri"``: piecewise-linear map (HU -> T1-like intensity) for unlabelled voxels: ``(hu, intensity)`` knots
#: (``np.interp``; constant beyond the ends). Air and lung dark, fat bright, soft tissue/muscle mid-grey,
#: cancellous bone (fatty marrow) brighter, cortical bone dark.
MRI_BACKGROUND_CURVE: tuple[tuple[float, float], ...] = (
    (-1024.0, 10.0),
    (-800.0, 40.0),
    (-100.0, 850.0),
    (40.0, 320.0),
    (150.0, 300.0),
    (350.0, 450.0),
    (700.0, 60.0),
    (3071.0, 30.0),
)

_MRI_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "texture_scale": 1.5,
    "tissue_jitter": 0.05,
    "gain_range": (0.85, 1.15),
    "bias_strength": 0.2,
    "noise_std": 12.0,
}
_OPTIONS: dict[str, dict[str, Any]] = {
    "restored": {"order": RESTORED_ORDER, "flip": RESTORED_FLIP},
    "fine": {"in_plane_spacing": DEFAULT_IN_PLANE_SPACING},
    "mri": _MRI_DEFAULTS,
    "mri_t2": _MRI_DEFAULTS,
}
_TIE_EPS = 1e-3
_MRI_VARIANTS = ("mri", "mri_t2")


# --------------------------------------------------------------------------------------------------- restored


def _check_order_flip(order: Sequence[int], flip: Sequence[bool]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    try:
        perm = tuple(int(a) for a in order)
    except (TypeError, ValueError):
        raise ValueError(f"order must be a permutation of (0, 1, 2), got {order!r}") from None
    if sorted(perm) != [0, 1, 2] or any(isinstance(a, bool) for a in order):
        raise ValueError(f"order must be a permutation of (0, 1, 2), got {order!r}")
    flips = tuple(flip)
    if len(flips) != 3 or not all(isinstance(f, (bool, np.bool_)) for f in flips):
        raise ValueError(f"flip must be 3 booleans (one per new voxel axis), got {flip!r}")
    return perm, tuple(bool(f) for f in flips)


def restore_array(
    array: np.ndarray, order: Sequence[int] = RESTORED_ORDER, flip: Sequence[bool] = RESTORED_FLIP
) -> np.ndarray:
    """Re-store a volume: permute its first three (spatial) axes, then reverse some of them (lossless).

    Args:
        array: ``(X, Y, Z, ...)`` volume indexed by the old voxel axes (trailing axes, e.g. modalities, are kept).
        order: new axis ``a`` is old axis ``order[a]``.
        flip: new axis ``a`` is reversed if ``flip[a]``.

    Returns:
        The re-stored array (contiguous), ``new[i'] = old[i]`` with ``i[order[a]] = i'[a]`` or
        ``n'_a - 1 - i'[a]`` if flipped.

    Raises:
        ValueError: fewer than 3 axes, or a bad ``order``/``flip``.
    """
    perm, flips = _check_order_flip(order, flip)
    if array.ndim < 3:
        raise ValueError(f"array must have 3 spatial axes (X, Y, Z, ...), got shape {array.shape}")
    out = np.transpose(array, (*perm, *range(3, array.ndim)))
    index = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    return np.ascontiguousarray(out[index])


def restored_affine(
    affine: np.ndarray,
    shape: Sequence[int],
    order: Sequence[int] = RESTORED_ORDER,
    flip: Sequence[bool] = RESTORED_FLIP,
) -> np.ndarray:
    """Voxel-to-world affine of :func:`restore_array`'s output, keeping every voxel centre's world position.

    Args:
        affine: ``(4, 4)`` affine of the old storage.
        shape: old spatial shape ``(X, Y, Z)``.
        order: as for :func:`restore_array`.
        flip: as for :func:`restore_array`.

    Returns:
        ``affine @ T`` where ``T`` maps a new voxel index ``(i', j', k', 1)`` to the old voxel index it holds.

    Raises:
        ValueError: bad ``affine``, ``shape``, ``order`` or ``flip``.
    """
    perm, flips = _check_order_flip(order, flip)
    aff = _check_affine(affine)
    dims = [int(s) for s in shape][:3]
    if len(dims) != 3:
        raise ValueError(f"shape must give 3 spatial sizes, got {shape!r}")
    to_old = np.zeros((4, 4))
    to_old[3, 3] = 1.0
    for new_axis, old_axis in enumerate(perm):
        if flips[new_axis]:
            to_old[old_axis, new_axis] = -1.0
            to_old[old_axis, 3] = dims[old_axis] - 1.0
        else:
            to_old[old_axis, new_axis] = 1.0
    return aff @ to_old


# --------------------------------------------------------------------------------------------------- fine


def _check_affine(affine: Any) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite invertible (4, 4) voxel-to-world matrix, got {affine!r}")
    return aff


def _check_spacing(in_plane_spacing: Any) -> float:
    if isinstance(in_plane_spacing, (bool, np.bool_)) or not isinstance(in_plane_spacing, (int, float, np.number)):
        raise ValueError(f"in_plane_spacing must be a positive number (mm), got {in_plane_spacing!r}")
    value = float(in_plane_spacing)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"in_plane_spacing must be a positive finite number (mm), got {in_plane_spacing!r}")
    return value


def fine_shape(
    shape: Sequence[int], affine: np.ndarray, in_plane_spacing: float = DEFAULT_IN_PLANE_SPACING
) -> tuple[int, int, int]:
    """Spatial shape after in-plane resampling: ``round(n * s / in_plane_spacing)`` (>= 1) on the two in-plane axes.

    Args:
        shape: old spatial shape ``(X, Y, Z)``.
        affine: old ``(4, 4)`` affine (gives the spacings ``s`` and the slice axis: the voxel axis closest to world
            S-I).
        in_plane_spacing: target spacing in mm.

    Raises:
        ValueError: bad ``shape``, ``affine`` or ``in_plane_spacing``.
    """
    target = _check_spacing(in_plane_spacing)
    aff = _check_affine(affine)
    dims = [int(s) for s in shape][:3]
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"shape must give 3 positive spatial sizes, got {shape!r}")
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    axial = axial_axis(aff)
    out = [n if a == axial else max(1, round(n * float(spacing[a]) / target)) for a, n in enumerate(dims)]
    return out[0], out[1], out[2]


def fine_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a volume resampled from ``shape`` to ``new_shape`` with the same edge-to-edge field of view.

    New voxel ``i'`` along axis ``a`` is centred on old voxel coordinate ``(i' + 0.5) * n_a / n'_a - 0.5``; an axis
    whose size does not change keeps its voxel positions exactly.

    Args:
        affine: old ``(4, 4)`` affine.
        shape: old spatial shape ``(X, Y, Z)``.
        new_shape: new spatial shape.

    Raises:
        ValueError: bad ``affine`` or shapes.
    """
    aff = _check_affine(affine)
    old = [int(s) for s in shape][:3]
    new = [int(s) for s in new_shape][:3]
    if len(old) != 3 or len(new) != 3 or min(old + new) < 1:
        raise ValueError(f"shapes must give 3 positive spatial sizes, got {shape!r} and {new_shape!r}")
    to_old = np.eye(4)
    for a in range(3):
        ratio = old[a] / new[a]
        to_old[a, a] = ratio
        to_old[a, 3] = (ratio - 1.0) / 2.0
    return aff @ to_old


def _linear_taps(n_old: int, n_new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per new index: lower/upper old neighbour and the weight of the upper one (positions clamped to the grid)."""
    # position = (i' + 0.5) * n_old / n_new - 0.5, computed from integers so that half-way positions are exact
    pos = ((2 * np.arange(n_new, dtype=np.int64) + 1) * n_old - n_new) / (2.0 * n_new)
    pos = np.clip(pos, 0.0, n_old - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_old - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _nearest_taps(n_old: int, n_new: int) -> np.ndarray:
    pos = ((2 * np.arange(n_new, dtype=np.int64) + 1) * n_old - n_new) / (2.0 * n_new)
    return np.clip(np.rint(pos), 0, n_old - 1).astype(np.int64)  # rint: half-way positions round to even


def _interp_axis(array: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    shape = [1] * array.ndim
    shape[axis] = len(w)
    low = np.take(array, lo, axis=axis)
    return low + (np.take(array, hi, axis=axis) - low) * w.reshape(shape)


def _in_plane_axes(shape: Sequence[int], new_shape: Sequence[int]) -> list[int]:
    return [a for a in range(3) if int(shape[a]) != int(new_shape[a])]


def resample_image_in_plane(image: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Linear resampling of the spatial axes whose size changes, with the :func:`fine_affine` voxel placement.

    Args:
        image: ``(X, Y, Z, ...)`` volume (trailing axes are carried).
        new_shape: new spatial shape ``(X', Y', Z')``.

    Returns:
        float32 ``(X', Y', Z', ...)`` (positions outside the old voxel centres take the edge value).

    Raises:
        ValueError: ``image`` has fewer than 3 axes or ``new_shape`` is not 3 positive sizes.
    """
    if image.ndim < 3:
        raise ValueError(f"image must have 3 spatial axes (X, Y, Z, ...), got shape {image.shape}")
    new = [int(s) for s in new_shape]
    if len(new) != 3 or min(new) < 1:
        raise ValueError(f"new_shape must be 3 positive sizes, got {new_shape!r}")
    out = np.asarray(image, dtype=np.float32)
    for axis in _in_plane_axes(image.shape, new):
        out = _interp_axis(out, axis, *_linear_taps(image.shape[axis], new[axis]))
    return out


def resample_label_in_plane(label: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Label map resampling: linear interpolation of each label's one-hot mask, then arg-max.

    Each label is interpolated only inside its bounding box (plus one voxel); the background probability is
    ``1 - sum(others)``. Scores within ``1e-3`` of each other (half-way ties) are resolved in favour of the
    nearest-neighbour label (half-way positions round to even), so ties do not bias structure volumes either way.

    Args:
        label: ``(X, Y, Z)`` integer label map (0 = background).
        new_shape: new spatial shape ``(X', Y', Z')``.

    Returns:
        ``(X', Y', Z')`` array of ``label``'s dtype.

    Raises:
        ValueError: ``label`` is not a 3D integer array, or ``new_shape`` is not 3 positive sizes.
    """
    if label.ndim != 3 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be a 3D integer array (X, Y, Z), got {label.dtype} shape {label.shape}")
    new = [int(s) for s in new_shape]
    if len(new) != 3 or min(new) < 1:
        raise ValueError(f"new_shape must be 3 positive sizes, got {new_shape!r}")
    axes = _in_plane_axes(label.shape, new)
    taps = {a: _linear_taps(label.shape[a], new[a]) for a in axes}
    nearest = label
    for a in axes:
        nearest = np.take(nearest, _nearest_taps(label.shape[a], new[a]), axis=a)
    best = np.full(new, -1.0, dtype=np.float32)
    out = np.zeros(new, dtype=label.dtype)
    total = np.zeros(new, dtype=np.float32)
    for value in np.unique(label):
        if value == 0:
            continue
        mask = label == value
        old_box, new_box = [], []
        for a in range(3):
            hit = np.flatnonzero(np.any(mask, axis=tuple(b for b in range(3) if b != a)))
            start, stop = int(hit[0]), int(hit[-1]) + 1
            if a not in taps:
                old_box.append(slice(start, stop))
                new_box.append(slice(start, stop))
                continue
            lo, hi, _ = taps[a]
            new_start = int(np.searchsorted(hi, start, side="left"))  # first new voxel touching the box
            new_stop = int(np.searchsorted(lo, stop - 1, side="right"))  # one past the last
            new_box.append(slice(new_start, new_stop))
            old_box.append(slice(int(lo[new_start]), int(hi[new_stop - 1]) + 1))
        prob = mask[tuple(old_box)].astype(np.float32)
        for a in axes:
            lo, hi, w = taps[a]
            sel = new_box[a]
            prob = _interp_axis(prob, a, lo[sel] - old_box[a].start, hi[sel] - old_box[a].start, w[sel])
        region = tuple(new_box)
        total[region] += prob
        score = prob + np.float32(_TIE_EPS) * (nearest[region] == value)
        better = score > best[region]
        best[region][better] = score[better]
        out[region][better] = value
    background = (1.0 - total) + np.float32(_TIE_EPS) * (nearest == 0)
    out[background > best] = 0
    return out


# --------------------------------------------------------------------------------------------------- mri


def _normalise_name(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def mri_intensity_of(name: str, seed: int = 0, table: Mapping[str, float] | None = None) -> float:
    """MRI-like mean intensity of a structure name: ``table`` (:data:`MRI_T1_INTENSITY`), else a deterministic draw.

    Args:
        name: structure name from ``dataset.json`` (matched as documented at :data:`MRI_T1_INTENSITY`).
        seed: seed of the draw for names not in the table (the draw depends only on ``seed`` and the name).
        table: name -> intensity (``None``: the T1-like table; the T2-like one is
            :data:`common.data.mri_t2.MRI_T2_INTENSITY`).

    Returns:
        The intensity; for an unknown name a value in :data:`MRI_UNKNOWN_RANGE`.
    """
    intensities = MRI_T1_INTENSITY if table is None else table
    key = _normalise_name(name)
    if key in intensities:
        return intensities[key]
    for suffix in ("_left", "_right", "_l", "_r"):
        if key.endswith(suffix) and key[: -len(suffix)] in intensities:
            return intensities[key[: -len(suffix)]]
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    return float(rng.uniform(*MRI_UNKNOWN_RANGE))


def _bias_field(shape: Sequence[int], affine: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``exp(strength * p)`` with ``p`` a random quadratic polynomial of world position scaled to ``[-1, 1]``."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape[:3]), indexing="ij", sparse=True)
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    world_corners = corners @ affine.T
    centre = 0.5 * (world_corners.max(axis=0) + world_corners.min(axis=0))
    half = np.maximum(0.5 * (world_corners.max(axis=0) - world_corners.min(axis=0)), 1e-6)
    coords = [
        (sum(np.float32(affine[r, c]) * grids[c] for c in range(3)) + np.float32(affine[r, 3] - centre[r]))
        / np.float32(half[r])
        for r in range(3)
    ]
    terms = [(a, b, c) for a in range(3) for b in range(3) for c in range(3) if 0 < a + b + c <= 2]
    coefs = rng.uniform(-1.0, 1.0, len(terms))
    poly = np.zeros(tuple(int(s) for s in shape[:3]), dtype=np.float32)
    for coef, (a, b, c) in zip(coefs, terms, strict=True):
        poly += np.float32(coef) * (coords[0] ** a) * (coords[1] ** b) * (coords[2] ** c)
    peak = float(np.max(np.abs(poly)))
    if peak > 0:
        poly *= np.float32(strength / peak)
    return np.exp(poly)


def _check_mri_options(
    texture_scale: Any, tissue_jitter: Any, gain_range: Any, bias_strength: Any, noise_std: Any
) -> None:
    params = {
        "texture_scale": texture_scale,
        "tissue_jitter": tissue_jitter,
        "bias_strength": bias_strength,
        "noise_std": noise_std,
    }
    for name, value in params.items():
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    try:
        low, high = (float(g) for g in gain_range)
    except (TypeError, ValueError):
        raise ValueError(f"gain_range must be a pair (low, high) of numbers, got {gain_range!r}") from None
    if not 0 < low <= high or not math.isfinite(high):
        raise ValueError(f"gain_range must be (low, high) with 0 < low <= high, got {gain_range!r}")


def mri_contrast(
    image: np.ndarray,
    label: np.ndarray,
    labels: Mapping[int, str],
    affine: np.ndarray,
    rng: np.random.Generator,
    seed: int = 0,
    texture_scale: float = 1.5,
    tissue_jitter: float = 0.05,
    gain_range: tuple[float, float] = (0.85, 1.15),
    bias_strength: float = 0.2,
    noise_std: float = 12.0,
    weighting: str = "t1",
) -> np.ndarray:
    """T1- or T2-MRI-like image of a CT-like case, same geometry (see the module docstring).

    Steps: per labelled tissue ``v``, ``m_v * (1 + jitter) + texture_scale * clip(orig - median_v, +-3 sigma_v)``
    with ``m_v`` = :func:`mri_intensity_of` of its name and ``sigma_v`` its robust std (1.4826 MAD); unlabelled
    voxels through :data:`MRI_BACKGROUND_CURVE`; then ``max(., 0)`` times a per-case gain and a smooth bias field
    ``exp(bias_strength * p(x))`` (``p`` a random quadratic of world position, ``|p| <= 1``), then Rician noise
    ``sqrt((s + n1)^2 + n2^2)`` with ``n1, n2 ~ N(0, noise_std)``.

    Args:
        image: ``(X, Y, Z)`` CT-like image (HU).
        label: ``(X, Y, Z)`` integer label map of the same shape.
        labels: label value -> name (``dataset.json`` ``"labels"``); value 0 is the unlabelled background.
        affine: ``(4, 4)`` voxel-to-world affine (positions the bias field in the world).
        rng: generator of this case (tissue jitter, gain, bias field, noise).
        seed: seed of the intensities of unknown structure names (:func:`mri_intensity_of`).
        texture_scale: intensity units per HU of within-tissue texture.
        tissue_jitter: per-case relative jitter of each tissue mean (uniform in ``+-tissue_jitter``).
        gain_range: range of the per-case global gain.
        bias_strength: log-amplitude of the bias field (0.2 -> factors in about ``[0.82, 1.22]``).
        noise_std: standard deviation of each Gaussian component of the Rician noise.
        weighting: ``"t1"`` (:data:`MRI_T1_INTENSITY`, :data:`MRI_BACKGROUND_CURVE`) or ``"t2"``
            (:mod:`common.data.mri_t2`).

    Returns:
        float32 ``(X, Y, Z)`` non-negative image.

    Raises:
        ValueError: shapes differ, non-3D arrays, non-finite image values, a label value missing from ``labels``,
            or a bad parameter.
    """
    if image.ndim != 3 or label.shape != image.shape:
        raise ValueError(
            f"mri contrast needs a 3D single-channel image and a label map of the same shape, got image "
            f"{image.shape} and label {label.shape}"
        )
    if not np.all(np.isfinite(image)):
        raise ValueError("mri contrast: the image has NaN or infinite values")
    _check_mri_options(texture_scale, tissue_jitter, gain_range, bias_strength, noise_std)
    if weighting not in ("t1", "t2"):
        raise ValueError(f"weighting must be 't1' or 't2', got {weighting!r}")
    table = MRI_T1_INTENSITY if weighting == "t1" else MRI_T2_INTENSITY
    curve = MRI_BACKGROUND_CURVE if weighting == "t1" else MRI_T2_BACKGROUND_CURVE
    low_gain, high_gain = (float(g) for g in gain_range)
    orig = np.asarray(image, dtype=np.float32)
    values = np.unique(label)
    unknown = sorted(int(v) for v in values if int(v) not in labels and int(v) != 0)
    if unknown:
        raise ValueError(f"label values {unknown} are not in the labels table {dict(labels)}")
    knots = np.array(curve, dtype=np.float64)
    out = np.interp(orig, knots[:, 0], knots[:, 1]).astype(np.float32)
    structures = sorted(int(v) for v in labels if int(v) != 0)
    jitter = dict(zip(structures, rng.uniform(-tissue_jitter, tissue_jitter, len(structures)), strict=True))
    for value in values:
        if value == 0:
            continue
        mask = label == value
        inside = orig[mask]
        median = float(np.median(inside))
        sigma = 1.4826 * float(np.median(np.abs(inside - median)))
        deviation = np.clip(inside - median, -3.0 * sigma, 3.0 * sigma)
        mean = mri_intensity_of(labels[int(value)], seed, table) * (1.0 + jitter[int(value)])
        out[mask] = np.float32(mean) + np.float32(texture_scale) * deviation
    np.maximum(out, 0.0, out=out)
    out *= np.float32(rng.uniform(low_gain, high_gain))
    out *= _bias_field(out.shape, _check_affine(affine), rng, float(bias_strength))
    noise = rng.standard_normal((2, *out.shape), dtype=np.float32) * np.float32(noise_std)
    return np.sqrt((out + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)


# --------------------------------------------------------------------------------------------------- writing


def _write(path: Path, array: np.ndarray, affine: np.ndarray, descrip: str, is_label: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, nifti_gz_bytes(array, affine, descrip, is_label, compresslevel=1))


def _load(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    img: Any = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    return data, np.asarray(img.affine, dtype=np.float64)


def _load_label(path: str | Path, image_shape: tuple[int, ...], image_affine: np.ndarray) -> np.ndarray:
    label, affine = _load(path)
    while label.ndim > 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.shape != image_shape[:3]:
        raise ValueError(f"label {path} has shape {label.shape}, its image has spatial shape {image_shape[:3]}")
    if not np.allclose(affine, image_affine, rtol=0.0, atol=1e-3):
        raise ValueError(f"label {path} and its image have different affines:\n{affine}\nvs\n{image_affine}")
    if not np.issubdtype(label.dtype, np.integer):
        if not np.array_equal(label, np.round(label)):
            raise ValueError(f"label {path} has non-integer values")
        label = label.astype(np.int64)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label {path} has values outside 0..255 (uint8 output), range [{label.min()}, {label.max()}]")
    return label.astype(np.uint8)


def _image_out(resampled: np.ndarray, like: np.dtype) -> np.ndarray:
    """Round and clip back to an integer source dtype; float sources give float32."""
    if np.issubdtype(like, np.integer):
        info = np.iinfo(like)
        return np.clip(np.rint(resampled), info.min, info.max).astype(like)
    return resampled.astype(np.float32)


def _resolve_options(variant: str, options: Mapping[str, Any]) -> dict[str, Any]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    valid = _OPTIONS[variant]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"variant {variant!r} has no option(s) {bad}; valid options: {sorted(valid)}")
    resolved = {**valid, **options}
    if variant == "restored":
        order, flip = _check_order_flip(resolved["order"], resolved["flip"])
        resolved = {"order": order, "flip": flip}
    elif variant == "fine":
        resolved["in_plane_spacing"] = _check_spacing(resolved["in_plane_spacing"])
    else:
        seed = resolved["seed"]
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        resolved["seed"] = int(seed)
        _check_mri_options(**{k: v for k, v in resolved.items() if k != "seed"})
        resolved["gain_range"] = tuple(float(g) for g in resolved["gain_range"])
    return resolved


def _select(items: list[dict[str, str]], cases: int | Sequence[str] | None) -> list[dict[str, str]]:
    if cases is None:
        return items
    if isinstance(cases, (bool, str)) or not isinstance(cases, (int, np.integer, Sequence)):
        raise ValueError(f"cases must be None, a positive integer or a list of case id strings, got {cases!r}")
    if isinstance(cases, (int, np.integer)):
        if cases < 1:
            raise ValueError(f"cases must be a positive number of cases or a list of case ids, got {cases!r}")
        return items[: int(cases)]
    ids = list(cases)
    if not ids or not all(isinstance(c, str) for c in ids):
        raise ValueError(
            f"cases must be None, a positive integer or a non-empty list of case id strings, got {cases!r}"
        )
    by_id = {item["case_id"]: item for item in items}
    missing = [c for c in ids if c not in by_id]
    if missing:
        raise ValueError(f"unknown case id(s) {missing}; the dataset has {sorted(by_id)}")
    return [by_id[c] for c in dict.fromkeys(ids)]


def _relative(path: str, root: Path, default_folder: str) -> str:
    """Path of an output file relative to the dataset root: same place as in the source if inside it."""
    try:
        rel = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(default_folder) / Path(path).name
    return "./" + rel.as_posix()


def _prepare_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if out.resolve() == src.resolve():
        raise ValueError(f"output folder {out} is the source folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output directory {out} is not empty; pass overwrite=True (--overwrite) to write into it"
        )
    out.mkdir(parents=True, exist_ok=True)


def _convert(
    variant: str,
    image: np.ndarray,
    affine: np.ndarray,
    label: np.ndarray | None,
    labels: Mapping[int, str],
    options: Mapping[str, Any],
    case_id: str,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``(image, label, affine)`` of one case in the variant (``label`` may be None for test images)."""
    if variant == "restored":
        order, flip = options["order"], options["flip"]
        new_label = None if label is None else restore_array(label, order, flip)
        return restore_array(image, order, flip), new_label, restored_affine(affine, image.shape, order, flip)
    if variant == "fine":
        new_shape = fine_shape(image.shape, affine, options["in_plane_spacing"])
        new_image = _image_out(resample_image_in_plane(image, new_shape), image.dtype)
        new_label = None if label is None else resample_label_in_plane(label, new_shape)
        return new_image, new_label, fine_affine(affine, image.shape, new_shape)
    if label is None:
        raise ValueError(f"case {case_id}: the {variant} variant needs a label map")
    seed = options["seed"]
    rng = np.random.default_rng([seed, zlib.crc32(case_id.encode("utf-8"))])
    mri_options = {k: v for k, v in options.items() if k != "seed"}
    weighting = "t2" if variant == "mri_t2" else "t1"
    return mri_contrast(image, label, labels, affine, rng, seed, weighting=weighting, **mri_options), label, affine


def write_variant(
    src_root: str | Path,
    out_root: str | Path,
    variant: str,
    cases: int | Sequence[str] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write a copy of an MSD-layout dataset in another geometry or contrast; return the new dataset root.

    Training and validation cases are converted (image and label); test images too for ``"restored"`` and
    ``"fine"`` (the MRI variants need labels, so their ``dataset.json`` lists no test images). File names and
    relative paths are kept; ``dataset.json`` keeps every entry of the source (labels, ``structure_split``, ...),
    lists the converted cases only, sets ``"modality"`` to ``{"0": "MRI"}`` for the MRI variants and records
    ``"variant": {"name", "source", "options"}``.

    Args:
        src_root: source dataset folder (or its ``dataset.json``), read with
            :func:`common.data.msd.load_msd_dataset`.
        out_root: output folder (created); must not be the source and must be empty unless ``overwrite``.
        variant: ``"restored"``, ``"fine"``, ``"mri"`` or ``"mri_t2"`` (see the module docstring).
        cases: ``None`` (all), the number of leading training cases, or a list of training/validation case ids.
        overwrite: write into a non-empty ``out_root`` (files of the same names are replaced).
        **options: variant options -- ``restored``: ``order`` (default :data:`RESTORED_ORDER`), ``flip``
            (:data:`RESTORED_FLIP`); ``fine``: ``in_plane_spacing`` (mm, default 1.0); ``mri``, ``mri_t2``: ``seed`` (0)
            and the keyword arguments of :func:`mri_contrast` (``texture_scale``, ``tissue_jitter``, ``gain_range``,
            ``bias_strength``, ``noise_std``).

    Returns:
        The output dataset root (holding ``dataset.json``).

    Raises:
        ValueError: unknown variant, option or case id; bad option values; inconsistent source cases.
        FileNotFoundError: missing source files.
        FileExistsError: ``out_root`` is a file or is not empty (without ``overwrite``).

    Example:
        >>> root = write_variant("data/phantom", "/tmp/phantom_restored", "restored", cases=2)
    """
    resolved = _resolve_options(variant, options)
    dataset = load_msd_dataset(src_root, check_files=True)
    src, out = dataset.root, Path(out_root)
    selected = _select([*dataset.training, *dataset.validation], cases)
    _prepare_out(src, out, overwrite)
    raw = json.loads(dataset.dataset_json.read_text(encoding="utf-8"))
    train_ids = {item["case_id"] for item in dataset.training}
    new_items: dict[str, list[Any]] = {"training": [], "validation": [], "test": []}
    for item in selected:
        t0 = time.perf_counter()
        image, affine = _load(item["image"])
        label = _load_label(item["label"], image.shape, affine)
        new_image, new_label, new_affine = _convert(
            variant, image, affine, label, dataset.labels, resolved, item["case_id"]
        )
        assert new_label is not None
        image_rel = _relative(item["image"], src, "imagesTr")
        label_rel = _relative(item["label"], src, "labelsTr")
        descrip = f"{item['case_id']} {variant} common.data.variants"
        _write(out / image_rel, new_image, new_affine, descrip, is_label=False)
        _write(out / label_rel, new_label, new_affine, descrip, is_label=True)
        group = "training" if item["case_id"] in train_ids else "validation"
        new_items[group].append({"image": image_rel, "label": label_rel})
        logger.info("wrote %s (%s) in %.2f s", item["case_id"], variant, time.perf_counter() - t0)
    if variant not in _MRI_VARIANTS and cases is None:
        for item in dataset.test:
            image, affine = _load(item["image"])
            new_image, _, new_affine = _convert(variant, image, affine, None, dataset.labels, resolved, item["case_id"])
            rel = _relative(item["image"], src, "imagesTs")
            _write(out / rel, new_image, new_affine, f"{item['case_id']} {variant} common.data.variants", False)
            new_items["test"].append(rel)
    raw["training"] = new_items["training"]
    raw["test"] = new_items["test"]
    if "validation" in raw:
        raw["validation"] = new_items["validation"]
    raw["numTraining"] = len(new_items["training"])
    raw["numTest"] = len(new_items["test"])
    if variant in _MRI_VARIANTS:
        raw["modality"] = {"0": "MRI"}
    raw["variant"] = {
        "name": variant,
        "source": str(src),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()},
        "generator": __name__,
    }
    path = out / "dataset.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return out


def _parse_cases(tokens: Sequence[str] | None) -> int | list[str] | None:
    if not tokens:
        return None
    if len(tokens) == 1 and tokens[0].isdigit():
        return int(tokens[0])
    return list(tokens)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 0 on success, exits non-zero with a message on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m common.data.variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, type=Path, help="source MSD dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument(
        "--cases", nargs="+", default=None, help="a number N (the first N training cases) or case ids (default: all)"
    )
    parser.add_argument("--in-plane-spacing", type=float, default=None, help="fine: target spacing in mm (1.0)")
    parser.add_argument("--seed", type=int, default=None, help="mri: seed (0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.in_plane_spacing is not None:
        options["in_plane_spacing"] = args.in_plane_spacing
    if args.seed is not None:
        options["seed"] = args.seed
    t0 = time.perf_counter()
    try:
        out = write_variant(args.src, args.out, args.variant, _parse_cases(args.cases), args.overwrite, **options)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f"wrote the {args.variant} variant of {args.src} to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
