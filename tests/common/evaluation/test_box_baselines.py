"""Tests of common.evaluation.box_baselines: GrabCut as a robot-evaluation adapter, 2D slice boxes and 3D boxes."""

from __future__ import annotations

import numpy as np
import pytest

from common.evaluation.box_baselines import GrabCutAdapter
from common.evaluation.cases import CaseInfo
from common.interaction.state import InteractionState

SHAPE = (40, 44, 12)


def _blob() -> tuple[np.ndarray, np.ndarray]:
    grid = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    inside = ((grid[0] - 20) / 9) ** 2 + ((grid[1] - 22) / 11) ** 2 + ((grid[2] - 6) / 4) ** 2 <= 1
    image = (inside * 100.0 + np.random.default_rng(0).normal(0, 15, SHAPE)).astype(np.float32)
    return image, inside


INFO = CaseInfo("c0", (1.0, 1.0, 2.0), 1, "blob", "seen", np.eye(4))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_grabcut_on_a_slice_box_segments_that_slice_only() -> None:
    image, inside = _blob()
    state = InteractionState(box=((8, 8, 6), (33, 37, 7)))
    mask = GrabCutAdapter()(image, state, INFO)
    assert mask.shape == SHAPE
    assert not mask[..., :6].any()
    assert not mask[..., 7:].any()
    assert _dice(mask[..., 6], inside[..., 6]) > 0.85


def test_grabcut_3d_box_with_scribbles_as_hard_constraints() -> None:
    image, inside = _blob()
    fg = np.zeros(SHAPE, bool)
    bg = np.zeros(SHAPE, bool)
    fg[20, 22, 6] = True
    bg[9, 9, 6] = True
    state = InteractionState(box=((8, 8, 1), (33, 37, 12)), scribbles_fg=fg, scribbles_bg=bg)
    mask = GrabCutAdapter()(image, state, INFO)
    assert _dice(mask, inside) > 0.85
    assert mask[20, 22, 6]
    assert not mask[9, 9, 6]


def test_grabcut_needs_a_box() -> None:
    image, _ = _blob()
    with pytest.raises(ValueError, match="needs a box"):
        GrabCutAdapter()(image, InteractionState(), INFO)
