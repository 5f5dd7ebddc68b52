"""Merge rules: how the propagations started from several user slices combine into one segmentation.

Geometry. Let the user slices along the propagation axis be ``u_1 < u_2 < ... < u_n`` (sorted by index). From each
user slice the engine runs two *fronts*: one towards higher slice indices ("up", direction ``+1``) and one towards
lower indices ("down", direction ``-1``). A front never crosses another user slice, so a non-user slice ``k`` can be
predicted by at most two fronts: the up front of ``lower[k]`` (the nearest user slice below ``k``) and the down front
of ``upper[k]`` (the nearest user slice above ``k``). A merge rule decides

1. :meth:`MergeRule.reach`: how far each front may go (the next user slice, or the midpoint, ...), and
2. :meth:`MergeRule.weights` (the one abstract hook): per slice ``k``, the weights ``w_up[k]``, ``w_down[k]`` of
   the two candidate predictions. The merged probability is ``w_up * p_up + w_down * p_down`` where a front that did
   not predict slice ``k`` (it stopped earlier, or was never meant to reach it) contributes probability 0.

A front stops early (see :mod:`common.propagation.stopping`) when nothing connected to its prior is left, after
``max_empty_slices`` consecutive empty predictions, or when the area or the intensity inside the mask changes too much
(that last slice dropped); its "not predicted" slices are then treated as empty (probability 0), which is what it would
keep predicting from an empty prior.

Rules (select with :func:`get_merge_rule` by name, or pass an instance):

- ``"overwrite"`` (:class:`OverwriteMerge`), the thesis' evaluation protocol: user slices are processed in the order
  they are given (e.g. the order of corrections; the first given is the oldest). The propagation from a later user
  slice overwrites earlier results on every slice it reached, in both directions, until it stopped (at the next user
  slice, the volume edge, or where a stop rule ended it). In a gap between two user slices the later
  one's front wins wherever it got to; the earlier one's result survives only beyond where the later front stopped.
  Fronts never cross a user slice: past it, that user slice's own propagation is authoritative.
- ``"nearest"`` (:class:`NearestMerge`, default): every slice takes the prediction propagated from its nearest user
  slice, so each front only runs to the midpoint between its user slice and the neighbouring one (to the volume
  edge / its stop beyond the outermost user slices). Ties (a slice exactly halfway) go to the *lower* user slice
  (``tie="lower"``, its up front reaches the midpoint) or are averaged (``tie="average"``: both fronts predict the
  midpoint, weights 0.5 / 0.5). The cheapest rule: every slice is predicted at most once.
- ``"fusion"`` (:class:`FusionMerge`): between two user slices ``a < b`` both fronts cross the whole gap and their
  probabilities are fused with ``w_up = (b - k) / (b - a)``, ``w_down = (k - a) / (b - a)``; these are both the
  normalised inverse-distance weights (``1/(k-a)`` : ``1/(b-k)``) and linear interpolation in position. Beyond the
  outermost user slices it behaves like nearest. Costs up to twice the predictions of ``"nearest"`` in gaps.

To add a rule, subclass :class:`MergeRule`, set ``name`` and implement :meth:`~MergeRule.weights` (optionally
:meth:`~MergeRule.reach`); the engine does the rest, so rules differ only in these few lines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

__all__ = [
    "MERGE_RULES",
    "FusionMerge",
    "MergeContext",
    "MergeRule",
    "NearestMerge",
    "OverwriteMerge",
    "get_merge_rule",
]


@dataclass(frozen=True)
class MergeContext:
    """Per-slice facts a merge rule decides on. All tensors are 1D ``(D,)`` CPU tensors indexed by slice ``k``.

    Attributes:
        order: the user slice indices in the order they were given (annotation order, oldest first).
        lower: int64, the nearest user slice index ``< k``, or -1 if there is none.
        upper: int64, the nearest user slice index ``> k``, or -1 if there is none.
        reached_up: bool, whether the up front of ``lower[k]`` predicted slice ``k`` (empty predictions included).
        reached_down: bool, whether the down front of ``upper[k]`` predicted slice ``k``.
        is_user: bool, whether ``k`` is a user slice (the engine ignores the weights there).
    """

    order: tuple[int, ...]
    lower: torch.Tensor
    upper: torch.Tensor
    reached_up: torch.Tensor
    reached_down: torch.Tensor
    is_user: torch.Tensor

    @property
    def depth(self) -> int:
        """Number of slices ``D`` along the propagation axis."""
        return int(self.lower.shape[0])

    def rank(self, slices: torch.Tensor) -> torch.Tensor:
        """Position in :attr:`order` of each user slice index in ``slices`` (int64; -1 where the index is -1)."""
        table = torch.full((self.depth + 1,), -1, dtype=torch.int64)  # last entry serves index -1
        for position, s in enumerate(self.order):
            table[s] = position
        return table[slices]


class MergeRule(ABC):
    """Strategy deciding how far fronts run and how the (at most two) predictions of each slice are weighted."""

    name: ClassVar[str] = "custom"

    def reach(self, source: int, neighbour: int | None, direction: int, depth: int) -> int:
        """Last slice index (inclusive) the front from user slice ``source`` in ``direction`` may predict.

        Args:
            source: the user slice the front starts from.
            neighbour: the next user slice in ``direction``, or ``None`` if there is none.
            direction: +1 (towards higher indices) or -1.
            depth: number of slices ``D``.

        Returns:
            The default: the slice just before ``neighbour`` (the whole gap), or the volume edge. A value not beyond
            ``source`` in ``direction`` means the front does not run.
        """
        if neighbour is None:
            return depth - 1 if direction > 0 else 0
        return neighbour - direction

    @abstractmethod
    def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(w_up, w_down)``: float ``(D,)`` weights of the up front of ``lower[k]`` and the down front of
        ``upper[k]`` for each slice ``k``. Weights at user slices and of non-existent fronts are ignored."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class OverwriteMerge(MergeRule):
    """Later user slices (in the order given) overwrite earlier results wherever their fronts reached."""

    name = "overwrite"

    def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The reached front whose user slice was given later wins; a lone reached front wins alone."""
        up_is_later = ctx.rank(ctx.lower) > ctx.rank(ctx.upper)
        w_up = ctx.reached_up & (~ctx.reached_down | up_is_later)
        w_down = ctx.reached_down & ~w_up
        return w_up.float(), w_down.float()


