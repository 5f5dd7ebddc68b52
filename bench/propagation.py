"""Slice-propagation benchmark: propagation time per slice vs the network's forward time alone on the same slices.

For each volume size, in one run and on one device, this times

(a) the whole-volume slice propagation through :class:`common.propagation.SlicePropagationInferer` (input
    ``(1, 2, H, W, D)`` already on the device, wall time including validation, padding, softmax, merging and the
    final output volume; ``torch.cuda.synchronize()`` before and after on GPU);
(b) the baseline: the network's forward pass alone, under ``torch.no_grad()`` like the inferer, on exactly as many
    slices in exactly the batch sizes the propagation used (reconstructed from ``inferer.last_results[0].fronts`` and
    checked against ``n_calls`` and against the batch shapes the network actually received), on padded tensors
    already on the device;
(c) the propagation with a near-free "null" network that copies the prior into the foreground logit: the engine and
    inferer cost alone (a noise-robust estimate of (a) - (b), which matters on a loaded machine).

Two modes per size: ``batched`` (the default inferer, all active fronts in one network call per step; the targets
apply to it) and ``sequential`` (``batch_fronts=False``, one call per front and step: a reference showing what
batching the fronts saves; with 3 user slices up to 6 fronts run at once).

The network is :class:`common.networks.PropagationUNet` (2D, 2 -> 2 channels, ``--depth``/``--base-channels``),
randomly initialised and in eval mode: an untrained network costs the same as a trained one. The volume is synthetic:
Gaussian noise with a tall cylinder through all slices; the user slices (``--user-slices``, evenly spaced) carry the
cylinder's disc. The inferer runs with ``max_empty_slices=None``, so no front stops early whatever the random network
predicts: every slice up to the merge rule's limit is predicted (with ``merge="nearest"``: every non-user slice,
once), which is the worst case for a real network.

Targets (from the issue): whole-volume propagation time <= 1.2 x the forward time alone (``ratio``), and on a GPU a
512 x 512 x 200 volume in < 2 s. Times are medians over ``--repeats`` rounds after ``--warmup`` untimed rounds; within
a round the measurements are interleaved so that load from other processes affects them alike.

Run from the repository root::

    python bench/propagation.py                                     # CPU, 128x128x96 and 512x512x200
    python bench/propagation.py --device cuda --user-slices 3 --json outputs/bench_propagation_cuda.json
    python bench/propagation.py --sizes 64x64x32 128x128x48 --repeats 2   # quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.benchmarking import device_description, run_environment
from common.networks import PropagationUNet
from common.propagation import FrontRecord, SlicePropagationInferer

__all__ = [
    "RATIO_TARGET",
    "TIME_TARGETS_S",
    "BenchRow",
    "device_description",
    "main",
    "network_batch_sizes",
    "parse_size",
    "synthetic_case",
    "user_slice_indices",
]

logger = logging.getLogger(__name__)

#: Target of ``propagation time / forward time`` for the batched (default) mode.
RATIO_TARGET = 1.2
#: Whole-volume time targets in seconds, by (device type, (H, W, D)).
TIME_TARGETS_S: dict[tuple[str, tuple[int, int, int]], float] = {("cuda", (512, 512, 200)): 2.0}

Size = tuple[int, int, int]


@dataclass
class BenchRow:
    """One line of the results table: one volume size and propagation mode.

    Attributes:
        size: ``(H, W, D)`` in voxels; D is the propagation axis (axis 2).
        device: ``"cpu"`` or ``"cuda"`` (device type).
        mode: ``"batched"`` (fronts batched per step, the default inferer) or ``"sequential"`` (one call per front).
        user_slices: the annotated slice indices.
        n_slices: number of slices the network predicted (sum of the batch sizes).
        n_calls: number of network calls.
        batch_sizes: ``{batch size: number of calls}``.
        forward_s: median time of the network's forward alone on the same batches (s).
        propagation_s: median whole-volume propagation time (s).
        engine_s: median propagation time with the near-free null network (s): the engine + inferer cost alone.
        forward_ms_per_slice, propagation_ms_per_slice, engine_ms_per_slice: the above per predicted slice (ms).
        ratio: ``propagation_s / forward_s``.
        ratio_from_engine: ``(forward_s + engine_s) / forward_s``, the same ratio estimated from (c).
        target: the targets that apply, as text (empty for the sequential reference row).
        passed: whether all targets that apply are met (``None`` when none applies).
        forward_times_s, propagation_times_s, engine_times_s: all timed repeats (s).
    """

    size: Size
    device: str
    mode: str
    user_slices: list[int]
    n_slices: int
    n_calls: int
    batch_sizes: dict[int, int]
    forward_s: float
    propagation_s: float
    engine_s: float
    forward_ms_per_slice: float
    propagation_ms_per_slice: float
    engine_ms_per_slice: float
    ratio: float
    ratio_from_engine: float
    target: str
    passed: bool | None
    forward_times_s: list[float] = field(default_factory=list)
    propagation_times_s: list[float] = field(default_factory=list)
    engine_times_s: list[float] = field(default_factory=list)


def parse_size(text: str) -> Size:
    """Parse ``"HxWxD"`` (e.g. ``"512x512x200"``) into ``(H, W, D)`` positive ints.

    Raises:
        ValueError: not three ``x``-separated positive integers.
    """
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"size must be HxWxD with three positive integers, e.g. 128x128x96; got {text!r}")
    return values[0], values[1], values[2]


def user_slice_indices(depth: int, n_user: int) -> list[int]:
    """``n_user`` evenly spaced distinct slice indices in ``[0, depth)``: ``round((i + 1) * depth / (n_user + 1))``.

    Raises:
        ValueError: if ``n_user < 1`` or the volume is too thin for ``n_user`` distinct slices with gaps.
    """
    if n_user < 1:
        raise ValueError(f"--user-slices must be >= 1, got {n_user}")
    slices = [round((i + 1) * depth / (n_user + 1)) for i in range(n_user)]
    if len(set(slices)) != n_user or slices[-1] >= depth or depth < 2 * n_user + 1:
        raise ValueError(f"a volume of {depth} slices is too thin for {n_user} evenly spaced user slices")
    return slices


def synthetic_case(size: Size, user_slices: Sequence[int], rng: np.random.Generator) -> torch.Tensor:
    """Synthetic inferer input: a tall cylinder in noise, annotated on ``user_slices``.

    Args:
        size: ``(H, W, D)``; the cylinder runs along D (axis 2) through every slice.
        user_slices: slice indices along D that carry the user's mask (the cylinder's disc).
        rng: the source of the image noise.

    Returns:
        float32 CPU tensor ``(1, 2, H, W, D)``: channel 0 the image (N(0, 0.2) noise, +1 inside the cylinder, i.e.
        roughly CT scaled by 1/500), channel 1 the annotation volume (0/1, non-zero only on the user slices).
    """
    height, width, depth = size
    ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    radius = max(min(height, width) / 5.0, 1.0)
    disc = ((ii - 0.55 * height) ** 2 + (jj - 0.45 * width) ** 2) <= radius**2
    image = rng.standard_normal((height, width, depth), dtype=np.float32)
    image *= 0.2
    image[disc] += 1.0
    annotation = np.zeros((height, width, depth), dtype=np.float32)
    for k in user_slices:
        annotation[disc, k] = 1.0
    return torch.from_numpy(np.stack([image, annotation]))[None]


def network_batch_sizes(
    fronts: Sequence[FrontRecord], batch_fronts: bool = True, max_batch_size: int | None = None
) -> list[int]:
    """The batch size of every network call of a propagation, in call order, from its front records.

    All active fronts advance in lockstep: a front that made ``n`` predictions (``n_predicted`` kept plus
    ``n_dropped`` dropped by a stop rule) took part in steps ``0 .. n - 1``.
    With ``batch_fronts`` the active fronts of a step go through the network together, in chunks of at most
    ``max_batch_size`` (default: the number of fronts); otherwise one call per front and step.
    """
    cap = (max_batch_size or max(len(fronts), 1)) if batch_fronts else 1
    sizes: list[int] = []
    made = [f.n_predicted + f.n_dropped for f in fronts]
    for step in range(max(made, default=0)):
        active = sum(1 for n in made if n > step)
        full, rest = divmod(active, cap)
        sizes.extend([cap] * full + ([rest] if rest else []))
    return sizes


class _NullNetwork(torch.nn.Module):
    """Costs (almost) nothing: foreground logit ``10 * prior - 5``, background 0, so the prediction is the prior."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, 1:]
        return torch.cat((torch.zeros_like(prior), 10 * prior - 5), dim=1)


