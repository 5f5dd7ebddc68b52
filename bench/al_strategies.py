"""Active-learning query-strategy benchmark: the time to score one case, per strategy, against one forward pass.

The active-learning bundle's general model, :class:`common.networks.IsenseeUNet` with its default filters
(16, 32, 64, 128; spatial dropout 0.1, deep supervision, eval mode), randomly initialised (the timings do not depend
on the weights' values), on one synthetic ``(1, 1, 64, 48, 32)`` box crop (a bright ball in Gaussian noise,
z-scored). Timed side by side, interleaved within each round, median over ``--repeats`` rounds after ``--warmup``
untimed ones:

- ``forward``: one plain forward pass (eval mode, ``torch.no_grad``), the baseline;
- every strategy of :data:`common.active_learning.STRATEGIES` through
  :func:`common.active_learning.score_cases` on the one case (input checks included): ``random``, ``first``,
  ``last`` (no network), ``entropy`` (one forward), ``mc_dropout`` and ``tta`` with ``--samples`` draws each, once
  looped (``batch=1``: one sample per forward pass) and once batched (``batch=samples``: one forward pass).

Reported: median seconds per case, seconds per drawn sample (network forward-equivalents: 1 for ``entropy``,
``samples`` for ``mc_dropout`` and ``tta``) and its ratio to one forward pass. Target (issue): a strategy scores a
case in < 2x the time of a plain forward pass per sample it draws (MC dropout with 10 samples against one forward).
The last lines give the speed-up of batching (looped time / batched time), which sets
:data:`common.active_learning.DEFAULT_BATCH`; ``(default)`` marks the rows that ``batch=None`` runs on this device.

Run from the repository root::

    OMP_NUM_THREADS=1 python bench/al_strategies.py                   # about 1 minute on one CPU thread
    OMP_NUM_THREADS=1 python bench/al_strategies.py --quick           # seconds (a tiny network and crop)
    python bench/al_strategies.py --device cuda --json outputs/bench/al_strategies_cuda.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.active_learning import DEFAULT_BATCH, STRATEGIES, score_cases
from common.benchmarking import run_environment
from common.networks import IsenseeUNet

DEFAULT_SIZE = "64x48x32"
DEFAULT_FILTERS = "16,32,64,128"
QUICK_SIZE = "16x12x8"
QUICK_FILTERS = "4,8,16"
SAMPLED = ("mc_dropout", "tta")
TARGET = 2.0


def parse_ints(text: str, sep: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.lower().split(sep))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad {name} {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad {name} {text!r}: positive integers expected")
    return values


def make_input(size: Sequence[int], seed: int) -> torch.Tensor:
    """A ``(1, 1, *size)`` z-scored crop: a ball of radius a third of the smallest side (+1) in noise (sd 0.5)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in size], indexing="ij")
    ball = sum(g**2 for g in grids) <= (min(size) / 3) ** 2
    image = ball.astype(np.float32) + rng.normal(0.0, 0.5, size).astype(np.float32)
    image = (image - image.mean()) / image.std()
    return torch.from_numpy(image[None, None].astype(np.float32))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measurements(
    network: torch.nn.Module, x: torch.Tensor, samples: int
) -> dict[str, tuple[str, int | None, int, Callable[[], object]]]:
    """Name -> (strategy, batch, samples drawn, callable) of every timed row, the forward baseline first."""

    def forward() -> object:
        with torch.no_grad():
            return network(x)

    rows: dict[str, tuple[str, int | None, int, Callable[[], object]]] = {"forward": ("forward", None, 1, forward)}
    for strategy in STRATEGIES:
        draws = samples if strategy in SAMPLED else (1 if strategy == "entropy" else 0)
        batches: list[int | None] = [1, samples] if strategy in SAMPLED else [None]
        for batch in batches:
            name = strategy if batch is None else f"{strategy} {'loop' if batch == 1 else 'batched'}"
            fn = functools.partial(score_cases, strategy, network, [x], seed=0, samples=samples, batch=batch)
            rows[name] = (strategy, batch, draws, fn)
    return rows


