from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np
import pytest

from common.refinement import graphcut
from common.refinement.graphcut import (
    GraphCutTimeout,
    available_backends,
    contrast_weights,
    graph_cut,
    graph_cut_energy,
    grid_edges,
    labelling_energy,
    min_cut,
    probability_costs,
    worst_case_seconds,
)

HAS_PYMAXFLOW = "pymaxflow" in available_backends()
needs_pymaxflow = pytest.mark.skipif(not HAS_PYMAXFLOW, reason="PyMaxflow (optional, GPL-3.0) is not installed")


def _brute_force(
    prob: np.ndarray, image: np.ndarray, lam: float, sigma: float, spacing: Any, connectivity: str, fg: Any, bg: Any
) -> tuple[float, np.ndarray]:
    """Minimum energy over all 2^n labellings (independent of the module: own neighbours, own energy) and the
    energies of every labelling."""
    shape = prob.shape
    n = prob.size
    sp = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=float)
    coords = list(itertools.product(*(range(s) for s in shape)))
    pairs = []
    for a, ca in enumerate(coords):
        for b, cb in enumerate(coords):
            delta = np.subtract(cb, ca)
            if b <= a or np.abs(delta).max() > 1:
                continue
            if connectivity == "face" and np.abs(delta).sum() != 1:
                continue
            dist = float(np.sqrt(((delta * sp) ** 2).sum()))
            ia, ib = image[ca], image[cb]
            pairs.append((a, b, lam * math.exp(-((ia - ib) ** 2) / (2 * sigma**2)) / dist))
    p = np.clip(prob.ravel(), 1e-6, 1 - 1e-6)
    labels = ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
    energy = np.where(labels, -np.log(p), -np.log(1 - p)).sum(axis=1)
    for a, b, w in pairs:
        energy += w * (labels[:, a] != labels[:, b])
    if fg is not None:
        energy[~labels[:, fg.ravel()].all(axis=1)] = np.inf
    if bg is not None:
        energy[labels[:, bg.ravel()].any(axis=1)] = np.inf
    return float(energy.min()), energy


def _random_problem(rng: np.random.Generator, shape: tuple[int, ...], seeds: bool) -> dict[str, Any]:
    prob = rng.random(shape)
    prob[rng.random(shape) < 0.15] = rng.choice([0.0, 1.0, 0.5])  # clipped extremes and exact ties
    fg = bg = None
    if seeds:
        pick = rng.random(shape)
        fg = pick < 0.15
        bg = pick > 0.85
    return {
        "prob": prob,
        "image": rng.normal(0, 1, shape),
        "lam": float(rng.choice([0.0, 0.3, 1.0, 3.0])),
        "sigma": float(rng.choice([0.3, 1.0, 2.0])),
        "spacing": None if rng.random() < 0.3 else tuple(rng.uniform(0.4, 3.0, len(shape))),
        "fg": fg,
        "bg": bg,
    }


@pytest.mark.parametrize("shape", [(3, 3), (3, 4), (2, 2, 3)])
@pytest.mark.parametrize("connectivity", ["face", "full"])
@pytest.mark.parametrize("seeds", [False, True])
def test_energy_equals_the_brute_force_minimum(shape: tuple[int, ...], connectivity: str, seeds: bool) -> None:
    rng = np.random.default_rng(hash((shape, connectivity, seeds)) % 2**32)
    for _ in range(6):
        pr = _random_problem(rng, shape, seeds)
        kw: dict[str, Any] = dict(lam=pr["lam"], sigma=pr["sigma"], spacing=pr["spacing"], connectivity=connectivity)
        out = graph_cut(pr["prob"], pr["image"], fg_seeds=pr["fg"], bg_seeds=pr["bg"], **kw)
        assert out.dtype == np.bool_
        assert out.shape == shape
        best, _ = _brute_force(
            pr["prob"], pr["image"], pr["lam"], pr["sigma"], pr["spacing"], connectivity, pr["fg"], pr["bg"]
        )
        got = graph_cut_energy(out, pr["prob"], pr["image"], fg_seeds=pr["fg"], bg_seeds=pr["bg"], **kw)
        assert got == pytest.approx(best, rel=1e-9, abs=1e-6)
        if pr["fg"] is not None:
            assert out[pr["fg"]].all()
            assert not out[pr["bg"]].any()


