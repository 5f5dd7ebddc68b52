"""Robot users: deterministic simulations of an annotator, for evaluation (and training-time simulation).

nnU-Net-style: :class:`RobotUser` does the bookkeeping (``reset`` validates and stores the case) and each variant
overrides the one hook :meth:`RobotUser.next_interaction`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.interaction.state import InteractionState

__all__ = ["RobotUser", "error_masks"]


def error_masks(label: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-negative and false-positive masks of a binary prediction.

    Args:
        label: ground truth, shape ``(H, W[, D])``; values > 0 are foreground.
        prediction: prediction, same shape; values > 0 are foreground.

    Returns:
        ``(fn, fp)``: bool arrays, ``fn = label & ~prediction`` (missed foreground), ``fp = prediction & ~label``.

    Raises:
        ValueError: if the shapes differ.
    """
    lab = np.asarray(label) > 0
    pred = np.asarray(prediction) > 0
    if lab.shape != pred.shape:
        raise ValueError(f"label and prediction must have the same shape, got {lab.shape} and {pred.shape}.")
    return lab & ~pred, pred & ~lab


class RobotUser(ABC):
    """Base class of a simulated user that adds one interaction per round from the current errors.

    Usage per case and structure: call :meth:`reset` once, then :meth:`next_interaction` once per round with the
    latest prediction (all zeros before the first round). Variants override only :meth:`next_interaction`; they
    may read ``self.image``, ``self.label`` and ``self.spacing`` set by :meth:`reset`.

    Attributes:
        name: short identifier written into result files.
        image: the ``(H, W[, D])`` image of the current case (after :meth:`reset`).
        label: its binary ground truth, bool, same shape.
        spacing: voxel size in mm along each array axis.
        affine: the ``(4, 4)`` voxel-to-world affine of the case (``None`` if not given): slice-wise robots find the
            axial axis of the stored array from it.
    """

    name: str = "robot"

    def __init__(self) -> None:
        self.image: np.ndarray | None = None
        self.label: np.ndarray | None = None
        self.spacing: tuple[float, ...] = ()
        self.affine: np.ndarray | None = None

    def reset(
        self, image: np.ndarray, label: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None
    ) -> None:
        """Start a new case/structure.

        Args:
            image: image array, shape ``(H, W[, D])``.
            label: binary ground truth of the structure, same shape (values > 0 are foreground).
            spacing: voxel size in mm along each array axis, ``len(spacing) == label.ndim``.
            affine: ``(4, 4)`` voxel-to-world affine of the image as stored (3D only), or ``None``.

        Raises:
            ValueError: shape mismatch, unsupported dimensionality, a bad spacing or a bad affine.
        """
        lab = np.asarray(label)
        img = np.asarray(image)
        if lab.ndim not in (2, 3):
            raise ValueError(f"label must be 2D or 3D (H, W[, D]) without channels, got shape {lab.shape}.")
        if img.shape != lab.shape:
            raise ValueError(f"image and label must have the same shape, got {img.shape} and {lab.shape}.")
        sp = tuple(float(s) for s in spacing)
        if len(sp) != lab.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing must hold {lab.ndim} finite values > 0 (mm), got {tuple(spacing)}.")
        if affine is not None:
            aff = np.asarray(affine, dtype=np.float64)
            if aff.shape != (4, 4) or not np.isfinite(aff).all():
                raise ValueError(f"affine must be a finite (4, 4) array, got shape {aff.shape}.")
            affine = aff
        self.image = img
        self.label = lab > 0
        self.spacing = sp
        self.affine = affine

    def resolve_axis(self, axis: int | None) -> int:
        """The slice axis to use for the current case: ``axis`` if given, else the stored array axis that runs
        I-S in the case's affine (2 when the case has no affine)."""
        from common.data.geometry import axial_axis

        return axis if axis is not None else axial_axis(self.affine)

    @abstractmethod
    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        """The user's next interaction given the current prediction.

        Args:
            label: binary ground truth ``(H, W[, D])`` (the same as given to :meth:`reset`).
            prediction: current binary prediction, same shape (all zeros before the first round).
            state: everything given so far. Implementations must NOT modify it.

        Returns:
            A new state (``state.copy()`` plus the interaction, ``n_interactions`` incremented and one entry
            appended to ``history``), or ``None`` when the user is done (nothing left to correct).
        """

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description of the robot (name and parameters), written next to results."""
        params = {k: v for k, v in vars(self).items() if k not in ("image", "label", "spacing", "affine")}
        return {"name": self.name, "class": type(self).__name__, **params}
