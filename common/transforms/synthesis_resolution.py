"""Domain-randomised image synthesis, resolution: simulate a low-resolution acquisition resampled to the label grid.

Real scans are often anisotropic: thick slices along one axis (2D MR sequences: 3-9 mm slices at ~1 mm in-plane,
thick-slice CT), later resampled to a fine grid. SynthSeg (Billot et al., Medical Image Analysis 2023) simulates this
by blurring the synthetic image with a Gaussian whose width follows the acquisition voxel size, down-sampling it to
that voxel size and up-sampling it back, so the network sees every resolution. Along each spatial axis ``a`` with
acquisition spacing ``r_a`` larger than the grid spacing ``s_a``: Gaussian blur of ``sigma_a = 0.75 r_a / s_a``
voxels (SynthSeg's ``blurring_sigma_for_downsampling``; 0.75 approximates the ``2 log(10) / (2 pi) = 0.73`` factor
that attenuates the new Nyquist frequency), linear down-sampling to ``round((n_a - 1) s_a / r_a) + 1`` samples over the
same extent (first and last voxel centres kept) and linear up-sampling back to ``n_a``. The steps act on one axis at a
time (they commute: all are separable), and axes with ``r_a <= s_a`` are left untouched.

Shapes: channel-first ``(C, H, W)`` or ``(C, H, W, D)`` indexed ``[c, i, j(, k)]``; the grid and affine are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor

from common.transforms.functional import _check_number
from common.transforms.synthesis_corruption import _RandImaged
from common.transforms.synthesis_intensities import _check_range

__all__ = [
    "BLUR_SIGMA_FACTOR",
    "RandResolutiond",
    "blur_along_axis",
    "low_resolution_size",
    "resample_along_axis",
    "simulate_acquisition",
]

#: SynthSeg's blur width per unit of resolution ratio (voxels of the fine grid per ``r / s``).
BLUR_SIGMA_FACTOR = 0.75


def _along_last(image: torch.Tensor, axis: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``image`` with ``axis`` moved last and flattened to ``(N, 1, L)``; also the moved shape."""
    moved = image.movedim(axis, -1)
    return moved.reshape(-1, 1, moved.shape[-1]), tuple(moved.shape)


