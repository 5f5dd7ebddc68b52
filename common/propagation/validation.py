"""Input checks shared by the propagation engine and the MONAI inferer.

Every check raises :class:`ValueError` with a message naming the offending argument (and slice index where there
is one), so that a bad request to a MONAI Label server or a bundle run fails with a readable message instead of a
crash deep inside a network forward pass or, worse, a silently wrong segmentation.

Conventions: a volume is a 3D array ``(H, W, D)`` indexed ``[i, j, k]`` as stored (NIfTI voxel axes); the last axis
is the propagation axis, i.e. callers move their propagation axis last before calling these checks. A user slice is
a 2D ``(H, W)`` mask of slice ``k`` along that axis. Masks are binary: ``bool`` or numeric with values in ``{0, 1}``
only; other label values (e.g. a multi-label map with 2 and 1 mixed) are rejected rather than guessed at; binarise
first, e.g. ``annotation == label_value`` or ``annotation > 0``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "annotated_slice_indices",
    "as_tensor",
    "validate_binary",
    "validate_image",
    "validate_slice_annotation",
    "validate_volume_annotation",
]


def as_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Return ``x`` (numpy array or torch tensor) as a torch tensor, without copying when possible.

    MONAI ``MetaTensor`` inputs are returned as plain tensors (``as_tensor()``) so that per-slice work does not pay
    the metadata overhead. The caller must treat the result as read-only: it may share memory with ``x``.

    Raises:
        ValueError: if ``x`` is neither a numpy array nor a torch tensor.
    """
    if isinstance(x, torch.Tensor):
        t = x.as_tensor() if hasattr(x, "as_tensor") else x
    elif isinstance(x, np.ndarray):
        t = torch.as_tensor(x)
    else:
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}.")
    return t if device is None else t.to(device)


def validate_image(image: Any, name: str = "image", ndim: int = 3) -> torch.Tensor:
    """Check an image array and return it as a tensor (shared memory where possible; never modified).

    Args:
        image: numpy array or torch tensor, e.g. a volume ``(H, W, D)`` for ``ndim=3``.
        name: argument name used in error messages.
        ndim: the required number of dimensions.

    Returns:
        The image as a ``torch.Tensor`` on its original device.

    Raises:
        ValueError: not an array; wrong number of dimensions (e.g. a 2D image where a volume is expected); an empty
            dimension; a non-numeric dtype (bool, complex); NaN or infinite values.
    """
    t = as_tensor(image, name)
    if t.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)} ({t.ndim}D); "
            + ("a volume (H, W, D) is expected." if ndim == 3 else "check the array layout.")
        )
    if 0 in t.shape:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(t.shape)}.")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be a real-valued numeric array, got dtype {t.dtype}.")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name} contains non-finite values: {n_nan} NaN and {n_inf} infinite voxels.")
    return t


def validate_binary(mask: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``mask`` is binary (bool, or numeric with values in ``{0, 1}``) and return it as a bool tensor.

    Raises:
        ValueError: if a value other than 0 or 1 occurs (NaN included); the message lists a few offending values.
    """
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} must be binary (bool or 0/1 values), got complex dtype {mask.dtype}.")
    is_binary = (mask == 0) | (mask == 1)
    if not bool(is_binary.all()):
        bad = torch.unique(mask[~is_binary])[:5].tolist()
        raise ValueError(
            f"{name} must be binary (bool or values in {{0, 1}}), found e.g. {bad}; "
            "binarise multi-label annotations first (e.g. `annotation == label` or `annotation > 0`)."
        )
    return mask != 0


def _slice_index(key: Any, depth: int, name: str) -> int:
    if isinstance(key, bool | np.bool_) or not isinstance(key, numbers.Integral):
        raise ValueError(f"{name} keys must be integer slice indices, got {key!r} ({type(key).__name__}).")
    k = int(key)
    if not 0 <= k < depth:
        raise ValueError(
            f"{name} slice index {k} is outside the volume: "
            f"valid indices along the propagation axis are 0..{depth - 1}."
        )
    return k


def validate_slice_annotation(
    annotation: Mapping[int, Any], shape: tuple[int, ...], device: torch.device, name: str = "annotation"
) -> dict[int, torch.Tensor]:
    """Check user-annotated slices against the volume and return them as bool tensors, in the order given.

    Args:
        annotation: slice index ``k`` along the (last) propagation axis -> ``(H, W)`` binary mask of that slice
            (numpy or torch). The iteration order is kept (it is the annotation order for the ``"overwrite"`` merge
            rule).
        shape: the volume shape ``(H, W, D)``.
        device: device of the returned masks.
        name: argument name used in error messages.

    Returns:
        ``{k: (H, W) bool tensor on device}``. A mask may share memory with the caller's input (a bool tensor
        already on ``device`` is returned as is), so callers must only read them.

    Raises:
        ValueError: not a mapping; no annotated slice; a non-integer or out-of-range index; a mask of the wrong shape;
            a non-binary mask; an all-zero mask (an explicitly given slice must contain the structure).
    """
    if not isinstance(annotation, Mapping):
        raise ValueError(f"{name} must be a mapping {{slice index: (H, W) mask}}, got {type(annotation).__name__}.")
    if len(annotation) == 0:
        raise ValueError(f"{name} has no annotated slice: at least one user slice is needed to propagate from.")
    if len(shape) != 3:
        raise ValueError(f"the volume must be 3D (H, W, D), got shape {tuple(shape)}.")
    height, width, depth = (int(s) for s in shape)
    masks: dict[int, torch.Tensor] = {}
    for key, value in annotation.items():
        k = _slice_index(key, depth, name)
        item = f"{name}[{k}]"
        m = as_tensor(value, item)
        if tuple(m.shape) != (height, width):
            raise ValueError(
                f"{item} must have the in-plane shape {(height, width)} of the volume {tuple(shape)}, "
                f"got {tuple(m.shape)}."
            )
        m = validate_binary(m, item).to(device)
        if not bool(m.any()):
            raise ValueError(f"{item} is empty (all zero): an annotated slice must contain the structure.")
        masks[k] = m
    return masks


def validate_volume_annotation(annotation: Any, shape: tuple[int, ...], name: str = "annotation") -> torch.Tensor:
    """Check an annotation volume (user slices non-zero, all other slices 0) and return it as a bool tensor.

    Args:
        annotation: ``(H, W, D)`` binary volume (numpy or torch) with the same shape as the image.
        shape: the image shape ``(H, W, D)``.
        name: argument name used in error messages.

    Raises:
        ValueError: wrong shape (image/annotation mismatch), non-binary values, or no annotated slice at all.
    """
    a = as_tensor(annotation, name)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(a.shape)} does not match the image shape {tuple(shape)}.")
    a = validate_binary(a, name)
    if not bool(a.any()):
        raise ValueError(f"{name} has no annotated slice: it is all zero; annotate at least one slice.")
    return a


def annotated_slice_indices(annotation: torch.Tensor) -> list[int]:
    """Indices ``k`` of the non-empty slices ``annotation[..., k]`` of a bool ``(H, W, D)`` volume, ascending."""
    return [int(k) for k in torch.nonzero(annotation.flatten(0, -2).any(0)).flatten().tolist()]
