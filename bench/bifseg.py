"""BIFSeg interaction benchmark: one interaction step through the bundle's own pipeline, per refinement mode.

What a user waits for after drawing a box or a round of scribbles, measured end to end through
``bundles/bifseg/configs/inference.json`` (:class:`common.bundle.pipeline.BundleInferencePipeline`: loading the image,
re-orientation, box crop, z-score, resize, network, refinement, inverse mapping, user-input enforcement), side by side
in one run:

- ``cnn``: the forward pass alone (the baseline every other row is divided by);
- ``crf``: forward + one graph cut (P-Net + CRF);
- ``bifseg_box``: BIFSeg after the box, unsupervised fine-tuning (4 x [graph cut + 20 SGD steps on block 6]);
- ``bifseg_scribbles``: BIFSeg after one round of the robot's scribbles (supervised fine-tuning).

For each case of the embedded phantoms (last ``--cases``) and each structure, the box is the robot user's (margin 0-10
voxels, seed 0); the scribbles are the robot's strokes in the largest errors of the ``bifseg_box`` result. 2D boxes lie
on the structure's largest axial slice; ``--dims 3`` uses the 3D config (PC-Net; ``models/model_3d.pt`` when shipped,
else the untrained network: the timings do not depend on the weights' values). Reported: median and 90th percentile
seconds per step, and the ratio to ``cnn``. Targets (issue): one 2D step < 1 s and one 3D step < 10 s on the 2-core
CPU; < 0.2 s and < 1 s on a GPU.

Run from the repository root::

    python bench/bifseg.py                       # 2D, 2 cases x 10 structures, CPU
    python bench/bifseg.py --dims 3 --cases 1    # 3D
    python bench/bifseg.py --device cuda --json bench/results_bifseg_cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.benchmarking import run_environment
from common.bundle.pipeline import BundleInferencePipeline
from common.data import expand_structures, load_msd_dataset
from common.data.phantoms import generate_dataset
from common.evaluation import BundleAdapter, load_eval_cases, single_slice_cases
from common.interaction import BoxScribbleRobot, InteractionState

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "bifseg"
MODES: dict[str, str] = {"cnn": "cnn", "crf": "crf", "bifseg_box": "bifseg", "bifseg_scribbles": "bifseg"}


def _pipelines(dims: int, device: torch.device) -> dict[str, BundleInferencePipeline]:
    configs = [BUNDLE / "configs" / "inference.json"] + ([BUNDLE / "configs" / "3d.json"] if dims == 3 else [])
    weights = BUNDLE / "models" / ("model.pt" if dims == 2 else "model_3d.pt")
    out = {}
    for name, mode in MODES.items():
        out[name] = BundleInferencePipeline.from_bundle(
            BUNDLE,
            weights=weights if weights.is_file() else None,
            config_files=configs,
            overrides={"refinement": mode},
            device=device,
        )
    return out


def _timed(adapter: BundleAdapter, image: np.ndarray, state: InteractionState, info: Any) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    mask = adapter(image, state.copy(), info)
    return mask, time.perf_counter() - start


def run(data: Path, dims: int, n_cases: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step for each mode over the cases' structures."""
    dataset = load_msd_dataset(data)
    items = expand_structures(dataset.training[-n_cases:], dataset, level="volume")
    cases = load_eval_cases(items)
    if dims == 2:
        cases = single_slice_cases(cases, slices_per_structure=1)
    adapters = {n: BundleAdapter(p, "box_scribbles", name=n) for n, p in _pipelines(dims, device).items()}
    times: dict[str, list[float]] = {name: [] for name in MODES}
    for case in cases:
        robot = BoxScribbleRobot(margin=(0, 10), slice_margin=(0, 2), box_dims=dims, seed=0)
        robot.reset(case.image, case.label, case.spacing, affine=case.affine)
        state = robot.next_interaction(case.label, np.zeros_like(case.label), InteractionState(axis=robot.slice_axis))
        assert state is not None
        info = case.info
        for name in ("cnn", "crf", "bifseg_box"):
            mask, seconds = _timed(adapters[name], case.image, state, info)
            times[name].append(seconds)
        scribbled = robot.next_interaction(case.label, mask.astype(np.uint8), state)
        if scribbled is not None:
            _, seconds = _timed(adapters["bifseg_scribbles"], case.image, scribbled, info)
            times["bifseg_scribbles"].append(seconds)
        print(
            f"  {case.case_id} {case.structure_name}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items() if t)
        )
    return times


def table(times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Rows: mode, n, median and p90 seconds, ratio of medians to ``cnn``."""
    base = statistics.median(times["cnn"])
    rows = []
    for name, values in times.items():
        if not values:
            continue
        median = statistics.median(values)
        rows.append(
            {
                "mode": name,
                "n": len(values),
                "median_s": median,
                "p90_s": float(np.percentile(values, 90)),
                "x_forward": median / base,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="MSD-layout dataset (default: generate the phantoms)")
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--cases", type=int, default=2, help="last N training cases of the dataset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        used_threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory() as tmp:
            data = args.data
            if data is None:
                data = Path(tmp) / "Phantoms"
                generate_dataset(data, n_cases=12, seed=0)
            times = run(data, args.dims, args.cases, device)
    finally:
        torch.set_num_threads(threads)
    rows = table(times)
    print(f"\nBIFSeg {args.dims}D interaction step, {device} ({used_threads} threads)")
    print(f"{'mode':<18}{'n':>4}{'median s':>11}{'p90 s':>9}{'x forward':>11}")
    for r in rows:
        print(f"{r['mode']:<18}{r['n']:>4}{r['median_s']:>11.3f}{r['p90_s']:>9.3f}{r['x_forward']:>11.2f}")
    if args.json:
        env = run_environment("bifseg", device, used_threads, False)
        args.json.write_text(json.dumps({"environment": env, "dims": args.dims, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