def test_ties_go_to_background_the_smallest_minimum_cut() -> None:
    # Uniform p = 0.5: all-foreground and all-background both cost n log 2; the smallest foreground is returned.
    prob = np.full((4, 5), 0.5)
    assert not graph_cut(prob, np.zeros((4, 5)), lam=2.0, sigma=1.0).any()
    # The foreground is the intersection of all minimum labellings (brute force on a 3x3 grid with exact ties).
    rng = np.random.default_rng(3)
    for _ in range(10):
        prob = rng.choice([0.2, 0.5, 0.8], size=(3, 3))
        image = rng.choice([0.0, 1.0], size=(3, 3))
        out = graph_cut(prob, image, lam=0.5, sigma=1.0, connectivity="face")
        best, energies = _brute_force(prob, image, 0.5, 1.0, None, "face", None, None)
        labels = ((np.arange(2**9)[:, None] >> np.arange(9)[None, :]) & 1).astype(bool)
        minimal = labels[energies <= best + 1e-9]
        assert np.array_equal(out.ravel(), minimal.all(axis=0))


def test_lam_zero_is_thresholding_at_one_half_with_seeds_imposed() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((17, 13, 5))
    prob[0, :, 0] = 0.5
    out = graph_cut(prob, rng.normal(size=prob.shape), lam=0.0, sigma=0.1)
    assert np.array_equal(out, prob > 0.5)
    fg = np.zeros(prob.shape, bool)
    fg[3, 3, :] = True
    bg = np.zeros(prob.shape, bool)
    bg[5, 5, :] = True
    out = graph_cut(prob, np.zeros(prob.shape), lam=0.0, sigma=0.1, fg_seeds=fg, bg_seeds=bg)
    assert np.array_equal(out, ((prob > 0.5) | fg) & ~bg)


@pytest.mark.parametrize("lam", [0.5, 10.0, 1000.0])
def test_hard_constraints_hold_against_a_strongly_disagreeing_unary(lam: float) -> None:
    shape = (12, 10, 4)
    image = np.zeros(shape)  # strongest pairwise term everywhere
    fg = np.zeros(shape, bool)
    fg[2, 2, 1] = True
    fg[9, 1:8, 2] = True
    bg = np.zeros(shape, bool)
    bg[6, 4, 0] = True
    bg[0, :, 3] = True
    out = graph_cut(np.zeros(shape), image, lam=lam, sigma=0.1, fg_seeds=fg)  # p = 0 everywhere
    assert out[fg].all()
    out = graph_cut(np.ones(shape), image, lam=lam, sigma=0.1, bg_seeds=bg)  # p = 1 everywhere
    assert not out[bg].any()
    out = graph_cut(np.full(shape, 0.5), image, lam=lam, sigma=0.1, fg_seeds=fg, bg_seeds=bg)
    assert out[fg].all()
    assert not out[bg].any()


def test_anisotropic_spacing_weakens_the_edges_along_the_long_axis() -> None:
    e = grid_edges((3, 3), spacing=(1.0, 3.0), connectivity="full")
    lengths = sorted(set(np.round(e.length, 6)))
    assert lengths == pytest.approx([1.0, 3.0, math.sqrt(10.0)])
    # One confident voxel (logit(0.9) = 2.197) in a background sea, 4 neighbours, constant image:
    # isotropic: cutting 4 edges of weight 0.8 (3.2) > 2.197 -> background;
    # spacing (1, 3): 2 x 0.8 + 2 x 0.8 / 3 = 2.13 < 2.197 -> it stays foreground.
    prob = np.full((5, 5), 0.1)
    prob[2, 2] = 0.9
    kw: dict[str, Any] = dict(lam=0.8, sigma=1.0, connectivity="face")
    assert not graph_cut(prob, np.zeros((5, 5)), **kw).any()
    out = graph_cut(prob, np.zeros((5, 5)), spacing=(1.0, 3.0), **kw)
    assert out[2, 2]
    assert out.sum() == 1
    # A thin 3D bar along axis 2 (gain 5 x logit(0.85) = 8.67), 26 neighbours, lam 0.2: its boundary costs 17.5
    # with 1 mm voxels (removed), 11.9 with spacing (1, 1, 3) (removed: its side edges stay 1 mm), and 7.0 with
    # spacing (3, 3, 1), where the side edges are 3 mm or longer (kept).
    prob3 = np.full((5, 5, 7), 0.2)
    prob3[2, 2, 1:6] = 0.85
    kw3: dict[str, Any] = dict(lam=0.2, sigma=1.0, connectivity="full")
    assert not graph_cut(prob3, np.zeros(prob3.shape), **kw3).any()
    assert not graph_cut(prob3, np.zeros(prob3.shape), spacing=(1.0, 1.0, 3.0), **kw3).any()
    out3 = graph_cut(prob3, np.zeros(prob3.shape), spacing=(3.0, 3.0, 1.0), **kw3)
    assert out3[2, 2, 1:6].all()
    assert out3.sum() == 5


