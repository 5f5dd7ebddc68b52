"""Tests for common.evaluation.baselines (intensity region growing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from common.evaluation.baselines import IntensityRegionGrowAdapter
from common.evaluation.cases import CaseInfo, EvalCase
from common.evaluation.loop import run_interactive_evaluation
from common.evaluation.metrics import dice
from common.interaction.click_robot import CentreOfErrorClickRobot
from common.interaction.state import InteractionState

SHAPE = (32, 32, 32)
SPACING = (1.0, 1.0, 1.5)


def _ball(centre: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float64)
    dist2 = sum(((grid[a] - centre[a]) * SPACING[a]) ** 2 for a in range(3))
    return (dist2 <= radius_mm**2).astype(np.uint8)


def _image(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two intensities (structure 100, background 0) plus Gaussian noise with std 10."""
    rng = np.random.default_rng(seed)
    return (100.0 * mask + rng.normal(0.0, 10.0, size=SHAPE)).astype(np.float32)


def _info(case_id: str = "c0") -> CaseInfo:
    return CaseInfo(case_id, SPACING, 1, "liver", "seen", np.diag([*SPACING, 1.0]))


def test_one_robot_click_gives_high_dice() -> None:
    label = _ball((16, 16, 16), 8.0)
    image = _image(label)
    robot = CentreOfErrorClickRobot()
    robot.reset(image, label, SPACING)
    state = robot.next_interaction(label, np.zeros_like(label), InteractionState())
    assert state is not None
    pred = IntensityRegionGrowAdapter(tolerance_hu=50.0)(image, state, _info())
    assert pred.dtype == np.uint8
    assert pred.shape == SHAPE
    assert dice(pred, label) > 0.9


def test_no_foreground_seed_gives_empty_prediction() -> None:
    label = _ball((16, 16, 16), 8.0)
    state = InteractionState(background=[(2, 2, 2)], n_interactions=1)
    pred = IntensityRegionGrowAdapter()(_image(label), state, _info())
    assert not pred.any()


def test_clicked_voxel_is_always_included() -> None:
    label = _ball((16, 16, 16), 8.0)
    state = InteractionState(foreground=[(16, 16, 16)], n_interactions=1)
    adapter = IntensityRegionGrowAdapter(tolerance_hu=1e-6, smoothing_sigma_mm=0.0, std_factor=0.0, fill_holes=False)
    pred = adapter(_image(label), state, _info())
    assert pred[16, 16, 16] == 1


def test_background_click_cuts_off_a_leak_end_to_end() -> None:
    """Two touching balls of the same intensity; the label is only the first. Round 1: the robot clicks the centre
    of the label and growth leaks into the second ball (Dice about 2/3). Round 2: the false positives dominate, the
    robot clicks the second ball's centre as background and the Voronoi split removes it."""
    target = _ball((16, 9, 16), 6.5)
    other = _ball((16, 22, 16), 6.5)
    assert (target & other).sum() == 0
    touching = np.zeros(SHAPE, bool)
    touching[16, 15:17, 16] = True
    both = np.clip(target + other + touching, 0, 1).astype(np.uint8)
    image = _image(both, seed=1)
    case = EvalCase("c0", image, target, SPACING, 1, "liver", "seen", np.diag([*SPACING, 1.0]))
    result = run_interactive_evaluation(
        [case], IntensityRegionGrowAdapter(tolerance_hu=50.0), CentreOfErrorClickRobot(), 2, progress=False
    )
    r1, r2 = result.records
    assert 0.55 < r1.dice < 0.75
    assert r2.dice > 0.9
    state = result.interactions[0]["state"]
    assert state["background"]
    assert other[tuple(state["background"][0])] == 1


