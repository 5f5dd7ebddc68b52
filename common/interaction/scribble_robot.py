"""BIFSeg's simulated user: a bounding box of the structure first, then scribbles in the largest errors.

BIFSeg (Wang et al., "Interactive Medical Image Segmentation Using Deep Learning With Image-Specific Fine Tuning",
IEEE TMI 2018) takes a bounding box, then optional foreground/background scribbles drawn by a user in the
mis-segmented areas. The paper has no scribble robot (its scribbles come from real users); this one draws what a
user would: one thin stroke through the middle of the largest missed region and one through the largest wrongly
added region, on the slice the user looks at (the axial slice of the stored array).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.interaction.robot import RobotUser, error_masks
from common.interaction.scribbles import largest_component, stroke_in_region
from common.interaction.state import InteractionState

__all__ = ["BoxScribbleRobot"]

logger = logging.getLogger(__name__)


def _margin_range(value: Any, what: str) -> tuple[int, int]:
    """A margin given as an int ``m`` (fixed) or ``(lo, hi)`` (drawn) -> ``(lo, hi)`` ints with ``0 <= lo <= hi``."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if is_int(value):
        lo = hi = int(value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(map(is_int, value)):
        lo, hi = int(value[0]), int(value[1])
    else:
        raise ValueError(f"{what} must be an int or a pair (lo, hi) of ints, got {value!r}.")
    if not 0 <= lo <= hi:
        raise ValueError(f"{what} must satisfy 0 <= lo <= hi, got {value!r}.")
    return lo, hi


class BoxScribbleRobot(RobotUser):
    """Round 1: a bounding box of the structure with a random margin; rounds 2+: one foreground and one background
    scribble per round in the largest errors.

    **Box** (first call, when ``state.box`` is ``None``; one interaction). The tight bounding box of the label,
    widened on each side by its own margin drawn uniformly from the integers ``margin = (lo, hi)`` (BIFSeg trains
    with a random margin of 0 to 10 pixels/voxels; per side, so the box is not centred on the structure, as a
    user's is not), or by ``margin`` itself if it is an int, then clipped to the image. For 3D images the slice
    axis gets ``slice_margin`` instead (slices are usually thicker than pixels). With ``box_dims=2`` on a 3D image
    the box lies on one slice: the label must be non-empty on exactly one slice along the slice axis (a 2D
    evaluation case) and the box spans exactly that slice. On 2D ``(H, W)`` images both axes are in-plane and
    ``box_dims`` plays no role. History entry: ``{"type": "box", "start", "stop", "margin_lo", "margin_hi"}``
    (``margin_*``: the drawn margins per axis before clipping).

    **Scribbles** (later calls). From the false negatives ``FN = label & ~prediction`` and false positives
    ``FP = prediction & ~label``: the largest connected component (full connectivity, 8 in 2D / 26 in 3D; largest
    by voxel count) of each, if it has at least ``min_region`` voxels, gets one stroke: a foreground scribble in
    the FN component, a background scribble in the FP component. In 3D the stroke is drawn on the slice along the
    slice axis where the component's cross-section is largest (the first such slice on ties), as a user scribbles
    on the (axial) slice they see; its geometry is :func:`common.interaction.scribbles.stroke_in_region` (a
    1-voxel-wide 8-connected curve of at most ``max_stroke_length`` voxels through the middle of the region). Voxels
    already scribbled with the other label are never drawn over (they are removed from the region first), so no
    voxel is ever both a foreground and a background scribble; earlier scribbles are kept. Each stroke is one
    interaction with history entry ``{"type": "scribble", "label": "foreground" | "background", "slice": k,
    "axis": a, "voxels": n, "region_voxels": m, "total_voxels": t}`` (``slice``/``axis`` ``None`` on 2D images;
    ``n`` the stroke's voxels, the user's drawing cost; ``m`` the targeted error component's voxels; ``t`` the
    scribbled voxels of both labels so far, equal to ``scribbles_fg_voxels + scribbles_bg_voxels`` of
    :meth:`InteractionState.to_json`). When neither error has a component of ``min_region`` voxels the user is done
    (``None``).

    Scribbles are bool masks of the image's shape in ``state.scribbles_fg`` / ``state.scribbles_bg``. The margins
    are drawn from ``numpy.random.default_rng(seed)``, re-seeded at every :meth:`reset`, so a case gets the same
    box whatever was evaluated before it; the strokes are deterministic.

    Args:
        margin: in-plane box margin in voxels: an int (fixed) or ``(lo, hi)`` (drawn per side, inclusive).
        slice_margin: margin along the slice axis of 3D boxes, same format.
        box_dims: 3 (a 3D box) or 2 (a box on the single slice of a single-slice label).
        axis: slice axis of the stored ``(H, W, D)`` array; ``None`` (default): the axial axis of each case, found
            from its affine (2 without an affine).
        max_stroke_length: maximum voxels per stroke, >= 1.
        min_region: minimum voxels of an error component to get a stroke, >= 1.
        seed: seed of the margin draws.

    Raises:
        ValueError: a bad parameter (the message names it).

    Example:
        >>> robot = BoxScribbleRobot(margin=(0, 10), seed=0)
        >>> robot.reset(image, label, spacing=(1.0, 1.0, 2.0))
        >>> state = robot.next_interaction(label, np.zeros_like(label), InteractionState())  # the box
        >>> state = robot.next_interaction(label, prediction, state)  # scribbles in the largest errors
    """

    name = "box_scribble"

    def __init__(
        self,
        margin: int | Sequence[int] = (0, 10),
        slice_margin: int | Sequence[int] = (0, 2),
        box_dims: int = 3,
        axis: int | None = None,
        max_stroke_length: int = 20,
        min_region: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.margin = _margin_range(margin, "margin")
        self.slice_margin = _margin_range(slice_margin, "slice_margin")
        if isinstance(box_dims, bool) or box_dims not in (2, 3):
            raise ValueError(f"box_dims must be 2 (a box on one slice) or 3 (a 3D box), got {box_dims!r}.")
        if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
            raise ValueError(f"axis must be 0, 1, 2 or None (the axial axis), got {axis!r}.")
        for what, value in (("max_stroke_length", max_stroke_length), ("min_region", min_region)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{what} must be an int >= 1, got {value!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an int, got {seed!r}.")
        self.box_dims = int(box_dims)
        self.axis = axis
        self.max_stroke_length = int(max_stroke_length)
        self.min_region = int(min_region)
        self.seed = int(seed)
        self.slice_axis = 2 if axis is None else axis
        self._rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        """Name and parameters (without the generator and the per-case slice axis); margins as ``[lo, hi]``."""
        params = {k: v for k, v in super().config().items() if k not in ("_rng", "slice_axis")}
        params["margin"] = list(self.margin)
        params["slice_margin"] = list(self.slice_margin)
        return params

    def reset(
        self, image: np.ndarray, label: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None
    ) -> None:
        """Store the case (see :meth:`RobotUser.reset`), find its slice axis and re-seed the margin draws.

        Raises:
            ValueError: as :meth:`RobotUser.reset`; an empty label; with ``box_dims=2`` on a 3D image, a label
                that is not on exactly one slice along the slice axis.
        """
        super().reset(image, label, spacing, affine)
        assert self.label is not None
        if not self.label.any():
            raise ValueError("the label is empty: there is no structure to draw a box around.")
        self.slice_axis = self.resolve_axis(self.axis)
        if self.label.ndim == 3 and self.box_dims == 2:
            other = tuple(a for a in range(3) if a != self.slice_axis)
            slices = np.flatnonzero(self.label.any(axis=other))
            if len(slices) != 1:
                raise ValueError(
                    f"box_dims=2 needs a label on exactly one slice along axis {self.slice_axis} (a 2D case); "
                    f"this label is on {len(slices)} slices ({slices[:5].tolist()}...). Use box_dims=3 for volumes."
                )
        self._rng = np.random.default_rng(self.seed)

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        """The box if ``state`` has none, else one stroke in each of the largest FN / FP regions (``None`` if
        neither has ``min_region`` voxels).

        Raises:
            RuntimeError: if :meth:`reset` was not called.
            ValueError: label/prediction shapes differ or do not match the case; scribble masks of a wrong shape.
        """
        if self.label is None:
            raise RuntimeError(f"{type(self).__name__}.reset(image, label, spacing) must be called first.")
        lab = np.asarray(label) > 0
        pred = np.asarray(prediction) > 0
        if lab.shape != pred.shape or lab.shape != self.label.shape:
            raise ValueError(
                f"label {lab.shape} and prediction {pred.shape} must match the case given to reset() {self.label.shape}"
            )
        if state.box is None:
            return self._box_round(lab, state)
        return self._scribble_round(lab, pred, state)

    def _draw(self, limits: tuple[int, int]) -> int:
        lo, hi = limits
        return int(self._rng.integers(lo, hi + 1))

    def _box_round(self, lab: np.ndarray, state: InteractionState) -> InteractionState:
        """Bounding box of ``lab`` with drawn margins, clipped to the image."""
        coords = np.argwhere(lab)
        if len(coords) == 0:
            raise ValueError("the label is empty: there is no structure to draw a box around.")
        lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
        start, stop, m_lo, m_hi = [], [], [], []
        for a in range(lab.ndim):
            if lab.ndim == 3 and a == self.slice_axis:
                limits = (0, 0) if self.box_dims == 2 else self.slice_margin
            else:
                limits = self.margin
            before, after = self._draw(limits), self._draw(limits)
            m_lo.append(before)
            m_hi.append(after)
            start.append(max(int(lo[a]) - before, 0))
            stop.append(min(int(hi[a]) + after, lab.shape[a]))
        new = state.copy()
        new.box = (tuple(start), tuple(stop))
        if lab.ndim == 3 and not new.slices:
            new.axis = self.slice_axis
        new.n_interactions += 1
        new.history.append({"type": "box", "start": start, "stop": stop, "margin_lo": m_lo, "margin_hi": m_hi})
        logger.debug("box %s -> %s (margins %s / %s)", start, stop, m_lo, m_hi)
        return new

    def _target(self, errors: np.ndarray) -> tuple[np.ndarray, int] | None:
        """Largest component of ``errors`` and its voxel count, or ``None`` if below ``min_region``."""
        if int(errors.sum()) < self.min_region:
            return None
        component = largest_component(errors)
        size = int(component.sum())
        return (component, size) if size >= self.min_region else None

    def _scribble_round(self, lab: np.ndarray, pred: np.ndarray, state: InteractionState) -> InteractionState | None:
        fn, fp = error_masks(lab, pred)
        masks = {}
        for name, existing in (("scribbles_fg", state.scribbles_fg), ("scribbles_bg", state.scribbles_bg)):
            if existing is None:
                masks[name] = np.zeros(lab.shape, dtype=bool)
            elif np.shape(existing) != lab.shape:
                raise ValueError(f"state.{name} has shape {np.shape(existing)}, the image has {lab.shape}.")
            else:
                masks[name] = np.asarray(existing) > 0
        fg, bg = masks["scribbles_fg"], masks["scribbles_bg"]
        entries: list[dict[str, Any]] = []
        for kind, errors, own, other in (("foreground", fn, fg, bg), ("background", fp, bg, fg)):
            target = self._target(errors)
            if target is None:
                continue
            component, size = target
            if lab.ndim == 3:
                a = self.slice_axis
                sections = component.sum(axis=tuple(x for x in range(3) if x != a))
                k: int | None = int(np.argmax(sections))
                index: tuple[Any, ...] = tuple(k if x == a else slice(None) for x in range(3))
            else:
                a, k, index = None, None, (slice(None), slice(None))
            region = component[index] & ~other[index]
            if not region.any():
                continue
            stroke = stroke_in_region(region, self.max_stroke_length)
            own[index] |= stroke
            entries.append(
                {
                    "type": "scribble",
                    "label": kind,
                    "slice": k,
                    "axis": a,
                    "voxels": int(stroke.sum()),
                    "region_voxels": size,
                    "total_voxels": int(np.count_nonzero(fg)) + int(np.count_nonzero(bg)),
                }
            )
            logger.debug("%s scribble of %d voxels on slice %s (region %d voxels)", kind, stroke.sum(), k, size)
        if not entries:
            return None
        new = state.copy()
        new.scribbles_fg, new.scribbles_bg = fg, bg
        new.n_interactions += len(entries)
        new.history.extend(entries)
        return new