class _Recorder:
    """Wraps a network and records the batch size of every call."""

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.network = network
        self.batch_sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        return self.network(x)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of ``fn()`` in seconds, synchronising the GPU before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _padded(size: int, divisor: int) -> tuple[int, int]:
    """Symmetric (before, after) zero padding making ``size`` a multiple of ``divisor``, as the inferer pads."""
    total = (-size) % divisor
    return total // 2, total - total // 2


def _forward_batches(
    inputs: torch.Tensor, user_slices: Sequence[int], sizes: Sequence[int], divisor: int
) -> list[torch.Tensor]:
    """One padded ``(b, 2, H', W')`` network input per distinct batch size ``b``: image slices + the user's mask."""
    depth = inputs.shape[-1]
    prior = inputs[0, 1, :, :, user_slices[0]]
    (top, bottom), (left, right) = _padded(inputs.shape[2], divisor), _padded(inputs.shape[3], divisor)
    batches: dict[int, torch.Tensor] = {}
    for b in sorted(set(sizes)):
        picks = [(user_slices[0] + 1 + i) % depth for i in range(b)]
        images = inputs[0, 0][..., picks].permute(2, 0, 1)
        x = torch.stack((images, prior.expand_as(images)), dim=1)
        batches[b] = F.pad(x, (left, right, top, bottom)).contiguous()
    return [batches[b] for b in sizes]


