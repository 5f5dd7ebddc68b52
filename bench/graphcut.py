"""Graph-cut benchmark: SciPy (Dinic) against PyMaxflow (Boykov-Kolmogorov) on BIFSeg-sized problems, and GrabCut.

For each size, :func:`common.refinement.graphcut.graph_cut` is timed with each backend (``max_seconds=None``: the
solver alone, no time guard) and once more with SciPy and the default guard (``max_seconds=30``: in-process or in a
forked child, whichever the guard picks; the ``path`` column), on two unaries:

- ``blob``: a realistic probability, a smooth ellipse / ellipsoid (logistic in the normalised radius, width 1/6)
  plus Gaussian noise (sd 0.1), clipped to [0, 1]; the image is the object (1) on background (0) plus noise (sd 0.3),
  z-scored, as BIFSeg z-scores inside the box;
- ``noise``: uniformly random probabilities on the same image, the slow case of max-flow solvers (smaller sizes).

BIFSeg's settings: ``lam = 3`` (2D) or ``10`` (3D), ``sigma = 0.1``, 8 / 26 neighbours (``--connectivity``). Sizes:
2D 96 x 128 (BIFSeg's 2D input, min side 96), 256^2, 512^2; 3D 48^3, 64^3, 80 x 80 x 40 (BIFSeg's 3D input, max side
80). Reported: median seconds over ``--repeats`` (after one untimed warm-up call for the first size), the ratio
SciPy / PyMaxflow, and whether the two labellings are identical and their energies equal. GrabCut
(:func:`common.refinement.grabcut.grabcut`, 5 iterations, 3 + 5 components) is timed on the blob image at 96 x 128
and 64^3 with a loose box (10 % margin).

``--worst`` instead measures the adversarial inputs that :func:`common.refinement.graphcut.worst_case_seconds` is
fitted to (random or ramp probabilities on constant or noisy images, several ``lam``, both connectivities; minutes).

Run from the repository root (one thread; the solvers are single-threaded anyway)::

    OMP_NUM_THREADS=1 python bench/graphcut.py                      # about 2 minutes on a 2-core machine
    OMP_NUM_THREADS=1 python bench/graphcut.py --quick              # seconds
    OMP_NUM_THREADS=1 python bench/graphcut.py --json outputs/bench/graphcut_cpu.json
    OMP_NUM_THREADS=1 python bench/graphcut.py --worst --sizes 128x128 256x256 32x32x32 48x48x48

PyMaxflow (GPL-3.0) is optional: without it only SciPy is timed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

from common.benchmarking import run_environment
from common.refinement import graphcut as gc
from common.refinement.grabcut import grabcut

DEFAULT_SIZES = ["96x128", "256x256", "512x512", "48x48x48", "64x64x64", "80x80x40"]
QUICK_SIZES = ["96x128", "256x256", "32x32x32", "48x48x24"]
#: Sizes at which the pure-noise unary is also timed (slow: up to 10 s per call at 64^3).
DEFAULT_NOISE_SIZES = ["96x128", "256x256", "48x48x48"]
QUICK_NOISE_SIZES = ["96x128", "32x32x32"]
WORST_SIZES = ["128x128", "256x256", "512x512", "32x32x32", "48x48x48"]
GRABCUT_SIZES = ["96x128", "64x64x64"]
QUICK_GRABCUT_SIZES = ["96x128", "32x32x32"]


def parse_size(text: str) -> tuple[int, ...]:
    """``"96x128"`` -> ``(96, 128)``; 2D or 3D."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size {text!r}, expected e.g. 96x128 or 64x64x64") from exc
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: 2 or 3 sizes >= 2")
    return shape


