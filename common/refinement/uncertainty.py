"""BIFSeg's uncertainty weight map for the weighted cross-entropy of image-specific fine-tuning.

Wang et al., "Interactive Medical Image Segmentation Using Deep Learning With Image-Specific Fine Tuning", IEEE TMI
2018, Eq. 12: with ``p`` the network's foreground probability, ``yhat`` the current labelling, ``S = S^f | S^b`` the
foreground and background scribbles and ``G`` the geodesic distance
(:func:`common.refinement.geodesic.geodesic_distance`),

- ``w(i) = omega`` if ``i`` is a scribble voxel (``i in S``);
- ``w(i) = 0`` if ``i in U_p | U_s``, where ``U_p = {i : t0 < p_i < t1}`` (network uncertainty) and
  ``U_s = U_s^f | U_s^b`` (scribble uncertainty) with ``U_s^f = {i not in S : G(i, S^f) < epsilon, yhat_i = 0}`` and
  ``U_s^b = {i not in S : G(i, S^b) < epsilon, yhat_i = 1}``: voxels near a scribble whose label disagrees with the
  current labelling (scribbles are drawn on mis-segmented areas, so their surroundings are likely mislabelled too);
- ``w(i) = 1`` elsewhere.

Precedence: the scribble case comes first, as listed in Eq. 12, so a scribble voxel gets ``omega`` even when its
probability lies in ``(t0, t1)``; ``U_s`` excludes scribble voxels by definition. Without scribbles (unsupervised
fine-tuning) ``S`` and ``U_s`` are empty and only ``U_p`` gets 0. ``use_uncertainty=False`` is the paper's BIFSeg(-w)
ablation, "w(i) = 1 for all pixels": 1 everywhere, scribble voxels included (the scribbles then act only through the
labelling ``yhat``, where the label update enforces them as hard constraints).

**Scale of epsilon.** The paper uses ``epsilon = 0.2`` for both its 2D (crops resized to a shorter side of 96 pixels)
and 3D (longer side 80 voxels) experiments without stating the distance's scale. With ``distance_unit="diagonal"``
(the default) the geodesic distance is divided by the length of the crop's diagonal, ``L = sqrt(sum_k (n_k s_k)^2)``
(``n_k`` voxels of size ``s_k`` along axis ``k``; ``s_k = 1`` without ``spacing``), in the same units. In a
homogeneous region the normalised distance is then the Euclidean distance as a fraction of the crop's size, so
``epsilon = 0.2`` means "within a fifth of the diagonal" whatever the crop's resolution, dimension or voxel count: a
``96 x 128`` crop (L = 160 px) gives a 32-pixel radius, an ``80 x 80 x 40`` crop (L = 120 voxels) a 24-voxel radius.
``gamma`` keeps its meaning from
:func:`~common.refinement.geodesic.geodesic_distance`: a step across an intensity difference ``dI`` (in the normalised
image's units, e.g. standard deviations inside the box) has length ``sqrt(d^2 + gamma^2 dI^2)``, so a sharp edge of
``dI`` adds about ``gamma |dI|`` length units (mm, or voxels without ``spacing``) to every path through it; the
normalisation divides that by ``L`` as well. With ``gamma = 1`` and z-scored intensities an edge of 3 standard
deviations costs about 3 voxels, small against a 24 to 32 voxel radius (the region is then close to a Euclidean
ball); an edge stops the region when ``gamma |dI|`` approaches ``epsilon L``. Given ``spacing`` in mm, the sets do not
change (up to discretisation) when the crop is resampled, since ``L`` and the edge costs stay the same number of mm;
without it, lengths are counted in voxels of the crop, and an edge weighs relatively less in a finer crop.
``distance_unit="absolute"`` compares the unnormalised distance (mm, or voxels) with ``epsilon`` instead.

Conventions: arrays are indexed ``[i, j(, k)]`` as stored, 2D ``(H, W)`` or 3D ``(H, W, D)``, all of one shape;
``spacing`` is the voxel size in mm along each array axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.refinement.geodesic import geodesic_distance, neighbour_offsets

__all__ = ["DistanceUnit", "UncertaintySets", "WeightMapParams", "uncertainty_sets", "uncertainty_weights"]

DistanceUnit = Literal["diagonal", "absolute"]


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class WeightMapParams:
    """Parameters of the weight map (defaults: the paper's 2D values; its 3D experiments used ``t1 = 0.6``).

    Attributes:
        t0, t1: the network-uncertainty band, ``U_p = {t0 < p < t1}``; ``0 <= t0 < t1 <= 1``.
        epsilon: geodesic-distance threshold of the scribble uncertainty (``G < epsilon``), >= 0, in the unit set by
            ``distance_unit``.
        omega: weight of the scribble voxels, >= 1.
        gamma: intensity weight of the geodesic distance, >= 0 (0: Euclidean).
        distance_unit: ``"diagonal"``: ``G`` divided by the crop's diagonal (see the module docstring);
            ``"absolute"``: ``G`` in mm (or voxels without ``spacing``).
        connectivity: neighbourhood of the geodesic distance, ``"full"`` (8 / 26) or ``"face"`` (4 / 6).

    Raises:
        ValueError: on construction, for any value outside these ranges.
    """

    t0: float = 0.2
    t1: float = 0.7
    epsilon: float = 0.2
    omega: float = 5.0
    gamma: float = 1.0
    distance_unit: DistanceUnit = "diagonal"
    connectivity: str = "full"

    def __post_init__(self) -> None:
        for name in ("t0", "t1", "epsilon", "omega", "gamma"):
            if not _finite_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}.")
        if not 0.0 <= self.t0 < self.t1 <= 1.0:
            raise ValueError(f"the thresholds must satisfy 0 <= t0 < t1 <= 1, got t0={self.t0}, t1={self.t1}.")
        if self.epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon}.")
        if self.omega < 1:
            raise ValueError(f"omega must be >= 1, got {self.omega}.")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}.")
        if self.distance_unit not in ("diagonal", "absolute"):
            raise ValueError(f"distance_unit must be 'diagonal' or 'absolute', got {self.distance_unit!r}.")
        neighbour_offsets(2, self.connectivity)  # validates the connectivity's name


@dataclass(frozen=True)
class UncertaintySets:
    """The sets of Eq. 12 as bool arrays of the input's shape.

    Attributes:
        scribbles: ``S = S^f | S^b``.
        network: ``U_p = {t0 < p < t1}`` (scribble voxels included: Eq. 12 gives them ``omega`` all the same).
        scribble_fg: ``U_s^f``: not in ``S``, ``G(., S^f) < epsilon``, labelled background.
        scribble_bg: ``U_s^b``: not in ``S``, ``G(., S^b) < epsilon``, labelled foreground.
    """

    scribbles: np.ndarray
    network: np.ndarray
    scribble_fg: np.ndarray
    scribble_bg: np.ndarray


def _binary(array: np.ndarray | None, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` as a bool array of ``shape`` (``None``: all False); bool, integer or float 0/1 values only."""
    if array is None:
        return np.zeros(shape, dtype=bool)
    arr = np.asarray(array)
    if arr.shape != shape:
        raise ValueError(f"{name} must have the probability map's shape {shape}, got {arr.shape}.")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a binary mask (bool or 0/1 numbers), got dtype {arr.dtype}.")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be a binary mask (bool or 0/1 numbers); it has other values.")
    return arr.astype(bool)


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be a sequence of {ndim} positive numbers, got {spacing!r}.") from None
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite numbers (mm per axis), got {spacing!r}.")
    return values


