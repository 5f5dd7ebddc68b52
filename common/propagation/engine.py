"""Slice-by-slice mask propagation through a volume from user-annotated slices (framework-light: torch only).

A 2D model ``predict_fn`` maps a batch of ``(image slice, prior mask)`` pairs ``(B, 2, H, W)`` to foreground
probabilities (or binary masks) ``(B, H, W)``. From every user slice ``s`` two *fronts* run, one towards higher slice
indices (direction +1, "up") and one towards lower indices (-1, "down"): slice ``s + d`` is predicted from
``(image[..., s + d], user mask of s)``, slice ``s + 2d`` from ``(image[..., s + 2d], mask kept at s + d)``, and
so on. The prior is always a *binary* mask (the previous slice's ``probability > threshold``, after the continuity
filter), as in training where the prior is a ground-truth mask.

Continuity filter (``connect_tolerance``, default 2 pixels; ``None`` disables it): of each predicted slice only the
in-plane 8-connected components that overlap the prior dilated by ``connect_tolerance`` pixels (square) are kept
(:mod:`common.propagation.continuity`); the probability of the removed components is set to 0, so the merged
probability and mask agree. The filtered mask is the next prior and what enters the merged output.

A front stops (details and order in :mod:`common.propagation.stopping`; the reason is :attr:`FrontRecord.stop`)

- at the volume edge (``"edge"``),
- at the slice limit set by the merge rule (never beyond the next user slice; see :mod:`common.propagation.merge`)
  (``"limit"``),
- with the continuity filter on, at its first empty (filtered) slice: ``"disconnected"`` when the network predicted
  foreground there but none of it connects to the prior (the structure ended, the front would run onto a
  neighbour), ``"empty"`` when it predicted nothing; without the filter, after ``max_empty_slices`` consecutive empty
  predictions (``"empty"``). Empty slices are part of the output, as empty;
- when the new slice's area leaves ``[min_area_ratio, max_area_ratio]`` times the prior's area (``"area_collapse"``
  below, ``"area_explosion"`` above; defaults 0.2 and 3.0, ``None`` disables each), or when the median intensity
  inside the new mask moves more than ``max_intensity_shift`` from the median inside the user's mask of the front's
  source slice (``"intensity_shift"``; off by default, the bundle configs set it). That slice is *dropped*: it is the
  leak, so it is not part of the output and counts as not reached by the front (:attr:`FrontRecord.n_dropped`).

All active fronts advance in lockstep; with ``batch_fronts=True`` their slices go through ``predict_fn`` together
(``B`` = number of active fronts, optionally capped by ``max_batch_size``). Each front's raw emptiness and the areas of
its new and prior masks (and the medians inside the new masks) are read back with one host sync per step, and only
when a stop rule needs them; with every early stop disabled (``max_empty_slices``, ``connect_tolerance``,
``min_area_ratio``, ``max_area_ratio``, ``max_intensity_shift`` all ``None``) the whole propagation is queued on the
device without waiting for it. The continuity filter runs on the tensors' device: on the CPU with
:func:`scipy.ndimage.label` (no device sync), elsewhere (CUDA) with a torch flood fill that reads its convergence
back after 8, 16, 32, ... iterations: one more sync per step when the new slice grows less than 8 pixels beyond its
prior, the usual case.
Everything stays on the image's device; the volume is copied once into a slice-major ``(D, H, W)`` layout so that
reading a slice per step is a contiguous copy.

User-annotated slices are never changed: the output equals the user's mask there, and no input is modified in
place (``predict_fn`` receives a freshly stacked tensor each call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.propagation.continuity import connected_to_prior
from common.propagation.merge import MergeContext, MergeRule, get_merge_rule
from common.propagation.stopping import StopReason, StopRule
from common.propagation.validation import validate_image, validate_propagation_options, validate_slice_annotation

__all__ = [
    "DEFAULT_CONNECT_TOLERANCE",
    "DEFAULT_MAX_AREA_RATIO",
    "DEFAULT_MIN_AREA_RATIO",
    "FrontRecord",
    "PredictFn",
    "PropagationResult",
    "StopReason",
    "propagate",
]

logger = logging.getLogger(__name__)

#: ``(B, 2, H, W)`` batch (channel 0 image slice, channel 1 prior mask) -> ``(B, H, W)`` foreground probability.
PredictFn = Callable[[torch.Tensor], torch.Tensor]

#: Defaults of the continuity filter and the area-ratio stops, measured with ``bench/propagation_leak.py`` (shipped
#: model, phantoms 009-011, one middle user slice per structure): on the phantoms the model's leaks are connected to
#: the structure and grow or shrink gradually, so these rules cut little there (mean leak 12.97 -> 12.53 slices, mean
#: Dice unchanged at 0.575); the filter removes unconnected islands (none occurred on the phantoms, any tolerance
#: 0..3 gave identical results) and the ratios stop abrupt changes. Stricter collapse ratios cost true slices at
#: the tapering ends of structures: propagating the ground truth itself, 0.2 drops 1.3% of the true slices, 0.3 2.4%,
#: 0.5 5%; an explosion ratio of 1.5..3 never fired on the model's predictions.
DEFAULT_CONNECT_TOLERANCE = 2
DEFAULT_MIN_AREA_RATIO = 0.2
DEFAULT_MAX_AREA_RATIO = 3.0


@dataclass(frozen=True)
class FrontRecord:
    """What one front did.

    Attributes:
        source: the user slice it started from.
        direction: +1 (towards higher slice indices) or -1.
        n_predicted: number of slices it predicted and kept (part of the output, empty ones included):
            ``source + direction * i`` for ``i = 1..n_predicted``.
        stop: why it stopped: ``"edge"`` (volume edge), ``"limit"`` (the merge rule's limit, e.g. the next user slice
            or the midpoint), ``"empty"`` (an empty prediction; without the continuity filter ``max_empty_slices``
            consecutive ones), ``"disconnected"`` (nothing predicted connects to the prior), ``"area_collapse"`` /
            ``"area_explosion"`` (area below / above the ratio limits), ``"intensity_shift"``; see
            :mod:`common.propagation.stopping`.
        n_dropped: predictions made but not kept: 1 for the slice ``source + direction * (n_predicted + 1)`` that
            triggered an area-ratio or intensity-shift stop, else 0. The front made ``n_predicted + n_dropped``
            predictions.
    """

    source: int
    direction: int
    n_predicted: int
    stop: StopReason
    n_dropped: int = 0

    @property
    def slices(self) -> list[int]:
        """The slice indices it predicted, in propagation order."""
        return [self.source + self.direction * i for i in range(1, self.n_predicted + 1)]


@dataclass(frozen=True)
class PropagationResult:
    """Output of :func:`propagate`. Volumes are ``(H, W, D)`` with the propagation axis last.

    Attributes:
        mask: bool ``(H, W, D)`` segmentation: merged probability ``> threshold``, and exactly the user's masks on
            user slices.
        probability: ``(H, W, D)`` merged foreground probability (float, the image's float dtype or float32; 0/1 on
            user slices), or ``None`` when ``keep_probability=False``.
        source: per slice ``k``: ``k`` itself for a user slice; else the user slice whose propagation determined it
            (for fused slices the front with the larger weight, ties to the lower user slice); -1 if no front
            predicted it (beyond a stopped front), in which case the slice is empty.
        direction: per slice: +1 if it came from a user slice below it (propagating towards higher indices), -1 if
            from above, 0 for user slices and unreached slices.
        weights: float32 ``(D, 2)`` CPU tensor, the merge rule's weights of the (up, down) candidate fronts.
        reached: bool ``(D, 2)`` CPU tensor, whether the (up, down) candidate fronts predicted the slice.
        fronts: one :class:`FrontRecord` per user slice and direction (user slices in the order given, down first).
        n_calls: number of ``predict_fn`` calls.
        merge: the merge rule used.
    """

    mask: torch.Tensor
    probability: torch.Tensor | None
    source: tuple[int, ...]
    direction: tuple[int, ...]
    weights: torch.Tensor
    reached: torch.Tensor
    fronts: tuple[FrontRecord, ...]
    n_calls: int
    merge: MergeRule

    @property
    def n_predicted(self) -> int:
        """Total number of slices predicted (the number of samples that went through ``predict_fn``), including the
        slices dropped by an area-ratio or intensity-shift stop."""
        return sum(f.n_predicted + f.n_dropped for f in self.fronts)


class _Front:
    """Mutable state of a running front."""

    __slots__ = ("direction", "empty_run", "max_steps", "n_dropped", "n_predicted", "prior", "source", "stop")

    def __init__(self, source: int, direction: int, max_steps: int, prior: torch.Tensor, stop: StopReason) -> None:
        self.source = source
        self.direction = direction
        self.max_steps = max_steps
        self.prior = prior
        self.stop: StopReason = stop  # reason used if it runs out of steps
        self.n_predicted = 0
        self.n_dropped = 0
        self.empty_run = 0

    @property
    def next_slice(self) -> int:
        return self.source + self.direction * (self.n_predicted + 1)

    def record(self) -> FrontRecord:
        return FrontRecord(self.source, self.direction, self.n_predicted, self.stop, self.n_dropped)


def _predict(predict_fn: PredictFn, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Call ``predict_fn`` on ``x`` ``(B, 2, H, W)`` and check it returns ``(B, H, W)`` (or ``(B, 1, H, W)``)."""
    out: Any = predict_fn(x)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"predict_fn must return a torch tensor, got {type(out).__name__}.")
    b, _, h, w = x.shape
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if tuple(out.shape) != (b, h, w):
        raise ValueError(
            f"predict_fn must return foreground probabilities of shape (B, H, W) = {(b, h, w)} for an input of "
            f"shape {tuple(x.shape)}, got {tuple(out.shape)}."
        )
    return out.to(device=x.device, dtype=dtype)


