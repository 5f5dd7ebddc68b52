"""DeepGrow's simulated user: the training click rule, applied slice by slice (2D) or to the volume (3D)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from common.interaction.robot import RobotUser
from common.interaction.state import InteractionState

__all__ = ["ErrorClickRobot"]

logger = logging.getLogger(__name__)


class ErrorClickRobot(RobotUser):
    """Clicks where the training simulation would click: DeepGrow's automated testing uses the same click simulator as
    training (Sakinis et al., arXiv:1903.08205, 2019).

    Each round: false negatives and false positives of the current prediction; a foreground click if the FN area is
    at least the FP area, else a background click; the voxel drawn with probability ``~ exp(d) - 1`` (``d`` the
    chamfer distance inside the chosen error region; see :func:`common.transforms.clicks.simulate_error_clicks`).

    - ``per_slice=True`` (the paper's 2D protocol, "N clicks per slice and organ"): one click on *every* slice
      along ``axis`` that contains the structure, with the error measured on that slice; a round counts as one
      interaction, so ``n_interactions`` is the number of clicks per slice.
    - ``per_slice=False`` (3D): one click per round in the whole volume.

    Draws come from ``numpy.random.default_rng(seed)``, re-seeded at every :meth:`reset`, so a case gets the same
    clicks whatever was evaluated before it. The user stops (``None``) when no slice has an error left.

    Args:
        per_slice: click on each slice of the structure (2D models) or once in the volume (3D models).
        axis: slice axis of the ``(H, W, D)`` arrays as stored; ``None`` (default): the axial axis of each case, found
            from its affine (2 without an affine).
        seed: seed of the draws.

    Example:
        >>> robot = ErrorClickRobot(per_slice=True, axis=2, seed=0)
        >>> robot.reset(image, label, spacing=(1.0, 1.0, 2.0))
        >>> state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
        >>> len(state.foreground) == int(label.any(axis=(0, 1)).sum())  # one click per slice of the structure
        True
    """

    name = "error_click"

    def __init__(self, per_slice: bool = True, axis: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
            raise ValueError(f"axis must be 0, 1, 2 or None (the axial axis), got {axis!r}")
        self.per_slice = bool(per_slice)
        self.axis = axis
        self.slice_axis = 2 if axis is None else axis
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, image: np.ndarray, label: np.ndarray, spacing: Any, affine: np.ndarray | None = None) -> None:
        """Store the case (see :meth:`RobotUser.reset`), find its slice axis and re-seed the draws."""
        super().reset(image, label, spacing, affine)
        self.slice_axis = self.resolve_axis(self.axis)
        self._rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        """Name and parameters (without the generator and the per-case slice axis)."""
        return {k: v for k, v in super().config().items() if k not in ("_rng", "slice_axis")}

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        """One click per slice of the structure (or one in the volume); ``None`` when nothing is left to correct.

        Raises:
            RuntimeError: if :meth:`reset` was not called.
            ValueError: label/prediction shapes differ or do not match the case.
        """
        from common.transforms.clicks import simulate_error_clicks

        if self.label is None:
            raise RuntimeError(f"{type(self).__name__}.reset(image, label, spacing) must be called first.")
        lab = np.asarray(label) > 0
        pred = np.asarray(prediction) > 0
        if lab.shape != pred.shape or lab.shape != self.label.shape:
            raise ValueError(
                f"label {lab.shape} and prediction {pred.shape} must match the case given to reset() {self.label.shape}"
            )
        if self.per_slice and lab.ndim == 3:
            lab_s, pred_s = np.moveaxis(lab, self.slice_axis, 0), np.moveaxis(pred, self.slice_axis, 0)
            slices = np.flatnonzero(lab_s.reshape(lab_s.shape[0], -1).any(axis=1))
            batch_lab, batch_pred = lab_s[slices][:, None], pred_s[slices][:, None]
        else:
            slices = np.zeros(1, dtype=np.int64)
            batch_lab, batch_pred = lab[None, None], pred[None, None]
        uniform = torch.from_numpy(self._rng.random(len(slices)))
        clicks = simulate_error_clicks(
            torch.from_numpy(np.ascontiguousarray(batch_lab)),
            torch.from_numpy(np.ascontiguousarray(batch_pred)),
            uniform,
            depth_backend="scipy",
        )
        valid = clicks.valid.numpy()
        if not valid.any():
            return None
        coords = clicks.coordinates(tuple(batch_lab.shape[2:])).numpy()
        new = state.copy()
        n_fg = n_bg = 0
        for row in np.flatnonzero(valid):
            point = [int(v) for v in coords[row]]
            if self.per_slice and lab.ndim == 3:
                point.insert(self.slice_axis, int(slices[row]))
            if bool(clicks.positive[row]):
                new.foreground.append(tuple(point))
                n_fg += 1
            else:
                new.background.append(tuple(point))
                n_bg += 1
        new.n_interactions += 1
        new.history.append(
            {
                "type": "click_round",
                "foreground_clicks": n_fg,
                "background_clicks": n_bg,
                "fn_voxels": int(clicks.fn_voxels.sum()),
                "fp_voxels": int(clicks.fp_voxels.sum()),
            }
        )
        logger.debug("round %d: %d foreground, %d background click(s)", new.n_interactions, n_fg, n_bg)
        return new
