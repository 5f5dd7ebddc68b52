"""The standard deterministic click robot of interactive-segmentation benchmarks."""

from __future__ import annotations

import logging

import numpy as np
from scipy.ndimage import distance_transform_edt

from common.interaction.robot import RobotUser, error_masks
from common.interaction.state import InteractionState

__all__ = ["CentreOfErrorClickRobot", "deepest_click_per_slice", "deepest_voxel"]

logger = logging.getLogger(__name__)


def deepest_voxel(region: np.ndarray, spacing: tuple[float, ...]) -> tuple[tuple[int, ...], float]:
    """The voxel of ``region`` farthest (in mm) from the region's boundary.

    The boundary is every non-region voxel *and* the outside of the array (the array is padded with background
    before the Euclidean distance transform), so a click is never pushed against the image edge. Ties are broken
    by the lowest C-order index, i.e. the lexicographically smallest ``(i, j, k)``.

    Args:
        region: non-empty binary mask ``(H, W[, D])``.
        spacing: voxel size in mm per axis.

    Returns:
        ``(coord, depth_mm)``: the voxel index and its distance in mm to the nearest non-region voxel centre.

    Raises:
        ValueError: if ``region`` is empty.
    """
    mask = np.asarray(region, dtype=bool)
    if not mask.any():
        raise ValueError("region is empty: there is no voxel to click.")
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    depth = distance_transform_edt(padded, sampling=spacing)
    depth = depth[tuple(slice(1, -1) for _ in range(mask.ndim))]
    flat = int(np.argmax(depth))  # first maximum in C order
    coord = tuple(int(v) for v in np.unravel_index(flat, mask.shape))
    return coord, float(depth[coord])


def deepest_click_per_slice(mask: np.ndarray, axis: int = 2) -> list[list[int]]:
    """A user's first clicks on a 3D structure for a 2D click model: the deepest voxel of every slice along ``axis``
    that holds the structure (in-plane pixel units), as ``[i, j, k]`` voxel indices of ``mask``'s array.

    Args:
        mask: binary ``(H, W, D)`` mask of the structure.
        axis: the slice axis of the array (e.g. :func:`common.data.geometry.axial_axis` of the image's affine).

    Raises:
        ValueError: ``mask`` is not 3D or ``axis`` is not one of its axes.
    """
    volume = np.asarray(mask, dtype=bool)
    if volume.ndim != 3 or not 0 <= axis < 3:
        raise ValueError(f"mask must be 3D and axis one of its axes, got shape {volume.shape} and axis {axis!r}")
    clicks = []
    for k in np.flatnonzero(np.moveaxis(volume, axis, 0).any(axis=(1, 2))):
        (i, j), _ = deepest_voxel(np.take(volume, k, axis=axis), (1.0, 1.0))
        point = [int(i), int(j)]
        point.insert(axis, int(k))
        clicks.append(point)
    return clicks


class CentreOfErrorClickRobot(RobotUser):
    """One click per round at the centre of the larger error, the usual evaluation protocol for click methods.

    Each round:

    1. False negatives ``FN = label & ~prediction`` and false positives ``FP = prediction & ~label``.
    2. If both are empty the user is done (``None``). If ``stop_at_dice`` is set and the current Dice reaches it,
       the user is also done (the "NoC@Dice" protocol).
    3. Click type: a *foreground* click if ``|FN| >= |FP|`` (voxel counts, equal to volumes on one grid),
       otherwise a *background* click (DeepGrow's rule, "if the FP area > the FN area -> a background click").
    4. Position: the voxel of the chosen error mask that is farthest from its boundary in mm (maximum of the
       Euclidean distance transform with the image spacing; see :func:`deepest_voxel`). As the distance transform
       is taken over the whole error mask, the click lands in its thickest connected component.

    Before the first round the prediction is empty, so the first click is the deepest voxel inside the label.
    Entirely deterministic. Clicks are ``(i, j, k)`` voxel indices appended to ``state.foreground`` or
    ``state.background``; each click counts as one interaction.

    Args:
        stop_at_dice: optional Dice in ``(0, 1]`` at which the user stops clicking; ``None`` (default) keeps
            clicking while any error remains.

    Example:
        >>> label = np.zeros((16, 16, 16), np.uint8); label[4:9, 4:9, 4:9] = 1
        >>> robot = CentreOfErrorClickRobot()
        >>> robot.reset(label.astype(np.float32), label, spacing=(1.0, 1.0, 1.0))
        >>> state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
        >>> state.foreground  # deepest voxel of the label
        [(6, 6, 6)]
    """

    name = "centre_of_error_click"

    def __init__(self, stop_at_dice: float | None = None) -> None:
        super().__init__()
        if stop_at_dice is not None and not 0.0 < stop_at_dice <= 1.0:
            raise ValueError(f"stop_at_dice must be in (0, 1] or None, got {stop_at_dice}.")
        self.stop_at_dice = stop_at_dice

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        """Add one click at the centre of the larger error; ``None`` if there is nothing (more) to correct.

        Raises:
            RuntimeError: if :meth:`reset` was not called.
            ValueError: if label and prediction shapes differ or do not match the case given to :meth:`reset`.
        """
        if self.label is None:
            raise RuntimeError(f"{type(self).__name__}.reset(image, label, spacing) must be called first.")
        fn, fp = error_masks(label, prediction)
        if fn.shape != self.label.shape:
            raise ValueError(f"label shape {fn.shape} differs from the case given to reset(): {self.label.shape}.")
        n_fn, n_fp = int(fn.sum()), int(fp.sum())
        if n_fn == 0 and n_fp == 0:
            return None
        if self.stop_at_dice is not None:
            lab = np.asarray(label) > 0
            n_tp = int(lab.sum()) - n_fn
            current = 2.0 * n_tp / (2.0 * n_tp + n_fn + n_fp)
            if current >= self.stop_at_dice:
                return None
        kind = "foreground" if n_fn >= n_fp else "background"
        coord, depth = deepest_voxel(fn if kind == "foreground" else fp, self.spacing)
        new = state.copy()
        (new.foreground if kind == "foreground" else new.background).append(coord)
        new.n_interactions += 1
        new.history.append(
            {
                "type": "click",
                "kind": kind,
                "coord": list(coord),
                "depth_mm": depth,
                "fn_voxels": n_fn,
                "fp_voxels": n_fp,
            }
        )
        logger.debug("%s click at %s (depth %.2f mm, FN=%d, FP=%d)", kind, coord, depth, n_fn, n_fp)
        return new