def _check(
    prob: np.ndarray,
    labels: np.ndarray,
    image: np.ndarray,
    fg_scribbles: np.ndarray | None,
    bg_scribbles: np.ndarray | None,
    params: WeightMapParams,
    spacing: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    p = np.asarray(prob)
    if p.ndim not in (2, 3):
        raise ValueError(f"prob must be a 2D or 3D array, got shape {p.shape}.")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"prob must be a float array of foreground probabilities, got dtype {p.dtype}.")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("prob must hold probabilities in [0, 1] (no NaN).")
    shape = p.shape
    yhat = _binary(labels, "labels", shape)
    fg = _binary(fg_scribbles, "fg_scribbles", shape)
    bg = _binary(bg_scribbles, "bg_scribbles", shape)
    if (fg & bg).any():
        raise ValueError(f"{int((fg & bg).sum())} voxel(s) are both a foreground and a background scribble.")
    img = np.asarray(image)
    if img.shape != shape:
        raise ValueError(f"image must have the probability map's shape {shape}, got {img.shape}.")
    if img.dtype == np.bool_ or not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"image must have a real numeric dtype, got {img.dtype}.")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values.")
    if not isinstance(params, WeightMapParams):
        raise ValueError(f"params must be a WeightMapParams, got {type(params).__name__}.")
    return p, yhat, fg, bg, _spacing(spacing, p.ndim)


