"""Classical, training-free model adapters used as reference lines in every benchmark plot."""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from common.boxes.box import box_mask
from common.evaluation.cases import CaseInfo
from common.interaction.state import InteractionState

__all__ = ["IntensityRegionGrowAdapter"]

logger = logging.getLogger(__name__)

#: Below this many scribble/slice seed voxels their intensity spread is too noisy to widen the window.
_MIN_SEEDS_FOR_STD = 10
#: A click whose 3x3x3 neighbourhood has at least this fraction within ``tolerance_hu / 2`` of its intensity estimate
#: is *homogeneous* (inside one tissue) and gets its own intensity window; others (blurred edges) are seeds only.
_MIN_HOMOGENEOUS_FRACTION = 0.6


class IntensityRegionGrowAdapter:
    """Seeded intensity region growing, the classic interactive baseline (survey: "region growing").

    Per call, from everything in the :class:`InteractionState` (the adapter keeps no state between rounds
    except a per-case cache of the smoothed image):

    1. Foreground seeds: foreground clicks, foreground scribbles, and the foreground of annotated slices.
       Without any, the prediction is empty. Background seeds: background clicks and scribbles.
    2. Seed intensity: each click contributes an edge-preserving local mean (raw intensities of its 3x3x3
       neighbourhood within ``tolerance_hu`` of the clicked voxel), so a noisy voxel does not shift its window.
       A click is *homogeneous* when at least 60 % of that neighbourhood lies within ``tolerance_hu / 2`` of the
       estimate (one tissue plus noise); a click on a blurred edge (a partial-volume mix of two tissues) is not.
       Scribble/slice voxels contribute their raw values.
    3. Intensity windows, one per source of intensity evidence: each homogeneous click gets its own window,
       its estimate +- ``tolerance_hu``; the scribble/slice voxels together get their median +-
       ``max(tolerance_hu, std_factor * std)``, where their std is used only with at least 10 of them. Edge
       clicks are seeds only (they join the region grown from the other windows but do not shift any window);
       when every seed is an edge click, their median estimate +- ``tolerance_hu`` is the one window. Per window,
       candidates are the voxels of the image smoothed with a Gaussian of ``smoothing_sigma_mm`` inside that
       window (and inside ``state.box`` if given), plus the foreground seeds, minus the background seeds.
    4. Region: the union over the windows of the 6-connected components of the candidates that contain a
       foreground seed (so a foreground click always gives a non-empty result), holes filled (step 6). A
       foreground click on a part of the structure with another intensity (a kidney's cortex vs medulla, a
       vessel's brighter segment) therefore adds that part instead of moving one shared window between the two
       intensities, where it would fit neither and the result would collapse to the seeds. Without background
       seeds, and once some window comes from a homogeneous click or from scribbles/slices, adding a foreground
       click never removes a voxel.
    5. Background seeds inside or touching the region split it with a seeded watershed on the negated distance
       map of the region (foreground seeds vs background seeds): the classic way to cut touching blobs apart at
       their narrowest neck, so a background click in a region the growth leaked into removes that region, and
       one near the boundary removes only a thin local layer.
    6. Enclosed holes of the region are filled (3D) if ``fill_holes``, before step 5, so what a background seed
       removes stays removed; annotated slices are finally set exactly to the user's masks.

    Intensities are in image units (HU for CT).

    Args:
        tolerance_hu: minimum half-width of the intensity window.
        smoothing_sigma_mm: Gaussian sigma in mm applied to the image before thresholding (0 disables smoothing).
        std_factor: multiple of the seed-intensity std used to widen the window (with >= 10 seed voxels).
        fill_holes: fill enclosed holes of the result.

    Example:
        >>> adapter = IntensityRegionGrowAdapter(tolerance_hu=40.0)
        >>> pred = adapter(image, state, case.info)  # doctest: +SKIP
    """

    name = "intensity_region_grow"

    def __init__(
        self,
        tolerance_hu: float = 50.0,
        smoothing_sigma_mm: float = 1.0,
        std_factor: float = 2.5,
        fill_holes: bool = True,
    ) -> None:
        if not (math.isfinite(tolerance_hu) and tolerance_hu > 0):
            raise ValueError(f"tolerance_hu must be > 0, got {tolerance_hu}.")
        if not (math.isfinite(smoothing_sigma_mm) and smoothing_sigma_mm >= 0):
            raise ValueError(f"smoothing_sigma_mm must be >= 0, got {smoothing_sigma_mm}.")
        if not (math.isfinite(std_factor) and std_factor >= 0):
            raise ValueError(f"std_factor must be >= 0, got {std_factor}.")
        self.tolerance_hu = float(tolerance_hu)
        self.smoothing_sigma_mm = float(smoothing_sigma_mm)
        self.std_factor = float(std_factor)
        self.fill_holes = fill_holes
        self._cache: tuple[str, tuple[int, ...], np.ndarray] | None = None

    def reset(self, case: CaseInfo) -> None:
        """Drop the smoothed-image cache unless it belongs to ``case`` (called by the evaluation loop)."""
        if self._cache is not None and self._cache[0] != case.case_id:
            self._cache = None

    def _smoothed(self, image: np.ndarray, case: CaseInfo) -> np.ndarray:
        if self._cache is not None and self._cache[0] == case.case_id and self._cache[1] == image.shape:
            return self._cache[2]
        img = np.asarray(image, dtype=np.float32)
        if self.smoothing_sigma_mm > 0:
            sigma = [self.smoothing_sigma_mm / s for s in case.spacing]
            img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest")
        self._cache = (case.case_id, image.shape, img)
        return img

    @staticmethod
    def _seed_masks(state: InteractionState, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        fg = np.zeros(shape, dtype=bool)
        bg = np.zeros(shape, dtype=bool)
        for kind, target in (("foreground", fg), ("background", bg)):
            clicks = state.click_array(kind, ndim=len(shape))  # type: ignore[arg-type]
            if clicks.size:
                if (clicks < 0).any() or (clicks >= np.asarray(shape)).any():
                    raise ValueError(f"{kind} click outside the image of shape {shape}: {clicks.tolist()}.")
                target[tuple(clicks.T)] = True
        for name, scribble, target in (
            ("scribbles_fg", state.scribbles_fg, fg),
            ("scribbles_bg", state.scribbles_bg, bg),
        ):
            if scribble is not None:
                if scribble.shape != shape:
                    raise ValueError(f"{name} has shape {scribble.shape}, image has {shape}.")
                target |= np.asarray(scribble) > 0
        for index, mask in state.slices.items():
            target_slice = _slice_index(shape, state.axis, index)
            if fg[target_slice].shape != mask.shape:
                raise ValueError(f"slice {index} mask has shape {mask.shape}, expected {fg[target_slice].shape}.")
            fg[target_slice] |= np.asarray(mask) > 0
        return fg, bg

    def _click_windows(self, image: np.ndarray, clicks: np.ndarray) -> tuple[list[float], list[float]]:
        """Per foreground click: its intensity estimate, and the estimates of the *homogeneous* clicks.

        A click is one noisy voxel that may sit on the structure's blurred edge, so each click's intensity is the
        mean of the raw intensities in its 3x3x3 neighbourhood (clipped at the image border) that lie within
        ``tolerance_hu`` of the clicked voxel (an edge-preserving local mean). The click is *homogeneous* when at
        least :data:`_MIN_HOMOGENEOUS_FRACTION` of that neighbourhood lies within ``tolerance_hu / 2`` of the
        estimate, i.e. the neighbourhood is one tissue plus noise rather than a partial-volume mix of two.

        Args:
            image: ``(H, W, D)`` float32 raw image.
            clicks: ``(N, 3)`` voxel indices of the foreground clicks.

        Returns:
            The estimates of all clicks, and those of the homogeneous ones (both in click order).
        """
        estimates: list[float] = []
        homogeneous: list[float] = []
        for c in clicks:
            window = tuple(slice(max(int(v) - 1, 0), int(v) + 2) for v in c)
            patch = image[window]
            centre_value = float(image[tuple(c)])
            estimate = float(patch[np.abs(patch - centre_value) <= self.tolerance_hu].mean())
            estimates.append(estimate)
            if np.mean(np.abs(patch - estimate) <= 0.5 * self.tolerance_hu) >= _MIN_HOMOGENEOUS_FRACTION:
                homogeneous.append(estimate)
        return estimates, homogeneous

    def _intensity_windows(
        self, image: np.ndarray, state: InteractionState, fg: np.ndarray
    ) -> list[tuple[float, float]]:
        """Intensity windows ``(centre, half_width)`` of the foreground seeds, see step 3 of the class docstring."""
        clicks = state.click_array("foreground", ndim=image.ndim)
        estimates, homogeneous = self._click_windows(image, clicks)
        dense = fg.copy()
        if clicks.size:
            dense[tuple(clicks.T)] = False
        windows = [(centre, self.tolerance_hu) for centre in homogeneous]
        values = image[dense]
        if values.size:
            spread = float(values.std()) if values.size >= _MIN_SEEDS_FOR_STD else 0.0
            windows.append((float(np.median(values)), max(self.tolerance_hu, self.std_factor * spread)))
        if not windows:  # only edge clicks: one window at their median estimate
            windows.append((float(np.median(estimates)), self.tolerance_hu))
        return sorted(set(windows))

    @staticmethod
    def _split_from_background(
        region: np.ndarray, fg: np.ndarray, bg: np.ndarray, spacing: tuple[float, ...]
    ) -> np.ndarray:
        """Seeded watershed of ``region`` on its negated distance map: the classic split of touching blobs.

        Foreground seeds flood basin 1, background seeds next to or inside the region basin 2, deepest voxels first,
        so the two meet at the region's narrowest neck; a background click near the boundary claims only a thin
        local layer. Computed in the bounding box of the region (plus one voxel) to stay cheap.
        """
        grown = region | (ndimage.binary_dilation(region) & bg)
        idx = np.argwhere(grown)
        lo = np.maximum(idx.min(axis=0) - 1, 0)
        hi = np.minimum(idx.max(axis=0) + 2, np.asarray(region.shape))
        crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        sub = grown[crop]
        markers = np.zeros(sub.shape, dtype=np.int32)
        markers[bg[crop] & sub] = 2
        markers[fg[crop] & sub] = 1
        depth = ndimage.distance_transform_edt(sub, sampling=spacing)
        basins = watershed(-depth, markers=markers, mask=sub)
        out = np.zeros_like(region)
        out[crop] = (basins == 1) & region[crop]
        return out

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        """Segment the structure indicated by ``state`` in ``image``.

        Args:
            image: ``(H, W, D)`` image.
            state: clicks (voxel indices), scribbles, annotated slices, box.
            case: case information (spacing in mm, case id for caching).

        Returns:
            ``(H, W, D)`` uint8 binary mask.

        Raises:
            ValueError: clicks outside the image or masks of the wrong shape.
        """
        shape = tuple(image.shape)
        fg, bg = self._seed_masks(state, shape)
        if not fg.any():
            return np.zeros(shape, dtype=np.uint8)
        smooth = self._smoothed(image, case)
        windows = self._intensity_windows(np.asarray(image, dtype=np.float32), state, fg)
        allowed = ~(bg & ~fg)
        if state.box is not None:
            allowed &= box_mask(shape, state.box)
        result = np.zeros(shape, dtype=bool)
        for centre, half_width in windows:
            candidates = ((np.abs(smooth - centre) <= half_width) & allowed) | fg
            components, _ = ndimage.label(candidates)
            keep = np.unique(components[fg])
            result |= np.isin(components, keep[keep > 0])
        if self.fill_holes:  # before the split, so a background click inside a filled hole is honoured
            result = ndimage.binary_fill_holes(result)
        if _touches(bg, result):
            result = self._split_from_background(result, fg, bg, case.spacing)
        for index, mask in state.slices.items():
            result[_slice_index(shape, state.axis, index)] = np.asarray(mask) > 0
        logger.debug("region grow: windows (centre, half-width) %s, %d voxels", windows, int(result.sum()))
        return result.astype(np.uint8)


def _touches(a: np.ndarray, b: np.ndarray) -> bool:
    """True if some voxel of ``a`` is in ``b`` or face-adjacent to it."""
    return bool((ndimage.binary_dilation(b) & a).any()) if a.any() else False


def _slice_index(shape: tuple[int, ...], axis: int, index: int) -> tuple[slice | int, ...]:
    """Index tuple selecting slice ``index`` along ``axis`` (validated)."""
    if not 0 <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for an image of shape {shape}.")
    if not 0 <= index < shape[axis]:
        raise ValueError(f"slice {index} is out of range along axis {axis} (size {shape[axis]}).")
    sel: list[slice | int] = [slice(None)] * len(shape)
    sel[axis] = int(index)
    return tuple(sel)
