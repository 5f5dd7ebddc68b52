"""Error-driven click simulation of DeepGrow (Sakinis et al., arXiv:1903.08205, 2019), batched on the training device.

Rule, per sample of a batch: ``FN = label & ~pred`` and ``FP = pred & ~label``; a *foreground* click if
``|FN| >= |FP|`` (a *background* click if the false-positive area is larger), placed in that error region at a voxel
drawn with probability proportional to ``exp(d) - 1``, ``d`` the chamfer (chessboard) distance of the voxel to the
nearest voxel outside the region. The first click uses an empty prediction, so it is a foreground click inside the
ground truth. No click where the chosen region is empty (prediction already perfect).

The batched implementation (:func:`simulate_error_clicks`) works on whole ``(B, 1, *spatial)`` tensors: the distance
comes from iterated 3x3(x3) erosions (max-pooling) on a GPU, or from SciPy's chamfer transform per sample on a CPU
(the faster choice there; both give identical distances, see :func:`chamfer_depth`); sampling is an inverse-CDF
draw with one uniform number per sample. Weights are computed as ``exp(d - d_max) - exp(-d_max)``, which is
``(exp(d) - 1) / exp(d_max)``: the same distribution without overflow for large structures.
:func:`reference_error_click` is the per-sample NumPy/SciPy reference (MONAI's ``AddRandomGuidanced`` logic) that
the batched code is tested against: given the same uniform number both return the same voxel.

Coordinates: flat indices and voxel indices refer to the spatial array without channel dimension (C order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_cdt

__all__ = [
    "ClickBatch",
    "ErosionDepth",
    "ErrorRegions",
    "add_new_clicks",
    "chamfer_depth",
    "click_weights",
    "draw_clicks",
    "error_regions",
    "reference_chamfer_depth",
    "reference_error_click",
    "sample_flat_indices",
    "simulate_error_clicks",
    "start_chamfer_depth",
]

DepthBackend = Literal["auto", "erosion", "scipy"]

#: How many erosions run between two checks for "all regions eroded" (each check is a device synchronisation).
_EROSIONS_PER_CHECK = 8


def reference_chamfer_depth(region: np.ndarray) -> np.ndarray:
    """Chessboard chamfer distance of each region voxel to the nearest non-region voxel (per sample, SciPy).

    Voxels outside the array do not count as non-region. A region without any non-region voxel (it fills the
    array) gets depth 1 everywhere (every voxel equally deep). 0 outside the region.

    Args:
        region: binary array ``(*spatial)``.

    Returns:
        int32 array of the same shape.
    """
    mask = np.asarray(region, dtype=bool)
    if mask.all():
        return np.ones(mask.shape, dtype=np.int32)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    return distance_transform_cdt(mask, metric="chessboard").astype(np.int32)


class ErosionDepth:
    """Chessboard chamfer depth of a batch of regions by iterated erosion, advanced step by step on their device.

    One erosion step is one 3x3(x3) max-pool on the negated mask ``-region`` (-1 inside, 0 outside; the implicit
    ``-inf`` padding of max-pooling ignores the outside of the array) plus one accumulation. After ``n`` steps every
    voxel of depth ``<= n`` has its final value; :meth:`pending` says (as a device tensor, without synchronising)
    whether any voxel is deeper. So a caller can run a guessed number of steps, go on with the result, and check
    later (:class:`common.clicks.training.BatchedClickInteraction` does this to keep the GPU queue full);
    :meth:`finish` runs the remaining steps with a check every :data:`_EROSIONS_PER_CHECK` steps.

    Args:
        region: bool ``(B, 1, *spatial)`` (2 or 3 spatial dims).
    """

    def __init__(self, region: torch.Tensor) -> None:
        self.spatial_dims = region.dim() - 2
        self._pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        full = region.flatten(1).all(dim=1).view(-1, *([1] * (self.spatial_dims + 1)))
        dtype = torch.float16 if region.is_cuda else torch.float32  # float16 counts exactly up to 2048
        self._negated = -(region & ~full).to(dtype)
        # a region filling its array has depth 1 everywhere: set once, never eroded
        self._accumulated = (region & full).to(dtype)
        self.steps = 0

    def advance(self, steps: int) -> ErosionDepth:
        """Run ``steps`` more erosions (no device synchronisation)."""
        for _ in range(steps):
            self._accumulated.sub_(self._negated)
            self._negated = self._pool(self._negated, kernel_size=3, stride=1, padding=1)
        self.steps += steps
        return self

    def pending(self) -> torch.Tensor:
        """bool device scalar: some voxel is deeper than :attr:`steps` (the depth is not final yet)."""
        return self._negated.any()

    def max_depth(self) -> torch.Tensor:
        """int32 device scalar: the largest depth so far (final when :meth:`pending` is False)."""
        return self._accumulated.amax().to(torch.int32)

    def finish(self) -> ErosionDepth:
        """Erode until no voxel is left (one synchronisation per :data:`_EROSIONS_PER_CHECK` steps)."""
        while bool(self.pending()):
            self.advance(_EROSIONS_PER_CHECK)
        return self

    def depth(self) -> torch.Tensor:
        """int32 ``(B, 1, *spatial)``: the depth after :attr:`steps` erosions (exact once nothing is pending).

        A region that fills its whole array gets depth 1 everywhere (see :func:`reference_chamfer_depth`).
        """
        return self._accumulated.to(torch.int32)


def chamfer_depth(region: torch.Tensor, backend: DepthBackend = "auto") -> torch.Tensor:
    """Batched chessboard chamfer distance inside each region (see :func:`reference_chamfer_depth`).

    Args:
        region: ``(B, 1, *spatial)`` (2 or 3 spatial dims), non-zero inside the region.
        backend: ``"erosion"`` (iterated 3x3(x3) erosions, all samples at once, on the tensor's device),
            ``"scipy"`` (per sample on the CPU), or ``"auto"`` (erosion on CUDA, SciPy on the CPU).

    Returns:
        int32 ``(B, 1, *spatial)`` on ``region``'s device; both backends return identical values.
    """
    depth, job = start_chamfer_depth(region, _EROSIONS_PER_CHECK, backend)
    return depth if job is None else job.finish().depth()


def start_chamfer_depth(
    region: torch.Tensor, steps: int, backend: DepthBackend = "auto"
) -> tuple[torch.Tensor, ErosionDepth | None]:
    """Chamfer depth of ``region`` that may still be incomplete, for callers that check later.

    Args:
        region: ``(B, 1, *spatial)``, non-zero inside the region.
        steps: erosions to run now (erosion backend); a guess of the largest depth.
        backend: as in :func:`chamfer_depth`.

    Returns:
        ``(depth, job)``: with the erosion backend ``depth`` is exact where it is ``<= steps`` and ``job`` is the
        :class:`ErosionDepth` whose :meth:`~ErosionDepth.pending` says whether anything is deeper (then
        ``job.finish().depth()`` is exact); with SciPy ``depth`` is exact and ``job`` is ``None``.
    """
    if region.dim() not in (4, 5) or region.shape[1] != 1:
        raise ValueError(f"region must be (B, 1, H, W) or (B, 1, H, W, D), got shape {list(region.shape)}")
    if backend not in ("auto", "erosion", "scipy"):
        raise ValueError(f"backend must be 'auto', 'erosion' or 'scipy', got {backend!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    mask = region > 0
    if backend == "erosion" or (backend == "auto" and mask.is_cuda):
        job = ErosionDepth(mask).advance(steps)
        return job.depth(), job
    host = mask.detach().cpu().numpy()
    depth = np.stack([reference_chamfer_depth(m[0])[None] for m in host])
    return torch.from_numpy(depth).to(region.device), None


def click_weights(depth: torch.Tensor) -> torch.Tensor:
    """Sampling weights proportional to ``exp(d) - 1``, computed without overflow.

    Args:
        depth: ``(B, N)`` integer depths (0 outside the region).

    Returns:
        float64 ``(B, N)``: ``exp(d - d_max) - exp(-d_max)`` (``d_max`` per sample), 0 where ``d == 0``; a sample
        whose region is empty gets all zeros.
    """
    d = depth.to(torch.float64)
    d_max = d.amax(dim=1, keepdim=True)
    # where d == 0 both terms are the same float exp(-d_max): the weight is exactly 0 without a mask
    return torch.exp(d - d_max) - torch.exp(-d_max)


def sample_flat_indices(weights: torch.Tensor, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF sampling of one flat index per row of ``weights``.

    Args:
        weights: non-negative ``(B, N)`` (float64 recommended).
        uniform: ``(B,)`` numbers in ``[0, 1)``, one per row.

    Returns:
        ``(index, valid)``: int64 ``(B,)`` the first index whose cumulative weight exceeds ``uniform * total``, and
        bool ``(B,)`` whether the row had any weight (rows without weight get index 0 and ``valid=False``).
    """
    cumulative = torch.cumsum(weights, dim=1)
    total = cumulative[:, -1]
    target = (uniform.to(cumulative) * total).unsqueeze(1)
    index = torch.searchsorted(cumulative, target, right=True).squeeze(1)
    index = index.clamp_max(weights.shape[1] - 1)
    return index, total > 0


@dataclass
class ClickBatch:
    """One simulated click per sample of a batch.

    Attributes:
        index: int64 ``(B,)`` flat spatial index of the click (C order; meaningless where ``valid`` is False).
        positive: bool ``(B,)``: foreground (True) or background (False) click.
        valid: bool ``(B,)``: a click was placed (False where the chosen error region is empty).
        fn_voxels: int64 ``(B,)`` false-negative voxel counts.
        fp_voxels: int64 ``(B,)`` false-positive voxel counts.
    """

    index: torch.Tensor
    positive: torch.Tensor
    valid: torch.Tensor
    fn_voxels: torch.Tensor
    fp_voxels: torch.Tensor

    def coordinates(self, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """Voxel indices ``(B, len(spatial_shape))`` of the clicks (int64)."""
        return torch.stack(torch.unravel_index(self.index, spatial_shape), dim=1)


@dataclass
class ErrorRegions:
    """The error region each sample of a batch clicks in (see the module docstring).

    Attributes:
        region: bool ``(B, 1, *spatial)``: the false negatives of a sample that gets a foreground click, else its
            false positives.
        positive: bool ``(B,)``: foreground click (``|FN| >= |FP|``).
        fn_voxels: int64 ``(B,)`` false-negative voxel counts.
        fp_voxels: int64 ``(B,)`` false-positive voxel counts.
    """

    region: torch.Tensor
    positive: torch.Tensor
    fn_voxels: torch.Tensor
    fp_voxels: torch.Tensor


def error_regions(label: torch.Tensor, pred: torch.Tensor) -> ErrorRegions:
    """False negatives / positives of a batch and the click type rule, on the tensors' device.

    Args:
        label: ``(B, 1, *spatial)`` ground truth, non-zero = foreground.
        pred: ``(B, 1, *spatial)`` current binary prediction, non-zero = foreground (all zeros for the first click).

    Raises:
        ValueError: shape mismatch or wrong rank.
    """
    if label.shape != pred.shape:
        raise ValueError(f"label {list(label.shape)} and pred {list(pred.shape)} must have the same shape")
    if label.dim() not in (4, 5) or label.shape[1] != 1:
        raise ValueError(f"label must be (B, 1, H, W) or (B, 1, H, W, D), got shape {list(label.shape)}")
    truth, guess = label > 0, pred > 0
    fn, fp = truth & ~guess, guess & ~truth
    fn_voxels, fp_voxels = fn.flatten(1).sum(dim=1), fp.flatten(1).sum(dim=1)
    positive = fn_voxels >= fp_voxels
    region = torch.where(positive.view(-1, *([1] * (label.dim() - 1))), fn, fp)
    return ErrorRegions(region=region, positive=positive, fn_voxels=fn_voxels, fp_voxels=fp_voxels)


def draw_clicks(regions: ErrorRegions, depth: torch.Tensor, uniform: torch.Tensor) -> ClickBatch:
    """One click per sample in ``regions.region``, with probability proportional to ``exp(depth) - 1``.

    Args:
        regions: from :func:`error_regions`.
        depth: integer ``(B, 1, *spatial)`` chamfer depth of ``regions.region`` (:func:`chamfer_depth`).
        uniform: ``(B,)`` uniform numbers in ``[0, 1)`` that drive the sampling.
    """
    if uniform.shape != regions.region.shape[:1]:
        raise ValueError(f"uniform must have shape ({regions.region.shape[0]},), got {list(uniform.shape)}")
    index, valid = sample_flat_indices(click_weights(depth.flatten(1)), uniform)
    return ClickBatch(
        index=index,
        positive=regions.positive,
        valid=valid,
        fn_voxels=regions.fn_voxels,
        fp_voxels=regions.fp_voxels,
    )


def simulate_error_clicks(
    label: torch.Tensor, pred: torch.Tensor, uniform: torch.Tensor, depth_backend: DepthBackend = "auto"
) -> ClickBatch:
    """One error-driven click per sample (see module docstring), batched on the tensors' device.

    :func:`error_regions`, :func:`chamfer_depth` and :func:`draw_clicks` in one call.

    Args:
        label: ``(B, 1, *spatial)`` ground truth, non-zero = foreground.
        pred: ``(B, 1, *spatial)`` current binary prediction, non-zero = foreground (all zeros for the first click).
        uniform: ``(B,)`` uniform numbers in ``[0, 1)`` that drive the sampling (draw them from a seeded generator).
        depth_backend: see :func:`chamfer_depth`.

    Returns:
        The :class:`ClickBatch`.

    Raises:
        ValueError: shape mismatch or wrong rank.
    """
    regions = error_regions(label, pred)
    if uniform.shape != label.shape[:1]:
        raise ValueError(f"uniform must have shape ({label.shape[0]},), got {list(uniform.shape)}")
    return draw_clicks(regions, chamfer_depth(regions.region, depth_backend), uniform)


def add_new_clicks(
    click_maps: torch.Tensor, clicks: ClickBatch, active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Set the clicked voxels in batched click maps and say which clicks were new, without a synchronisation.

    Args:
        click_maps: bool ``(B, 2, *spatial)`` (channel 0 foreground, 1 background).
        clicks: the clicks to add.
        active: bool ``(B,)``; samples where it is False get no click (all samples when ``None``).

    Returns:
        ``(maps, fresh)``: a new bool tensor with the clicks added, and bool ``(B,)``: the samples whose click set a
        voxel not clicked before (incremental guidance adds a kernel stamp only for these, as a binary click map
        counts each voxel once).
    """
    b = click_maps.shape[0]
    n = int(np.prod(click_maps.shape[2:]))
    add = clicks.valid if active is None else clicks.valid & active.to(clicks.valid.device)
    position = ((~clicks.positive).to(torch.int64) * n + clicks.index).unsqueeze(1)
    flat = click_maps.reshape(b, 2 * n)
    already = flat.gather(1, position)
    maps = flat.clone().scatter_(1, position, already | add.unsqueeze(1))
    return maps.view(click_maps.shape), add & ~already.squeeze(1)


def reference_error_click(label: np.ndarray, pred: np.ndarray, uniform: float) -> tuple[tuple[int, ...], bool] | None:
    """Per-sample NumPy/SciPy reference of :func:`simulate_error_clicks`.

    Args:
        label: ground truth ``(*spatial)``.
        pred: current prediction, same shape.
        uniform: a number in ``[0, 1)`` driving the draw.

    Returns:
        ``(voxel index, positive)`` or ``None`` if the chosen error region is empty.
    """
    truth, guess = np.asarray(label) > 0, np.asarray(pred) > 0
    fn, fp = truth & ~guess, guess & ~truth
    positive = bool(fn.sum() >= fp.sum())
    region = fn if positive else fp
    if not region.any():
        return None
    depth = reference_chamfer_depth(region).ravel().astype(np.float64)
    d_max = depth.max()
    weights = np.where(depth > 0, np.exp(depth - d_max) - np.exp(-d_max), 0.0)
    cumulative = np.cumsum(weights)
    flat = min(int(np.searchsorted(cumulative, uniform * cumulative[-1], side="right")), depth.size - 1)
    return tuple(int(v) for v in np.unravel_index(flat, region.shape)), positive
