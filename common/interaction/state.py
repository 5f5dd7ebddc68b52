"""What a (robot or human) user has given so far for one structure of one image."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["InteractionState"]


@dataclass
class InteractionState:
    """Everything any method's user has provided for one structure, accumulated over interaction rounds.

    Coordinates are integer voxel indices ``(i, j, k)`` into the stored ``(H, W, D)`` array (NIfTI voxel axes as
    stored, no channel dimension); ``(i, j)`` for 2D images. Field names follow MONAI Label's request keys
    (``foreground`` / ``background``). A method reads only the fields it understands.

    Args:
        foreground: positive clicks, one tuple of ints per click, in the order they were given.
        background: negative clicks, same format.
        slices: fully annotated slices: slice index along ``axis`` -> binary 2D mask of that slice (shape of the
            image with ``axis`` removed, e.g. ``(H, W)`` for ``axis=2``), as used by slice propagation.
        axis: the array axis the ``slices`` are taken along (2 = axial for our data).
        box: optional bounding box ``(start, stop)``: two tuples of voxel indices, ``start`` inclusive and ``stop``
            exclusive (Python slice semantics), so the box is ``image[start[0]:stop[0], start[1]:stop[1], ...]``.
        scribbles_fg: optional binary ``(H, W, D)`` mask of foreground scribbles.
        scribbles_bg: optional binary ``(H, W, D)`` mask of background scribbles.
        n_interactions: number of user interactions so far (a click, a corrected slice, a box, a scribble
            stroke: each robot decides what counts as one and increments this).
        history: one JSON-serialisable dict per interaction describing what happened (robot-specific keys;
            always a ``"type"`` key, e.g. ``"click"``).

    Example:
        >>> s = InteractionState()
        >>> s.foreground.append((10, 12, 7)); s.n_interactions += 1
        >>> s.click_array("foreground")
        array([[10, 12,  7]])
    """

    foreground: list[tuple[int, ...]] = field(default_factory=list)
    background: list[tuple[int, ...]] = field(default_factory=list)
    slices: dict[int, np.ndarray] = field(default_factory=dict)
    axis: int = 2
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    scribbles_fg: np.ndarray | None = None
    scribbles_bg: np.ndarray | None = None
    n_interactions: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> InteractionState:
        """A deep copy: arrays, lists and the history are not shared with ``self``."""
        return InteractionState(
            foreground=[tuple(int(v) for v in c) for c in self.foreground],
            background=[tuple(int(v) for v in c) for c in self.background],
            slices={int(k): np.array(v, copy=True) for k, v in self.slices.items()},
            axis=self.axis,
            box=None if self.box is None else (tuple(self.box[0]), tuple(self.box[1])),
            scribbles_fg=None if self.scribbles_fg is None else np.array(self.scribbles_fg, copy=True),
            scribbles_bg=None if self.scribbles_bg is None else np.array(self.scribbles_bg, copy=True),
            n_interactions=self.n_interactions,
            history=copy.deepcopy(self.history),
        )

    def click_array(self, kind: Literal["foreground", "background"], ndim: int = 3) -> np.ndarray:
        """Clicks of one kind as the project's internal format: an ``int64`` array of shape ``(N, ndim)``.

        Args:
            kind: ``"foreground"`` or ``"background"``.
            ndim: number of spatial dimensions, used for the shape ``(0, ndim)`` when there are no clicks.

        Raises:
            ValueError: unknown ``kind``, or clicks whose length differs from ``ndim``.
        """
        if kind not in ("foreground", "background"):
            raise ValueError(f"kind must be 'foreground' or 'background', got {kind!r}.")
        clicks = self.foreground if kind == "foreground" else self.background
        if not clicks:
            return np.zeros((0, ndim), dtype=np.int64)
        arr = np.asarray(clicks, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != ndim:
            raise ValueError(f"{kind} clicks must each have {ndim} coordinates, got {clicks!r}.")
        return arr

    def is_empty(self) -> bool:
        """True if the user has given nothing yet (no clicks, slices, box or scribbles)."""
        return (
            not self.foreground
            and not self.background
            and not self.slices
            and self.box is None
            and (self.scribbles_fg is None or not np.any(self.scribbles_fg))
            and (self.scribbles_bg is None or not np.any(self.scribbles_bg))
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary: clicks, box, annotated slice indices, counts and history (no masks)."""
        return {
            "foreground": [list(c) for c in self.foreground],
            "background": [list(c) for c in self.background],
            "slices": sorted(int(k) for k in self.slices),
            "axis": self.axis,
            "box": None if self.box is None else [list(self.box[0]), list(self.box[1])],
            "scribbles_fg_voxels": 0 if self.scribbles_fg is None else int(np.count_nonzero(self.scribbles_fg)),
            "scribbles_bg_voxels": 0 if self.scribbles_bg is None else int(np.count_nonzero(self.scribbles_bg)),
            "n_interactions": self.n_interactions,
            "history": copy.deepcopy(self.history),
        }