def run(
    network: torch.nn.Module, x: torch.Tensor, samples: int, repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of every row per timed round (rows interleaved within a round)."""
    rows = measurements(network, x, samples)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(warmup + repeats):
        for name, (_, _, _, fn) in rows.items():
            seconds = _timed(fn, device)
            if round_ >= warmup:
                times[name].append(seconds)
    return times


def table(
    times: dict[str, list[float]], network: torch.nn.Module, x: torch.Tensor, samples: int
) -> list[dict[str, Any]]:
    """Rows: name, strategy, batch, samples drawn, median and p90 seconds, seconds per sample, ratio to forward."""
    specs = measurements(network, x, samples)
    base = statistics.median(times["forward"])
    default = DEFAULT_BATCH.get(x.device.type, DEFAULT_BATCH["cuda"])
    out = []
    for name, values in times.items():
        strategy, batch, draws, _ = specs[name]
        median = statistics.median(values)
        per_sample = median / draws if draws else None
        ratio = per_sample / base if per_sample is not None else None
        out.append(
            {
                "name": name,
                "strategy": strategy,
                "batch": batch,
                "default": strategy in SAMPLED and min(default, samples) == batch,
                "samples": draws,
                "median_s": median,
                "p90_s": float(np.percentile(values, 90)),
                "per_sample_s": per_sample,
                "x_forward_per_sample": ratio,
                "pass": None if ratio is None or strategy == "forward" else bool(ratio < TARGET),
                "times_s": values,
            }
        )
    return out


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Looped / batched median time of each sampled strategy (> 1: batching is faster)."""
    by_name = {r["name"]: r for r in rows}
    return {s: by_name[f"{s} loop"]["median_s"] / by_name[f"{s} batched"]["median_s"] for s in SAMPLED}


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    print(f"\n{header}")
    print(f"{'row':<26}{'batch':>6}{'samples':>8}{'median s':>10}{'p90 s':>9}{'s/sample':>10}{'x forward':>11}  result")
    for r in rows:
        batch = "-" if r["batch"] is None else str(r["batch"])
        per = "-" if r["per_sample_s"] is None else f"{r['per_sample_s']:.4f}"
        ratio = "-" if r["x_forward_per_sample"] is None else f"{r['x_forward_per_sample']:.2f}"
        result = "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL") + f" (<{TARGET:g}x)"
        name = r["name"] + (" (default)" if r["default"] else "")
        print(
            f"{name:<26}{batch:>6}{r['samples']:>8}{r['median_s']:>10.4f}{r['p90_s']:>9.4f}{per:>10}{ratio:>11}  "
            f"{result}"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default=None, help=f"crop size HxWxD (default {DEFAULT_SIZE}; --quick {QUICK_SIZE})")
    parser.add_argument(
        "--filters", default=None, help=f"IsenseeUNet filters (default {DEFAULT_FILTERS}; --quick {QUICK_FILTERS})"
    )
    parser.add_argument("--samples", type=int, default=10, help="draws of mc_dropout and tta")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; --quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="network weights and input")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_SIZE}, filters {QUICK_FILTERS}")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    size = parse_ints(args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE), "x", "size")
    filters = parse_ints(args.filters or (QUICK_FILTERS if args.quick else DEFAULT_FILTERS), ",", "filters")
    repeats = args.repeats or (1 if args.quick else 5)
    if args.samples < 2:
        parser.error("--samples must be >= 2")
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        used_threads = torch.get_num_threads()
        torch.manual_seed(args.seed)
        network = IsenseeUNet(spatial_dims=len(size), filters=filters, deep_supr_num=min(2, len(filters) - 2))
        network = network.to(device).eval()
        x = make_input(size, args.seed).to(device)
        times = run(network, x, args.samples, repeats, args.warmup, device)
        rows = table(times, network, x, args.samples)
    finally:
        torch.set_num_threads(threads)
    gains = speedups(rows)
    shape = "x".join(map(str, size))
    print_table(
        rows,
        f"Query strategies, IsenseeUNet{tuple(filters)} on (1, 1, {shape}), {device} ({used_threads} threads), "
        f"{args.samples} samples, median of {repeats}",
    )
    for strategy, gain in gains.items():
        print(f"{strategy}: batching speed-up (loop / batched) {gain:.2f}x")
    report = {
        "environment": run_environment("al_strategies", device, used_threads, False),
        "size": list(size),
        "filters": list(filters),
        "samples": args.samples,
        "repeats": repeats,
        "warmup": args.warmup,
        "default_batch": DEFAULT_BATCH,
        "rows": rows,
        "batching_speedup": gains,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
