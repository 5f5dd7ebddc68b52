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

import math
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
    "validate_propagation_options",
    "validate_slice_annotation",
    "validate_volume_annotation",
    "volume_annotation_slices",
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
    # A NaN or infinite value makes the sum NaN or infinite (inf + finite = inf, inf - inf = NaN, NaN + x = NaN),
    # so a finite sum proves every value finite in one cheap reduction; only a non-finite sum (a non-finite value,
    # or an overflow of finite values) needs the exact element-wise check.
    if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name} contains non-finite values: {n_nan} NaN and {n_inf} infinite voxels.")
    return t


def validate_propagation_options(
    threshold: float,
    max_empty_slices: int | None,
    max_batch_size: int | None,
    *,
    connect_tolerance: int | None = None,
    min_area_ratio: float | None = None,
    max_area_ratio: float | None = None,
    max_intensity_shift: float | None = None,
) -> None:
    """Check the numeric options of slice propagation (see :func:`common.propagation.engine.propagate`).

    The keyword-only options default to ``None`` (disabled) here, so callers that do not use them need not pass them.

    Raises:
        ValueError: ``threshold`` not a number in ``[0, 1)``; ``max_empty_slices`` or ``max_batch_size`` neither
            ``None`` nor an integer ``>= 1``; ``connect_tolerance`` neither ``None`` nor an integer ``>= 0``;
            ``min_area_ratio`` neither ``None`` nor a number in ``(0, 1)``; ``max_area_ratio`` neither ``None`` nor a
            finite number ``> 1``; ``max_intensity_shift`` neither ``None`` nor a finite number ``> 0``.
    """
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}.")
    if max_empty_slices is not None and (
        isinstance(max_empty_slices, bool) or not isinstance(max_empty_slices, int) or max_empty_slices < 1
    ):
        raise ValueError(f"max_empty_slices must be an integer >= 1 or None, got {max_empty_slices!r}.")
    if max_batch_size is not None and (
        isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1
    ):
        raise ValueError(f"max_batch_size must be an integer >= 1 or None, got {max_batch_size!r}.")
    if connect_tolerance is not None and (
        isinstance(connect_tolerance, bool) or not isinstance(connect_tolerance, int) or connect_tolerance < 0
    ):
        raise ValueError(
            "connect_tolerance must be an integer >= 0 (pixels; 0 = a kept component must overlap the prior) or None "
            f"(no continuity filter), got {connect_tolerance!r}."
        )
    if min_area_ratio is not None and (
        not isinstance(min_area_ratio, int | float) or isinstance(min_area_ratio, bool) or not 0 < min_area_ratio < 1
    ):
        raise ValueError(
            "min_area_ratio must be a number in (0, 1) (stop when the new area < min_area_ratio * the prior's area) "
            f"or None, got {min_area_ratio!r}."
        )
    if max_area_ratio is not None and (
        not isinstance(max_area_ratio, int | float)
        or isinstance(max_area_ratio, bool)
        or not 1 < max_area_ratio < float("inf")
    ):
        raise ValueError(
            "max_area_ratio must be a finite number > 1 (stop when the new area > max_area_ratio * the prior's area) "
            f"or None, got {max_area_ratio!r}."
        )
    if max_intensity_shift is not None and (
        not isinstance(max_intensity_shift, int | float)
        or isinstance(max_intensity_shift, bool)
        or not math.isfinite(max_intensity_shift)
        or max_intensity_shift <= 0
    ):
        raise ValueError(
            "max_intensity_shift must be a finite number > 0 (in the network's input units; ct_window: 1 = 500 HU) or "
            f"None, got {max_intensity_shift!r}."
        )


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


