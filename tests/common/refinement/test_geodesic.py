"""Tests for common.refinement.geodesic: exactness against a brute-force Dijkstra, chamfer distances, edges, inputs."""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

import numpy as np
import pytest

from common.refinement.geodesic import _raster, geodesic_distance, neighbour_offsets

METHODS = ["dijkstra", "raster", "auto"]


def _brute_force(
    image: np.ndarray, seeds: np.ndarray, spacing: tuple[float, ...], gamma: float, connectivity: str
) -> np.ndarray:
    """Dijkstra with a heap over the explicit neighbourhood (written independently of the module)."""
    ndim = image.ndim
    if connectivity == "full":
        offsets = [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    else:
        offsets = [tuple(s if a == axis else 0 for a in range(ndim)) for axis in range(ndim) for s in (-1, 1)]
    dist = np.full(image.shape, np.inf)
    heap: list[tuple[float, tuple[int, ...]]] = []
    for idx in zip(*np.nonzero(seeds), strict=True):
        x = tuple(int(i) for i in idx)
        dist[x] = 0.0
        heap.append((0.0, x))
    heapq.heapify(heap)
    while heap:
        d, x = heapq.heappop(heap)
        if d > dist[x]:
            continue
        for o in offsets:
            y = tuple(a + b for a, b in zip(x, o, strict=True))
            if any(c < 0 or c >= n for c, n in zip(y, image.shape, strict=True)):
                continue
            step2 = sum((oo * s) ** 2 for oo, s in zip(o, spacing, strict=True))
            w = math.sqrt(step2 + gamma**2 * (image[x] - image[y]) ** 2)
            if d + w < dist[y]:
                dist[y] = d + w
                heapq.heappush(heap, (d + w, y))
    return dist


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("connectivity", ["full", "face"])
@pytest.mark.parametrize("shape", [(5, 6), (3, 4, 5)])
def test_equals_brute_force_dijkstra(shape: tuple[int, ...], connectivity: str, method: str) -> None:
    rng = np.random.default_rng(sum(shape) + len(connectivity))
    for gamma in (0.0, 0.3, 1.0, 4.0):
        image = rng.normal(size=shape)
        seeds = rng.random(shape) < 0.15
        seeds.flat[rng.integers(seeds.size)] = True
        spacing = tuple(rng.uniform(0.4, 2.5, size=len(shape)))
        expected = _brute_force(image, seeds, spacing, gamma, connectivity)
        got = geodesic_distance(image, seeds, spacing=spacing, gamma=gamma, connectivity=connectivity, method=method)
        assert got.dtype == np.float64
        assert got.shape == shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert (got[seeds] == 0).all()
        assert (got[~seeds] > 0).all()


def test_neighbour_offsets() -> None:
    assert len(neighbour_offsets(2, "full")) == 8
    assert len(neighbour_offsets(3, "full")) == 26
    assert sorted(neighbour_offsets(2, "face")) == [(-1, 0), (0, -1), (0, 1), (1, 0)]
    assert len(neighbour_offsets(3, "face")) == 6


@pytest.mark.parametrize("method", METHODS)
def test_gamma_zero_gives_chamfer_distances_2d(method: str) -> None:
    shape = (5, 7)
    seeds = np.zeros(shape, dtype=bool)
    seeds[1, 2] = True
    image = np.random.default_rng(0).normal(size=shape)  # ignored with gamma = 0
    sx, sy = 2.0, 0.5
    full = geodesic_distance(image, seeds, spacing=(sx, sy), gamma=0.0, method=method)
    face = geodesic_distance(image, seeds, spacing=(sx, sy), gamma=0.0, connectivity="face", method=method)
    for i, j in np.ndindex(shape):
        a, b = abs(i - 1), abs(j - 2)
        m = min(a, b)
        assert full[i, j] == pytest.approx(m * math.hypot(sx, sy) + (a - m) * sx + (b - m) * sy, abs=1e-12)
        assert face[i, j] == pytest.approx(a * sx + b * sy, abs=1e-12)
    # a uniform image gives the same distances whatever gamma
    uniform = geodesic_distance(np.full(shape, 3.0), seeds, spacing=(sx, sy), gamma=7.0, method=method)
    np.testing.assert_allclose(uniform, full, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gamma_zero_gives_chamfer_distances_3d(method: str) -> None:
    shape = (4, 5, 6)
    seeds = np.zeros(shape, dtype=bool)
    seeds[0, 0, 0] = True
    dist = geodesic_distance(np.zeros(shape), seeds, gamma=0.0, method=method)
    for idx in np.ndindex(shape):
        a, b, c = sorted(idx)
        expected = a * math.sqrt(3) + (b - a) * math.sqrt(2) + (c - b)
        assert dist[idx] == pytest.approx(expected, abs=1e-12)
    face = geodesic_distance(np.zeros(shape), seeds, gamma=0.0, connectivity="face", method=method)
    np.testing.assert_allclose(face, np.indices(shape).sum(axis=0), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("connectivity", ["full", "face"])
def test_an_intensity_edge_adds_its_step_length(method: str, connectivity: str) -> None:
    height, gamma, spacing = 2.5, 1.5, (1.0, 0.8)
    image = np.zeros((3, 8))
    image[:, 4:] = height  # a vertical edge between columns 3 and 4
    seeds = np.zeros(image.shape, dtype=bool)
    seeds[1, 0] = True
    dist = geodesic_distance(image, seeds, spacing=spacing, gamma=gamma, connectivity=connectivity, method=method)
    flat = geodesic_distance(
        np.zeros(image.shape), seeds, spacing=spacing, gamma=gamma, connectivity=connectivity, method=method
    )
    crossing = math.sqrt(0.8**2 + gamma**2 * height**2)  # the one horizontal step across the edge
    for j in range(8):
        expected = j * 0.8 if j < 4 else (j - 1) * 0.8 + crossing
        assert dist[1, j] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(dist[:, :4], flat[:, :4], atol=1e-12)
    if connectivity == "face":  # every path crosses the edge with one horizontal step
        np.testing.assert_allclose(dist[:, 4:] - flat[:, 4:], crossing - 0.8, atol=1e-12)
    else:  # rows 0 and 2: one diagonal step, cheapest where it crosses the edge (sqrt is concave)
        diagonal = math.hypot(1.0, 0.8)
        for j in range(4, 8):
            expected = min(
                math.sqrt(diagonal**2 + gamma**2 * height**2) + (j - 1) * 0.8,
                diagonal + (j - 2) * 0.8 + crossing,
            )
            assert dist[0, j] == pytest.approx(expected, abs=1e-12)
            assert dist[2, j] == pytest.approx(expected, abs=1e-12)


def _maze(size: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """A serpentine: horizontal walls (intensity 10) every 4 rows, with the gap alternating sides."""
    image = np.zeros((size, size))
    for n, row in enumerate(range(2, size - 1, 4)):
        image[row, :] = 10.0
        if n % 2 == 0:
            image[row, -2:] = 0.0
        else:
            image[row, :2] = 0.0
    seeds = np.zeros(image.shape, dtype=bool)
    seeds[0, 0] = True
    return image, seeds


def test_raster_converges_to_the_exact_distance_on_a_winding_path() -> None:
    image, seeds = _maze()
    exact = geodesic_distance(image, seeds, gamma=100.0, method="dijkstra")
    np.testing.assert_allclose(_brute_force(image, seeds, (1.0, 1.0), 100.0, "full"), exact, atol=1e-9)
    raster = geodesic_distance(image, seeds, gamma=100.0, method="raster")
    np.testing.assert_allclose(raster, exact, atol=1e-9)
    one_sweep, _ = _raster(image, seeds, (1.0, 1.0), 100.0, "full", max_sweeps=1)
    assert (one_sweep >= exact - 1e-9).all()
    assert (one_sweep > exact + 1.0).any()  # one sweep is not enough: the path turns back
    _, sweeps = _raster(image, seeds, (1.0, 1.0), 100.0, "full")
    assert sweeps > 2


@pytest.mark.parametrize("method", METHODS)
def test_limit_cuts_distances_to_inf(method: str) -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(9, 10))
    seeds = np.zeros(image.shape, dtype=bool)
    seeds[4, 4] = True
    full = geodesic_distance(image, seeds, gamma=0.5, method=method)
    cut = geodesic_distance(image, seeds, gamma=0.5, method=method, limit=3.0)
    inside = full <= 3.0
    assert inside.sum() > 5
    assert (~inside).sum() > 5
    np.testing.assert_allclose(cut[inside], full[inside], atol=1e-12)
    assert np.isinf(cut[~inside]).all()
    zero = geodesic_distance(image, seeds, gamma=0.5, method=method, limit=0)
    assert zero[4, 4] == 0
    assert np.isinf(zero[~seeds]).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(11, 13), (7, 8, 9)])
def test_limit_box_is_exact_with_anisotropic_spacing(shape: tuple[int, ...], method: str) -> None:
    rng = np.random.default_rng(len(shape))
    image = rng.normal(size=shape)
    seeds = np.zeros(shape, dtype=bool)
    seeds[(1,) * len(shape)] = True
    seeds[(4,) * len(shape)] = True
    spacing = (0.6, 1.7, 1.1)[: len(shape)]
    full = geodesic_distance(image, seeds, spacing=spacing, gamma=0.7, method=method)
    for limit in (0.5, 1.7, 2.9, 4.4, 100.0):
        cut = geodesic_distance(image, seeds, spacing=spacing, gamma=0.7, method=method, limit=limit)
        np.testing.assert_allclose(cut, np.where(full <= limit, full, np.inf), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_empty_seeds_give_inf_everywhere(method: str) -> None:
    for shape in [(4, 5), (2, 3, 4)]:
        dist = geodesic_distance(np.ones(shape), np.zeros(shape, dtype=bool), method=method)
        assert dist.shape == shape
        assert dist.dtype == np.float64
        assert np.isinf(dist).all()


def test_integer_inputs_and_disconnected_seeds() -> None:
    image = np.arange(12, dtype=np.int16).reshape(3, 4)
    seeds = np.zeros((3, 4), dtype=np.uint8)
    seeds[0, 0] = seeds[2, 3] = 1
    dist = geodesic_distance(image, seeds, gamma=0.0)
    assert dist[0, 0] == dist[2, 3] == 0
    assert dist[0, 3] == pytest.approx(2.0)  # nearest seed: (2, 3), not (0, 0) at 3
    assert dist[1, 2] == pytest.approx(math.sqrt(2))  # one diagonal from (2, 3), 1 + sqrt(2) from (0, 0)
    assert dist[1, 1] == pytest.approx(math.sqrt(2))
    np.testing.assert_allclose(geodesic_distance(image.astype(np.float32), seeds.astype(bool), gamma=0.0), dist)


@pytest.mark.parametrize(
    ("image", "seeds", "kwargs", "match"),
    [
        (np.zeros(5), np.zeros(5, dtype=bool), {}, "2D or 3D"),
        (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2), dtype=bool), {}, "2D or 3D"),
        (np.zeros((3, 4)), np.zeros((4, 3), dtype=bool), {}, "seeds must have the image's shape"),
        (np.array([[0.0, np.nan]]), np.array([[True, False]]), {}, "NaN or infinite"),
        (np.array([[0.0, np.inf]]), np.array([[True, False]]), {}, "NaN or infinite"),
        (np.zeros((2, 2), dtype=complex), np.ones((2, 2), dtype=bool), {}, "real numeric dtype"),
        (np.zeros((2, 2), dtype=bool), np.ones((2, 2), dtype=bool), {}, "real numeric dtype"),
        (np.zeros((2, 2)), np.full((2, 2), 2), {}, "bool mask"),
        (np.zeros((2, 2)), np.full((2, 2), 0.5), {}, "bool mask"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"gamma": -0.1}, "gamma must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"gamma": float("nan")}, "gamma must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"gamma": True}, "gamma must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": (1.0,)}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": (1.0, 0.0)}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": (1.0, -2.0)}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": (1.0, float("inf"))}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": 1.0}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"spacing": ("a", 1)}, "spacing must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"connectivity": 8}, "connectivity must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"method": "fmm"}, "method must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"limit": -1.0}, "limit must be"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), {"limit": float("nan")}, "limit must be"),
    ],
)
def test_bad_inputs_raise(image: np.ndarray, seeds: np.ndarray, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        geodesic_distance(image, seeds, **kwargs)