def test_annotated_slice_is_kept_exactly_and_grown_from() -> None:
    label = _ball((16, 16, 16), 8.0)
    image = _image(label)
    mask = label[:, :, 16].copy()
    mask[16, 16] = 0  # the user's slice wins over what the intensities say
    state = InteractionState(slices={16: mask}, axis=2, n_interactions=1)
    pred = IntensityRegionGrowAdapter()(image, state, _info())
    np.testing.assert_array_equal(pred[:, :, 16], mask)
    assert dice(pred, label) > 0.9
    with pytest.raises(ValueError, match="slice 40 is out of range"):
        IntensityRegionGrowAdapter()(image, InteractionState(slices={40: mask}), _info())
    with pytest.raises(ValueError, match="slice 3 mask has shape"):
        IntensityRegionGrowAdapter()(image, InteractionState(slices={3: mask[:5]}), _info())


def test_box_restricts_and_scribbles_seed() -> None:
    label = _ball((16, 16, 16), 8.0)
    image = _image(label)
    scribble = np.zeros(SHAPE, bool)
    scribble[14:18, 16, 16] = True
    box = ((0, 0, 0), (16, 32, 32))
    pred = IntensityRegionGrowAdapter()(image, InteractionState(scribbles_fg=scribble, box=box), _info())
    assert pred[16:].sum() == scribble[16:].sum()  # outside the box only the seeds themselves
    assert pred[:16].sum() > 0.8 * label[:16].sum()
    with pytest.raises(ValueError, match="scribbles_fg has shape"):
        IntensityRegionGrowAdapter()(image, InteractionState(scribbles_fg=scribble[:4]), _info())


def test_invalid_clicks_and_parameters() -> None:
    image = _image(_ball((16, 16, 16), 8.0))
    with pytest.raises(ValueError, match="outside the image"):
        IntensityRegionGrowAdapter()(image, InteractionState(foreground=[(40, 1, 1)]), _info())
    with pytest.raises(ValueError, match="outside the image"):
        IntensityRegionGrowAdapter()(image, InteractionState(foreground=[(1, 1, 1)], background=[(-1, 1, 1)]), _info())
    with pytest.raises(ValueError, match="tolerance_hu"):
        IntensityRegionGrowAdapter(tolerance_hu=0.0)
    with pytest.raises(ValueError, match="smoothing_sigma_mm"):
        IntensityRegionGrowAdapter(smoothing_sigma_mm=-1.0)
    with pytest.raises(ValueError, match="std_factor"):
        IntensityRegionGrowAdapter(std_factor=float("nan"))


def test_smoothed_image_cached_per_case() -> None:
    label = _ball((16, 16, 16), 8.0)
    image = _image(label)
    adapter = IntensityRegionGrowAdapter()
    state = InteractionState(foreground=[(16, 16, 16)], n_interactions=1)
    adapter(image, state, _info("c0"))
    assert adapter._cache is not None
    cached = adapter._cache[2]
    adapter.reset(_info("c0"))
    adapter(image, state, _info("c0"))
    assert adapter._cache[2] is cached
    adapter.reset(_info("c1"))
    assert adapter._cache is None


def test_boundary_clicks_do_not_wreck_the_result() -> None:
    """The robot's later clicks land on single edge voxels (blurred intensity about half the contrast); the local
    seed-intensity estimate and the watershed split keep every round close to the label."""
    label = _ball((16, 16, 16), 8.0)
    case = EvalCase("c0", _image(label), label, SPACING, 1, "liver", "seen", np.diag([*SPACING, 1.0]))
    result = run_interactive_evaluation(
        [case], IntensityRegionGrowAdapter(), CentreOfErrorClickRobot(), 5, progress=False
    )
    assert all(r.dice > 0.95 for r in result.records)
    history = result.interactions[0]["state"]["history"]
    assert len(history) >= 2
    assert history[1]["depth_mm"] <= 1.5  # the second click is indeed an edge voxel


def test_background_click_near_boundary_removes_only_a_thin_layer() -> None:
    label = _ball((16, 16, 16), 8.0)
    image = _image(label)
    adapter = IntensityRegionGrowAdapter()
    fg_only = adapter(image, InteractionState(foreground=[(16, 16, 16)], n_interactions=1), _info())
    edge = (16, 16, 11)  # inside the ball, 7.5 mm from the centre along axis 2 (spacing 1.5 mm, radius 8 mm)
    assert fg_only[edge] == 1
    both = adapter(image, InteractionState(foreground=[(16, 16, 16)], background=[edge], n_interactions=2), _info())
    assert both[edge] == 0
    removed = int(fg_only.sum()) - int(both.sum())
    assert 0 < removed < 0.1 * fg_only.sum()


