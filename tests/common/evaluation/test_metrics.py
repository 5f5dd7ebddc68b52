"""Tests for common.evaluation.metrics against hand-computed values."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import common.evaluation.metrics as metrics_module
from common.evaluation.metrics import METRIC_NAMES, dice, evaluate_all, hd95, mean_surface_distance


def _shifted_cubes() -> tuple[np.ndarray, np.ndarray]:
    """Label: cube [10:20]^3 in a 30^3 volume; prediction: the same cube shifted by +2 voxels along axis 0."""
    label = np.zeros((30, 30, 30), dtype=np.uint8)
    label[10:20, 10:20, 10:20] = 1
    pred = np.zeros_like(label)
    pred[12:22, 10:20, 10:20] = 1
    return pred, label


def test_dice_shifted_cubes() -> None:
    """|A ∩ B| = 8 x 10 x 10 = 800 voxels, |A| = |B| = 1000, so Dice = 2 * 800 / 2000 = 0.8."""
    pred, label = _shifted_cubes()
    assert dice(pred, label) == pytest.approx(0.8, abs=1e-6)


def test_surface_distances_shifted_cubes_isotropic() -> None:
    """Hand computation with MONAI's surface definition.

    MONAI takes as surface the voxels removed by one erosion with the 6-connected cross: for a 10^3 cube the
    10^3 - 8^3 = 488 shell voxels. A surface distance is the Euclidean distance between the centre of a surface
    voxel and the centre of the nearest surface voxel of the other mask. Label A = x in [10, 19], prediction
    B = x in [12, 21] (same y, z in [10, 19]). A -> B, by slice x of A:

    - x = 10 face (100 voxels): all B surface voxels have x >= 12 -> distance 2 (to (12, y, z)).
    - x = 11 ring (36 voxels with y or z on the border): (12, y, z) is on B's surface -> 1.
    - x = 12..18 rings (7 x 36 = 252): they lie on B's y/z faces -> 0.
    - x = 19 face: its ring (36) lies on B's faces -> 0; its 8 x 8 interior is inside B, the nearest B surface is
      min(2 (x = 21 face), distance to a y/z face): the 28 voxels next to the ring -> 1, the inner 36 -> 2.

    So 288 zeros, 64 ones, 136 twos (488 total); B -> A is the mirror image with the same distances.
    HD95 = max of the two directed 95th percentiles; linear-interpolated quantile index 0.95 * 487 = 462.65
    falls among the twos (indices 352..487) -> 2 mm. Symmetric ASSD = (64 + 2 * 136) / 488 = 336 / 488.
    """
    pred, label = _shifted_cubes()
    assert hd95(pred, label, (1.0, 1.0, 1.0)) == pytest.approx(2.0, abs=1e-6)
    assert mean_surface_distance(pred, label, (1.0, 1.0, 1.0)) == pytest.approx(336 / 488, abs=1e-6)


def test_surface_distances_shifted_cubes_anisotropic() -> None:
    """Same cubes with spacing (2, 1, 1) mm: the shift is now 4 mm.

    A -> B: x = 10 face -> 4 mm (100 voxels); x = 11 ring -> 2 mm (36); x = 12..18 rings and the x = 19 ring
    -> 0 (288); x = 19 interior (8 x 8): min(4 mm to the x = 21 face, d mm to the nearest y/z face) with
    d = 1 for 28 voxels, 2 for 20, 3 for 12, and 4 for the central 4.
    Counts: 0: 288, 1: 28, 2: 56, 3: 12, 4: 104. Quantile index 462.65 lies in the fours (384..487) -> HD95 = 4 mm.
    ASSD = (28 + 2 * 56 + 3 * 12 + 4 * 104) / 488 = 592 / 488 mm.
    """
    pred, label = _shifted_cubes()
    assert hd95(pred, label, (2.0, 1.0, 1.0)) == pytest.approx(4.0, abs=1e-6)
    assert mean_surface_distance(pred, label, (2.0, 1.0, 1.0)) == pytest.approx(592 / 488, abs=1e-5)
    # spacing along an axis the shift does not use changes nothing on the x-faces but stretches the y/z
    # distances of the x = 19 interior, so it must change the ASSD and leave HD95 = 2 mm
    assert hd95(pred, label, (1.0, 3.0, 3.0)) == pytest.approx(2.0, abs=1e-6)
    assert mean_surface_distance(pred, label, (1.0, 3.0, 3.0)) > 336 / 488 + 0.01


def test_squares_2d() -> None:
    """2D: squares [10:20]^2 shifted by 2 along axis 0. Surfaces have 36 pixels each; A -> B distances:
    x = 10 row -> 2 (10 px), x = 11 border pixels -> 1 (2), x = 12..18 border pixels -> 0 (14), x = 19 row:
    y in {10, 19} -> 0, y in {11, 18} -> 1, the other 6 -> 2. So 16 zeros, 4 ones, 16 twos:
    ASSD = (4 + 32) / 36 = 1.0, HD95 = 2 (quantile index 33.25 among the twos), Dice = 2 * 80 / 200 = 0.8."""
    label = np.zeros((30, 30), dtype=bool)
    label[10:20, 10:20] = True
    pred = np.zeros_like(label)
    pred[12:22, 10:20] = True
    out = evaluate_all(pred, label, (1.0, 1.0))
    assert out == pytest.approx({"dice": 0.8, "hd95": 2.0, "msd": 1.0}, abs=1e-6)


def test_hd95_ignores_a_single_outlier_but_msd_does_not() -> None:
    """Prediction = label cube + one voxel 6 voxels beyond the x = 19 face. pred -> label distances: 488 zeros
    and one 6; label -> pred: 488 zeros. HD95 = 0 (an outlier in 489 values is above the 95th percentile), while
    the pooled ASSD = 6 / (489 + 488)."""
    _, label = _shifted_cubes()
    pred = label.copy()
    pred[25, 15, 15] = 1
    assert hd95(pred, label, (1.0, 1.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert mean_surface_distance(pred, label, (1.0, 1.0, 1.0)) == pytest.approx(6 / 977, abs=1e-6)


def test_identical_masks() -> None:
    _, label = _shifted_cubes()
    assert evaluate_all(label, label, (0.7, 0.7, 2.0)) == {"dice": 1.0, "hd95": 0.0, "msd": 0.0}


def test_torch_and_bool_inputs_match_numpy() -> None:
    pred, label = _shifted_cubes()
    ref = evaluate_all(pred, label, (2.0, 1.0, 1.0))
    assert evaluate_all(torch.as_tensor(pred), torch.as_tensor(label), (2.0, 1.0, 1.0)) == pytest.approx(ref)
    assert evaluate_all(pred.astype(bool), label.astype(np.float32), [2, 1, 1]) == pytest.approx(ref)


def test_both_empty() -> None:
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    assert evaluate_all(empty, empty, (1.0, 1.0, 1.0)) == {"dice": 1.0, "hd95": 0.0, "msd": 0.0}


@pytest.mark.parametrize("empty_side", ["pred", "label"])
def test_one_empty_gives_zero_dice_and_infinite_distances(empty_side: str) -> None:
    full = np.zeros((8, 8, 8), dtype=np.uint8)
    full[2:5, 2:5, 2:5] = 1
    empty = np.zeros_like(full)
    pred, label = (empty, full) if empty_side == "pred" else (full, empty)
    out = evaluate_all(pred, label, (1.0, 1.0, 1.0))
    assert out["dice"] == 0.0
    assert math.isinf(out["hd95"])
    assert out["hd95"] > 0
    assert math.isinf(out["msd"])
    assert out["msd"] > 0
    assert dice(pred, label) == 0.0
    assert math.isinf(hd95(pred, label, None))


def test_metric_names_match_evaluate_all_keys() -> None:
    _, label = _shifted_cubes()
    assert tuple(evaluate_all(label, label, None)) == METRIC_NAMES


@pytest.mark.parametrize(
    ("pred", "label", "spacing", "match"),
    [
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), "same shape"),
        (np.zeros(4), np.zeros(4), (1,), "2D"),
        (np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)), (1, 1, 1, 1), "2D"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1), "spacing has 2 values"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 0, 1), "> 0"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, float("nan"), 1), "> 0"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 1.0, "sequence"),
        (np.full((4, 4, 4), 0.5), np.zeros((4, 4, 4)), (1, 1, 1), "binary"),
        (np.full((4, 4, 4), 2), np.zeros((4, 4, 4)), (1, 1, 1), "binary"),
        (np.full((4, 4, 4), np.nan), np.zeros((4, 4, 4)), (1, 1, 1), "NaN"),
        ([[0, 1], [1, 0]], np.zeros((2, 2)), (1, 1), "numpy array or torch tensor"),
    ],
)
def test_invalid_inputs_raise(pred: object, label: np.ndarray, spacing: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_all(pred, label, spacing)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "spacing", "seed"),
    [((20, 18, 16), (1.0, 1.0, 1.0), 0), ((20, 18, 16), (0.7, 1.3, 2.5), 1), ((40, 36), (0.5, 2.0), 2)],
)
def test_equals_monai_compute_functions(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int) -> None:
    """The single-pass implementation must give exactly MONAI's compute_dice / compute_hausdorff_distance
    (percentile=95) / compute_average_surface_distance (symmetric=True) on irregular random masks."""
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    label = gaussian_filter(rng.normal(size=shape), 2.0) > 0.05
    pred = gaussian_filter(rng.normal(size=shape), 2.0) > 0.0
    assert label.any()
    assert pred.any()

    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x[None, None], dtype=torch.float32)

    expected = {
        "dice": float(compute_dice(batch(pred), batch(label), include_background=True)[0, 0]),
        "hd95": float(
            compute_hausdorff_distance(
                batch(pred), batch(label), include_background=True, percentile=95, spacing=spacing
            )[0, 0]
        ),
        "msd": float(
            compute_average_surface_distance(
                batch(pred), batch(label), include_background=True, symmetric=True, spacing=spacing
            )[0, 0]
        ),
    }
    assert evaluate_all(pred, label, spacing) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_docstring_examples() -> None:
    result = doctest.testmod(metrics_module)
    assert result.attempted > 0
    assert result.failed == 0