def test_deterministic_and_identical_in_a_forked_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    prob = np.clip(rng.random((24, 20, 6)) * 0.6 + 0.2, 0, 1)
    image = rng.normal(size=prob.shape)
    first = graph_cut(prob, image, lam=2.0, sigma=0.5)
    assert np.array_equal(first, graph_cut(prob, image, lam=2.0, sigma=0.5))
    if graphcut._can_fork():
        # A model that calls every graph too slow for in-process: the cut runs in a child process.
        monkeypatch.setattr(graphcut, "_WORST_CASE_MODEL", {"scipy": (1e3, 1.0), "pymaxflow": (1e3, 1.0)})
        assert worst_case_seconds(10) > 60
        assert np.array_equal(first, graph_cut(prob, image, lam=2.0, sigma=0.5, max_seconds=60.0))


def _sleep_then_zeros() -> np.ndarray:
    time.sleep(30)
    return np.zeros(3, bool)


@pytest.mark.skipif(not graphcut._can_fork(), reason="the hard time limit needs fork (Linux)")
def test_time_guard_stops_the_solver_and_raises() -> None:
    t = time.perf_counter()
    with pytest.raises(GraphCutTimeout, match="smaller crop"):
        graphcut._run_isolated(_sleep_then_zeros, 3, 0.3)
    assert time.perf_counter() - t < 5
    labels = np.arange(13) % 3 == 0
    assert np.array_equal(graphcut._run_isolated(lambda: labels, 13, 30.0), labels)
    with pytest.raises(RuntimeError, match="process failed"):
        graphcut._run_isolated(lambda: np.zeros(5, bool), 13, 30.0)  # wrong length
    prob = np.random.default_rng(0).random((40, 40))
    with pytest.raises(GraphCutTimeout):
        graph_cut(prob, np.zeros_like(prob), lam=1.0, sigma=0.1, max_seconds=1e-6)


def test_worst_case_estimate_grows_with_size_and_backend() -> None:
    assert 0 < worst_case_seconds(1000) < worst_case_seconds(10**6) < worst_case_seconds(10**7)
    assert worst_case_seconds(10**6, "pymaxflow") > worst_case_seconds(10**6, "scipy")


@needs_pymaxflow
def test_pymaxflow_gives_the_same_labelling_as_scipy() -> None:
    rng = np.random.default_rng(11)
    for shape in [(3, 3), (2, 2, 3), (30, 40), (12, 14, 9)]:
        for seeds in (False, True):
            pr = _random_problem(rng, shape, seeds)
            for connectivity in ("face", "full"):
                kw: dict[str, Any] = dict(
                    lam=pr["lam"], sigma=pr["sigma"], spacing=pr["spacing"], connectivity=connectivity
                )
                a = graph_cut(pr["prob"], pr["image"], fg_seeds=pr["fg"], bg_seeds=pr["bg"], backend="scipy", **kw)
                b = graph_cut(pr["prob"], pr["image"], fg_seeds=pr["fg"], bg_seeds=pr["bg"], backend="pymaxflow", **kw)
                assert np.array_equal(a, b)
    # exact ties: the same smallest cut
    prob = np.full((6, 6), 0.5)
    assert not graph_cut(prob, np.zeros((6, 6)), lam=1.0, sigma=1.0, backend="pymaxflow").any()