def _two_part_structure(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A structure of two touching parts of different intensity (like a vessel's bright and dim segments, or a
    kidney's cortex and medulla): part A (intensity 200, the larger) and part B (90) on a background of 0, blurred
    (partial volume) plus Gaussian noise with std 10. Returns (image, label, A, B)."""
    part_a = _ball((16, 16, 12), 8.0).astype(bool)
    part_b = _ball((16, 16, 21), 5.0).astype(bool) & ~part_a
    clean = np.where(part_a, 200.0, np.where(part_b, 90.0, 0.0))
    rng = np.random.default_rng(seed)
    image = (ndimage.gaussian_filter(clean, 0.5) + rng.normal(0.0, 10.0, size=SHAPE)).astype(np.float32)
    return image, (part_a | part_b).astype(np.uint8), part_a, part_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_second_correct_click_on_a_part_of_another_intensity_does_not_collapse(seed: int) -> None:
    """Round 1: the robot clicks the centre of the label, in part A: A is segmented, B (another intensity) is missed.
    Round 2: the robot clicks the missed part B. One window at the median of the two clicks (about 145 +- 50) fits
    neither part and the result used to collapse to the two clicked voxels (Dice 0.003); each part now gets its
    own window, so the second click adds B."""
    image, label, part_a, part_b = _two_part_structure(seed)
    case = EvalCase("c0", image, label, SPACING, 1, "kidney", "seen", np.diag([*SPACING, 1.0]))
    result = run_interactive_evaluation(
        [case], IntensityRegionGrowAdapter(), CentreOfErrorClickRobot(), 2, progress=False
    )
    r1, r2 = result.records
    first, second = (tuple(c) for c in result.interactions[0]["state"]["foreground"])
    assert part_a[first]  # the scenario: a click on each part, both correct
    assert part_b[second]
    assert r1.dice > 0.65
    assert r2.dice > r1.dice + 0.1
    assert r2.dice > 0.8


def test_adding_a_foreground_click_never_removes_voxels() -> None:
    image, label, _, part_b = _two_part_structure()
    adapter = IntensityRegionGrowAdapter()
    clicks = [(16, 16, 12), (16, 16, 21), (16, 13, 9), (15, 16, 22)]  # A, B, A, B: all inside the label
    assert all(label[c] for c in clicks)
    previous = np.zeros(SHAPE, dtype=np.uint8)
    for n in range(1, len(clicks) + 1):
        pred = adapter(image, InteractionState(foreground=clicks[:n], n_interactions=n), _info())
        assert not (previous & ~pred).any(), f"click {n} removed voxels"
        previous = pred
    assert dice(previous, label) > 0.8
    assert previous[part_b].mean() > 0.7


def test_edge_click_does_not_move_the_window() -> None:
    """A click on the blurred rim (a partial-volume voxel about halfway between structure and background) gets no
    window of its own: the result is the one-click result plus that voxel, no leak into the background."""
    label = _ball((16, 16, 16), 8.0)
    clean = 100.0 * label
    rng = np.random.default_rng(3)
    image = (ndimage.gaussian_filter(clean, 1.0) + rng.normal(0.0, 5.0, size=SHAPE)).astype(np.float32)
    adapter = IntensityRegionGrowAdapter()
    one = adapter(image, InteractionState(foreground=[(16, 16, 16)], n_interactions=1), _info())
    smooth = ndimage.gaussian_filter(clean, 1.0)
    rim = np.argwhere((label > 0) & (np.abs(smooth - 50.0) < 8.0))
    assert len(rim)
    edge = tuple(int(v) for v in rim[0])
    two = adapter(image, InteractionState(foreground=[(16, 16, 16), edge], n_interactions=2), _info())
    assert not (one & ~two).any()
    assert int((two & ~one).sum()) <= 1  # at most the clicked rim voxel itself
