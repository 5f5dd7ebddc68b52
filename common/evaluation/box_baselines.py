"""Box baselines of BIFSeg's evaluation: GrabCut (2D) and 3D GrabCut with the robot's box and scribbles.

Wang et al. (IEEE TMI 2018) compare BIFSeg with GrabCut and 3D GrabCut given the same box (3 foreground and 5
background GMM components). :class:`GrabCutAdapter` runs :func:`common.refinement.grabcut.grabcut` as a model adapter
of the robot-user evaluation (:func:`common.evaluation.loop.run_interactive_evaluation`): the state's box, its
scribbles as hard constraints, on the image as stored. A box one slice thick (the 2D evaluation) is segmented in 2D
on that slice; any other box in 3D.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from common.evaluation.cases import CaseInfo
from common.interaction.state import InteractionState

__all__ = ["GrabCutAdapter"]

logger = logging.getLogger(__name__)


class GrabCutAdapter:
    """``(image, state, case) -> mask`` with GrabCut from the state's box (+ scribbles as hard constraints).

    Args:
        n_fg_components / n_bg_components: GMM components (the paper: 3 and 5).
        iterations: GrabCut iterations (GMM refit + graph cut).
        gamma: weight of GrabCut's contrast term.
        seed: seed of the GMM initialisation.
        connectivity_3d: neighbourhood of 3D GrabCut (``"face"``: 6 neighbours; with 26 the contrast term, summed
            over 26 neighbours with GrabCut's gamma 50, is strong enough to collapse the result to nothing on the
            phantoms); 2D always uses 8 neighbours.
        name: method name in result files.

    Raises:
        ValueError: a state without a box, or a box with the wrong number of axes.
    """

    def __init__(
        self,
        n_fg_components: int = 3,
        n_bg_components: int = 5,
        iterations: int = 5,
        gamma: float = 50.0,
        seed: int = 0,
        connectivity_3d: str = "face",
        name: str = "grabcut",
    ) -> None:
        self.kwargs: dict[str, Any] = {
            "n_fg_components": int(n_fg_components),
            "n_bg_components": int(n_bg_components),
            "iterations": int(iterations),
            "gamma": float(gamma),
            "seed": int(seed),
        }
        self.connectivity_3d = connectivity_3d
        self.name = name

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        """Bool mask of ``image``'s shape (the image as stored)."""
        from common.refinement.grabcut import grabcut

        if state.box is None:
            raise ValueError(f"{self.name}: GrabCut needs a box; the state of {case.case_id} has none")
        img = np.asarray(image, dtype=np.float32)
        start, stop = (tuple(int(v) for v in c) for c in state.box)
        if len(start) != img.ndim or len(stop) != img.ndim:
            raise ValueError(f"{self.name}: box {state.box} does not match an image of shape {img.shape}")
        fg = None if state.scribbles_fg is None else np.asarray(state.scribbles_fg, dtype=bool)
        bg = None if state.scribbles_bg is None else np.asarray(state.scribbles_bg, dtype=bool)
        spacing = tuple(float(s) for s in case.spacing)
        axis = state.axis
        out = np.zeros(img.shape, dtype=bool)
        if img.ndim == 3 and stop[axis] - start[axis] == 1:  # a box on one slice: 2D GrabCut on that slice
            k = start[axis]
            where: list[Any] = [slice(None)] * 3
            where[axis] = k
            index = tuple(where)
            box2 = (
                tuple(v for a, v in enumerate(start) if a != axis),
                tuple(v for a, v in enumerate(stop) if a != axis),
            )
            out[index] = grabcut(
                img[index],
                box2,
                spacing=tuple(s for a, s in enumerate(spacing) if a != axis),
                fg_seeds=None if fg is None else fg[index],
                bg_seeds=None if bg is None else bg[index],
                **self.kwargs,
            )
            return out
        return np.asarray(
            grabcut(
                img,
                (start, stop),
                spacing=spacing,
                fg_seeds=fg,
                bg_seeds=bg,
                connectivity=self.connectivity_3d,
                **self.kwargs,
            )
        )
