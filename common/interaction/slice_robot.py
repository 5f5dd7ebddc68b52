"""Robot user of the slice-propagation protocol: ground-truth slices as corrections, from the middle outwards."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.interaction.robot import RobotUser
from common.interaction.state import InteractionState

__all__ = ["SliceCorrectionRobot", "correction_schedule"]

logger = logging.getLogger(__name__)


def correction_schedule(label: np.ndarray, axis: int = 2, step_fraction: float = 0.1) -> list[int]:
    """Slices a simulated user annotates, in order: the structure's middle slice, then slices at a fixed step of
    ``step_fraction`` of the structure's extent from the middle outwards, alternating up and down
    (``m, m + s, m - s, m + 2s, m - 2s, ...``), keeping only slices that contain the structure.

    This is the evaluation protocol of the slice-propagation thesis (step 10 % of the organ length along the axial
    axis, corrected slices replaced by their ground truth). The thesis does not say in which order the two sides are
    visited; alternating keeps both halves equally served.

    Args:
        label: binary ground truth ``(H, W, D)``.
        axis: slice axis.
        step_fraction: step as a fraction of the extent (first to last non-empty slice, inclusive), in (0, 1].

    Returns:
        slice indices along ``axis``, no repeats, the middle first.

    Raises:
        ValueError: empty label, an axis that is not an axis of the label, or a step fraction outside (0, 1].
    """
    if not 0.0 < step_fraction <= 1.0:
        raise ValueError(f"step_fraction must lie in (0, 1], got {step_fraction}")
    lab = np.asarray(label) > 0
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or not 0 <= axis < lab.ndim:
        raise ValueError(f"axis must be an array axis of the label (0..{lab.ndim - 1}), got {axis!r}")
    present: np.ndarray = np.asarray(lab.any(axis=tuple(i for i in range(lab.ndim) if i != axis)))
    nonempty = np.flatnonzero(present)
    if nonempty.size == 0:
        raise ValueError("the label is empty: there is no structure to annotate")
    first, last = int(nonempty[0]), int(nonempty[-1])
    middle = (first + last + 1) // 2
    if not present[middle]:  # split structures: nearest non-empty slice, lower index on ties
        middle = int(nonempty[np.argmin(np.abs(nonempty - middle))])
    step = max(1, round(step_fraction * (last - first + 1)))
    schedule = [middle]
    for k in range(1, (last - first) // step + 2):
        for candidate in (middle + k * step, middle - k * step):
            if first <= candidate <= last and present[candidate] and candidate not in schedule:
                schedule.append(candidate)
    return schedule


class SliceCorrectionRobot(RobotUser):
    """Annotates the structure's middle slice first, then corrects one slice per round with its ground truth,
    following :func:`correction_schedule`; stops when the schedule is exhausted or the prediction is perfect.

    Args:
        step_fraction: correction step as a fraction of the structure's extent (0.1 in the thesis).
        axis: slice axis of the stored array; ``None`` (default): the axial axis of each case, found from its affine
            (the array axis that runs I-S, whatever order the volume was stored in; 2 without an affine).

    Raises:
        ValueError: ``step_fraction`` outside (0, 1] or ``axis`` not 0, 1, 2 or None.
    """

    name = "slice_correction"

    def __init__(self, step_fraction: float = 0.1, axis: int | None = None) -> None:
        super().__init__()
        if not 0.0 < step_fraction <= 1.0:
            raise ValueError(f"step_fraction must lie in (0, 1], got {step_fraction}")
        if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
            raise ValueError(f"axis must be 0, 1, 2 (an axis of the (H, W, D) volume) or None, got {axis!r}")
        self.step_fraction = step_fraction
        self.axis = axis
        self.slice_axis = 2 if axis is None else axis
        self._schedule: list[int] = []

    def config(self) -> dict[str, Any]:
        """Name and parameters (the per-case schedule excluded)."""
        return {"name": self.name, "class": type(self).__name__, "step_fraction": self.step_fraction, "axis": self.axis}

    def reset(
        self, image: np.ndarray, label: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None
    ) -> None:
        """Store the case, find its slice axis and compute its correction schedule (see :meth:`RobotUser.reset`)."""
        super().reset(image, label, spacing, affine)
        if np.asarray(label).ndim != 3:
            raise ValueError(f"slice corrections need a 3D label (H, W, D), got shape {np.asarray(label).shape}")
        self.slice_axis = self.resolve_axis(self.axis)
        self._schedule = correction_schedule(label, self.slice_axis, self.step_fraction)

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        """Add the next scheduled ground-truth slice; ``None`` when none is left or nothing needs correcting."""
        if self.label is None:
            raise RuntimeError(f"{type(self).__name__}.reset(image, label, spacing) must be called first.")
        lab = np.asarray(label) > 0
        if state.slices and np.array_equal(lab, np.asarray(prediction) > 0):
            return None
        remaining = [k for k in self._schedule if k not in state.slices]
        if not remaining:
            return None
        k = remaining[0]
        new = state.copy()
        if new.slices and new.axis != self.slice_axis:
            raise ValueError(
                f"the state's slices lie along axis {new.axis}, this case's slice axis is {self.slice_axis}"
            )
        new.axis = self.slice_axis
        new.slices[k] = np.take(lab, k, axis=self.slice_axis).astype(np.uint8)
        new.n_interactions += 1
        new.history.append({"type": "slice", "slice": k, "axis": self.slice_axis, "voxels": int(new.slices[k].sum())})
        logger.debug("annotated slice %d (%d voxels)", k, int(new.slices[k].sum()))
        return new
