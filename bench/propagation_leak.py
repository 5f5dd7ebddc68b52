"""Slice-propagation leak benchmark: how far the shipped model runs beyond each structure, before and after the
continuity filter, the area-ratio and the intensity-shift stops (:mod:`common.propagation.continuity`,
:mod:`common.propagation.stopping`).

For each case and each labelled structure the ground truth's middle axial slice (axis 2, the middle of the
structure's first..last non-empty slices, or the non-empty slice nearest to it) is the only user slice;
:class:`common.propagation.SlicePropagationInferer` (``axis=2, merge="nearest", divisible_by=16``) propagates it
with the shipped weights
(``bundles/slice_propagation/models/model.pt``, :class:`common.networks.PropagationUNet` as in the bundle's
``inference.json``) through the image, pre-processed as in the bundle (HU clipped to +-1024, divided by 500). Two
settings are compared:

- ``old``: no continuity filter, no area-ratio or intensity-shift stops, ``max_empty_slices=2`` (the behaviour before
  them);
- ``new``: the options given on the command line (default: the engine's defaults).

Per structure, mean over the cases: ``leak`` = number of non-empty predicted slices outside the ground truth's
``[first, last]`` slice range, and the volume Dice. ``--sweep`` additionally scores a grid of settings: one
propagation per ``connect_tolerance`` value (area-ratio stops off), the ratio stops then replayed on the recorded
per-slice areas (exact for ``merge="nearest"`` from one user slice: a ratio stop only cuts a front short).

Run from the repository root::

    python -m common.data.phantoms --out /tmp/prop_phantoms --cases 12 --seed 0
    python bench/propagation_leak.py --data /tmp/prop_phantoms                    # last 3 cases, CPU
    python bench/propagation_leak.py --data /tmp/prop_phantoms --cases phantom_010 --device cuda
    python bench/propagation_leak.py --data /tmp/prop_phantoms --sweep            # choose the defaults

Without ``--data`` the 12 phantoms (seed 0) are generated into a temporary folder first (about 10 s). The default run
(3 cases x 10 structures x 2 settings) takes about 2 minutes on one CPU thread; ``--sweep`` about 3 times longer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from common.networks import PropagationUNet, load_weights
from common.propagation import SlicePropagationInferer
from common.propagation.engine import (
    DEFAULT_CONNECT_TOLERANCE,
    DEFAULT_MAX_AREA_RATIO,
    DEFAULT_MIN_AREA_RATIO,
)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "bundles" / "slice_propagation" / "models" / "model.pt"
AXIS = 2
HU_CLIP, HU_SCALE = 1024.0, 500.0
OLD: dict[str, Any] = {
    "max_empty_slices": 2,
    "connect_tolerance": None,
    "min_area_ratio": None,
    "max_area_ratio": None,
    "max_intensity_shift": None,
}


@dataclass(frozen=True)
class Score:
    """One structure of one case: leak slices, Dice, and the stop reasons of the (down, up) fronts."""

    leak: int
    dice: float
    stops: tuple[str, ...]


def network(device: torch.device) -> torch.nn.Module:
    """The bundle's network with the shipped weights, in eval mode on ``device``."""
    net = PropagationUNet(spatial_dims=2, in_channels=2, out_channels=2, depth=4, base_channels=16, variant="unet")
    return load_weights(net, WEIGHTS).to(device).eval()


def load_cases(data: Path, cases: Sequence[str]) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], dict[int, str]]:
    """``[(case id, pre-processed float32 image, int label)]`` and ``{label value: name}`` from an MSD folder.

    ``cases``: case ids (``phantom_010``), or a single integer ``N`` for the last ``N`` cases of ``training``.
    """
    meta = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    items = {Path(item["image"]).name.split(".")[0]: item for item in meta["training"]}
    if len(cases) == 1 and cases[0].isdigit():
        chosen = list(items)[-int(cases[0]) :]
    else:
        unknown = [c for c in cases if c not in items]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; {data / 'dataset.json'} has {sorted(items)}")
        chosen = list(cases)
    loaded = []
    for case in chosen:
        image_file: Any = nib.load(data / items[case]["image"])
        label_file: Any = nib.load(data / items[case]["label"])
        image = np.asarray(image_file.dataobj, dtype=np.float32)
        label = np.asarray(label_file.dataobj).astype(np.int64)
        loaded.append((case, np.clip(image, -HU_CLIP, HU_CLIP) / HU_SCALE, label))
    labels = {int(v): name for v, name in meta["labels"].items() if int(v) != 0}
    return loaded, labels


