"""Domain-randomised image synthesis, step 1: a label map -> a piecewise-Gaussian image of random contrast.

SynthSeg's generative model (Billot et al., "SynthSeg: segmentation of brain MRI scans of any contrast and resolution
without retraining", Medical Image Analysis 86, 2023): every region of a label map gets its own Gaussian intensity
distribution, mean ``~ U(0, 255)`` and standard deviation ``~ U(0, 35)``, drawn afresh for every sample, so a network
trained on the images cannot rely on any contrast. The background (label 0) is split into random, spatially smooth
sub-regions with their own Gaussians, so that it is not one uniform class (SynthSeg gets this from extra-cerebral
labels; here any label map works, e.g. the phantoms' or any MSD task's).

The later corruption steps (bias field, gamma, inversion, resolution, noise) are in
:mod:`common.transforms.synthesis_corruption` and :mod:`common.transforms.synthesis_resolution`; the ready-made chain
is :func:`common.transforms.synthesis.synthetic_image_transforms`.

Shapes: channel-first ``(1, H, W)`` or ``(1, H, W, D)`` arrays indexed ``[c, i, j(, k)]`` as stored.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from common.transforms.functional import _check_number
from common.transforms.provenance import source_name

__all__ = [
    "DEFAULT_BACKGROUND_CLASSES",
    "DEFAULT_MEAN_RANGE",
    "DEFAULT_STD_RANGE",
    "SynthesizeIntensitiesd",
    "background_subregions",
    "upsample_coarse_field",
]

#: SynthSeg's (2023) prior of the per-region Gaussian means and standard deviations (intensity units of a 0..255 scale).
DEFAULT_MEAN_RANGE: tuple[float, float] = (0.0, 255.0)
DEFAULT_STD_RANGE: tuple[float, float] = (0.0, 35.0)
#: Number of background sub-regions, drawn uniformly from this inclusive range.
DEFAULT_BACKGROUND_CLASSES: tuple[int, int] = (1, 4)

_MAX_SEED = 2**31 - 1


def _check_range(
    value: Any, name: str, minimum: float | None = None, maximum: float | None = None
) -> tuple[float, float]:
    """``(low, high)`` of a 2-sequence of finite numbers with ``minimum <= low <= high <= maximum``, else ValueError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}")
    low, high = (_check_number(v, name) for v in value)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name} must have low >= {minimum:g}, got {value!r}")
    if maximum is not None and high > maximum:
        raise ValueError(f"{name} must have high <= {maximum:g}, got {value!r}")
    return low, high