def test_auto_backend_is_scipy() -> None:
    rng = np.random.default_rng(2)
    prob, image = rng.random((9, 11)), rng.normal(size=(9, 11))
    a = graph_cut(prob, image, lam=1.0, sigma=1.0, backend="auto")
    assert np.array_equal(a, graph_cut(prob, image, lam=1.0, sigma=1.0, backend="scipy"))
    assert available_backends()[0] == "scipy"


def test_low_level_pieces_agree_with_graph_cut() -> None:
    rng = np.random.default_rng(4)
    prob, image = rng.random((6, 7, 3)), rng.normal(size=(6, 7, 3))
    edges = grid_edges(prob.shape, (1.0, 2.0, 0.5), "full")
    offsets = graphcut._offsets(3, "full")
    assert len(offsets) == 13
    n_pairs = sum(int(np.prod([s - abs(o) for s, o in zip(prob.shape, off, strict=True)])) for off in offsets)
    assert len(edges) == n_pairs
    assert len(grid_edges((6, 7), connectivity="face")) == 5 * 7 + 6 * 6
    assert (edges.first < edges.second).all()
    cost_fg, cost_bg = probability_costs(prob)
    weights = 1.5 * contrast_weights(image, edges, 0.7)
    out = min_cut(cost_fg, cost_bg, edges, weights)
    assert np.array_equal(out, graph_cut(prob, image, lam=1.5, sigma=0.7, spacing=(1.0, 2.0, 0.5)))
    e1 = labelling_energy(out, cost_fg, cost_bg, edges, weights)
    assert e1 == pytest.approx(graph_cut_energy(out, prob, image, lam=1.5, sigma=0.7, spacing=(1.0, 2.0, 0.5)))
    assert e1 <= labelling_energy(prob > 0.5, cost_fg, cost_bg, edges, weights) + 1e-9
    assert labelling_energy(~out, cost_fg, cost_bg, edges, weights, fg_seeds=out) == math.inf


def _errors() -> list[tuple[dict[str, Any], str]]:
    p = np.full((4, 5), 0.3)
    i = np.zeros((4, 5))
    both = np.zeros((4, 5), bool)
    both[1, 1] = True
    nan = p.copy()
    nan[0, 0] = np.nan
    inf = i.copy()
    inf[1, 2] = np.inf
    return [
        ({"prob": nan}, "prob contains NaN"),
        ({"image": inf}, "image contains NaN"),
        ({"prob": p + 0.8}, r"\[0, 1\]"),
        ({"prob": p - 0.5}, r"\[0, 1\]"),
        ({"image": np.zeros((4, 6))}, "differs from prob shape"),
        ({"prob": np.full(5, 0.3), "image": np.zeros(5)}, "2D"),
        ({"prob": np.full((2, 2, 2, 2), 0.3), "image": np.zeros((2, 2, 2, 2))}, "2D"),
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"spacing": (1.0,)}, "spacing"),
        ({"spacing": (1.0, 0.0)}, "spacing"),
        ({"connectivity": "diagonal"}, "connectivity"),
        ({"backend": "networkx"}, "backend"),
        ({"fg_seeds": both, "bg_seeds": both}, "both foreground and background"),
        ({"fg_seeds": np.zeros((5, 4), bool)}, "fg_seeds shape"),
        ({"bg_seeds": np.full((4, 5), 0.5)}, "bool mask"),
        ({"max_seconds": 0.0}, "max_seconds"),
        ({"max_seconds": True}, "max_seconds"),
        ({"lam": True}, "lam"),
        ({"prob": np.full((4, 5), True), "image": i}, "numeric"),
    ]


@pytest.mark.parametrize(("change", "message"), _errors())
def test_bad_inputs_raise_value_errors(change: dict[str, Any], message: str) -> None:
    kw: dict[str, Any] = {"prob": np.full((4, 5), 0.3), "image": np.zeros((4, 5)), "lam": 1.0, "sigma": 0.1}
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        graph_cut(kw.pop("prob"), kw.pop("image"), **kw)


def test_missing_pymaxflow_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphcut, "available_backends", lambda: ("scipy",))
    with pytest.raises(ValueError, match="pip install PyMaxflow"):
        graph_cut(np.full((3, 3), 0.3), np.zeros((3, 3)), lam=1.0, sigma=0.1, backend="pymaxflow")