def extent(mask: np.ndarray) -> tuple[int, int] | None:
    """First and last non-empty slice along :data:`AXIS`, or ``None`` for an empty mask."""
    nonempty = np.flatnonzero(mask.any(axis=(0, 1)))
    return (int(nonempty[0]), int(nonempty[-1])) if nonempty.size else None


def middle_slice(mask: np.ndarray) -> int:
    """The user slice: the non-empty slice of ``mask`` (along :data:`AXIS`) nearest to the middle of its extent
    (the middle itself unless the structure has a gap there; ties to the lower slice)."""
    nonempty = np.flatnonzero(mask.any(axis=(0, 1)))
    centre = (nonempty[0] + nonempty[-1]) / 2
    return int(nonempty[np.argmin(np.abs(nonempty - centre))])


def leak_and_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[int, float]:
    """Non-empty predicted slices outside the ground truth's slice range, and the volume Dice."""
    first, last = extent(gt) or (0, -1)
    nonempty = pred.any(axis=(0, 1))
    outside = np.ones_like(nonempty)
    outside[first : last + 1] = False
    total = int(pred.sum()) + int(gt.sum())
    dice = 2.0 * int(np.logical_and(pred, gt).sum()) / total if total else 1.0
    return int((nonempty & outside).sum()), dice


def propagate_structure(
    net: torch.nn.Module, image: torch.Tensor, gt: np.ndarray, device: torch.device, options: dict[str, Any]
) -> tuple[np.ndarray, Any]:
    """Propagate the middle ground-truth slice of ``gt`` through ``image`` (``(1, 1, H, W, D)`` on ``device``)."""
    middle = middle_slice(gt)
    inferer = SlicePropagationInferer(axis=AXIS, merge="nearest", divisible_by=16, **options)
    with torch.no_grad():
        pred = inferer(image, net, annotation={middle: gt[..., middle]})
    return pred[0, 0].cpu().numpy() > 0.5, inferer.last_results[0]


def replay_ratio_stops(
    pred: np.ndarray, middle: int, min_ratio: float | None, max_ratio: float | None
) -> tuple[np.ndarray, list[str]]:
    """``pred`` (one user slice at ``middle``, nearest merge, no ratio stops) as the area-ratio stops would cut it."""
    areas = pred.sum(axis=(0, 1))
    out = pred.copy()
    stops = []
    for direction in (-1, 1):
        stop = "-"
        k = middle + direction
        while 0 <= k < pred.shape[2]:
            prior, area = areas[k - direction], areas[k]
            if area > 0 and prior > 0:  # as the engine: empty slices are left to the emptiness rules
                if min_ratio is not None and area < min_ratio * prior:
                    stop = "area_collapse"
                elif max_ratio is not None and area > max_ratio * prior:
                    stop = "area_explosion"
            if stop != "-":  # the slice that triggered the stop is dropped, with everything beyond it
                if direction > 0:
                    out[..., k:] = False
                else:
                    out[..., : k + 1] = False
                break
            k += direction
        stops.append(stop)
    return out, stops


