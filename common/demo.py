"""End-to-end demo on the embedded data: ``python -m common.demo``.

Steps (each prints progress and writes its results under ``--out``):

1. generate the embedded phantom dataset (skipped when ``--data`` already holds one);
2. run the shared robot-user evaluation with the classical region-growing baseline and a centre-of-error click
   robot on the validation fold (seen and unseen structures), writing ``rounds.csv``, ``summary.json`` and
   ``curves.png``;
3. slice propagation: train the bundle's quick configuration, propagate one annotated slice through a held-out
   volume with ``configs/inference.json``, and run the paper's correction protocol through the same evaluation core;
4. DeepGrow clicks: train the bundle's quick configuration (to show the training path), then, with the bundle's
   shipped weights, segment an unseen structure from one click per slice with ``configs/inference.json`` and run
   the click protocol (1 .. ``--rounds`` clicks per slice) with ``configs/evaluate.json``;
5. BIFSeg: train the bundle's quick configuration, then, with the shipped weights, segment an unseen structure from a
   box on one slice (``configs/inference.json``, image-specific fine-tuning) and run the box-then-scribbles protocol
   with ``configs/evaluate.json``;
6. active learning: with the shipped general model, run ``configs/loop.json`` on a small pool of an unseen structure
   (the aorta, which the general model segments poorly from a box: Dice 0.1): the query strategy picks each case, its
   corrected label joins the training set (the ground-truth annotator: the robot's thin strokes cannot repair the
   aorta, see the bundle's docs) and the model is retrained from the general weights every two corrected cases; the
   report and learning curves are written (``outputs/demo/active_learning/loop/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "main",
    "run_active_learning",
    "run_bifseg",
    "run_deepgrow_clicks",
    "run_region_grow_baseline",
    "run_slice_propagation",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROPAGATION_BUNDLE = REPO_ROOT / "bundles" / "slice_propagation"
DEEPGROW_BUNDLE = REPO_ROOT / "bundles" / "deepgrow_clicks"
BIFSEG_BUNDLE = REPO_ROOT / "bundles" / "bifseg"
ACTIVE_LEARNING_BUNDLE = REPO_ROOT / "bundles" / "active_learning"


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


def _nifti(path: str | Path) -> Any:
    """``nibabel.load`` typed loosely (nibabel's stubs return a base class without ``dataobj``/``affine``)."""
    import nibabel as nib

    return nib.load(path)


def _monai_bundle(args: list[str], log: Path) -> None:
    """Run ``python -m monai.bundle ARGS``, logging to ``log``; raise with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"monai.bundle {args[0]} failed (exit {result.returncode}), see {log}:\n{tail}")


def _write_middle_slice_annotation(item: dict[str, str], value: int, name: str, out_dir: Path) -> tuple[Path, Any]:
    """Simulate a user who annotated the middle slice of structure ``value`` in the case ``item``.

    Returns:
        the annotation file's path and the structure's full ``(H, W, D)`` ground-truth mask (uint8).
    """
    import nibabel as nib
    import numpy as np

    from common.transforms import middle_slice_index

    label_img = _nifti(item["label"])
    mask = (np.asarray(label_img.dataobj) == value).astype(np.uint8)
    k = middle_slice_index(mask, axis=2)
    annotation = np.zeros_like(mask)
    annotation[..., k] = mask[..., k]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{item['case_id']}_{name}_annotation.nii.gz"
    nib.save(nib.Nifti1Image(annotation, label_img.affine), path)
    return path, mask


def run_slice_propagation(data_dir: Path, out_dir: Path, n_rounds: int, epochs: int) -> Path:
    """Train the slice-propagation bundle's quick configuration, propagate one annotated slice of an unseen
    structure with ``inference.json``, and run the correction protocol with ``evaluate.json``.

    Returns:
        the path of the evaluation's ``summary.json``.
    """
    import numpy as np

    from common.data import load_msd_dataset, select_fold
    from common.evaluation import dice
    from common.visualization import save_label_montage

    configs = PROPAGATION_BUNDLE / "configs"
    models, runs = out_dir / "models", out_dir / "runs"
    common_args = ["--bundle_root", str(PROPAGATION_BUNDLE), "--dataset_dir", str(data_dir), "--ckpt_dir", str(models)]
    start = time.perf_counter()
    print(f"[demo] slice propagation: training the quick configuration for {epochs} epochs ...")
    train_files = repr([str(configs / "train.json"), str(configs / "quick.json")])
    _monai_bundle(
        [
            "run",
            "--config_file",
            train_files,
            *common_args,
            "--output_dir",
            str(runs),
            "--max_epochs",
            str(epochs),
            "--val_interval",
            str(epochs),
        ],  # validate (and keep the checkpoint) once, at the end
        out_dir / "train.log",
    )
    print(f"[demo] trained in {time.perf_counter() - start:.0f} s (log: {out_dir / 'train.log'})")

    dataset = load_msd_dataset(data_dir)
    item = select_fold(dataset.training, 0).val[0]
    case_id, image = item["case_id"], Path(item["image"])
    annotation, truth = _write_middle_slice_annotation(
        item, dataset.label_value("kidney_right"), "kidney_right", out_dir / "annotations"
    )
    datalist = out_dir / "datalist.json"
    datalist.write_text(json.dumps({"datalist": [{"image": str(image), "annotation": str(annotation)}]}))
    infer_files = repr([str(configs / "inference.json"), str(configs / "quick.json"), str(datalist)])
    masks = out_dir / "masks"
    _monai_bundle(
        ["run", "--config_file", infer_files, "--bundle_root", str(PROPAGATION_BUNDLE),
         "--ckpt_path", str(models / "model.pt"), "--output_dir", str(masks)],
        out_dir / "inference.log",
    )  # fmt: skip
    mask_path = masks / f"{case_id}_propagated.nii.gz"
    mask = np.asarray(_nifti(mask_path).dataobj) > 0
    png = save_label_montage(
        np.asarray(_nifti(image).dataobj), truth, out_dir / "kidney_right_propagation.png",
        label_names={1: "kidney_right (ground truth)"}, prediction=mask.astype(np.uint8),
        prediction_colour="yellow",
        title=f"{case_id}: one annotated slice of an unseen structure, propagated (contour)",
    )  # fmt: skip
    print(
        f"[demo] propagated one slice of kidney_right (unseen) in {case_id}: Dice {dice(mask, truth > 0):.3f} -> {png}"
    )

    subset = out_dir / "eval_subset.json"  # the demo evaluates one validation volume (all its structures)
    subset.write_text(
        json.dumps({"eval_items": "$common.data.expand_structures(@split.val[:1], @eval_dataset, level='volume')"})
    )
    # evaluate.json runs inference.json's own pre-processing, inferer and post-processing on each round's request
    eval_files = repr([str(configs / f) for f in ("inference.json", "evaluate.json", "quick.json")] + [str(subset)])
    _monai_bundle(
        ["run", "--config_file", eval_files, "--bundle_root", str(PROPAGATION_BUNDLE), "--dataset_dir", str(data_dir),
         "--ckpt_path", str(models / "model.pt"), "--output_dir", str(out_dir), "--n_rounds", str(n_rounds)],
        out_dir / "evaluate.log",
    )  # fmt: skip
    return out_dir / "interactive_nearest" / "summary.json"


def _train_quick_then_use_shipped(bundle: Path, title: str, data_dir: Path, out_dir: Path, epochs: int) -> None:
    """Train ``bundle``'s quick configuration (to show the training path), then announce the shipped weights."""
    configs = bundle / "configs"
    shipped = bundle / "models" / "model.pt"
    start = time.perf_counter()
    print(f"[demo] {title}: training the quick configuration for {epochs} epochs ...")
    _monai_bundle(
        ["run", "--config_file", repr([str(configs / "train.json"), str(configs / "quick.json")]),
         "--bundle_root", str(bundle), "--dataset_dir", str(data_dir), "--ckpt_dir", str(out_dir / "models"),
         "--output_dir", str(out_dir / "runs"), "--max_epochs", str(epochs), "--val_interval", str(epochs)],
        out_dir / "train.log",
    )  # fmt: skip
    print(f"[demo] trained in {time.perf_counter() - start:.0f} s (log: {out_dir / 'train.log'}); the steps below use")
    print(
        f"[demo] the bundle's shipped weights {shipped.relative_to(REPO_ROOT)} "
        f"(see {bundle.relative_to(REPO_ROOT)}/docs)"
    )


def _evaluate_one_validation_volume(bundle: Path, data_dir: Path, out_dir: Path, n_rounds: int) -> None:
    """``evaluate.json`` on the first validation volume (all its structures) with the shipped weights."""
    configs = bundle / "configs"
    subset = out_dir / "eval_subset.json"
    subset.write_text(
        json.dumps({"eval_items": "$common.data.expand_structures(@split.val[:1], @eval_dataset, level='volume')"})
    )
    eval_files = repr([str(configs / "inference.json"), str(configs / "evaluate.json"), str(subset)])
    _monai_bundle(
        ["run", "--config_file", eval_files, "--bundle_root", str(bundle), "--dataset_dir", str(data_dir),
         "--output_dir", str(out_dir), "--n_rounds", str(n_rounds)],
        out_dir / "evaluate.log",
    )  # fmt: skip


def run_deepgrow_clicks(data_dir: Path, out_dir: Path, n_rounds: int, epochs: int) -> Path:
    """Train the DeepGrow bundle's quick configuration, then segment an unseen structure from clicks with the
    shipped weights (``inference.json``) and run the click protocol (``evaluate.json``).

    Returns:
        the path of the evaluation's ``summary.json``.
    """
    import numpy as np

    from common.data import load_msd_dataset, select_fold
    from common.evaluation import dice
    from common.interaction import deepest_click_per_slice
    from common.visualization import save_label_montage

    configs = DEEPGROW_BUNDLE / "configs"
    _train_quick_then_use_shipped(DEEPGROW_BUNDLE, "DeepGrow clicks", data_dir, out_dir, epochs)

    dataset = load_msd_dataset(data_dir)
    item = select_fold(dataset.training, 0).val[0]
    case_id, image = item["case_id"], Path(item["image"])
    truth = np.asarray(_nifti(item["label"]).dataobj) == dataset.label_value("kidney_right")
    clicks = deepest_click_per_slice(truth)
    datalist = out_dir / "datalist.json"
    datalist.write_text(json.dumps({"datalist": [{"image": str(image), "foreground": clicks, "background": []}]}))
    masks = out_dir / "masks"
    _monai_bundle(
        ["run", "--config_file", repr([str(configs / "inference.json"), str(datalist)]),
         "--bundle_root", str(DEEPGROW_BUNDLE), "--output_dir", str(masks)],
        out_dir / "inference.log",
    )  # fmt: skip
    mask = np.asarray(_nifti(masks / f"{case_id}_clicks.nii.gz").dataobj) > 0
    png = save_label_montage(
        np.asarray(_nifti(image).dataobj), truth.astype(np.uint8), out_dir / "kidney_right_clicks.png",
        label_names={1: "kidney_right (ground truth)"}, prediction=mask.astype(np.uint8),
        prediction_colour="yellow",
        title=f"{case_id}: one click per slice on an unseen structure (contour: DeepGrow 2D)",
    )  # fmt: skip
    print(
        f"[demo] {len(clicks)} clicks (one per slice) on kidney_right (unseen) in {case_id}: "
        f"Dice {dice(mask, truth):.3f} -> {png}"
    )

    _evaluate_one_validation_volume(DEEPGROW_BUNDLE, data_dir, out_dir, n_rounds)
    return out_dir / "interactive" / "summary.json"


def run_bifseg(data_dir: Path, out_dir: Path, n_rounds: int, epochs: int) -> Path:
    """Train the BIFSeg bundle's quick configuration, then segment an unseen structure from a box on one slice with
    the shipped weights (``inference.json``) and run the box-then-scribbles protocol (``evaluate.json``).

    Returns:
        the path of the evaluation's ``summary.json``.
    """
    import numpy as np

    from common.boxes import box_from_mask
    from common.data import load_msd_dataset, select_fold
    from common.evaluation import dice
    from common.visualization import save_label_montage

    configs = BIFSEG_BUNDLE / "configs"
    _train_quick_then_use_shipped(BIFSEG_BUNDLE, "BIFSeg", data_dir, out_dir, epochs)

    dataset = load_msd_dataset(data_dir)
    item = select_fold(dataset.training, 0).val[0]
    case_id, image = item["case_id"], Path(item["image"])
    truth = np.asarray(_nifti(item["label"]).dataobj) == dataset.label_value("kidney_right")
    k = int(np.argmax(truth.sum(axis=(0, 1))))  # the phantoms are stored RAS: axis 2 is axial
    on_slice = np.zeros_like(truth)
    on_slice[..., k] = truth[..., k]
    start_box, stop_box = box_from_mask(on_slice, margin=(5, 5, 0))
    datalist = out_dir / "datalist.json"
    box = [list(start_box), list(stop_box)]
    datalist.write_text(json.dumps({"datalist": [{"image": str(image), "box": box}]}))
    masks = out_dir / "masks"
    _monai_bundle(
        ["run", "--config_file", repr([str(configs / "inference.json"), str(datalist)]),
         "--bundle_root", str(BIFSEG_BUNDLE), "--output_dir", str(masks)],
        out_dir / "inference.log",
    )  # fmt: skip
    mask = np.asarray(_nifti(masks / f"{case_id}_bifseg.nii.gz").dataobj) > 0
    png = save_label_montage(
        np.asarray(_nifti(image).dataobj), on_slice.astype(np.uint8), out_dir / "kidney_right_box.png",
        label_names={1: "kidney_right (ground truth)"}, prediction=mask.astype(np.uint8),
        prediction_colour="yellow", title=f"{case_id}: a box on slice {k} of an unseen structure (contour: BIFSeg 2D)",
    )  # fmt: skip
    print(
        f"[demo] box {box} on kidney_right (unseen) in {case_id}: Dice on slice {k} "
        f"{dice(mask[..., k], truth[..., k]):.3f} -> {png}"
    )
    _evaluate_one_validation_volume(BIFSEG_BUNDLE, data_dir, out_dir, n_rounds)  # one slice of each structure
    return out_dir / "interactive_bifseg_2d_bifseg" / "summary.json"


def run_active_learning(data_dir: Path, out_dir: Path, pool_size: int = 3, n_heldout: int = 3) -> Path:
    """A short active-learning loop (``loop.json``, ground-truth annotator) with the shipped general model on the aorta.

    Returns:
        the path of the loop's ``report.json``.
    """
    state_dir = out_dir / "loop"
    _monai_bundle(
        ["run", "--config_file", str(ACTIVE_LEARNING_BUNDLE / "configs" / "loop.json"),
         "--bundle_root", str(ACTIVE_LEARNING_BUNDLE), "--dataset_dir", str(data_dir), "--state_dir", str(state_dir),
         "--pool_size", str(pool_size), "--n_heldout", str(n_heldout), "--annotator", "ground_truth",
         "--retrain_iterations", "20"],
        out_dir / "loop.log",
    )  # fmt: skip
    report = json.loads((state_dir / "report.json").read_text())
    for record in report["annotated"]:
        how = (
            "labelled with its ground truth"
            if record["rounds"] == 0
            else f"corrected with {record['interactions']} interactions: Dice "
            + " -> ".join(f"{d:.3f}" for d in record["dice_per_round"])
        )
        print(f"[demo] active learning: case {record['order']} {record['key']} (score {record['score']:.3g}) {how}")
    curve = " ".join(f"{p['cases']} cases {p['dice']:.3f}" for p in report["curve"])
    print(f"[demo] active learning: held-out Dice of each model (from a box): {curve}")
    print(f"[demo] wrote {state_dir}/report.md and learning_curves.png")
    return state_dir / "report.json"


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
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the quick slice-propagation model")
    parser.add_argument("--skip-propagation", action="store_true", help="skip the slice-propagation step")
    parser.add_argument("--skip-clicks", action="store_true", help="skip the DeepGrow click step")
    parser.add_argument("--skip-bifseg", action="store_true", help="skip the BIFSeg box and scribbles step")
    parser.add_argument("--skip-active-learning", action="store_true", help="skip the active-learning loop step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    data_dir = _ensure_dataset(args.data, args.cases, args.seed)
    out = args.out
    print("[demo] region-growing baseline with the centre-of-error click robot ...")
    summary = run_region_grow_baseline(data_dir, out / "region_grow", n_rounds=args.rounds)
    _print_summary(summary, "clicks")
    print(f"[demo] wrote {summary.parent}/rounds.csv, summary.json and curves.png")
    if not args.skip_propagation:
        summary = run_slice_propagation(data_dir, out / "slice_propagation", n_rounds=args.rounds, epochs=args.epochs)
        _print_summary(summary, "slices")
        print(f"[demo] wrote {summary.parent}/rounds.csv, summary.json and curves.png")
    if not args.skip_clicks:
        summary = run_deepgrow_clicks(data_dir, out / "deepgrow_clicks", n_rounds=args.rounds, epochs=2)
        _print_summary(summary, "clicks per slice")
        print(f"[demo] wrote {summary.parent}/rounds.csv, summary.json and curves.png")
    if not args.skip_bifseg:
        summary = run_bifseg(data_dir, out / "bifseg", n_rounds=args.rounds, epochs=1)
        _print_summary(summary, "box + scribble rounds")
        print(f"[demo] wrote {summary.parent}/rounds.csv, summary.json and curves.png")
    if not args.skip_active_learning:
        run_active_learning(data_dir, out / "active_learning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
