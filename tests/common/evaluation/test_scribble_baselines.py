"""Tests of common.evaluation.scribble_baselines.RandomWalkerAdapter (random walker inside the user's box, seeded by
scribbles), driven by the BIFSeg robot user (box, then scribbles)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.evaluation.cases import CaseInfo, EvalCase
from common.evaluation.loop import run_interactive_evaluation
from common.evaluation.metrics import dice
from common.evaluation.scribble_baselines import RandomWalkerAdapter, central_ellipse
from common.interaction.scribble_robot import BoxScribbleRobot
from common.interaction.state import InteractionState

SPACING = (1.0, 1.0, 2.0)


def _ellipsoid(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.indices(shape).astype(np.float64)
    return (sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(len(shape))) <= 1.0).astype(np.uint8)


def _noisy(label: np.ndarray, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    """Structure 1, background 0, plus Gaussian noise of std ``noise``."""
    return (label + np.random.default_rng(seed).normal(0.0, noise, label.shape)).astype(np.float32)


def _info(spacing: tuple[float, ...] = SPACING) -> CaseInfo:
    return CaseInfo("c0", spacing, 1, "blob", "unseen", np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4))


def _box_mask(shape: tuple[int, ...], state: InteractionState) -> np.ndarray:
    assert state.box is not None
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(*state.box, strict=True))] = True
    return mask


def _two_rounds(
    image: np.ndarray, label: np.ndarray, robot: BoxScribbleRobot, adapter: RandomWalkerAdapter, info: CaseInfo
) -> tuple[list[float], InteractionState, np.ndarray]:
    """Box round, then one round of scribbles; returns the Dice of both predictions, the last state and prediction."""
    robot.reset(image, label, info.spacing)
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState(axis=robot.slice_axis))
    assert state is not None
    first = adapter(image, state, info)
    state = robot.next_interaction(label, first, state)
    assert state is not None
    assert state.history[0]["type"] == "box"
    assert {e["type"] for e in state.history[1:]} == {"scribble"}
    second = adapter(image, state, info)
    return [dice(first, label), dice(second, label)], state, second


def test_3d_ellipsoid_one_scribble_round() -> None:
    label = _ellipsoid((56, 56, 28), (28, 27, 14), (17, 19, 9))
    image = _noisy(label)
    dices, state, pred = _two_rounds(image, label, BoxScribbleRobot(seed=0), RandomWalkerAdapter(), _info())
    assert pred.dtype == bool
    assert pred.shape == label.shape
    assert dices[1] > 0.85, dices
    assert dices[1] >= dices[0] - 0.005, dices  # the scribbles do not hurt
    assert not (pred & ~_box_mask(label.shape, state)).any()  # only inside the box


def test_2d_box_on_one_slice_runs_in_2d() -> None:
    volume = _ellipsoid((90, 110, 5), (44, 56, 2), (30, 40, 0.5))  # a single-slice label on slice 2
    assert np.flatnonzero(volume.any(axis=(0, 1))).tolist() == [2]
    image = _noisy(volume, noise=0.3, seed=1)
    robot = BoxScribbleRobot(box_dims=2, seed=3)
    dices, state, pred = _two_rounds(image, volume, robot, RandomWalkerAdapter(), _info((1.0, 1.0, 3.0)))
    assert state.box is not None
    assert state.box[1][2] - state.box[0][2] == 1
    assert dices[1] > 0.85, dices
    assert np.flatnonzero(pred.any(axis=(0, 1))).tolist() == [2]
    assert not (pred & ~_box_mask(volume.shape, state)).any()


def test_two_dimensional_image() -> None:
    label = _ellipsoid((70, 80), (35, 38), (22, 28))
    image = _noisy(label, noise=0.3, seed=2)
    info = CaseInfo("c2d", (1.0, 1.0), 1, "blob", "seen", np.eye(4))
    dices, state, pred = _two_rounds(image, label, BoxScribbleRobot(seed=1), RandomWalkerAdapter(), info)
    assert pred.shape == label.shape
    assert dices[1] > 0.85, dices
    assert not (pred & ~_box_mask(label.shape, state)).any()


def test_deterministic_and_state_untouched() -> None:
    label = _ellipsoid((40, 40, 20), (20, 20, 10), (12, 12, 6))
    image = _noisy(label, noise=0.3)
    state = InteractionState(box=((5, 6, 2), (35, 34, 18)), n_interactions=1)
    state.scribbles_bg = np.zeros(label.shape, dtype=bool)
    state.scribbles_bg[6, 8:14, 10] = True
    before = state.copy()
    adapter = RandomWalkerAdapter()
    first = adapter(image, state, _info())
    second = adapter(image, state, _info())
    assert np.array_equal(first, second)
    assert state.to_json() == before.to_json()
    assert state.scribbles_bg is not None
    assert before.scribbles_bg is not None
    assert np.array_equal(state.scribbles_bg, before.scribbles_bg)
    assert dice(first, label) > 0.7


def test_central_ellipse() -> None:
    ellipse = central_ellipse((20, 10, 4), (0, 1), 0.15)
    assert ellipse.shape == (20, 10, 4)
    assert all(np.array_equal(ellipse[:, :, 0], ellipse[:, :, k]) for k in range(4))  # every slice
    rows, cols = np.nonzero(ellipse[:, :, 0])
    assert (rows.min(), rows.max()) == (7, 12)  # centre 9.5, radius 3
    assert (cols.min(), cols.max()) == (4, 5)  # centre 4.5, radius 1.5 (no row is at distance 0: centre 9.5)
    assert central_ellipse((1, 1), (0, 1), 0.15).all()  # never empty
    assert central_ellipse((2, 2), (0, 1), 0.15).all()
    assert central_ellipse((4, 5), (0, 1), 0.15).sum() == 2  # rows 1-2, column 2


def test_ellipse_seeds_always_versus_until_scribble() -> None:
    image = np.zeros((30, 30, 10), dtype=np.float32)  # flat: the walker spreads by distance only
    state = InteractionState(box=((2, 2, 1), (28, 28, 9)), n_interactions=2)
    state.scribbles_fg = np.zeros(image.shape, dtype=bool)
    state.scribbles_fg[4, 4, 5] = True  # a dot in a corner of the box
    centre = (15, 15, 5)
    always = RandomWalkerAdapter(ellipse_seeds="always")(image, state, _info())
    until = RandomWalkerAdapter(ellipse_seeds="until_scribble")(image, state, _info())
    assert always[centre]
    assert always[4, 4, 5]
    assert until[4, 4, 5]
    assert not until[centre]
    box_only = InteractionState(box=state.box, n_interactions=1)
    assert RandomWalkerAdapter(ellipse_seeds="until_scribble")(image, box_only, _info())[centre]  # the fallback


def test_background_scribble_inside_the_ellipse_drops_it() -> None:
    image = np.zeros((30, 30, 6), dtype=np.float32)
    state = InteractionState(box=((5, 5, 0), (25, 25, 6)), axis=2, n_interactions=2)
    state.scribbles_bg = np.zeros(image.shape, dtype=bool)
    state.scribbles_bg[15, 15, :] = True  # inside the ellipse on every slice: no foreground seed left
    assert not RandomWalkerAdapter()(image, state, _info()).any()
    state.scribbles_bg[15, 15, 3] = False  # slice 3 keeps its ellipse
    pred = RandomWalkerAdapter()(image, state, _info())
    assert pred[14, 14, 3]
    assert not pred[15, 15, 0]
    flat = InteractionState(box=((5, 5, 2), (25, 25, 3)), axis=2, n_interactions=2)  # a box on one slice: 2D
    flat.scribbles_bg = np.zeros(image.shape, dtype=bool)
    flat.scribbles_bg[15, 14, 2] = True
    assert not RandomWalkerAdapter()(image, flat, _info()).any()


def test_box_covering_the_whole_image() -> None:
    label = _ellipsoid((30, 30, 12), (15, 15, 6), (9, 9, 4))
    image = _noisy(label, noise=0.2)
    state = InteractionState(box=((0, 0, 0), (30, 30, 12)), n_interactions=1)  # no room for a background band
    pred = RandomWalkerAdapter()(image, state, _info())
    assert dice(pred, label) > 0.8


def test_foreground_clicks_are_seeds() -> None:
    image = np.zeros((30, 30, 10), dtype=np.float32)
    state = InteractionState(box=((2, 2, 1), (28, 28, 9)), foreground=[(4, 25, 2)], n_interactions=2)
    assert RandomWalkerAdapter(ellipse_seeds="until_scribble")(image, state, _info())[4, 25, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.0}, "beta must be"),
        ({"beta": float("nan")}, "beta must be"),
        ({"margin": 0}, "margin must be an int >= 1"),
        ({"margin": 1.5}, "margin must be an int >= 1"),
        ({"mode": "cg_mg"}, "mode must be one of"),
        ({"tol": -1.0}, "tol must be"),
        ({"seed_radius": 0.0}, "seed_radius must lie"),
        ({"seed_radius": 0.6}, "seed_radius must lie"),
        ({"ellipse_seeds": "never"}, "ellipse_seeds must be one of"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomWalkerAdapter(**kwargs)


def test_bad_states_are_rejected() -> None:
    image = np.zeros((20, 20, 8), dtype=np.float32)
    adapter = RandomWalkerAdapter()
    with pytest.raises(ValueError, match=r"needs a bounding box: state\.box is None"):
        adapter(image, InteractionState(foreground=[(10, 10, 4)], n_interactions=1), _info())
    for box in (((0, 0, 0), (21, 20, 8)), ((5, 5, 5), (5, 10, 8)), ((-1, 0, 0), (10, 10, 8))):
        with pytest.raises(ValueError, match="empty or outside the image"):
            adapter(image, InteractionState(box=box, n_interactions=1), _info())
    with pytest.raises(ValueError, match="must have 3 start and stop"):
        adapter(image, InteractionState(box=((0, 0), (10, 10)), n_interactions=1), _info())
    state = InteractionState(box=((2, 2, 2), (10, 10, 6)), n_interactions=1)
    state.scribbles_fg = np.zeros((20, 20), dtype=bool)
    with pytest.raises(ValueError, match=r"state\.scribbles_fg has shape"):
        adapter(image, state, _info())
    with pytest.raises(ValueError, match="click outside the image"):
        adapter(image, InteractionState(box=((2, 2, 2), (10, 10, 6)), background=[(30, 1, 1)]), _info())
    with pytest.raises(ValueError, match=r"state\.axis must be"):
        adapter(image, InteractionState(box=((2, 2, 2), (10, 10, 6)), axis=3), _info())
    with pytest.raises(ValueError, match="spacing must hold 3"):
        adapter(image, InteractionState(box=((2, 2, 2), (10, 10, 6))), _info((1.0, 1.0)))
    with pytest.raises(ValueError, match="image must be 2D or 3D"):
        adapter(np.zeros((2, 3, 4, 5)), InteractionState(box=((0,) * 4, (1, 1, 1, 1))), _info())


def test_in_the_evaluation_loop() -> None:
    label = _ellipsoid((48, 48, 24), (24, 23, 12), (15, 16, 8))
    image = _noisy(label, noise=0.3, seed=4)
    case = EvalCase("c0", image, label, SPACING, 1, "blob", "unseen", np.diag([*SPACING, 1.0]))
    robot = BoxScribbleRobot(seed=2)
    result = run_interactive_evaluation([case], RandomWalkerAdapter(), robot, n_rounds=3, progress=False)
    assert [r.round for r in result.records] == [1, 2, 3]
    assert result.records[-1].dice > 0.85
    assert result.summary["run"]["robot"]["name"] == "box_scribble"
    final = result.interactions[0]["state"]
    assert final["box"] is not None
    assert final["scribbles_fg_voxels"] > 0
    assert result.records[1].n_interactions >= 2