def size_name(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def blob_problem(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prob, image, truth)`` of the realistic case: an off-centre ellipse(-oid) filling about a third of the box."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    centre = (0.1, -0.05, 0.05)[: len(shape)]
    radii = (0.6, 0.5, 0.55)[: len(shape)]
    r = np.sqrt(sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, radii, strict=True)))
    truth = r < 1
    prob = np.clip(1.0 / (1.0 + np.exp(-6.0 * (1.0 - r))) + rng.normal(0, 0.1, shape), 0, 1)
    image = truth + rng.normal(0, 0.3, shape)
    image = (image - image.mean()) / image.std()
    return prob, image, truth


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def bench_graph_cut(
    shape: tuple[int, ...], unary: str, backends: list[str], repeats: int, connectivity: str, guard: bool
) -> dict[str, Any]:
    prob, image, _ = blob_problem(shape)
    if unary == "noise":
        prob = np.random.default_rng(1).random(shape)
    lam = 3.0 if len(shape) == 2 else 10.0
    kw: dict[str, Any] = {"lam": lam, "sigma": 0.1, "connectivity": connectivity}
    row: dict[str, Any] = {"size": size_name(shape), "unary": unary, **kw}
    edges = gc.grid_edges(shape, None, connectivity)
    cost_fg, cost_bg = gc.probability_costs(prob)
    weights = lam * gc.contrast_weights(image, edges, 0.1)
    capacities = gc._quantise(cost_fg, cost_bg, edges, weights, None, None)  # the pairs the guard counts
    row["pairs"] = int(capacities.pair.size)
    row["worst_case_estimate_s"] = gc.worst_case_seconds(row["pairs"])
    labels: dict[str, np.ndarray] = {}
    for backend in backends:
        solve = functools.partial(gc.graph_cut, prob, image, backend=backend, max_seconds=None, **kw)
        med, times, out = _median_time(solve, repeats)
        labels[backend] = out
        row[f"{backend}_s"] = med
        row[f"{backend}_times"] = times
        row[f"{backend}_energy"] = gc.graph_cut_energy(out, prob, image, **kw)
        row[f"{backend}_foreground"] = int(out.sum())
    if guard:
        med, times, out = _median_time(lambda: gc.graph_cut(prob, image, max_seconds=30.0, **kw), repeats)
        row["guarded_s"] = med
        row["guarded_times"] = times
        row["guarded_path"] = "in-process" if row["worst_case_estimate_s"] <= 30.0 else "fork"
        row["guarded_identical"] = bool(np.array_equal(out, labels.get("scipy", out)))
    if "scipy" in labels and "pymaxflow" in labels:
        row["ratio"] = row["scipy_s"] / row["pymaxflow_s"]
        row["identical"] = bool(np.array_equal(labels["scipy"], labels["pymaxflow"]))
        row["energy_diff"] = abs(row["scipy_energy"] - row["pymaxflow_energy"])
    return row


def bench_grabcut(shape: tuple[int, ...], repeats: int, connectivity: str) -> dict[str, Any]:
    """GrabCut on the blob image with a box 10 % larger than the object per side."""
    _, image, truth = blob_problem(shape)
    idx = np.argwhere(truth)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    pad = np.maximum(1, np.round(0.1 * (hi - lo))).astype(int)
    start = tuple(int(v) for v in np.maximum(lo - pad, 0))
    stop = tuple(int(v) for v in np.minimum(hi + pad, shape))
    med, times, out = _median_time(lambda: grabcut(image, (start, stop), connectivity=connectivity), repeats)
    dice = 2 * (out & truth).sum() / (out.sum() + truth.sum())
    return {
        "size": size_name(shape),
        "connectivity": connectivity,
        "box": [list(start), list(stop)],
        "seconds": med,
        "times": times,
        "dice": float(dice),
    }


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]], backends: list[str], guard: bool) -> str:
    head = f"{'size':<11}{'unary':<7}{'pairs':>9}"
    for b in backends:
        head += f"{b + ' s':>13}"
    if len(backends) == 2:
        head += f"{'ratio':>7}{'same cut':>10}{'|dE|':>9}"
    if guard:
        head += f"{'guarded s':>11}  path"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['size']:<11}{r['unary']:<7}{r['pairs']:>9}"
        for b in backends:
            line += f"{_fmt(r.get(f'{b}_s')):>13}"
        if len(backends) == 2:
            line += f"{_fmt(r.get('ratio'), '.2f'):>7}{'yes' if r.get('identical') else 'NO':>10}"
            line += f"{_fmt(r.get('energy_diff'), '.1e'):>9}"
        if guard:
            line += f"{_fmt(r.get('guarded_s')):>11}  {r.get('guarded_path', '-')}"
        lines.append(line)
    return "\n".join(lines)


