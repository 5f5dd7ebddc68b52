"""When a propagation front stops early: the structure ended, the predicted area went wrong, or the prediction moved
onto tissue of another intensity.

A front (see :mod:`common.propagation.engine`) predicts one slice per step. After each step :class:`StopRule` looks at
three numbers of the new slice, read back to the host once per step for all fronts together:

- whether the raw prediction (``probability > threshold``) has any foreground,
- ``area_new``: the foreground area of the new mask *after* the continuity filter (see
  :mod:`common.propagation.continuity`; without the filter, the raw area),
- ``area_prior``: the area of the prior it was predicted from (the user's mask or the front's previous new mask),
- ``intensity_shift``: ``|median image intensity inside the new mask - median inside the user's mask on the front's
  source slice|``, in the units the network sees (after the bundle's normalisation; ``ct_window``: 1 = 500 HU),

and decides, in this order:

1. **Empty** (``area_new == 0``). With the continuity filter on, the front stops at once: every later slice would be
   filtered to empty too (nothing can connect to an empty prior). The reason is ``"disconnected"`` if the raw
   prediction had foreground (all of it unconnected to the prior) and ``"empty"`` if it had none. Without the filter,
   the legacy rule applies: the front stops (``"empty"``) after ``max_empty_slices`` consecutive empty slices
   (``None``: never). Either way the empty slices stay part of the output, as empty (they are what the front
   predicted).
2. **Area ratio** (both areas > 0): ``area_new < min_area_ratio * area_prior`` stops with ``"area_collapse"``,
   ``area_new > max_area_ratio * area_prior`` with ``"area_explosion"`` (``None`` disables each). The slice that
   triggered the stop is **dropped**: it is the leak (or the loss) the rule detected, so it is not part of the output
   (its probability is 0 and the front is recorded as not having reached it, so another front's prediction of that
   slice, if any, is used as if this front had stopped just before it).
3. **Intensity shift** (``area_new > 0``): ``intensity_shift > max_intensity_shift`` stops with
   ``"intensity_shift"`` and drops the slice, like an area stop. A structure keeps its intensity from slice to slice;
   a front that slides onto a neighbour of another intensity (the right kidney onto the liver, an organ into fat) shows
   it in the median long before the area changes much. Measured on the phantoms (``bench/propagation_leak.py``):
   connectivity and area rules barely cut the leak (12.97 -> 12.53 slices beyond the structure), this rule does.

A front that does not stop early ends at the merge rule's limit (``"limit"``) or at the volume edge (``"edge"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["StepOutcome", "StopReason", "StopRule"]

#: Why a front stopped; see the module docstring.
StopReason = Literal["edge", "limit", "empty", "disconnected", "area_collapse", "area_explosion", "intensity_shift"]


@dataclass(frozen=True)
class StepOutcome:
    """The decision for one front after one step.

    Attributes:
        stop: the reason to stop now, or ``None`` to go on (if the front has steps left).
        keep: whether the new slice is part of the output (``False`` for an area-ratio or intensity-shift stop).
        empty_run: the updated count of consecutive empty slices of the front.
    """

    stop: StopReason | None
    keep: bool
    empty_run: int


@dataclass(frozen=True)
class StopRule:
    """The early-stop options of a propagation (checked by
    :func:`~common.propagation.validation.validate_propagation_options`).

    Attributes:
        max_empty_slices: without the continuity filter, stop after this many consecutive empty slices (``None``:
            never).
        filtered: whether the continuity filter is on (``connect_tolerance`` is not ``None``): then the first empty
            slice stops the front.
        min_area_ratio: stop (dropping the slice) when ``area_new < min_area_ratio * area_prior``; ``None``: never.
        max_area_ratio: stop (dropping the slice) when ``area_new > max_area_ratio * area_prior``; ``None``: never.
        max_intensity_shift: stop (dropping the slice) when the median intensity inside the new mask differs from the
            source slice's by more than this; ``None``: never.
    """

    max_empty_slices: int | None
    filtered: bool
    min_area_ratio: float | None
    max_area_ratio: float | None
    max_intensity_shift: float | None = None

    @property
    def needs_readback(self) -> bool:
        """Whether any rule needs the per-step numbers on the host (one synchronisation per step)."""
        return (
            self.max_empty_slices is not None
            or self.filtered
            or self.min_area_ratio is not None
            or self.max_area_ratio is not None
            or self.max_intensity_shift is not None
        )

    def decide(
        self,
        raw_nonempty: bool,
        area_new: int,
        area_prior: int,
        empty_run: int,
        intensity_shift: float | None = None,
    ) -> StepOutcome:
        """Apply the rules (module docstring) to one front's new slice.

        Args:
            raw_nonempty: whether the raw prediction had foreground (before the continuity filter).
            area_new: foreground pixels of the new (filtered) mask.
            area_prior: foreground pixels of the prior it was predicted from.
            empty_run: consecutive empty slices of the front before this one.
            intensity_shift: ``|median inside the new mask - median inside the source slice's user mask|``
                (``None``: not measured).
        """
        if area_new == 0:
            run = empty_run + 1
            if self.filtered:
                return StepOutcome("disconnected" if raw_nonempty else "empty", True, run)
            if self.max_empty_slices is not None and run >= self.max_empty_slices:
                return StepOutcome("empty", True, run)
            return StepOutcome(None, True, run)
        if area_prior > 0:
            if self.min_area_ratio is not None and area_new < self.min_area_ratio * area_prior:
                return StepOutcome("area_collapse", False, 0)
            if self.max_area_ratio is not None and area_new > self.max_area_ratio * area_prior:
                return StepOutcome("area_explosion", False, 0)
        if (
            self.max_intensity_shift is not None
            and intensity_shift is not None
            and intensity_shift > self.max_intensity_shift
        ):
            return StepOutcome("intensity_shift", False, 0)
        return StepOutcome(None, True, 0)