def _none_or(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    return parse


def _table(
    structures: list[str], split: dict[str, str], old: dict[str, list[Score]], new: dict[str, list[Score]]
) -> str:
    header = f"{'structure':<14}{'split':<8}{'leak old':>9}{'leak new':>9}{'Dice old':>10}{'Dice new':>10}  stops new"
    lines = [header, "-" * len(header)]

    def mean(scores: list[Score], attr: str) -> float:
        return statistics.fmean(getattr(s, attr) for s in scores)

    for name in structures:
        stops = sorted({r for s in new[name] for r in s.stops})
        lines.append(
            f"{name:<14}{split.get(name, '?'):<8}{mean(old[name], 'leak'):>9.2f}{mean(new[name], 'leak'):>9.2f}"
            f"{mean(old[name], 'dice'):>10.3f}{mean(new[name], 'dice'):>10.3f}  {','.join(stops)}"
        )
    every_old = [s for n in structures for s in old[n]]
    every_new = [s for n in structures for s in new[n]]
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<14}{'':<8}{mean(every_old, 'leak'):>9.2f}{mean(every_new, 'leak'):>9.2f}"
        f"{mean(every_old, 'dice'):>10.3f}{mean(every_new, 'dice'):>10.3f}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; prints the table (and the sweep) and returns the scores."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="MSD-layout folder with dataset.json (default: generate phantoms)")
    parser.add_argument("--cases", nargs="+", default=["3"], help="case ids, or N = the last N cases (default 3)")
    parser.add_argument("--structures", nargs="+", help="structure names (default: every label)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: 128 x 128 slices gain little from more, and on a shared machine two "
        "spinning threads per process were measured 15x slower)",
    )
    parser.add_argument("--connect-tolerance", type=_none_or(int), default=DEFAULT_CONNECT_TOLERANCE)
    parser.add_argument("--min-area-ratio", type=_none_or(float), default=DEFAULT_MIN_AREA_RATIO)
    parser.add_argument("--max-area-ratio", type=_none_or(float), default=DEFAULT_MAX_AREA_RATIO)
    parser.add_argument(
        "--max-intensity-shift", type=_none_or(float), default=0.06, help="the bundle's value (0.06 = 30 HU)"
    )
    parser.add_argument("--sweep", action="store_true", help="also score a grid of settings")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    new_options = {
        "max_empty_slices": 2,
        "connect_tolerance": args.connect_tolerance,
        "min_area_ratio": args.min_area_ratio,
        "max_area_ratio": args.max_area_ratio,
        "max_intensity_shift": args.max_intensity_shift,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from common.data.phantoms import generate_dataset

            data = generate_dataset(Path(tmp) / "phantoms", n_cases=12, seed=0, montage=False).parent
        cases, labels = load_cases(data, args.cases)
        meta = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    split = {n: group for group, names in meta.get("structure_split", {}).items() for n in names}
    wanted = args.structures or list(labels.values())
    unknown = sorted(set(wanted) - set(labels.values()))
    if unknown:
        raise SystemExit(f"unknown structure(s) {unknown}; labels are {sorted(labels.values())}")
    net = network(device)
    tolerances = sorted({None, 0, 1, 2, 3, args.connect_tolerance}, key=lambda t: -1 if t is None else t)
    mins, maxs = [None, 0.05, 0.1, 0.2, 0.3, 0.5], [None, 1.3, 1.5, 2.0, 2.5, 3.0]
    old: dict[str, list[Score]] = {n: [] for n in wanted}
    new: dict[str, list[Score]] = {n: [] for n in wanted}
    sweep: dict[tuple[Any, Any, Any], list[tuple[int, float]]] = {}
    t0 = time.perf_counter()
    for case, array, label in cases:
        image = torch.from_numpy(array)[None, None].to(device)
        for value, name in labels.items():
            if name not in wanted:
                continue
            gt = label == value
            if not gt.any():
                continue
            middle = middle_slice(gt)
            by_tolerance: dict[int | None, np.ndarray] = {}
            for options, store in ((OLD, old), (new_options, new)):
                pred, result = propagate_structure(net, image, gt, device, options)
                store[name].append(Score(*leak_and_dice(pred, gt), tuple(f.stop for f in result.fronts)))
                if options is OLD:
                    by_tolerance[None] = pred
            if args.sweep:
                for tol in tolerances:
                    if tol not in by_tolerance:
                        by_tolerance[tol] = propagate_structure(
                            net, image, gt, device, {**OLD, "connect_tolerance": tol}
                        )[0]
                    pred = by_tolerance[tol]
                    for lo, hi in itertools.product(mins, maxs):
                        cut, _ = replay_ratio_stops(pred, middle, lo, hi)
                        sweep.setdefault((tol, lo, hi), []).append(leak_and_dice(cut, gt))
        print(f"{case}: done after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    structures = [n for n in wanted if old[n]]
    print(f"{len(cases)} case(s) {[c for c, *_ in cases]}, device {device}, {time.perf_counter() - t0:.0f} s")
    print(f"old: {OLD}\nnew: {new_options}\n")
    print(_table(structures, split, old, new))
    if sweep:
        print("\nsweep (mean over every case and structure): connect_tolerance, min_area_ratio, max_area_ratio")
        print(f"{'tol':>5}{'min':>6}{'max':>6}{'leak':>8}{'Dice':>8}")
        for (tol, lo, hi), scores in sorted(sweep.items(), key=lambda kv: -statistics.fmean(d for _, d in kv[1])):
            leak = statistics.fmean(s for s, _ in scores)
            dice = statistics.fmean(d for _, d in scores)
            print(f"{tol!s:>5}{lo!s:>6}{hi!s:>6}{leak:>8.2f}{dice:>8.3f}")
    return {"old": old, "new": new, "sweep": sweep}


if __name__ == "__main__":
    main()