def worst_cases(sizes: list[tuple[int, ...]], backends: list[str]) -> list[dict[str, Any]]:
    """Adversarial inputs (the envelope of :func:`common.refinement.graphcut.worst_case_seconds`)."""
    rows = []
    rng = np.random.default_rng(0)
    for shape in sizes:
        ramp = np.linspace(0, 1, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)) * np.ones(shape)
        cases = [
            ("ramp, noisy image, lam 10", ramp, 0.1 * rng.standard_normal(shape), 10.0),
            ("ramp, noisy image, lam 3", ramp, 0.1 * rng.standard_normal(shape), 3.0),
            ("random p, noise image, lam 10", rng.random(shape), rng.standard_normal(shape), 10.0),
            ("random p, constant image, lam 1", rng.random(shape), np.zeros(shape), 1.0),
            (
                "noisy ramp, noisy image, lam 10",
                np.clip(ramp + 0.5 * (rng.random(shape) - 0.5), 0, 1),
                0.1 * rng.standard_normal(shape),
                10.0,
            ),
        ]
        for connectivity in ("full", "face"):
            edges = gc.grid_edges(shape, None, connectivity)
            for name, prob, image, lam in cases:
                cost_fg, cost_bg = gc.probability_costs(prob)
                weights = lam * gc.contrast_weights(image, edges, 0.1)
                for backend in backends:
                    t = time.perf_counter()
                    gc.min_cut(cost_fg, cost_bg, edges, weights, backend=backend, max_seconds=None)
                    dt = time.perf_counter() - t
                    row = {
                        "size": size_name(shape),
                        "connectivity": connectivity,
                        "case": name,
                        "backend": backend,
                        "pairs": len(edges),
                        "seconds": dt,
                        "estimate_s": gc.worst_case_seconds(len(edges), backend),
                    }
                    rows.append(row)
                    print(
                        f"{row['size']:<10}{connectivity:<6}{name:<34}{backend:<10}{dt:>8.2f} s"
                        f"  (estimate {row['estimate_s']:.1f} s)",
                        flush=True,
                    )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; prints the tables and returns (and optionally writes) the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, help="sizes for the blob unary (e.g. 96x128 64x64x64)")
    parser.add_argument("--noise-sizes", nargs="*", type=parse_size, help="sizes for the pure-noise unary")
    parser.add_argument("--grabcut-sizes", nargs="*", type=parse_size, help="sizes for GrabCut")
    parser.add_argument("--backends", nargs="+", choices=["scipy", "pymaxflow"], help="default: those installed")
    parser.add_argument("--connectivity", choices=["face", "full"], default="full")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--no-guard", action="store_true", help="skip the SciPy run with the default time guard")
    parser.add_argument("--worst", action="store_true", help="measure the adversarial inputs instead")
    parser.add_argument("--json", type=Path, help="write every figure and the environment to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    backends = args.backends or list(gc.available_backends())
    missing = sorted(set(backends) - set(gc.available_backends()))
    if missing:
        parser.error(f"backend(s) {missing} not installed (PyMaxflow is an optional GPL-3.0 extra)")
    env = run_environment("graphcut", torch.device("cpu"), threads=1, cudnn_benchmark=False)
    env["scipy"] = scipy.__version__
    if "pymaxflow" in gc.available_backends():
        env["pymaxflow"] = str(getattr(importlib.import_module("maxflow"), "__version__", "?"))
    result: dict[str, Any] = {"environment": env, "backends": backends}
    t0 = time.perf_counter()
    if args.worst:
        result["worst"] = worst_cases(args.sizes or [parse_size(s) for s in WORST_SIZES], backends)
    else:
        sizes = args.sizes or [parse_size(s) for s in (QUICK_SIZES if args.quick else DEFAULT_SIZES)]
        noise_sizes = (
            args.noise_sizes
            if args.noise_sizes is not None
            else [parse_size(s) for s in (QUICK_NOISE_SIZES if args.quick else DEFAULT_NOISE_SIZES)]
        )
        grab_sizes = (
            args.grabcut_sizes
            if args.grabcut_sizes is not None
            else [parse_size(s) for s in (QUICK_GRABCUT_SIZES if args.quick else GRABCUT_SIZES)]
        )
        guard = not args.no_guard and "scipy" in backends
        for b in backends:  # warm-up: imports, first allocations
            gc.graph_cut(*blob_problem((24, 24))[:2], lam=3.0, sigma=0.1, backend=b, max_seconds=None)
        rows = []
        for unary, shapes in (("blob", sizes), ("noise", noise_sizes)):
            for shape in shapes:
                rows.append(bench_graph_cut(shape, unary, backends, args.repeats, args.connectivity, guard))
                print(f"{size_name(shape)} {unary}: done after {time.perf_counter() - t0:.0f} s", flush=True)
        # GrabCut in 3D with 26 neighbours and gamma 50 can collapse to an empty mask (strong contrast term):
        # the 3D sizes are also run with 6 neighbours.
        grab = [
            bench_grabcut(shape, args.repeats, connectivity)
            for shape in grab_sizes
            for connectivity in ([args.connectivity] if len(shape) == 2 else sorted({args.connectivity, "face"}))
        ]
        result.update(graph_cut=rows, grabcut=grab)
        print(f"\ngraph_cut, {args.connectivity} connectivity, median of {args.repeats} (seconds per call)")
        print(table(rows, backends, guard))
        if grab:
            print(f"\nGrabCut (5 iterations, 3 + 5 components, gamma 50), median of {args.repeats}")
            for g in grab:
                print(
                    f"{g['size']:<11}{g['connectivity']:<6}{g['seconds']:>8.3f} s  Dice {g['dice']:.3f}  box {g['box']}"
                )
    result["total_seconds"] = time.perf_counter() - t0
    print(f"\ntotal {result['total_seconds']:.0f} s on {env['device_name']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