def _binary_nonzero(a: torch.Tensor, name: str, axis: int) -> tuple[torch.Tensor, list[int]]:
    """``a != 0`` of a binary array (as :func:`validate_binary`) and the non-empty slices along ``axis``.

    Same result and errors as ``validate_binary(a, name)`` followed by a per-slice ``any``, in two passes over the
    volume instead of six: a value outside ``{0, 1}`` (NaN included) is non-zero, so it can only lie in a non-empty
    slice, and only those slices need the value check.

    Args:
        a: array (numpy-like values, any dtype) of at least one dimension.
        name: argument name used in error messages.
        axis: the slice axis.

    Returns:
        The bool array (``a`` itself if already bool) and the indices ``k`` of the slices along ``axis`` with a
        non-zero value, ascending.
    """
    if a.is_complex():
        validate_binary(a, name)  # raises: complex masks are rejected
    nonzero = a if a.dtype == torch.bool else a != 0
    axis = axis % a.ndim
    other = tuple(d for d in range(a.ndim) if d != axis)
    per_slice = nonzero.any(dim=other) if other else nonzero
    indices = [int(k) for k in torch.nonzero(per_slice).flatten().tolist()]
    if indices and a.dtype != torch.bool:
        values = a.index_select(axis, torch.as_tensor(indices, device=a.device))
        if not bool(((values == 0) | (values == 1)).all()):
            validate_binary(a, name)  # raises, with the offending values of the whole array in its message
    return nonzero, indices


def validate_volume_annotation(annotation: Any, shape: tuple[int, ...], name: str = "annotation") -> torch.Tensor:
    """Check an annotation volume (user slices non-zero, all other slices 0) and return it as a bool tensor.

    Args:
        annotation: ``(H, W, D)`` binary volume (numpy or torch) with the same shape as the image.
        shape: the image shape ``(H, W, D)``.
        name: argument name used in error messages.

    Raises:
        ValueError: wrong shape (image/annotation mismatch), non-binary values, or no annotated slice at all.
    """
    return _checked_volume_annotation(annotation, shape, name, axis=-1)[0]


def volume_annotation_slices(
    annotation: Any, shape: tuple[int, ...], axis: int, name: str = "annotation"
) -> dict[int, torch.Tensor]:
    """Check an annotation volume like :func:`validate_volume_annotation` and return its annotated slices.

    Args:
        annotation: ``(H, W, D)`` binary volume (numpy or torch) with the same shape as the image.
        shape: the image shape ``(H, W, D)``.
        axis: the propagation axis: slice ``k`` is ``annotation`` at index ``k`` along ``axis``.
        name: argument name used in error messages.

    Returns:
        ``{k: bool mask of slice k}`` for every slice ``k`` along ``axis`` with a non-zero value, ascending; each mask
        has the volume's shape without ``axis`` (remaining axes in their order) and may share memory with the input.

    Raises:
        ValueError: as :func:`validate_volume_annotation`; ``axis`` not a dimension of ``shape``.
    """
    if isinstance(axis, bool) or not isinstance(axis, int) or not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis must be a dimension of the volume shape {tuple(shape)}, got {axis!r}.")
    nonzero, indices = _checked_volume_annotation(annotation, shape, name, axis=axis)
    return {k: nonzero.select(axis, k) for k in indices}


def _checked_volume_annotation(
    annotation: Any, shape: tuple[int, ...], name: str, axis: int
) -> tuple[torch.Tensor, list[int]]:
    """The checks of :func:`validate_volume_annotation`; returns the bool volume and its non-empty slices along
    ``axis``."""
    a = as_tensor(annotation, name)
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(a.shape)} does not match the image shape {tuple(shape)}.")
    if a.ndim == 0:  # a scalar "volume": no slices, only the value to check
        nonzero = validate_binary(a, name)
        indices = [0] if bool(nonzero) else []
    else:
        nonzero, indices = _binary_nonzero(a, name, axis)
    if not indices:
        raise ValueError(f"{name} has no annotated slice: it is all zero; annotate at least one slice.")
    return nonzero, indices


def annotated_slice_indices(annotation: torch.Tensor) -> list[int]:
    """Indices ``k`` of the non-empty slices ``annotation[..., k]`` of a bool ``(H, W, D)`` volume, ascending."""
    return [int(k) for k in torch.nonzero(annotation.flatten(0, -2).any(0)).flatten().tolist()]
