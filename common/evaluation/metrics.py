"""Overlap and surface-distance metrics for one binary structure, in millimetres.

All functions take a binary prediction and a binary ground truth of the same shape ``(H, W)`` or ``(H, W, D)``
(numpy arrays or torch tensors, bool or 0/1 integers/floats), indexed ``[i, j(, k)]`` as stored in the NIfTI
array, and the voxel spacing in mm along those same axes.

The surface distances come from MONAI: :func:`monai.metrics.utils.get_edge_surface_distance`, the function that
:func:`monai.metrics.compute_hausdorff_distance` and :func:`monai.metrics.compute_average_surface_distance` call,
reduced exactly as they reduce it, so the numbers are MONAI's (the tests check equality with those functions).
Calling it directly on bool tensors computes the surfaces once for both metrics and avoids MONAI's float
conversion, whose ``Tensor.any()`` calls dominate the run time on CPU (about 2x faster per round). Dice is the
plain voxel count ``2 |P & G| / (|P| + |G|)`` in float64 (equal to :func:`monai.metrics.compute_dice`).

Surface definition (MONAI's): the surface of a mask is the set of its voxels removed by one binary erosion with
the 6-connected (3D) / 4-connected (2D) cross, i.e. foreground voxels with at least one face-neighbour in the
background or at the array border. A surface distance is the Euclidean distance in mm between the *centre* of
a surface voxel of one mask and the centre of the nearest surface voxel of the other mask.

- ``hd95``: symmetric 95th-percentile Hausdorff distance: the 95th percentile (linear interpolation,
  ``torch.quantile``) of the pred->label surface distances and of the label->pred ones, the larger of the two.
- ``mean_surface_distance``: symmetric average surface distance (ASSD): the mean of the pooled pred->label and
  label->pred surface distances (each surface voxel counts once).

Edge cases (the convention of this project; every summary statistic handles them explicitly):

==========================  ======  ==============  ======================================================
case                        dice    hd95, msd       why
==========================  ======  ==============  ======================================================
both masks empty            1.0     0.0             the prediction is exactly right
exactly one mask empty      0.0     ``inf``         no surface to measure against: *undefined* distance
==========================  ======  ==============  ======================================================

``inf`` is the only non-finite value these functions return. Summaries (:func:`common.evaluation.records.summarise`)
count such values as ``n_undefined`` and compute means/quantiles over the finite values only; JSON files store
them as ``null``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from monai.utils import convert_to_numpy

__all__ = ["METRIC_NAMES", "dice", "evaluate_all", "hd95", "mean_surface_distance"]

#: Metric names in the order every record/summary/plot uses. Higher is better for ``dice`` only.
METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "msd")


def _as_binary(x: Any, name: str) -> np.ndarray:
    """Convert ``x`` (numpy/torch, bool or 0/1 values) to a numpy bool array; reject anything else."""
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")
    arr = convert_to_numpy(x)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric or bool, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN values.")
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must be binary (only 0/1 values), found e.g. {bad.tolist()}.")
    return arr.astype(bool)


def _prepare(
    pred: Any, label: Any, spacing: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Validate inputs; return bool numpy arrays and the spacing as a float tuple (unit spacing if ``None``)."""
    p = _as_binary(pred, "pred")
    g = _as_binary(label, "label")
    if p.shape != g.shape:
        raise ValueError(f"pred and label must have the same shape, got {p.shape} and {g.shape}.")
    if p.ndim not in (2, 3):
        raise ValueError(
            f"pred and label must be 2D (H, W) or 3D (H, W, D) arrays without channels, got shape {p.shape}."
        )
    if spacing is None:
        sp = (1.0,) * p.ndim
    else:
        try:
            sp = tuple(float(s) for s in spacing)
        except TypeError as err:
            raise ValueError(f"spacing must be a sequence of {p.ndim} floats (mm), got {spacing!r}.") from err
        if len(sp) != p.ndim:
            raise ValueError(f"spacing has {len(sp)} values but the arrays are {p.ndim}D (shape {p.shape}).")
        if not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing values must be finite and > 0 mm, got {sp}.")
    return p, g, sp


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """Silence MONAI 1.6's internal deprecation notice about ``always_return_as_numpy`` (not our call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        yield


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def _surface_distances(p: np.ndarray, g: np.ndarray, sp: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MONAI's symmetric surface distances ``(pred -> label, label -> pred)`` in mm; ``None`` if a mask is empty."""
    if not p.any() or not g.any():
        return None
    with _quiet_monai():
        _, distances, _ = get_edge_surface_distance(
            torch.as_tensor(p), torch.as_tensor(g), distance_metric="euclidean", spacing=sp, symmetric=True
        )
    return distances[0], distances[1]  # type: ignore[misc]


