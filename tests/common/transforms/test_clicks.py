"""Tests of common.transforms.clicks: batched DeepGrow click simulation against the per-sample reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_cdt, gaussian_filter

from common.transforms import (
    ClickBatch,
    ErosionDepth,
    add_new_clicks,
    chamfer_depth,
    click_weights,
    draw_clicks,
    error_regions,
    reference_chamfer_depth,
    reference_error_click,
    sample_flat_indices,
    simulate_error_clicks,
    start_chamfer_depth,
)

BACKENDS = ("erosion", "scipy", "auto")


def _blob(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random smooth blob (possibly several components, possibly touching the border)."""
    field = gaussian_filter(rng.standard_normal(shape), sigma=float(rng.uniform(1.0, 3.0)))
    return field > np.quantile(field, rng.uniform(0.3, 0.9))


def _regions(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """``(n + 3, *shape)`` random blobs plus an empty region, a full one and a half-space touching the border."""
    half = np.zeros(shape, dtype=bool)
    half[: shape[0] // 2] = True
    return np.stack([_blob(rng, shape) for _ in range(n)] + [np.zeros(shape, bool), np.ones(shape, bool), half])


def _batch(masks: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(masks))[:, None]


# --- chamfer depth --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(23, 31), (13, 17, 11)])
def test_chamfer_depth_backends_agree_with_reference(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    masks = _regions(rng, shape, 12)
    reference = np.stack([reference_chamfer_depth(m) for m in masks])
    for backend in BACKENDS:
        depth = chamfer_depth(_batch(masks), backend)
        assert depth.dtype == torch.int32
        assert depth.shape == (len(masks), 1, *shape)
        np.testing.assert_array_equal(depth[:, 0].numpy(), reference, err_msg=backend)
    # the reference is SciPy's chessboard chamfer transform wherever the region has a boundary
    for m, r in zip(masks[:-3], reference[:-3], strict=True):
        np.testing.assert_array_equal(r, distance_transform_cdt(m, metric="chessboard"))


def test_chamfer_depth_semantics_at_border_full_and_empty() -> None:
    region = np.zeros((10, 10), dtype=bool)
    region[:, :5] = True  # touches the array border on three sides: the border is not a boundary
    depth = chamfer_depth(_batch(np.stack([region, np.ones_like(region), np.zeros_like(region)])), "erosion")
    np.testing.assert_array_equal(depth[0, 0, 3].numpy(), [5, 4, 3, 2, 1, 0, 0, 0, 0, 0])
    assert (depth[0, 0, :, 0] == 5).all()
    assert (depth[1] == 1).all()  # a region filling the array: every voxel equally deep
    assert (depth[2] == 0).all()


def test_chamfer_depth_errors() -> None:
    with pytest.raises(ValueError, match="region must be"):
        chamfer_depth(torch.zeros(2, 2, 5, 5))
    with pytest.raises(ValueError, match="region must be"):
        chamfer_depth(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="backend"):
        chamfer_depth(torch.zeros(1, 1, 5, 5), "cuda")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(23, 31), (13, 17, 11)])
def test_erosion_depth_after_n_steps_is_exact_up_to_n(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    masks = _regions(rng, shape, 6)
    reference = np.stack([reference_chamfer_depth(m) for m in masks])
    deepest = int(reference.max())
    assert deepest > 3
    job = ErosionDepth(_batch(masks))
    for steps in (1, 2, 3, deepest - 1, deepest, deepest + 2):
        job.advance(steps - job.steps)
        assert job.steps == steps
        np.testing.assert_array_equal(job.depth()[:, 0].numpy(), np.minimum(reference, steps))
        assert bool(job.pending()) == (deepest > steps)
        assert int(job.max_depth()) == min(deepest, steps)


def test_start_chamfer_depth_partial_then_finished() -> None:
    rng = np.random.default_rng(2)
    masks = _regions(rng, (29, 19), 5)
    reference = np.stack([reference_chamfer_depth(m) for m in masks])
    depth, job = start_chamfer_depth(_batch(masks), 2, "erosion")
    assert job is not None
    np.testing.assert_array_equal(depth[:, 0].numpy(), np.minimum(reference, 2))
    assert bool(job.pending())
    np.testing.assert_array_equal(job.finish().depth()[:, 0].numpy(), reference)
    assert not bool(job.pending())
    exact, none = start_chamfer_depth(_batch(masks), 2, "scipy")
    assert none is None
    np.testing.assert_array_equal(exact[:, 0].numpy(), reference)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        start_chamfer_depth(_batch(masks), 0)
    with pytest.raises(ValueError, match="region must be"):
        start_chamfer_depth(torch.zeros(2, 2, 5, 5, dtype=torch.bool), 3, "erosion")


def test_error_regions_and_draw_clicks_compose_to_simulate() -> None:
    rng = np.random.default_rng(3)
    label = _batch(np.stack([_blob(rng, (24, 24)) for _ in range(6)]))
    pred = _batch(np.stack([_blob(rng, (24, 24)) for _ in range(6)]))
    uniform = torch.from_numpy(rng.uniform(size=6))
    regions = error_regions(label, pred)
    clicks = draw_clicks(regions, chamfer_depth(regions.region), uniform)
    expected = simulate_error_clicks(label, pred, uniform)
    for name in ("index", "positive", "valid", "fn_voxels", "fp_voxels"):
        torch.testing.assert_close(getattr(clicks, name), getattr(expected, name))
    with pytest.raises(ValueError, match="uniform must have shape"):
        draw_clicks(regions, chamfer_depth(regions.region), uniform[:3])
    with pytest.raises(ValueError, match="same shape"):
        error_regions(label, pred[:, :, :5])


# --- weights and sampling -------------------------------------------------------------------------------------------


def test_click_weights_are_proportional_to_exp_d_minus_one() -> None:
    depth = torch.tensor([[0, 1, 2, 3, 5, 0], [0, 0, 0, 0, 0, 0]])
    w = click_weights(depth)
    assert w.dtype == torch.float64
    expected = np.expm1(depth[0].numpy().astype(np.float64))
    np.testing.assert_allclose(w[0].numpy() / w[0].sum().item(), expected / expected.sum(), rtol=1e-12)
    assert (w[0][depth[0] == 0] == 0).all()
    assert (w[1] == 0).all()


def test_click_weights_numerically_safe_for_huge_depths() -> None:
    depth = torch.tensor([[0, 1, 500, 999, 1000, 1000]])
    w = click_weights(depth)
    assert torch.isfinite(w).all()
    assert float(w[0, 4]) == pytest.approx(1.0)
    assert float(w[0, 3]) == pytest.approx(np.exp(-1.0))
    assert float(w[0, 0]) == 0.0


def test_sample_flat_indices_inverse_cdf() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    for u, expected in [(0.0, 1), (0.2, 1), (0.25, 3), (0.9, 3), (0.999999, 3)]:
        index, valid = sample_flat_indices(weights, torch.tensor([u, u, u]))
        assert index.tolist()[0] == expected, u
        assert index.tolist()[2] == 0
        assert valid.tolist() == [True, False, True]
    index, _ = sample_flat_indices(weights, torch.zeros(3))
    assert 0 <= int(index[1]) < 4


def test_empirical_click_distribution_matches_exp_d_minus_one() -> None:
    """Many uniform draws on one region: voxel frequencies match (exp(d) - 1) / sum, deeper voxels win."""
    region = np.zeros((11, 11), dtype=bool)
    region[1:10, 2:9] = True  # depths 1..4
    label = np.repeat(region[None], 6000, axis=0)
    uniform = torch.from_numpy(np.random.default_rng(3).random(len(label)))
    clicks = simulate_error_clicks(_batch(label), torch.zeros(len(label), 1, 11, 11, dtype=torch.bool), uniform)
    assert clicks.valid.all()
    assert clicks.positive.all()
    counts = np.bincount(clicks.index.numpy(), minlength=region.size)
    depth = reference_chamfer_depth(region).ravel()
    assert counts[depth == 0].sum() == 0  # never outside the region
    expected = np.expm1(depth.astype(np.float64))
    expected /= expected.sum()
    frequency = counts / counts.sum()
    per_depth = {d: (frequency[depth == d].sum(), expected[depth == d].sum()) for d in range(1, depth.max() + 1)}
    for d, (observed, wanted) in per_depth.items():
        assert observed == pytest.approx(wanted, abs=0.02), d
    per_voxel = [frequency[depth == d].mean() for d in range(1, depth.max() + 1)]
    assert per_voxel == sorted(per_voxel)  # deeper voxels are chosen more often
    assert per_voxel[-1] > 10 * per_voxel[0]


def test_large_structure_is_numerically_safe_and_clicks_near_the_centre() -> None:
    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 199.5) ** 2 + (xx - 199.5) ** 2 < 199**2
    full = np.ones((400, 400), dtype=bool)
    label = _batch(np.stack([disc] * 4 + [full]))
    uniform = torch.tensor([0.01, 0.37, 0.72, 0.99, 0.5], dtype=torch.float64)
    for backend in ("erosion", "scipy"):
        depth = chamfer_depth(label, backend).flatten(1)
        assert int(depth[0].max()) > 100  # exp(d) alone overflows float32 here
        assert torch.isfinite(click_weights(depth)).all()
        clicks = simulate_error_clicks(label, torch.zeros_like(label), uniform, backend)
        assert clicks.valid.all()
        assert clicks.positive.all()
        coords = clicks.coordinates((400, 400)).numpy()
        assert all(disc[tuple(c)] for c in coords[:4])
        assert np.abs(coords[:4] - 199.5).max() < 15
        assert coords[4].min() >= 0
        assert coords[4].max() < 400


# --- simulate_error_clicks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(21, 19), (12, 14, 9)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_clicks_equal_reference_for_same_uniforms(shape: tuple[int, ...], backend: str) -> None:
    rng = np.random.default_rng(42)
    n = 40
    labels = np.stack([_blob(rng, shape) for _ in range(n)])
    preds = np.stack([_blob(rng, shape) if i % 3 else np.zeros(shape, bool) for i in range(n)])
    preds[-2] = labels[-2]  # perfect prediction: no click
    labels[-1], preds[-1] = True, False  # region filling the whole array
    uniform = torch.from_numpy(rng.random(n))
    clicks = simulate_error_clicks(_batch(labels), _batch(preds), uniform, backend)  # type: ignore[arg-type]
    coords = clicks.coordinates(shape).numpy()
    n_clicks = 0
    for i in range(n):
        ref = reference_error_click(labels[i], preds[i], float(uniform[i]))
        if ref is None:
            assert not bool(clicks.valid[i]), i
            continue
        n_clicks += 1
        assert bool(clicks.valid[i]), i
        assert tuple(coords[i]) == ref[0], i
        assert bool(clicks.positive[i]) == ref[1], i
    assert n_clicks >= n - 3
    assert int(clicks.fn_voxels[0]) == int((labels[0] & ~preds[0]).sum())
    assert int(clicks.fp_voxels[0]) == int((preds[0] & ~labels[0]).sum())


@pytest.mark.parametrize("backend", ["erosion", "scipy"])
def test_clicks_land_in_the_intended_error_region(backend: str) -> None:
    rng = np.random.default_rng(7)
    shape = (24, 24)
    labels = np.stack([_blob(rng, shape) for _ in range(60)])
    preds = np.stack([_blob(rng, shape) for _ in range(60)])
    clicks = simulate_error_clicks(_batch(labels), _batch(preds), torch.from_numpy(rng.random(60)), backend)  # type: ignore[arg-type]
    coords = clicks.coordinates(shape).numpy()
    n_pos = n_neg = 0
    for i, (y, x) in enumerate(coords):
        fn, fp = labels[i] & ~preds[i], preds[i] & ~labels[i]
        assert bool(clicks.positive[i]) == (fn.sum() >= fp.sum())
        if not bool(clicks.valid[i]):
            continue
        if bool(clicks.positive[i]):
            assert fn[y, x], i  # positive click in a missed foreground voxel
            n_pos += 1
        else:
            assert fp[y, x], i  # negative click in a false-positive voxel
            n_neg += 1
    assert n_pos > 5
    assert n_neg > 5


def test_type_rule_and_tie_gives_positive() -> None:
    label = np.zeros((3, 12, 12), dtype=bool)
    pred = np.zeros((3, 12, 12), dtype=bool)
    label[0, 2:5, 2:5] = True  # FN 9 voxels, FP 9 voxels: tie -> positive
    pred[0, 7:10, 7:10] = True
    label[1, 2:4, 2:4] = True  # FN 4 < FP 9 -> negative
    pred[1, 7:10, 7:10] = True
    label[2, 2:6, 2:6] = True  # FN 16 > FP 9 -> positive
    pred[2, 7:10, 7:10] = True
    clicks = simulate_error_clicks(_batch(label), _batch(pred), torch.full((3,), 0.5, dtype=torch.float64))
    assert clicks.positive.tolist() == [True, False, True]
    assert clicks.fn_voxels.tolist() == [9, 4, 16]
    assert clicks.fp_voxels.tolist() == [9, 9, 9]
    assert clicks.valid.all()
    coords = clicks.coordinates((12, 12)).tolist()
    assert coords[0] == [3, 3]  # the only deepest voxel of a 3x3 square
    assert coords[1] == [8, 8]
    assert label[2][tuple(coords[2])]


def test_first_click_from_empty_prediction_is_inside_label() -> None:
    rng = np.random.default_rng(5)
    labels = np.stack([_blob(rng, (10, 12, 8)) for _ in range(20)])
    clicks = simulate_error_clicks(_batch(labels), torch.zeros(20, 1, 10, 12, 8), torch.from_numpy(rng.random(20)))
    assert clicks.positive.all()
    assert clicks.valid.all()
    assert all(labels[i][tuple(c)] for i, c in enumerate(clicks.coordinates((10, 12, 8)).tolist()))
    assert (clicks.fp_voxels == 0).all()


def test_no_click_when_prediction_is_perfect() -> None:
    label = torch.zeros(2, 1, 8, 8)
    label[0, 0, 2:6, 2:6] = 1  # sample 1: empty label and empty prediction
    clicks = simulate_error_clicks(label, label.clone(), torch.tensor([0.3, 0.6], dtype=torch.float64))
    assert clicks.valid.tolist() == [False, False]
    assert clicks.positive.tolist() == [True, True]  # tie 0 == 0, but no region to click in
    maps, _ = add_new_clicks(torch.zeros(2, 2, 8, 8, dtype=torch.bool), clicks)
    assert not maps.any()
    assert reference_error_click(label[0, 0].numpy(), label[0, 0].numpy(), 0.3) is None


def test_seeded_determinism() -> None:
    rng = np.random.default_rng(11)
    label = _batch(np.stack([_blob(rng, (16, 16, 8)) for _ in range(8)]))
    pred = torch.zeros_like(label)

    def run(seed: int) -> torch.Tensor:
        uniform = torch.rand(8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return simulate_error_clicks(label, pred, uniform).index

    torch.testing.assert_close(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_simulate_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        simulate_error_clicks(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9), torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        simulate_error_clicks(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="uniform must have shape"):
        simulate_error_clicks(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(3))


# --- ClickBatch / add_new_clicks ------------------------------------------------------------------------------------


def test_coordinates_unravel_in_c_order() -> None:
    batch = ClickBatch(
        index=torch.tensor([0, 7, 59]),
        positive=torch.ones(3, dtype=torch.bool),
        valid=torch.ones(3, dtype=torch.bool),
        fn_voxels=torch.zeros(3, dtype=torch.int64),
        fp_voxels=torch.zeros(3, dtype=torch.int64),
    )
    coords = batch.coordinates((3, 4, 5)).tolist()
    assert coords == [list(np.unravel_index(i, (3, 4, 5))) for i in (0, 7, 59)]


def test_add_new_clicks_reports_only_newly_set_voxels() -> None:
    maps = torch.zeros(3, 2, 6, 6, dtype=torch.bool)
    maps[0, 0, 1, 1] = True  # sample 0 clicks an already clicked voxel again
    clicks = ClickBatch(
        index=torch.tensor([7, 7, 8]),
        positive=torch.tensor([True, False, True]),
        valid=torch.tensor([True, True, False]),
        fn_voxels=torch.zeros(3),
        fp_voxels=torch.zeros(3),
    )
    out, fresh = add_new_clicks(maps, clicks)
    assert fresh.tolist() == [False, True, False]
    assert bool(out[0, 0, 1, 1])
    assert bool(out[1, 1, 1, 1])
    assert not bool(out[2].any())
    assert int(out.sum()) == 2
    assert not bool(maps[1].any())  # the input is not modified
    _, inactive = add_new_clicks(maps, clicks, torch.tensor([True, False, True]))
    assert inactive.tolist() == [False, False, False]


def test_add_new_clicks_respects_type_validity_and_active() -> None:
    clicks = ClickBatch(
        index=torch.tensor([5, 6, 7, 8]),
        positive=torch.tensor([True, False, True, False]),
        valid=torch.tensor([True, True, False, True]),
        fn_voxels=torch.zeros(4, dtype=torch.int64),
        fp_voxels=torch.zeros(4, dtype=torch.int64),
    )
    maps = torch.zeros(4, 2, 3, 4, dtype=torch.bool)
    maps[3, 0, 0, 0] = True  # an earlier click is kept
    before = maps.clone()
    active = torch.tensor([True, True, True, False])
    out, _ = add_new_clicks(maps, clicks, active)
    torch.testing.assert_close(maps, before)  # the input is not modified
    assert out.dtype == torch.bool
    assert out.shape == maps.shape
    assert out[0, 0].flatten().nonzero().flatten().tolist() == [5]
    assert not out[0, 1].any()
    assert out[1, 1].flatten().nonzero().flatten().tolist() == [6]
    assert not out[1, 0].any()
    assert not out[2].any()  # no valid click
    torch.testing.assert_close(out[3], before[3])  # not active
    everyone, _ = add_new_clicks(maps, clicks)
    assert everyone[3, 1].flatten().nonzero().flatten().tolist() == [8]
    again, _ = add_new_clicks(out, clicks, active)  # clicking the same voxel twice keeps it set
    torch.testing.assert_close(again, out)