def blur_along_axis(image: torch.Tensor, axis: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of a float tensor along one array ``axis`` (``sigma`` in voxels; kernel truncated at 3 sigma,
    edges replicated). ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    lines, moved = _along_last(image, axis)
    out = F.conv1d(F.pad(lines, (radius, radius), mode="replicate"), kernel)
    return out.reshape(moved).movedim(-1, axis)


def resample_along_axis(image: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Linear resampling of a float tensor along array ``axis`` to ``size`` samples spanning the same extent (first
    and last sample centres kept: ``align_corners=True``)."""
    if image.shape[axis] == size:
        return image
    lines, moved = _along_last(image, axis)
    out = F.interpolate(lines, size=int(size), mode="linear", align_corners=True)
    return out.reshape(*moved[:-1], int(size)).movedim(-1, axis)


def low_resolution_size(n: int, ratio: float) -> int:
    """Samples along an axis of ``n`` voxels acquired at ``ratio`` times the grid spacing: ``round((n - 1) / ratio)
    + 1``, at least 2 (an axis of one voxel stays 1), at most ``n``."""
    if n <= 1:
        return n
    return int(min(n, max(2, round((n - 1) / ratio) + 1)))


def simulate_acquisition(
    image: torch.Tensor,
    spacing: Sequence[float],
    acquisition_spacing: Sequence[float],
    sigma_factor: float = BLUR_SIGMA_FACTOR,
) -> torch.Tensor:
    """Blur, down-sample and up-sample a channel-first image to mimic an acquisition at ``acquisition_spacing``.

    Args:
        image: float tensor ``(C, H, W[, D])``.
        spacing: grid spacing (mm), one per spatial axis.
        acquisition_spacing: simulated acquisition spacing (mm), one per spatial axis; axes where it is not larger
            than ``spacing`` are untouched.
        sigma_factor: blur width in voxels per unit of ratio (SynthSeg: 0.75).

    Returns:
        Float tensor of the input's shape.
    """
    ndim = image.ndim - 1
    if len(spacing) != ndim or len(acquisition_spacing) != ndim:
        raise ValueError(
            f"spacing and acquisition_spacing need {ndim} values, got {spacing!r}, {acquisition_spacing!r}"
        )
    out = image
    for a, (s, r) in enumerate(zip(spacing, acquisition_spacing, strict=True)):
        ratio = float(r) / float(s)
        if ratio <= 1.0 + 1e-6:
            continue
        n = int(image.shape[a + 1])
        out = blur_along_axis(out, a + 1, sigma_factor * ratio)
        out = resample_along_axis(resample_along_axis(out, a + 1, low_resolution_size(n, ratio)), a + 1, n)
    return out


def _check_spacing(spacing: Any) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = [spacing] if isinstance(spacing, (int, float, np.integer, np.floating)) else spacing
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, (Sequence, np.ndarray))
        or len(values) not in (1, 2, 3)
    ):
        raise ValueError(f"spacing must be None, a positive number or 2-3 positive numbers (mm), got {spacing!r}")
    out = tuple(_check_number(v, "spacing") for v in values)
    if any(v <= 0 for v in out):
        raise ValueError(f"spacing must be positive (mm), got {spacing!r}")
    return out


class RandResolutiond(_RandImaged):
    """Simulate a random anisotropic acquisition resolution (:func:`simulate_acquisition`), keeping the grid.

    Per call one spatial axis is drawn uniformly from ``axes`` (the "slice" axis); its acquisition spacing is drawn
    from ``U(slice_spacing_range)`` mm, every other axis's from ``U(inplane_spacing_range)`` mm. Axes whose drawn
    spacing is not coarser than the grid spacing are left as they are (a scan is never sharper than its label grid).

    The grid spacing comes from ``spacing`` if given, else from the first key's MetaTensor affine (``pixdim``), else
    1 mm per axis.

    Ranges and sources: ``slice_spacing_range=(1, 9)`` mm: SynthSeg draws the low resolution of one random axis in
    ``[1, 9]`` mm (clinical slice spacings up to ~9 mm); ``inplane_spacing_range=(1, 3)`` mm: clinical in-plane
    resolution of MR (~1 mm) and CT (0.6-1 mm) up to low-resolution scans (~3 mm); ``sigma_factor=0.75`` (SynthSeg).

    Args:
        keys: image keys.
        prob: probability of applying it.
        slice_spacing_range: ``(low, high)`` acquisition spacing (mm) of the random slice axis, ``low > 0``.
        inplane_spacing_range: ``(low, high)`` acquisition spacing (mm) of the other axes, ``low > 0``.
        axes: candidate slice axes (spatial axes, ``0..ndim-1``); ``None`` = all.
        spacing: grid spacing (mm): a number, one per spatial axis, or ``None`` (see above).
        sigma_factor: blur width in voxels per unit of resolution ratio (> 0).
        allow_missing_keys: don't raise if a key is missing.

    Attributes (last call): ``axis`` (the slice axis, -1 when not applied), ``acquisition_spacing`` (drawn, mm),
    ``grid_spacing`` (mm), ``sigma`` (blur per axis in voxels, 0 = untouched) and ``low_resolution_shape``.

    Raises:
        ValueError: bad options, an axis not in the image, or a ``spacing`` of the wrong length.
    """

    name = "RandResolutiond"

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        slice_spacing_range: Sequence[float] = (1.0, 9.0),
        inplane_spacing_range: Sequence[float] = (1.0, 3.0),
        axes: Sequence[int] | None = None,
        spacing: float | Sequence[float] | None = None,
        sigma_factor: float = BLUR_SIGMA_FACTOR,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.slice_spacing_range = _check_range(slice_spacing_range, "slice_spacing_range", minimum=1e-3)
        self.inplane_spacing_range = _check_range(inplane_spacing_range, "inplane_spacing_range", minimum=1e-3)
        if axes is not None:
            bad = isinstance(axes, (str, bytes)) or not isinstance(axes, (Sequence, np.ndarray)) or len(axes) == 0
            if bad or any(
                isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < 3 for a in axes
            ):
                raise ValueError(f"axes must be None or a non-empty sequence of spatial axes (0, 1, 2), got {axes!r}")
        self.axes = None if axes is None else tuple(sorted({int(a) for a in axes}))
        self.spacing = _check_spacing(spacing)
        self.sigma_factor = _check_number(sigma_factor, "sigma_factor")
        if self.sigma_factor <= 0:
            raise ValueError(f"sigma_factor must be > 0, got {sigma_factor!r}")
        self.axis = -1
        self.acquisition_spacing: tuple[float, ...] = ()
        self.grid_spacing: tuple[float, ...] = ()
        self.sigma: tuple[float, ...] = ()
        self.low_resolution_shape: tuple[int, ...] = ()
        self._reference: Any = None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` images resampled through a random acquisition resolution."""
        self._reference = next((data[k] for k in self.key_iterator(dict(data))), None)
        try:
            return super().__call__(data)
        finally:
            self._reference = None

    def _grid_spacing(self, ndim: int) -> tuple[float, ...]:
        if self.spacing is not None:
            if len(self.spacing) == 1:
                return self.spacing * ndim
            if len(self.spacing) != ndim:
                raise ValueError(f"RandResolutiond: spacing {self.spacing} does not match a {ndim}D image")
            return self.spacing
        if isinstance(self._reference, MetaTensor):
            pixdim = [float(p) for p in self._reference.pixdim]
            if len(pixdim) >= ndim and all(p > 0 for p in pixdim[:ndim]):
                return tuple(pixdim[:ndim])
        return (1.0,) * ndim

    def _draw(self, image: torch.Tensor | None) -> None:
        self.axis, self.acquisition_spacing, self.sigma, self.low_resolution_shape = -1, (), (), ()
        if image is None:
            return
        ndim = image.ndim - 1
        axes = self.axes if self.axes is not None else tuple(range(ndim))
        if any(a >= ndim for a in axes):
            raise ValueError(f"RandResolutiond: axes {axes} do not all exist in a {ndim}D image")
        self.grid_spacing = self._grid_spacing(ndim)
        if not self._do_transform:
            return
        self.axis = int(axes[int(self.R.randint(len(axes)))])
        drawn = [float(self.R.uniform(*self.inplane_spacing_range)) for _ in range(ndim)]
        drawn[self.axis] = float(self.R.uniform(*self.slice_spacing_range))
        self.acquisition_spacing = tuple(drawn)
        ratios = [r / s for r, s in zip(drawn, self.grid_spacing, strict=True)]
        self.sigma = tuple(self.sigma_factor * q if q > 1.0 + 1e-6 else 0.0 for q in ratios)
        self.low_resolution_shape = tuple(
            low_resolution_size(int(n), q) if q > 1.0 + 1e-6 else int(n)
            for n, q in zip(image.shape[1:], ratios, strict=True)
        )

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        return simulate_acquisition(image, self.grid_spacing, self.acquisition_spacing, self.sigma_factor)
