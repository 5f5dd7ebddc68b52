"""Geodesic distance benchmark: speed and exactness of the implementations of :mod:`common.refinement.geodesic`.

Every method computes the generalised geodesic distance (GeoS) of the voxels of one synthetic image to one scribble,
on the BIFSeg crop sizes (2D ``96 x 128`` and ``256 x 256``, 3D ``80 x 80 x 40`` and ``80^3``), side by side:

- ``dijkstra``: exact shortest paths (:func:`scipy.sparse.csgraph.dijkstra` on the neighbourhood graph), the reference
  of the error columns, and what ``method="auto"`` runs;
- ``dijkstra<=eps``: the same with ``limit = 0.2 x`` the crop's diagonal, as the BIFSeg weight map calls it (the
  error is measured where the exact distance is within the limit; beyond it the result is ``inf`` by design);
- ``raster``: vectorised numpy raster scans until a sweep changes nothing (exact; the ``sweeps`` column counts the
  sweeps, the last one included);
- ``raster-1``, ``raster-2``: one and two sweeps only, as GeodisTK and FastGeodis do by default (approximate);
- ``mcp-geom``: :class:`skimage.graph.MCP_Geometric`, whose step cost is ``d_ij (c_i + c_j) / 2`` with a *node*
  cost ``c``: it cannot express ``sqrt(d_ij^2 + gamma^2 (I_i - I_j)^2)``. Here ``c = sqrt(1 + gamma^2 |grad I|^2)``
  (the continuous GeoS metric across the gradient), an approximation; exact for ``gamma = 0``.

Two scenes per size: ``smooth`` (a bright disc or ball in smoothed noise, z-scored; the scribble is a straight
segment through the middle along axis 0; ``gamma = 1``), and ``maze`` (the same noise with walls of 4 standard
deviations across axis 0 every 8 voxels, each open at alternate ends of axis 1, so that with ``gamma = 20`` the
shortest paths wind back and forth; the scribble is a short segment at the origin corner). Reported: the median time
of ``--repeats`` runs, the largest absolute error against ``dijkstra`` and the same relative to the
largest finite distance. The process's CPU time is reported next to the wall time: on a shared machine it is the
steadier figure (every method runs on one thread), and the ratio column uses it.

Run from the repository root::

    python bench/geodesic.py                       # about 30 s on one CPU thread
    python bench/geodesic.py --sizes 96x128 80x80x80 --repeats 5 --json outputs/bench/geodesic.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.graph import MCP_Geometric

from common.refinement.geodesic import _raster, geodesic_distance

DEFAULT_SIZES = ["96x128", "256x256", "80x80x40", "80x80x80"]
METHODS = ["dijkstra", "dijkstra<=eps", "raster", "raster-1", "raster-2", "mcp-geom"]
EPSILON = 0.2


def parse_size(text: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in text.lower().split("x"))
    if len(shape) not in (2, 3) or min(shape) < 3:
        raise argparse.ArgumentTypeError(f"size must be HxW or HxWxD with sides >= 3, got {text!r}")
    return shape


def scene(shape: tuple[int, ...], kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """``(image, scribble mask, gamma)`` of a scene (see the module docstring)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    image = 0.3 * noise / noise.std()
    seeds = np.zeros(shape, dtype=bool)
    middle = [s // 2 for s in shape]
    if kind == "smooth":
        grid = np.indices(shape, dtype=np.float64)
        radius = np.sqrt(sum(((g - s / 2) / s) ** 2 for g, s in zip(grid, shape, strict=True)))
        image = image + 2.0 * (radius < 0.25)
        line: tuple[int | slice, ...] = (slice(shape[0] // 3, 2 * shape[0] // 3), *middle[1:])
        seeds[line] = True
        gamma = 1.0
    elif kind == "maze":
        for n, row in enumerate(range(4, shape[0] - 2, 8)):
            wall = np.zeros(shape[1], dtype=bool)
            wall[3:-3] = True
            wall[-3:] = n % 2 == 1  # open at the far end of axis 1 on even walls, at the near end on odd ones
            wall[:3] = n % 2 == 0
            image[row][wall] += 4.0
        corner: tuple[int | slice, ...] = (slice(0, 2), 0, *([middle[2]] if len(shape) == 3 else []))
        seeds[corner] = True
        gamma = 20.0
    else:
        raise ValueError(f"unknown scene {kind!r}")
    return (image - image.mean()) / image.std(), seeds, gamma


def _mcp_geometric(image: np.ndarray, seeds: np.ndarray, gamma: float) -> np.ndarray:
    grad = np.gradient(image)
    cost = np.sqrt(1.0 + gamma**2 * sum(g * g for g in grad))
    mcp = MCP_Geometric(cost, fully_connected=True)
    dist, _ = mcp.find_costs(np.argwhere(seeds))
    return np.asarray(dist, dtype=np.float64)


def runners(
    image: np.ndarray, seeds: np.ndarray, gamma: float, limit: float
) -> dict[str, Callable[[], tuple[np.ndarray, int | None]]]:
    ones = (1.0,) * image.ndim
    return {
        "dijkstra": lambda: (geodesic_distance(image, seeds, gamma=gamma, method="dijkstra"), None),
        "dijkstra<=eps": lambda: (geodesic_distance(image, seeds, gamma=gamma, method="dijkstra", limit=limit), None),
        "raster": lambda: _raster(image, seeds, ones, gamma, "full"),
        "raster-1": lambda: _raster(image, seeds, ones, gamma, "full", max_sweeps=1),
        "raster-2": lambda: _raster(image, seeds, ones, gamma, "full", max_sweeps=2),
        "mcp-geom": lambda: (_mcp_geometric(image, seeds, gamma), None),
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line entry point; prints the table and returns its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--scenes", nargs="+", choices=["smooth", "maze"], default=["smooth", "maze"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--json", type=Path, help="write every row and the environment to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    rows: list[dict[str, Any]] = []
    header = (
        f"{'size':<10}{'scene':<8}{'gamma':>6}  {'method':<15}{'ms':>9}{'cpu ms':>9}{'x exact':>9}{'sweeps':>8}"
        f"{'max |err|':>11}{'rel err':>10}"
    )
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    for shape in args.sizes:
        for kind in args.scenes:
            image, seeds, gamma = scene(shape, kind)
            limit = EPSILON * math.sqrt(sum(s * s for s in shape))
            run = runners(image, seeds, gamma, limit)
            exact, _ = run["dijkstra"]()
            scale = float(exact[np.isfinite(exact)].max())
            base_ms = None
            for method in args.methods:
                times, cpu_times, out, sweeps = [], [], exact, None
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    out, sweeps = run[method]()
                    times.append(time.perf_counter() - t0)
                    cpu_times.append(time.process_time() - c0)
                ms = 1000 * statistics.median(times)
                cpu_ms = 1000 * statistics.median(cpu_times)
                where = exact <= limit if method == "dijkstra<=eps" else np.ones(exact.shape, dtype=bool)
                err = float(np.abs(out[where] - exact[where]).max())
                if method == "dijkstra":
                    base_ms = cpu_ms
                row = {
                    "size": "x".join(map(str, shape)),
                    "scene": kind,
                    "gamma": gamma,
                    "method": method,
                    "ms": ms,
                    "cpu_ms": cpu_ms,
                    "ratio": cpu_ms / base_ms if base_ms else float("nan"),
                    "sweeps": sweeps,
                    "max_abs_err": err,
                    "rel_err": err / scale,
                    "times_s": times,
                    "cpu_times_s": cpu_times,
                }
                rows.append(row)
                print(
                    f"{row['size']:<10}{kind:<8}{gamma:>6g}  {method:<15}{ms:>9.1f}{cpu_ms:>9.1f}{row['ratio']:>9.2f}"
                    f"{sweeps if sweeps is not None else '-':>8}{err:>11.2e}{err / scale:>10.1e}",
                    flush=True,
                )
    print(
        f"\n{time.perf_counter() - start:.0f} s; errors against 'dijkstra'; 'x exact' = CPU time / dijkstra's CPU time"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        env = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