class NearestMerge(MergeRule):
    """Every slice takes the prediction from its nearest user slice; fronts stop at the midpoint.

    Args:
        tie: slices exactly halfway between two user slices go to the ``"lower"`` user slice, or get the
            ``"average"`` of both predictions (weights 0.5 / 0.5).
    """

    name = "nearest"

    def __init__(self, tie: Literal["lower", "average"] = "lower") -> None:
        if tie not in ("lower", "average"):
            raise ValueError(f"tie must be 'lower' or 'average', got {tie!r}.")
        self.tie = tie

    def reach(self, source: int, neighbour: int | None, direction: int, depth: int) -> int:
        """Up to the midpoint with ``neighbour`` (the tie slice goes to the lower source, or to both)."""
        if neighbour is None:
            return super().reach(source, neighbour, direction, depth)
        total = source + neighbour
        if direction > 0:  # source is the lower user slice: it owns the exact midpoint in both tie modes
            return total // 2
        return (total + 1) // 2 if self.tie == "average" else total // 2 + 1

    def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """1 for the nearer user slice's front (0.5 each at an averaged tie), computed from distances."""
        k = torch.arange(ctx.depth)
        has_lower, has_upper = ctx.lower >= 0, ctx.upper >= 0
        d_lower = torch.where(has_lower, k - ctx.lower, ctx.depth + 1)
        d_upper = torch.where(has_upper, ctx.upper - k, ctx.depth + 1)
        tie = has_lower & has_upper & (d_lower == d_upper)
        w_up = (has_lower & (d_lower < d_upper)).float()
        w_down = (has_upper & (d_upper < d_lower)).float()
        if self.tie == "average":
            w_up[tie], w_down[tie] = 0.5, 0.5
        else:
            w_up[tie] = 1.0
        return w_up, w_down

    def __repr__(self) -> str:
        return f"NearestMerge(tie={self.tie!r})"


class FusionMerge(MergeRule):
    """Both fronts cross each gap; probabilities are blended linearly in position (= inverse-distance weights)."""

    name = "fusion"

    def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``w_up = (upper - k) / (upper - lower)`` between two user slices; 1 for a lone neighbour."""
        k = torch.arange(ctx.depth, dtype=torch.float64)
        has_lower, has_upper = ctx.lower >= 0, ctx.upper >= 0
        both = has_lower & has_upper
        gap = (ctx.upper - ctx.lower).clamp(min=1).double()
        w_up = torch.where(both, (ctx.upper.double() - k) / gap, has_lower.double())
        w_down = torch.where(both, (k - ctx.lower.double()) / gap, has_upper.double())
        return w_up.float(), w_down.float()


#: Merge rules by name.
MERGE_RULES: dict[str, type[MergeRule]] = {
    OverwriteMerge.name: OverwriteMerge,
    NearestMerge.name: NearestMerge,
    FusionMerge.name: FusionMerge,
}


def get_merge_rule(merge: str | MergeRule) -> MergeRule:
    """Return a :class:`MergeRule` instance from its name (``"overwrite"``, ``"nearest"``, ``"fusion"``) or as is.

    Raises:
        ValueError: unknown name or wrong type.
    """
    if isinstance(merge, MergeRule):
        return merge
    if isinstance(merge, str) and merge in MERGE_RULES:
        return MERGE_RULES[merge]()
    raise ValueError(f"merge must be one of {sorted(MERGE_RULES)} or a MergeRule instance, got {merge!r}.")