def _check_batches(mode: str, inferer: SlicePropagationInferer, recorded: list[int]) -> list[int]:
    """Batch sizes from the inferer's front records, checked against ``n_calls`` and the recorded network calls."""
    result = inferer.last_results[0]
    sizes = network_batch_sizes(result.fronts, inferer.batch_fronts, inferer.max_batch_size)
    if len(sizes) != result.n_calls or sum(sizes) != result.n_predicted or sizes != recorded:
        raise RuntimeError(
            f"{mode}: batch sizes reconstructed from the fronts ({len(sizes)} calls, {sum(sizes)} slices) do not "
            f"match the propagation ({result.n_calls} calls, {result.n_predicted} slices, recorded "
            f"{len(recorded)} calls); the engine's batching changed: update network_batch_sizes()"
        )
    return sizes


def _bench_size(
    network: PropagationUNet, size: Size, device: torch.device, args: argparse.Namespace, rng: np.random.Generator
) -> list[BenchRow]:
    """Time both modes on one synthetic volume; see the module docstring."""
    user = user_slice_indices(size[2], args.user_slices)
    inputs = synthetic_case(size, user, rng).to(device)
    divisor = network.required_divisor
    null = _NullNetwork()
    modes = {
        mode: SlicePropagationInferer(  # every slice predicted: no stop rule (the same plan for every mode)
            axis=2,
            max_empty_slices=None,
            merge=args.merge,
            divisible_by=divisor,
            batch_fronts=(mode == "batched"),
            connect_tolerance=None,
            min_area_ratio=None,
            max_area_ratio=None,
            max_intensity_shift=None,
        )
        for mode in dict.fromkeys(args.modes)
    }
    plans: dict[str, list[torch.Tensor]] = {}
    sizes: dict[str, list[int]] = {}
    times: dict[tuple[str, str], list[float]] = {(m, k): [] for m in modes for k in ("fwd", "prop", "null")}

    def run_forward(batches: list[torch.Tensor]) -> None:
        for x in batches:
            network(x)

    with torch.no_grad():
        for round_ in range(args.warmup + args.repeats):
            for mode, inferer in modes.items():
                if round_ == 0:  # first warm-up round: record the batches the network receives (replaces "prop")
                    recorder = _Recorder(network)
                    inferer(inputs, recorder)
                    sizes[mode] = _check_batches(mode, inferer, recorder.batch_sizes)
                    plans[mode] = _forward_batches(inputs, user, sizes[mode], divisor)
                runs: dict[str, Callable[[], object]] = {
                    "fwd": partial(run_forward, plans[mode]),
                    "prop": partial(inferer, inputs, network),
                    "null": partial(inferer, inputs, null),
                }
                if round_ == 0:
                    del runs["prop"]
                for key, fn in runs.items():
                    elapsed = _timed(fn, device)
                    if round_ >= args.warmup:
                        times[(mode, key)].append(elapsed)
            logger.info("%s: round %d done", "x".join(map(str, size)), round_ + 1)

    rows = []
    for mode in modes:
        fwd, prop, eng = (statistics.median(times[(mode, k)]) for k in ("fwd", "prop", "null"))
        n = sum(sizes[mode])
        target, passed = "", None
        if mode == "batched":
            ratio_ok = prop / fwd <= RATIO_TARGET
            target, passed = f"<={RATIO_TARGET}x", ratio_ok
            limit = TIME_TARGETS_S.get((device.type, size))
            if limit is not None:
                target, passed = f"{target}, <{limit:g} s", ratio_ok and prop < limit
        counts: dict[int, int] = {}
        for b in sizes[mode]:
            counts[b] = counts.get(b, 0) + 1
        rows.append(
            BenchRow(
                size=size,
                device=device.type,
                mode=mode,
                user_slices=user,
                n_slices=n,
                n_calls=len(sizes[mode]),
                batch_sizes=dict(sorted(counts.items())),
                forward_s=fwd,
                propagation_s=prop,
                engine_s=eng,
                forward_ms_per_slice=1000 * fwd / n,
                propagation_ms_per_slice=1000 * prop / n,
                engine_ms_per_slice=1000 * eng / n,
                ratio=prop / fwd,
                ratio_from_engine=(fwd + eng) / fwd,
                target=target,
                passed=passed,
                forward_times_s=times[(mode, "fwd")],
                propagation_times_s=times[(mode, "prop")],
                engine_times_s=times[(mode, "null")],
            )
        )
    return rows