def _check_int_range(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """``(low, high)`` of a 2-sequence of integers with ``minimum <= low <= high``, else ValueError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair of integers, got {value!r}")
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(f"{name} must be a (low, high) pair of integers, got {value!r}")
    low, high = int(value[0]), int(value[1])
    if not minimum <= low <= high:
        raise ValueError(f"{name} must have {minimum} <= low <= high, got {value!r}")
    return low, high


def _check_prob(value: Any, name: str = "prob") -> float:
    prob = _check_number(value, name)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return prob


def _check_channel_first(array: Any, key: Hashable, d: Mapping[Hashable, Any], where: str, channels: int | None) -> Any:
    """``array`` if it is channel-first 2D/3D ``(C, H, W[, D])`` (with ``C == channels`` if given), else ValueError."""
    shape = tuple(getattr(array, "shape", ()))
    if len(shape) not in (3, 4) or (channels is not None and shape[0] != channels) or 0 in shape:
        want = "(1, H, W) or (1, H, W, D)" if channels == 1 else "(C, H, W) or (C, H, W, D)"
        raise ValueError(f"{where}: {key!r} of {source_name(d, array)} must be channel-first {want}, got shape {shape}")
    return array


def _like(image: torch.Tensor, reference: Any) -> Any:
    """``image`` (float32) in ``reference``'s container type: numpy -> numpy, torch -> torch, MetaTensor -> MetaTensor
    with a copy of the reference's meta data and applied operations (same affine, same grid)."""
    if isinstance(reference, MetaTensor):
        meta = copy.deepcopy(dict(reference.meta))
        return MetaTensor(image, meta=meta, applied_operations=copy.deepcopy(list(reference.applied_operations)))
    if isinstance(reference, torch.Tensor):
        return image.to(reference.device)
    return image.cpu().numpy()


def upsample_coarse_field(coarse: np.ndarray | torch.Tensor, shape: Sequence[int], device: Any = None) -> torch.Tensor:
    """(Bi/tri)linear interpolation of a coarse control-point field onto a grid of ``shape``.

    The control points sit on a regular lattice whose first and last points coincide with the first and last voxel
    centres (``align_corners=True``), so every output voxel is a convex combination of control points: the output
    stays within the control points' range.

    Args:
        coarse: ``(h, w[, d])`` control-point values, one axis per spatial axis of ``shape``.
        shape: output spatial shape ``(H, W[, D])``.
        device: torch device of the output.

    Returns:
        float32 tensor of ``shape``.
    """
    field = torch.as_tensor(np.asarray(coarse) if not isinstance(coarse, torch.Tensor) else coarse)
    field = field.to(device=device, dtype=torch.float32)
    if field.ndim != len(shape) or len(shape) not in (2, 3):
        raise ValueError(f"coarse field of shape {tuple(field.shape)} does not match a 2D/3D grid {tuple(shape)}")
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = F.interpolate(field[None, None], size=tuple(int(s) for s in shape), mode=mode, align_corners=True)
    return out[0, 0]


def background_subregions(field: torch.Tensor, mask: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Split ``mask`` into ``n_classes`` regions of (nearly) equal volume by thresholding a smooth ``field``.

    Thresholds are the ``k / n_classes`` quantiles of ``field`` over the mask voxels (over a regular subsample of at
    least 65536 of them for large masks), so the regions are the level sets of a smooth random field: blobby,
    spatially coherent sub-regions (the background of a label map is otherwise one uniform class).

    Args:
        field: spatial ``(H, W[, D])`` float tensor (e.g. :func:`upsample_coarse_field` of Gaussian noise).
        mask: bool tensor of the same shape (the background voxels).
        n_classes: number of regions (>= 1).

    Returns:
        int64 tensor of the same shape: the region index ``0 .. n_classes - 1`` inside the mask, ``-1`` outside.
    """
    if field.shape != mask.shape:
        raise ValueError(f"field shape {tuple(field.shape)} differs from mask shape {tuple(mask.shape)}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    out = torch.full(field.shape, -1, dtype=torch.int64, device=field.device)
    values = field[mask]
    if values.numel() == 0:
        return out
    if n_classes == 1:
        out[mask] = 0
        return out
    step = max(1, values.numel() // 65536)  # quantiles of a regular subsample: nearly equal volumes, fast
    ordered = torch.sort(values[::step]).values
    cut = [ordered[min(ordered.numel() - 1, (k * ordered.numel()) // n_classes)] for k in range(1, n_classes)]
    out[mask] = torch.bucketize(values, torch.stack(cut), right=True)
    return out


class SynthesizeIntensitiesd(RandomizableTransform, MapTransform):
    """Make a random-contrast image from a label map: one Gaussian per region (SynthSeg's GMM).

    Per call, for every distinct non-background label value (in sorted order) and for every background sub-region a
    mean ``~ U(mean_range)`` and a standard deviation ``~ U(std_range)`` are drawn; the image is
    ``mean[region] + std[region] * z`` with ``z`` i.i.d. standard normal voxel noise. The parameters depend only on
    the partition of the grid into regions, never on the label values: relabelling the regions with an
    order-preserving map gives the same image for the same seed, and any permutation of the non-background values
    gives the same distribution of images.

    The background (``label == background``) is split into ``K ~ U{background_classes}`` sub-regions of nearly equal
    volume: the level sets of a smooth random field (Gaussian values on a ``background_grid`` control lattice per
    axis, interpolated linearly; :func:`background_subregions`).

    Ranges and sources: ``mean_range=(0, 255)`` and ``std_range=(0, 35)`` are the SynthSeg paper's priors (its code's
    ``BrainGenerator`` defaults are narrower, ``U(25, 225)`` and ``U(5, 25)``); a std reaching 35 also mimics the
    within-tissue texture of real scans. ``background_classes=(1, 4)``: SynthSeg splits the background into a few
    extra-cerebral classes; 1 keeps a uniform background in part of the samples.

    Args:
        label_key: key of the channel-first label map ``(1, H, W[, D])``: integer values (any integer dtype, or float
            with integer values as loaded by ``LoadImaged``). It is left unchanged.
        image_key: output key of the synthetic image (overwritten if present).
        mean_range: ``(low, high)`` of the uniform prior of the region means.
        std_range: ``(low, high)`` of the uniform prior of the region standard deviations (>= 0).
        background: label value of the background.
        background_classes: inclusive ``(low, high)`` range of the number of background sub-regions (>= 1).
        background_grid: control points per axis of the smooth field splitting the background (>= 2).
        allow_missing_keys: don't raise if ``label_key`` is missing.

    Output: ``image_key`` holds a float32 array of the label's shape and container type (numpy -> numpy, torch ->
    torch, MetaTensor -> MetaTensor with a copy of the label's meta data: same affine, same grid).

    Attributes (of the last call): ``label_values`` (sorted non-background values present), ``means`` / ``stds``
    (``{label value: drawn parameter}``), ``background_means`` / ``background_stds`` (one per sub-region),
    ``n_background_classes`` and ``coarse`` (the control-point field splitting the background; the sub-region map is
    :meth:`background_regions` of the label, recomputed on demand so no volume-sized array is kept).

    Raises:
        ValueError: bad options; a label that is not ``(1, H, W[, D])`` or not integer-valued.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        mean_range: Sequence[float] = DEFAULT_MEAN_RANGE,
        std_range: Sequence[float] = DEFAULT_STD_RANGE,
        background: int = 0,
        background_classes: Sequence[int] = DEFAULT_BACKGROUND_CLASSES,
        background_grid: int = 4,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, label_key, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.label_key = label_key
        self.image_key = image_key
        self.mean_range = _check_range(mean_range, "mean_range")
        self.std_range = _check_range(std_range, "std_range", minimum=0.0)
        if isinstance(background, (bool, np.bool_)) or not isinstance(background, (int, np.integer)):
            raise ValueError(f"background must be an integer label value, got {background!r}")
        self.background = int(background)
        self.background_classes = _check_int_range(background_classes, "background_classes", minimum=1)
        if isinstance(background_grid, (bool, np.bool_)) or not isinstance(background_grid, (int, np.integer)):
            raise ValueError(f"background_grid must be an integer >= 2, got {background_grid!r}")
        if background_grid < 2:
            raise ValueError(f"background_grid must be an integer >= 2, got {background_grid!r}")
        self.background_grid = int(background_grid)
        self.label_values: list[int] = []
        self.means: dict[int, float] = {}
        self.stds: dict[int, float] = {}
        self.background_means: list[float] = []
        self.background_stds: list[float] = []
        self.n_background_classes = 0
        self.coarse: np.ndarray | None = None
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the parameters for ``data`` = ``(label values, spatial ndim)`` (only through ``self.R``)."""
        values, ndim = data
        self.n_background_classes = int(self.R.randint(self.background_classes[0], self.background_classes[1] + 1))
        self.coarse = self.R.standard_normal((self.background_grid,) * ndim)
        n = len(values) + self.n_background_classes
        means = self.R.uniform(self.mean_range[0], self.mean_range[1], size=n)
        stds = self.R.uniform(self.std_range[0], self.std_range[1], size=n)
        self._seed = int(self.R.randint(_MAX_SEED))
        self.label_values = list(values)
        self.means = {v: float(m) for v, m in zip(values, means[: len(values)], strict=True)}
        self.stds = {v: float(s) for v, s in zip(values, stds[: len(values)], strict=True)}
        self.background_means = [float(m) for m in means[len(values) :]]
        self.background_stds = [float(s) for s in stds[len(values) :]]

    def background_regions(self, label: Any) -> torch.Tensor:
        """Background sub-region map of the last draw for ``label`` (spatial ``(H, W[, D])`` or ``(1, H, W[, D])``):
        int64, ``0 .. n_background_classes - 1`` on background voxels, ``-1`` elsewhere."""
        if self.coarse is None:
            raise ValueError("background_regions: nothing drawn yet (call the transform first)")
        spatial = convert_to_tensor(label, track_meta=False)
        spatial = spatial[0] if spatial.ndim == self.coarse.ndim + 1 else spatial
        field = upsample_coarse_field(self.coarse, spatial.shape, device=spatial.device)
        return background_subregions(field, spatial == self.background, self.n_background_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with ``image_key`` set to a new synthetic image of the label map."""
        d = dict(data)
        if self.label_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"SynthesizeIntensitiesd: data has no {self.label_key!r} key (keys: {list(d)})")
        raw = _check_channel_first(d[self.label_key], self.label_key, d, "SynthesizeIntensitiesd", channels=1)
        label = convert_to_tensor(raw, track_meta=False)
        if label.dtype == torch.bool:
            label = label.to(torch.uint8)
        if label.is_floating_point() and not (
            bool(torch.isfinite(label).all()) and bool(torch.equal(label, torch.round(label)))
        ):
            raise ValueError(
                f"SynthesizeIntensitiesd: {self.label_key!r} of {source_name(d, raw)} must hold integer label values "
                "(was it resampled with linear interpolation? use mode='nearest')"
            )
        label = label[0].to(torch.int64)
        present, rank = _label_ranks(label)
        values = [int(v) for v in present.tolist() if int(v) != self.background]
        self.randomize((values, label.ndim))
        d[self.image_key] = _like(self._synthesize(label, present, rank)[None], raw)
        return d

    def _synthesize(self, label: torch.Tensor, present: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """Piecewise-Gaussian image ``(H, W[, D])`` from the drawn parameters (``rank``: index into ``present``)."""
        device = label.device
        n_labels = len(self.label_values)
        # region index: rank among the non-background values, background voxels -> n_labels + sub-region
        is_fg = present != self.background
        fg_rank = torch.cumsum(is_fg.to(torch.int64), 0) - 1
        region = torch.where(is_fg, fg_rank, torch.full_like(fg_rank, n_labels))[rank]
        mask = label == self.background
        sub = self.background_regions(label)
        region = torch.where(mask, region + sub, region)
        means = torch.tensor([*self.means.values(), *self.background_means], dtype=torch.float32, device=device)
        stds = torch.tensor([*self.stds.values(), *self.background_stds], dtype=torch.float32, device=device)
        z = torch.randn(label.shape, generator=torch.Generator().manual_seed(self._seed), dtype=torch.float32)
        return torch.addcmul(means[region], stds[region], z.to(device))


def _label_ranks(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct values of an int64 ``label`` and, per voxel, the index of its value among them.

    Uses a histogram when the values span less than 2**20 (typical label maps: fast, no sort), else ``torch.unique``.
    """
    low, high = (int(v) for v in torch.aminmax(label))
    if high - low < 2**20:
        shifted = label - low
        counts = torch.bincount(shifted.reshape(-1), minlength=high - low + 1)
        present_shifted = torch.nonzero(counts).reshape(-1)
        lookup = torch.zeros(high - low + 1, dtype=torch.int64, device=label.device)
        lookup[present_shifted] = torch.arange(present_shifted.numel(), device=label.device)
        return present_shifted + low, lookup[shifted]
    present, rank = torch.unique(label, sorted=True, return_inverse=True)
    return present, rank.reshape(label.shape)
