"""Active-learning loop benchmark: the time of one retraining, of one strategy score and of one loop round.

Three measurements of ``bundles/active_learning`` through :mod:`common.active_learning`, each side by side with a
baseline measured in the same run, on one device:

- **training**: :func:`common.active_learning.retrain_model` from the general weights on ``--k`` corrected cases
  (the pool cases of ``--structure`` with their ground-truth labels: the cost does not depend on the labels' values)
  for the loop's ``retrain_iterations`` (60), against the baseline: one epoch of the general model's training
  (``train.json``'s own ``train_items``: the seen structures of fold 0, one iteration per item, from scratch as
  ``train.json`` trains) through the same recipe. Reported: the training iterations' seconds (``trainer.run``),
  seconds per iteration and its ratio to the baseline's, and the setup (config parsing, loading and caching the
  items, loading and saving weights);
- **strategies**: the loop's selection setting: for each pool case, the simulated user's box, the bundle's
  pre-processing (:meth:`common.evaluation.BundleAdapter.network_input`: load, re-orient, crop, z-score, resize) and
  the general model (eval mode) through :func:`common.active_learning.score_cases`: ``entropy``, ``mc_dropout`` and
  ``tta`` with ``--samples`` (10) draws at the device's default batch, against one plain forward pass (the baseline),
  interleaved per case, median over the cases x ``--repeats`` after ``--warmup`` rounds;
- **round**: one full round of the loop (:class:`common.active_learning.ActiveLearningLoop`, default
  :class:`~common.active_learning.LoopSettings`: strategy ``entropy``, ``n_per_round`` 2, robot annotator with the
  box and 3 scribble rounds through ``inference.json`` (BIFSeg), retraining from the general weights, held-out
  evaluation from the box) on a pool of ``--pool`` cases and ``--heldout`` held-out cases: the loop runs until it has
  annotated ``n_per_round`` cases and retrained once. Split into its parts (selection, annotation, retraining,
  held-out evaluation, the rest: loading cases, writing labels, state and report), each with the time spent building
  the bundle's pipelines; the state's own figures (per-case ``seconds``, ``retrain.seconds``) are reported too. The
  held-out evaluation of the general model that starts every loop is timed apart (once per loop, not per round).

``--quick``: the tiny network of ``configs/quick.json`` on a generated 5-case phantom set of 64 x 64 x 40 voxels, a
general model trained by the baseline itself, 4 retraining iterations, 1 scribble round, 3 samples (seconds).

Run from the repository root (``python -m common.data.phantoms --out data/Phantoms`` first, or a temporary set is
generated)::

    OMP_NUM_THREADS=2 python bench/active_learning.py --threads 2 --json outputs/bench/active_learning_cpu.json
    python bench/active_learning.py --device cuda --json outputs/bench/active_learning_cuda.json
    python bench/active_learning.py --quick                          # seconds
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from common.active_learning import ActiveLearningLoop, LoopSettings, LoopState, retrain_model, score_cases, split_pool
from common.active_learning.strategies import DEFAULT_BATCH
from common.benchmarking import run_environment
from common.bundle.pipeline import BundleInferencePipeline, load_bundle_config
from common.data import expand_structures, load_msd_dataset
from common.data.phantoms import generate_dataset
from common.evaluation import BundleAdapter, EvalCase

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "active_learning"
CONFIGS = BUNDLE / "configs"
DEFAULT_DATA = ROOT / "data" / "Phantoms"
BENCHMARKS = ("training", "strategies", "round")
SCORED = ("entropy", "mc_dropout", "tta")
KIND = "box_scribbles"  # the bundle's interaction kind (as the loop's)
QUICK_SHAPE = (64, 64, 40)
QUICK = {"retrain_iterations": 4, "scribble_rounds": 1, "samples": 3, "repeats": 1}

T = TypeVar("T")


def quick_overrides() -> dict[str, Any]:
    """``configs/quick.json``'s network and crop size (for ``inference.json`` and ``train.json`` alike)."""
    quick = json.loads((CONFIGS / "quick.json").read_text())
    return {k: v for k, v in quick.items() if k.startswith("network_def") or k == "resize_size"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------ training
def _training_row(
    name: str,
    items: Sequence[Mapping[str, Any]],
    out: Path,
    init: Path | None,
    iterations: int,
    seed: int,
    overrides: Mapping[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    figures, wall = _timed(
        lambda: retrain_model(
            BUNDLE, items, out, init, iterations=iterations, seed=seed, overrides=overrides, device=device
        ),
        device,
    )
    per_iteration = figures["seconds"] / figures["iterations"]
    print(f"  {name}: {figures['iterations']} iterations in {figures['seconds']:.1f} s ({wall:.1f} s with the setup)")
    return {
        "name": name,
        "items": figures["items"],
        "epochs": figures["epochs"],
        "iterations": figures["iterations"],
        "init": "scratch" if init is None else "general weights",
        "train_s": figures["seconds"],
        "s_per_iteration": per_iteration,
        "setup_s": wall - figures["seconds"],
        "wall_s": wall,
        "final_loss": figures["final_loss"],
    }


def run_training(
    train_items: Sequence[Mapping[str, Any]],
    corrected: Sequence[Mapping[str, Any]],
    general: Path | None,
    iterations: int,
    seed: int,
    overrides: Mapping[str, Any],
    device: torch.device,
    workdir: Path,
) -> list[dict[str, Any]]:
    """The baseline (one epoch of the general model's training) and one retraining; rows with ``x_training``.

    Writes the baseline's weights to ``workdir/general.pt`` (the general model of ``--quick``).
    """
    base = _training_row(
        "general model training, 1 epoch (baseline)",
        train_items,
        workdir / "general.pt",
        None,
        len(train_items),
        seed,
        overrides,
        device,
    )
    if general is None:
        general = workdir / "general.pt"
    retrain = _training_row(
        f"retraining on {len(corrected)} corrected cases",
        corrected,
        workdir / "retrained.pt",
        general,
        iterations,
        seed,
        overrides,
        device,
    )
    for row in (base, retrain):
        row["x_training_per_iteration"] = row["s_per_iteration"] / base["s_per_iteration"]
    return [base, retrain]


# ---------------------------------------------------------------------------------------------------- strategies
def run_strategies(
    loop: ActiveLearningLoop, samples: int, repeats: int, warmup: int, device: torch.device
) -> tuple[dict[str, list[float]], list[list[int]]]:
    """Seconds per case of each row (pre-processing, forward, each scored strategy), and the crops' shapes."""
    pipeline = loop.pipeline(loop.general_weights, "cnn")
    adapter = BundleAdapter(pipeline, KIND, name="strategy")
    network = pipeline.network

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(x)

    times: dict[str, list[float]] = {name: [] for name in ("preprocessing", "forward", *SCORED)}
    shapes: list[list[int]] = []
    for round_ in range(warmup + repeats):
        for key in loop.pool:
            case = loop.case(key)
            box = loop.box_state(case)
            x, prep = _timed(functools.partial(adapter.network_input, case.image, box, case.info), device)
            x = x[:, :1].to(pipeline.device)  # channel 0: the crop (1: scribble codes, none before annotation)
            if round_ == 0:
                shapes.append(list(x.shape[2:]))
            row = {"preprocessing": prep, "forward": _timed(functools.partial(forward, x), device)[1]}
            for strategy in SCORED:
                score = functools.partial(score_cases, strategy, network, [x], seed=0, samples=samples)
                row[strategy] = _timed(score, device)[1]
            if round_ >= warmup:
                for name, seconds in row.items():
                    times[name].append(seconds)
    return times, shapes


def strategy_table(times: dict[str, list[float]], samples: int) -> list[dict[str, Any]]:
    """Rows: name, forward passes per case, median and p90 seconds per case, per forward pass, x the forward."""
    base = statistics.median(times["forward"])
    rows = []
    for name, values in times.items():
        passes = samples if name in ("mc_dropout", "tta") else (0 if name == "preprocessing" else 1)
        median = statistics.median(values)
        rows.append(
            {
                "name": name,
                "forward_passes": passes,
                "n": len(values),
                "median_s": median,
                "p90_s": float(np.percentile(values, 90)),
                "per_pass_s": median / passes if passes else None,
                "x_forward": median / base,
                "times_s": values,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------------- round
class TimedLoop(ActiveLearningLoop):
    """The loop with its parts timed: every call of ``select``, ``annotate``, ``retrain``, ``evaluate_heldout``,
    the first load of each case and every pipeline build, as ``(part, parent part, start, seconds)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, str | None, float, float]] = []
        self._stack: list[str] = []

    def _time(self, part: str, fn: Callable[[], T]) -> T:
        parent = self._stack[-1] if self._stack else None
        self._stack.append(part)
        _sync(self._device())
        start = time.perf_counter()
        try:
            return fn()
        finally:
            _sync(self._device())
            self._stack.pop()
            self.events.append((part, parent, start, time.perf_counter() - start))

    def _device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else torch.device("cpu")

    def select(self, state: LoopState, keys: list[str], rng: np.random.Generator) -> tuple[str, float]:
        return self._time("select", lambda: super(TimedLoop, self).select(state, keys, rng))

    def annotate(self, state: LoopState, key: str, score: float) -> None:
        self._time("annotate", lambda: super(TimedLoop, self).annotate(state, key, score))

    def retrain(self, state: LoopState) -> None:
        self._time("retrain", lambda: super(TimedLoop, self).retrain(state))

    def evaluate_heldout(self, weights: str | Path) -> dict[str, Any]:
        return self._time("heldout", lambda: super(TimedLoop, self).evaluate_heldout(weights))

    def pipeline(self, weights: str | Path, refinement: str) -> BundleInferencePipeline:
        if (str(weights), refinement) in self._pipelines:
            return super().pipeline(weights, refinement)
        return self._time("pipeline", lambda: super(TimedLoop, self).pipeline(weights, refinement))

    def case(self, key: str) -> EvalCase:
        if key in self._cases:
            return super().case(key)
        return self._time("load_case", lambda: super(TimedLoop, self).case(key))


ROUND_PARTS: dict[str, str] = {
    "select": "select (strategy on every pool case left)",
    "annotate": "annotate (robot: box + scribble rounds)",
    "retrain": "retrain (retrain_model)",
    "heldout": "held-out evaluation",
    "load_case": "load cases (first use)",
    "other": "other (labels, state, report)",
}


def round_table(loop: TimedLoop, state: LoopState, round_start: float, round_s: float) -> list[dict[str, Any]]:
    """The round's parts (exclusive seconds, calls, pipeline builds inside, share of the round) and its total."""
    events = [e for e in loop.events if e[2] >= round_start]
    rows: list[dict[str, Any]] = []
    for part, label in ROUND_PARTS.items():
        if part == "other":
            continue
        calls = [e for e in events if e[0] == part]
        seconds = sum(e[3] for e in calls)
        if part == "retrain":  # exclusive of the held-out evaluation it runs
            seconds -= sum(e[3] for e in events if e[0] == "heldout" and e[1] == "retrain")
        inner = sum(e[3] for e in events if e[0] == "pipeline" and e[1] == part)
        rows.append({"part": part, "label": label, "calls": len(calls), "seconds": seconds, "pipeline_s": inner})
    other = round_s - sum(r["seconds"] for r in rows if r["part"] in ("select", "annotate", "retrain", "heldout"))
    other -= sum(e[3] for e in events if e[0] == "load_case" and e[1] is None)
    rows.append({"part": "other", "label": ROUND_PARTS["other"], "calls": None, "seconds": other, "pipeline_s": 0.0})
    rows.append({"part": "round", "label": "round total", "calls": None, "seconds": round_s, "pipeline_s": None})
    for row in rows:
        row["share"] = row["seconds"] / round_s
    trained = state.models[-1]["retrain"]
    by_part = {r["part"]: r for r in rows}
    by_part["retrain"]["train_s"] = trained["seconds"]  # the state's figure: trainer.run alone
    by_part["retrain"]["iterations"] = trained["iterations"]
    by_part["annotate"]["record_s"] = [r["seconds"] for r in state.annotated]  # the state's per-case figures
    return rows


def run_round(
    pool: Sequence[Mapping[str, Any]],
    heldout: Sequence[Mapping[str, Any]],
    general: Path,
    settings: LoopSettings,
    overrides: Mapping[str, Any],
    device: torch.device,
    workdir: Path,
) -> dict[str, Any]:
    """One loop round (``n_per_round`` cases annotated, one retraining) with its parts timed."""
    loop = TimedLoop(
        BUNDLE,
        pool,
        heldout,
        workdir / "loop",
        settings,
        general_weights=general,
        inference_overrides=overrides,
        train_overrides=overrides,
        device=device,
        progress=False,
    )
    start = time.perf_counter()
    state = loop.run(max_cases=settings.n_per_round)
    end = time.perf_counter()
    first = next(e for e in loop.events if e[0] == "heldout")  # the general model's, before the first selection
    round_start = first[2] + first[3]
    setup = [e for e in loop.events if e[0] == "pipeline" and e[2] < round_start]
    rows = round_table(loop, state, round_start, end - round_start)
    return {
        "rows": rows,
        "initial_heldout_s": first[3],
        "initial_pipeline_s": sum(e[3] for e in setup),
        "before_round_s": round_start - start,
        "annotated": [
            {k: r[k] for k in ("key", "score", "dice_per_round", "interactions", "rounds", "seconds")}
            for r in state.annotated
        ],
        "heldout_dice": [m["heldout"]["mean_dice"] for m in state.models],
        "retrain": state.models[-1]["retrain"],
    }


# --------------------------------------------------------------------------------------------------------- print
def print_training(rows: list[dict[str, Any]], header: str) -> None:
    print(f"\n{header}")
    print(f"{'row':<46}{'items':>6}{'iters':>7}{'train s':>10}{'s/iter':>9}{'x training':>12}{'setup s':>9}")
    for r in rows:
        print(
            f"{r['name']:<46}{r['items']:>6}{r['iterations']:>7}{r['train_s']:>10.2f}{r['s_per_iteration']:>9.3f}"
            f"{r['x_training_per_iteration']:>12.2f}{r['setup_s']:>9.2f}"
        )


def print_strategies(rows: list[dict[str, Any]], header: str) -> None:
    print(f"\n{header}")
    print(f"{'row':<26}{'passes':>7}{'n':>4}{'median s':>10}{'p90 s':>9}{'s/pass':>9}{'x forward':>11}")
    for r in rows:
        per = "-" if r["per_pass_s"] is None else f"{r['per_pass_s']:.4f}"
        name = r["name"] + (" (baseline)" if r["name"] == "forward" else "")
        print(
            f"{name:<26}{r['forward_passes']:>7}{r['n']:>4}{r['median_s']:>10.4f}{r['p90_s']:>9.4f}{per:>9}"
            f"{r['x_forward']:>11.2f}"
        )


def print_round(result: dict[str, Any], header: str) -> None:
    print(f"\n{header}")
    print(f"{'part':<44}{'calls':>6}{'s':>9}{'pipelines s':>13}{'share':>8}")
    for r in result["rows"]:
        calls = "-" if r["calls"] is None else str(r["calls"])
        inner = "-" if r["pipeline_s"] is None else f"{r['pipeline_s']:.2f}"
        print(f"{r['label']:<44}{calls:>6}{r['seconds']:>9.2f}{inner:>13}{100 * r['share']:>7.1f}%")
    rows = {r["part"]: r for r in result["rows"]}
    print(
        f"state figures: annotation s per case {', '.join(f'{s:.1f}' for s in rows['annotate']['record_s'])}; "
        f"retraining {rows['retrain']['iterations']} iterations {rows['retrain']['train_s']:.1f} s (trainer.run)"
    )
    print(
        f"once per loop, before the round: held-out evaluation of the general model {result['initial_heldout_s']:.2f}"
        " s "
        f"(of which pipeline {result['initial_pipeline_s']:.2f} s); held-out Dice "
        + " -> ".join(f"{d:.3f}" for d in result["heldout_dice"])
    )


# ---------------------------------------------------------------------------------------------------------- main
def _dataset(args: argparse.Namespace, tmp: Path) -> Path:
    if args.quick and args.data is None:
        data = tmp / "Phantoms"
        generate_dataset(data, n_cases=5, seed=0, shape=QUICK_SHAPE, montage=False)
        return data
    data = args.data or DEFAULT_DATA
    if not (data / "dataset.json").is_file():
        if args.data is not None:
            raise SystemExit(f"no dataset.json in {data}")
        print(f"{data} not found (python -m common.data.phantoms --out {data}): generating a temporary phantom set")
        data = tmp / "Phantoms"
        generate_dataset(data, n_cases=12, seed=0, montage=False)
    return data


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    defaults = LoopSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=None, help=f"MSD-layout dataset (default {DEFAULT_DATA})")
    parser.add_argument("--weights", type=Path, default=None, help="general model (default: the bundle's model.pt)")
    parser.add_argument("--structure", default="kidney_right", help="the loop's (unseen) structure")
    parser.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--pool", type=int, default=3, help="pool cases of the round and the strategies")
    parser.add_argument("--heldout", type=int, default=2, help="held-out cases of the round")
    parser.add_argument("--k", type=int, default=None, help="corrected cases of the retraining (default n_per_round)")
    parser.add_argument("--n-per-round", type=int, default=defaults.n_per_round)
    parser.add_argument("--strategy", default=defaults.strategy, help="the round's query strategy")
    parser.add_argument("--retrain-iterations", type=int, default=None, help=f"default {defaults.retrain_iterations}")
    parser.add_argument("--scribble-rounds", type=int, default=None, help=f"default {defaults.scribble_rounds}")
    parser.add_argument("--samples", type=int, default=None, help=f"MC dropout, TTA draws (default {defaults.samples})")
    parser.add_argument("--baseline-items", type=int, default=None, help="items of the baseline epoch (default all)")
    parser.add_argument("--repeats", type=int, default=None, help="strategy rounds over the pool (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed strategy rounds first")
    parser.add_argument("--seed", type=int, default=0, help="split, loop, training")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny network and phantoms (seconds)")
    parser.add_argument("--note", default="", help="stored in the JSON (e.g. what else ran on the machine)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    iterations = args.retrain_iterations or quick.get("retrain_iterations", defaults.retrain_iterations)
    scribbles = args.scribble_rounds if args.scribble_rounds is not None else quick.get("scribble_rounds")
    samples = args.samples or quick.get("samples", defaults.samples)
    repeats = args.repeats or quick.get("repeats", 3)
    k = args.k or args.n_per_round
    settings = LoopSettings(
        strategy=args.strategy,
        n_per_round=args.n_per_round,
        seed=args.seed,
        scribble_rounds=defaults.scribble_rounds if scribbles is None else scribbles,
        retrain_iterations=iterations,
        samples=samples,
    )
    if args.pool < max(k, settings.n_per_round):
        parser.error(f"--pool {args.pool} must hold at least --k {k} and --n-per-round {settings.n_per_round} cases")
    if "training" not in args.benchmarks and args.quick and args.weights is None:
        parser.error("--quick trains its general model in the training benchmark: keep it or give --weights")
    overrides = quick_overrides() if args.quick else {}
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {}
    try:
        used_threads = torch.get_num_threads()
        with tempfile.TemporaryDirectory(prefix="bench_al_") as tmp:
            work = Path(tmp)
            data = _dataset(args, work)
            dataset = load_msd_dataset(data)
            cases = expand_structures(dataset.training, dataset, level="volume", structures=[args.structure])
            if len(cases) < args.pool + args.heldout:
                parser.error(f"{data} has {len(cases)} {args.structure} cases, fewer than --pool + --heldout")
            rest, heldout = split_pool(cases, args.heldout, seed=args.seed)
            pool = rest[: args.pool]
            general = args.weights or (None if args.quick else BUNDLE / "models" / "model.pt")
            if general is not None and not general.is_file():
                parser.error(f"general model weights not found: {general} (train the bundle or give --weights)")
            print(
                f"{data}: {args.structure}, pool {[c['case_id'] for c in pool]}, "
                f"held out {[c['case_id'] for c in heldout]}; general model {general or 'trained by the baseline'}"
            )
            if "training" in args.benchmarks:
                train_parser = load_bundle_config(CONFIGS / "train.json", BUNDLE)
                train_parser["dataset_dir"] = str(data)
                train_items = list(train_parser.get_parsed_content("train_items"))[: args.baseline_items]
                report["training"] = run_training(
                    train_items, pool[:k], general, iterations, args.seed, overrides, device, work
                )
            general = general or work / "general.pt"
            if "strategies" in args.benchmarks:
                loop = ActiveLearningLoop(
                    BUNDLE,
                    pool,
                    heldout,
                    work / "strategies",
                    settings,
                    general_weights=general,
                    inference_overrides=overrides,
                    device=device,
                    progress=False,
                )
                times, shapes = run_strategies(loop, samples, repeats, args.warmup, device)
                report["strategies"] = {"rows": strategy_table(times, samples), "crop_shapes": shapes}
            if "round" in args.benchmarks:
                report["round"] = run_round(pool, heldout, general, settings, overrides, device, work)
    finally:
        torch.set_num_threads(threads)
    where = f"{device} ({used_threads} threads)" if device.type == "cpu" else str(device)
    net = "tiny network (quick.json)" if args.quick else "IsenseeUNet 16-32-64-128"
    if "training" in report:
        print_training(report["training"], f"Training, {net}, {where}: s per iteration vs the general model's training")
    if "strategies" in report:
        batch = DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cuda"])
        print_strategies(
            report["strategies"]["rows"],
            f"Strategy score per pool case, {net}, {where}, {samples} samples (batch {min(batch, samples)}), "
            f"{len(pool)} cases x {repeats} repeats; crops {report['strategies']['crop_shapes']}",
        )
    if "round" in report:
        print_round(
            report["round"],
            f"One loop round, {net}, {where}: {settings.strategy}, {settings.n_per_round} cases of a pool of "
            f"{len(pool)}, {settings.scribble_rounds} scribble rounds, {settings.retrain_iterations} retraining "
            f"iterations, {len(heldout)} held-out cases",
        )
    full = {
        "environment": run_environment("active_learning", device, used_threads, False),
        "note": args.note,
        "quick": args.quick,
        "data": str(data),
        "structure": args.structure,
        "pool": [c["case_id"] for c in pool],
        "heldout": [c["case_id"] for c in heldout],
        "general_weights": str(args.weights or ("quick: trained by the baseline" if args.quick else general)),
        "settings": settings.to_json(),
        "k": k,
        "repeats": repeats,
        "warmup": args.warmup,
        "default_batch": DEFAULT_BATCH,
        **report,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(full, indent=2) + "\n")
        print(f"wrote {args.json}")
    return full


if __name__ == "__main__":
    main()
    sys.exit(0)