def _near(image: np.ndarray, seeds: np.ndarray, params: WeightMapParams, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels with ``G(., seeds) < epsilon`` (normalised as ``params.distance_unit`` says)."""
    if not seeds.any():
        return np.zeros(seeds.shape, dtype=bool)
    scale = math.sqrt(sum((n * s) ** 2 for n, s in zip(seeds.shape, spacing, strict=True)))
    threshold = params.epsilon * (scale if params.distance_unit == "diagonal" else 1.0)
    dist = geodesic_distance(
        image, seeds, spacing=spacing, gamma=params.gamma, connectivity=params.connectivity, limit=threshold
    )
    return dist < threshold


def uncertainty_sets(
    prob: np.ndarray,
    labels: np.ndarray,
    image: np.ndarray,
    fg_scribbles: np.ndarray | None,
    bg_scribbles: np.ndarray | None,
    params: WeightMapParams = WeightMapParams(),
    spacing: Sequence[float] | None = None,
) -> UncertaintySets:
    """The sets ``S``, ``U_p``, ``U_s^f`` and ``U_s^b`` of Eq. 12 (see the module docstring), for tests and plots.

    Args:
        prob: foreground probability ``p``, float ``(H, W)`` or ``(H, W, D)``, values in ``[0, 1]``.
        labels: current labelling ``yhat``, binary (bool or 0/1 numbers), same shape.
        image: the normalised image the geodesic distance runs on (e.g. z-scored inside the box), same shape.
        fg_scribbles, bg_scribbles: binary masks of the foreground and background scribbles, same shape, or ``None``
            (none).
        params: thresholds and geodesic settings.
        spacing: voxel size in mm along each array axis; ``None``: distances in voxels.

    Returns:
        :class:`UncertaintySets` of bool arrays of ``prob``'s shape.

    Raises:
        ValueError: ``prob`` not a float 2D/3D array with values in ``[0, 1]``; another shape; a mask that is not
            binary; a voxel in both scribbles; bad ``spacing``; an image that is not real and finite.
    """
    p, yhat, fg, bg, sp = _check(prob, labels, image, fg_scribbles, bg_scribbles, params, spacing)
    scribbles = fg | bg
    return UncertaintySets(
        scribbles=scribbles,
        network=(p > params.t0) & (p < params.t1),
        scribble_fg=_near(np.asarray(image), fg, params, sp) & ~scribbles & ~yhat,
        scribble_bg=_near(np.asarray(image), bg, params, sp) & ~scribbles & yhat,
    )


def uncertainty_weights(
    prob: np.ndarray,
    labels: np.ndarray,
    image: np.ndarray,
    fg_scribbles: np.ndarray | None,
    bg_scribbles: np.ndarray | None,
    params: WeightMapParams = WeightMapParams(),
    spacing: Sequence[float] | None = None,
    use_uncertainty: bool = True,
) -> np.ndarray:
    """BIFSeg's weight map ``w`` (Eq. 12) for the weighted cross-entropy of the network update.

    Args:
        prob: foreground probability ``p``, float ``(H, W)`` or ``(H, W, D)``, values in ``[0, 1]``.
        labels: current labelling ``yhat``, binary (bool or 0/1 numbers), same shape.
        image: the normalised image the geodesic distance runs on, same shape.
        fg_scribbles, bg_scribbles: binary scribble masks, same shape, or ``None`` (unsupervised mode when both are
            ``None`` or empty).
        params: thresholds, ``omega`` and geodesic settings.
        spacing: voxel size in mm along each array axis; ``None``: distances in voxels.
        use_uncertainty: ``False``: the BIFSeg(-w) ablation, 1 everywhere (scribbles included); the inputs are
            still validated.

    Returns:
        float32 array of ``prob``'s shape: ``omega`` on scribble voxels, else 0 on ``U_p | U_s``, else 1.

    Raises:
        ValueError: as :func:`uncertainty_sets`.
    """
    if not use_uncertainty:
        p, *_ = _check(prob, labels, image, fg_scribbles, bg_scribbles, params, spacing)
        return np.ones(p.shape, dtype=np.float32)
    sets = uncertainty_sets(prob, labels, image, fg_scribbles, bg_scribbles, params, spacing)
    weights = np.ones(sets.scribbles.shape, dtype=np.float32)
    weights[sets.network | sets.scribble_fg | sets.scribble_bg] = 0.0
    weights[sets.scribbles] = params.omega
    return weights