COLUMNS = (
    "size",
    "device",
    "mode",
    "slices",
    "calls",
    "forward ms/slice",
    "propagation ms/slice",
    "ratio",
    "engine ms/slice",
    "total s",
    "target",
    "result",
)


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as a plain-text table, forward and propagation figures side by side."""
    cells = [
        (
            "x".join(map(str, r.size)),
            r.device,
            r.mode,
            str(r.n_slices),
            str(r.n_calls),
            f"{r.forward_ms_per_slice:.2f}",
            f"{r.propagation_ms_per_slice:.2f}",
            f"{r.ratio:.3f}",
            f"{r.engine_ms_per_slice:.3f}",
            f"{r.propagation_s:.3f}",
            r.target or "(reference)",
            "-" if r.passed is None else ("PASS" if r.passed else "FAIL"),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [COLUMNS, *cells]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Slice-propagation time per slice vs the network's forward time alone on the same slices.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where network and data live")
    parser.add_argument(
        "--sizes", nargs="+", default=["128x128x96", "512x512x200"], help="volume sizes HxWxD (D = slice axis)"
    )
    parser.add_argument("--depth", type=int, default=4, help="PropagationUNet resolution levels (2..5)")
    parser.add_argument("--base-channels", type=int, default=16, help="PropagationUNet width of level 0")
    parser.add_argument("--merge", default="nearest", choices=["nearest", "overwrite", "fusion"], help="merge rule")
    parser.add_argument("--user-slices", type=int, default=1, help="number of evenly spaced user slices")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["batched", "sequential"],
        choices=["batched", "sequential"],
        help="propagation modes to time (sequential: batch_fronts=False, a reference row)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (>= 1: it records the batches)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark (GPU autotuning)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the network weights and the synthetic volume")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and return (and optionally write) the report.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``); see ``python bench/propagation.py --help``.

    Returns:
        The JSON-serialisable report: environment (device name, torch version, threads), configuration and one
        entry per :class:`BenchRow`.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes]
        for size in sizes:
            user_slice_indices(size[2], args.user_slices)
    except ValueError as err:
        parser.error(f"--sizes/--user-slices: {err}")
    if args.repeats < 1 or args.warmup < 1 or args.threads < 0:
        parser.error(
            f"--repeats and --warmup must be >= 1 and --threads >= 0, got {args.repeats}, {args.warmup}, {args.threads}"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch (torch.cuda.is_available() is False)")
    device = torch.device(args.device)

    previous_threads, previous_cudnn = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            network = PropagationUNet(
                spatial_dims=2, in_channels=2, out_channels=2, depth=args.depth, base_channels=args.base_channels
            )
        network = network.to(device).eval()
        rng = np.random.default_rng(args.seed)
        rows: list[BenchRow] = []
        for size in sizes:
            rows.extend(_bench_size(network, size, device, args, rng))
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn

    report: dict[str, Any] = {
        **run_environment("slice_propagation", device, threads, args.cudnn_benchmark),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "config": {
            "sizes": [list(s) for s in sizes],
            "network": "PropagationUNet",
            "depth": args.depth,
            "base_channels": args.base_channels,
            "parameters": sum(p.numel() for p in network.parameters()),
            "merge": args.merge,
            "user_slices": args.user_slices,
            "modes": list(dict.fromkeys(args.modes)),
            "max_empty_slices": None,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "statistic": "median",
        },
        "targets": {
            "ratio_max": RATIO_TARGET,
            "total_s_max": [{"device": d, "size": list(s), "seconds": t} for (d, s), t in TIME_TARGETS_S.items()],
        },
        "results": [asdict(r) for r in rows],
    }
    print(
        f"slice propagation vs forward alone: {report['device_name']}, torch {torch.__version__}, {threads} threads, "
        f"PropagationUNet depth {args.depth} base {args.base_channels}, merge {args.merge}, "
        f"{args.user_slices} user slice(s), max_empty_slices=None, median of {args.repeats}"
    )
    print(format_table(rows))
    for size in sizes:
        by_mode = {r.mode: r for r in rows if r.size == size}
        if len(by_mode) == 2:
            speedup = by_mode["sequential"].propagation_s / by_mode["batched"].propagation_s
            name = "x".join(map(str, size))
            print(f"{name}: speed-up from batching fronts (sequential s / batched s) {speedup:.2f}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    main()