def _neighbours(slices: list[int], s: int) -> tuple[int | None, int | None]:
    """The user slices just below and just above ``s`` in the sorted list ``slices``."""
    i = slices.index(s)
    return (slices[i - 1] if i > 0 else None), (slices[i + 1] if i + 1 < len(slices) else None)


def propagate(
    image: torch.Tensor | np.ndarray,
    annotation: Mapping[int, Any],
    predict_fn: PredictFn,
    max_empty_slices: int | None = 2,
    merge: str | MergeRule = "nearest",
    threshold: float = 0.5,
    batch_fronts: bool = True,
    *,
    max_batch_size: int | None = None,
    keep_probability: bool = True,
    connect_tolerance: int | None = DEFAULT_CONNECT_TOLERANCE,
    min_area_ratio: float | None = DEFAULT_MIN_AREA_RATIO,
    max_area_ratio: float | None = DEFAULT_MAX_AREA_RATIO,
    max_intensity_shift: float | None = None,
) -> PropagationResult:
    """Propagate user-annotated slices through a volume with a 2D (image, prior) -> mask model.

    Args:
        image: ``(H, W, D)`` volume (torch tensor or numpy array), propagation axis last (move it there first, e.g.
            ``image.movedim(axis, -1)``). Integer images are converted to float32 for ``predict_fn``.
        annotation: user slices: slice index ``k`` (``0 <= k < D``) -> ``(H, W)`` binary mask (bool or 0/1; not
            all zero). The iteration order is the annotation order used by ``merge="overwrite"`` (first = oldest).
        predict_fn: ``(B, 2, H, W)`` batch (channel 0: image slices, channel 1: prior masks as 0/1 floats, both in
            the image's float dtype on its device) -> ``(B, H, W)`` foreground probability or 0/1 mask.
        max_empty_slices: without the continuity filter (``connect_tolerance=None``), a front stops after this many
            consecutive empty predictions (they are kept as empty slices); ``None`` never stops on emptiness. With the
            filter on, a front always stops at its first empty slice (nothing can connect to an empty prior, so
            every later slice would be empty too: the output is the same as with any ``max_empty_slices``).
        merge: ``"nearest"`` (default), ``"overwrite"``, ``"fusion"`` or a :class:`~common.propagation.merge.
            MergeRule` instance; see :mod:`common.propagation.merge` for the semantics.
        threshold: a pixel is foreground where the probability is ``> threshold`` (also for the priors).
        batch_fronts: advance all active fronts in one ``predict_fn`` call per step (``B`` = active fronts);
            ``False`` calls it once per front (``B = 1``). Results are identical up to the numerics of ``predict_fn``
            on different batch sizes.
        max_batch_size: optional cap on ``B`` per call when batching (memory), ``None`` = no cap.
        keep_probability: keep the merged probability volume in the result.
        connect_tolerance: continuity filter: keep only the 8-connected components of each predicted slice that
            overlap the prior dilated by this many pixels (square); 0 = they must overlap the prior itself; ``None``
            keeps every prediction as is (the behaviour before the filter existed).
        min_area_ratio: stop a front (dropping the slice) when the new slice's area is ``< min_area_ratio`` times
            its prior's area (the structure collapses); a number in ``(0, 1)`` or ``None`` (never).
        max_area_ratio: stop a front (dropping the slice) when the new slice's area is ``> max_area_ratio`` times
            its prior's area (the prediction spills onto a neighbour); a number ``> 1`` or ``None`` (never).
        max_intensity_shift: stop a front (dropping the slice) when the median image intensity inside the new slice's
            mask differs from the median inside the user's mask of the front's source slice by more than this (the
            front slid onto tissue of another intensity), in the image's units as ``predict_fn`` receives them
            (the bundles' ``ct_window``: 1 = 500 HU, so their 0.06 = 30 HU); ``None`` (never, the default here: the
            threshold depends on the intensity normalisation, so the bundle configs set it).

    Returns:
        A :class:`PropagationResult` (mask, probability, per-slice provenance, per-front records).

    Raises:
        ValueError: invalid image or annotation (see :mod:`common.propagation.validation`), invalid options, or a
            ``predict_fn`` output of the wrong shape.
    """
    validate_propagation_options(
        threshold,
        max_empty_slices,
        max_batch_size,
        connect_tolerance=connect_tolerance,
        min_area_ratio=min_area_ratio,
        max_area_ratio=max_area_ratio,
        max_intensity_shift=max_intensity_shift,
    )
    img = validate_image(image, "image", ndim=3)
    masks = validate_slice_annotation(annotation, tuple(img.shape), img.device, "annotation")
    return _propagate_validated(
        img,
        masks,
        predict_fn,
        max_empty_slices=max_empty_slices,
        merge=merge,
        threshold=threshold,
        batch_fronts=batch_fronts,
        max_batch_size=max_batch_size,
        keep_probability=keep_probability,
        connect_tolerance=connect_tolerance,
        min_area_ratio=min_area_ratio,
        max_area_ratio=max_area_ratio,
        max_intensity_shift=max_intensity_shift,
    )