def _hd95_from(distances: tuple[torch.Tensor, torch.Tensor] | None, both_empty: bool) -> float:
    """As ``compute_hausdorff_distance(percentile=95)``: the larger directed 95th percentile."""
    if distances is None:
        return 0.0 if both_empty else math.inf
    directed = [float(torch.quantile(d, 0.95)) if d.numel() else 0.0 for d in distances]
    return max(directed)


def _msd_from(distances: tuple[torch.Tensor, torch.Tensor] | None, both_empty: bool) -> float:
    """As ``compute_average_surface_distance(symmetric=True)``: the mean of the pooled distances."""
    if distances is None:
        return 0.0 if both_empty else math.inf
    pooled = torch.cat(distances)
    return float(pooled.mean()) if pooled.numel() else 0.0


def dice(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> float:
    """Sørensen-Dice coefficient ``2 |P ∩ G| / (|P| + |G|)`` of two binary masks.

    Args:
        pred: binary prediction, shape ``(H, W)`` or ``(H, W, D)``.
        label: binary ground truth, same shape.

    Returns:
        Dice in ``[0, 1]``; 1.0 if both masks are empty, 0.0 if exactly one is.

    Raises:
        ValueError: shape mismatch, not 2D/3D, non-binary values or NaN.
    """
    p, g, _ = _prepare(pred, label, None)
    return _dice(p, g)


def hd95(pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, spacing: Sequence[float] | None) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (MONAI surface definition, see module docstring).

    Args:
        pred: binary prediction, shape ``(H, W)`` or ``(H, W, D)``.
        label: binary ground truth, same shape.
        spacing: voxel size in mm along each array axis (``len == pred.ndim``); ``None`` means 1 mm (voxel units).

    Returns:
        HD95 in mm; 0.0 if both masks are empty, ``inf`` (undefined) if exactly one is.

    Raises:
        ValueError: shape mismatch, not 2D/3D, non-binary values, or a spacing of the wrong length / non-positive.
    """
    p, g, sp = _prepare(pred, label, spacing)
    return _hd95_from(_surface_distances(p, g, sp), both_empty=not (p.any() or g.any()))


def mean_surface_distance(
    pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, spacing: Sequence[float] | None
) -> float:
    """Symmetric average surface distance (ASSD) in mm: mean of the pooled pred->label and label->pred distances.

    Args:
        pred: binary prediction, shape ``(H, W)`` or ``(H, W, D)``.
        label: binary ground truth, same shape.
        spacing: voxel size in mm along each array axis (``len == pred.ndim``); ``None`` means 1 mm (voxel units).

    Returns:
        ASSD in mm; 0.0 if both masks are empty, ``inf`` (undefined) if exactly one is.

    Raises:
        ValueError: as :func:`hd95`.
    """
    p, g, sp = _prepare(pred, label, spacing)
    return _msd_from(_surface_distances(p, g, sp), both_empty=not (p.any() or g.any()))


def evaluate_all(
    pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, spacing: Sequence[float] | None
) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` at once (inputs validated and converted once).

    Args:
        pred: binary prediction, shape ``(H, W)`` or ``(H, W, D)``.
        label: binary ground truth, same shape.
        spacing: voxel size in mm along each array axis; ``None`` means 1 mm.

    Returns:
        ``{"dice": ..., "hd95": ..., "msd": ...}`` with the edge-case conventions of the module docstring.

    Raises:
        ValueError: as :func:`hd95`.

    Example:
        >>> a = np.zeros((30, 30, 30), bool); a[10:20, 10:20, 10:20] = True
        >>> b = np.roll(a, 2, axis=0)
        >>> {k: round(v, 4) for k, v in evaluate_all(b, a, (1.0, 1.0, 1.0)).items()}
        {'dice': 0.8, 'hd95': 2.0, 'msd': 0.6885}
    """
    p, g, sp = _prepare(pred, label, spacing)
    distances = _surface_distances(p, g, sp)
    both_empty = not (p.any() or g.any())
    return {"dice": _dice(p, g), "hd95": _hd95_from(distances, both_empty), "msd": _msd_from(distances, both_empty)}