def _masked_medians(slices: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per row, the median of ``slices[i]`` inside ``masks[i]`` (``(B, H, W)`` each; NaN for an empty mask), float32.

    The lower median of the masked values (as ``torch.median``), for the whole batch in one ``nanmedian`` on the
    slices' device (no per-row boolean indexing, which would synchronise the device once per row).
    """
    values = slices.float().masked_fill(~masks, float("nan")).flatten(1)
    return values.nanmedian(dim=1).values


def _slice_major(img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``img`` ``(H, W, D)`` as a contiguous ``(D, H, W)`` tensor of ``dtype`` (a view where it already is one)."""
    height, width, depth = img.shape
    if img.dtype == dtype and img.is_contiguous():
        # a 2D transpose (H * W, D) -> (D, H * W): torch's blocked transpose copy, faster than a 3D permuted copy
        flat = torch.empty((depth, height * width), dtype=dtype, device=img.device)
        return flat.copy_(img.reshape(height * width, depth).t()).view(depth, height, width)
    permuted = img.permute(2, 0, 1)
    if permuted.dtype == dtype:
        return permuted.contiguous()
    return torch.empty(permuted.shape, dtype=dtype, device=img.device).copy_(permuted)


def _depth_last(t: torch.Tensor) -> torch.Tensor:
    """A contiguous ``(D, H, W)`` tensor as a new contiguous ``(H, W, D)`` tensor (via a 2D blocked transpose)."""
    depth, height, width = t.shape
    flat = torch.empty((height * width, depth), dtype=t.dtype, device=t.device)
    return flat.copy_(t.view(depth, height * width).t()).view(height, width, depth)


def _propagate_validated(
    img: torch.Tensor,
    masks: Mapping[int, torch.Tensor],
    predict_fn: PredictFn,
    *,
    max_empty_slices: int | None,
    merge: str | MergeRule,
    threshold: float,
    batch_fronts: bool,
    max_batch_size: int | None,
    keep_probability: bool,
    connect_tolerance: int | None = None,
    min_area_ratio: float | None = None,
    max_area_ratio: float | None = None,
    max_intensity_shift: float | None = None,
) -> PropagationResult:
    """:func:`propagate` on inputs its callers have validated already (e.g. the inferer, which checks them itself).

    Args:
        img: ``(H, W, D)`` tensor as returned by :func:`~common.propagation.validation.validate_image` (3D, real,
            finite); not modified.
        masks: ``{k: (H, W) bool mask}`` on ``img``'s device as returned by
            :func:`~common.propagation.validation.validate_slice_annotation` (in range, non-empty), in annotation
            order; not modified.
        predict_fn, max_empty_slices, merge, threshold, batch_fronts, max_batch_size, keep_probability,
        connect_tolerance, min_area_ratio, max_area_ratio, max_intensity_shift: as for :func:`propagate` (here the
            continuity filter and the stops default to off); the numeric options already checked by
            :func:`~common.propagation.validation.validate_propagation_options`.
    """
    rule = get_merge_rule(merge)
    dtype = img.dtype if img.is_floating_point() else torch.float32
    height, width, depth = img.shape
    volume = _slice_major(img, dtype)  # (D, H, W): slice t is the contiguous volume[t]
    batch_size = (max_batch_size or len(masks) * 2) if batch_fronts else 1

    ordered = sorted(masks)
    fronts: list[_Front] = []
    for s in masks:  # order given
        below, above = _neighbours(ordered, s)
        prior = masks[s].to(dtype)
        for direction, neighbour in ((-1, below), (1, above)):
            limit = rule.reach(s, neighbour, direction, depth)
            edge = depth - 1 if direction > 0 else 0
            if neighbour is not None:  # never cross the neighbouring user slice, whatever the rule says
                limit = min(limit, neighbour - 1) if direction > 0 else max(limit, neighbour + 1)
            limit = min(max(limit, 0), depth - 1)
            steps = max(0, (limit - s) * direction)
            fronts.append(_Front(s, direction, steps, prior, "edge" if limit == edge else "limit"))

    # rows 0..D-1: the up fronts' predictions of slices 0..D-1, rows D..2D-1: the down fronts'; rows no front
    # writes (or whose slice a front dropped) are zeroed after the propagation (no full-size memset)
    prob_rows = torch.empty((2 * depth, height, width), dtype=dtype, device=img.device)
    rule_stop = StopRule(
        max_empty_slices, connect_tolerance is not None, min_area_ratio, max_area_ratio, max_intensity_shift
    )
    # per user slice: the median intensity inside the user's mask (the reference of the intensity-shift stop)
    references: dict[int, float] = {}
    if max_intensity_shift is not None:
        references = {k: float(volume[k][m].median()) for k, m in masks.items()}
    active = [f for f in fronts if f.max_steps > 0]
    n_calls = 0
    while active:
        targets = [f.next_slice for f in active]
        # one copy for the whole batch: (image slice, prior) of every front, contiguous (B, 2, H, W)
        x = torch.stack([t for f, k in zip(active, targets, strict=True) for t in (volume[k], f.prior)])
        x = x.view(len(active), 2, height, width)
        # the priors as bool masks, taken before predict_fn sees x (it may scribble over its input)
        prior_masks = x[:, 1] > 0.5 if rule_stop.needs_readback else None  # (the filter implies a readback)
        foreground_chunks, stats_chunks, median_chunks = [], [], []
        for start in range(0, len(active), batch_size):
            chunk = x[start : start + batch_size]
            prob = _predict(predict_fn, chunk, dtype)
            n_calls += 1
            raw = prob > threshold
            foreground = raw
            if connect_tolerance is not None:
                assert prior_masks is not None
                foreground = connected_to_prior(raw, prior_masks[start : start + batch_size], connect_tolerance)
                prob = prob.masked_fill(raw & ~foreground, 0)  # removed components: probability 0 too
            for i in range(prob.shape[0]):  # per-row copies: on CPU faster than one index_copy_
                front, t = active[start + i], targets[start + i]
                prob_rows[t if front.direction > 0 else depth + t] = prob[i]
            foreground_chunks.append(foreground)
            if max_intensity_shift is not None:
                # from the volume, not from ``chunk``: predict_fn may have written over its input
                median_chunks.append(_masked_medians(volume[targets[start : start + batch_size]], foreground))
            if prior_masks is not None:  # per front: raw non-empty, new area, prior area
                stats_chunks.append(
                    torch.stack(
                        (
                            raw.flatten(1).any(1).to(torch.int64),
                            foreground.flatten(1).sum(1),
                            prior_masks[start : start + batch_size].flatten(1).sum(1),
                        ),
                        dim=1,
                    )
                )
        foreground = foreground_chunks[0] if len(foreground_chunks) == 1 else torch.cat(foreground_chunks)
        priors = foreground.to(dtype)  # the next step's priors, (B, H, W)
        stats: list[list[int]] = []
        medians: list[float] = []
        if stats_chunks:  # the one host sync of a step, only when a stop rule needs it
            table = torch.cat(stats_chunks)
            if median_chunks:  # the medians ride along in the same read (areas are exact in float64)
                table = torch.cat((table.double(), torch.cat(median_chunks).double()[:, None]), dim=1)
            rows = table.tolist()
            stats = [[int(v) for v in row[:3]] for row in rows]
            medians = [row[3] for row in rows] if median_chunks else []
        still_active = []
        for i, front in enumerate(active):
            front.prior = priors[i]
            if stats:
                raw_nonempty, area_new, area_prior = stats[i]
                shift = abs(medians[i] - references[front.source]) if medians and area_new > 0 else None
                outcome = rule_stop.decide(bool(raw_nonempty), area_new, area_prior, front.empty_run, shift)
                front.empty_run = outcome.empty_run
                if outcome.keep:
                    front.n_predicted += 1
                else:
                    front.n_dropped += 1
                if outcome.stop is not None:
                    front.stop = outcome.stop
                    continue
            else:
                front.n_predicted += 1
            if front.n_predicted < front.max_steps:
                still_active.append(front)
        active = still_active

    records = tuple(f.record() for f in fronts)
    ctx = _merge_context(records, list(masks), depth)
    w_up, w_down = rule.weights(ctx)
    for name, w in (("w_up", w_up), ("w_down", w_down)):
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (depth,):
            raise ValueError(
                f"merge rule {rule!r} returned {name} of shape {getattr(w, 'shape', None)}, not ({depth},)"
            )
    _zero_unreached(prob_rows[:depth], ctx.reached_up)
    _zero_unreached(prob_rows[depth:], ctx.reached_down)
    # merged = w_up * p_up + w_down * p_down, in place to avoid another volume-sized temporary
    merged = prob_rows[:depth].mul_(w_up.to(device=img.device, dtype=dtype).view(-1, 1, 1))
    merged.addcmul_(prob_rows[depth:], w_down.to(device=img.device, dtype=dtype).view(-1, 1, 1))
    mask = merged > threshold
    for s, m in masks.items():
        mask[s] = m
        merged[s] = m.to(dtype)

    source, provenance_direction = _provenance(ctx, w_up, w_down)
    logger.debug(
        "propagated %d user slices with %s: %d predictions in %d calls; fronts %s",
        len(masks),
        rule,
        sum(r.n_predicted + r.n_dropped for r in records),
        n_calls,
        [(r.source, r.direction, r.n_predicted, r.stop) for r in records],
    )
    return PropagationResult(
        mask=_depth_last(mask),
        probability=_depth_last(merged) if keep_probability else None,
        source=source,
        direction=provenance_direction,
        weights=torch.stack((w_up, w_down), dim=1).float(),
        reached=torch.stack((ctx.reached_up, ctx.reached_down), dim=1),
        fronts=records,
        n_calls=n_calls,
        merge=rule,
    )


def _zero_unreached(prob: torch.Tensor, reached: torch.Tensor) -> None:
    """Zero the slices ``prob[k]`` of a ``(D, H, W)`` buffer that no front of its direction predicted.

    Args:
        prob: one direction's ``(D, H, W)`` probability rows, written only where ``reached``.
        reached: bool ``(D,)`` CPU tensor; its runs of ``False`` are zeroed, one ``zero_`` per run.
    """
    start = None
    for k, hit in enumerate([*reached.tolist(), True]):
        if not hit and start is None:
            start = k
        elif hit and start is not None:
            prob[start:k].zero_()
            start = None


def _merge_context(records: tuple[FrontRecord, ...], order: list[int], depth: int) -> MergeContext:
    """Build the per-slice :class:`MergeContext` from the user slices and what each front predicted."""
    lower = torch.full((depth,), -1, dtype=torch.int64)
    upper = torch.full((depth,), -1, dtype=torch.int64)
    is_user = torch.zeros(depth, dtype=torch.bool)
    ordered = sorted(order)
    for s in ordered:  # ascending: later (higher) user slices overwrite `lower` above them
        lower[s + 1 :] = s
        is_user[s] = True
    for s in reversed(ordered):
        upper[:s] = s
    reached_up = torch.zeros(depth, dtype=torch.bool)
    reached_down = torch.zeros(depth, dtype=torch.bool)
    for r in records:
        if r.n_predicted:
            lo, hi = sorted((r.source + r.direction, r.source + r.direction * r.n_predicted))
            (reached_up if r.direction > 0 else reached_down)[lo : hi + 1] = True
    return MergeContext(tuple(order), lower, upper, reached_up, reached_down, is_user)


def _provenance(ctx: MergeContext, w_up: torch.Tensor, w_down: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-slice (source user slice, direction) of the dominant front that predicted each slice."""
    e_up = torch.where(ctx.reached_up, w_up.float(), 0.0).tolist()
    e_down = torch.where(ctx.reached_down, w_down.float(), 0.0).tolist()
    lower, upper, is_user = ctx.lower.tolist(), ctx.upper.tolist(), ctx.is_user.tolist()
    source: list[int] = []
    direction: list[int] = []
    for k in range(ctx.depth):
        if is_user[k]:
            source.append(k)
            direction.append(0)
        elif e_up[k] > 0 and e_up[k] >= e_down[k]:
            source.append(lower[k])
            direction.append(1)
        elif e_down[k] > 0:
            source.append(upper[k])
            direction.append(-1)
        else:
            source.append(-1)
            direction.append(0)
    return tuple(source), tuple(direction)
