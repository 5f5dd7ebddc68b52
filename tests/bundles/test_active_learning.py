"""Active-learning bundle through ``monai.bundle``: the general model's training (quick), ``loop.json`` end to end
and resumed, ``experiments.json`` (strategy grid, transfer vs scratch), and the shipped general weights from a box."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.bundle import run_monai_bundle
from common.bundle.pipeline import BundleInferencePipeline, load_bundle_config
from common.networks import load_weights

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "active_learning"
CONFIGS = BUNDLE / "configs"
ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
QUICK = json.loads((CONFIGS / "quick.json").read_text())
TINY = {k: v for k, v in QUICK.items() if k.startswith("network_def") or k == "resize_size"}


@pytest.fixture(scope="module")
def quick_general(train_quick: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train.json`` + ``quick.json`` for one epoch: the tiny general model (best weights, no training heads)."""
    run = train_quick("active_learning", tmp_path_factory.mktemp("al_train"))
    weights = run / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    assert not any("super_head" in k or "deep_supervision" in k for k in state)  # saved for inference
    inference = load_bundle_config([CONFIGS / "inference.json", CONFIGS / "quick.json"], BUNDLE)
    network = inference.get_parsed_content("network_def")
    network.load_state_dict(state)  # strict: the file is exactly the inference network
    return weights


def test_loop_json_runs_end_to_end_and_resumes(quick_general: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "loop"
    args = [
        "run", "--config_file", str(CONFIGS / "loop.json"), "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(tiny_phantoms), "--state_dir", str(state_dir), "--general_weights", str(quick_general),
        "--n_heldout", "2", "--scribble_rounds", "1", "--retrain_iterations", "2", "--samples", "2",
        "--inference_overrides", repr(TINY), "--train_overrides", repr(TINY),
    ]  # fmt: skip
    run_monai_bundle([*args, "--max_cases", "1"], cwd=tmp_path, env=ENV)  # interrupted after one case
    state = json.loads((state_dir / "state.json").read_text())
    assert len(state["annotated"]) == 1
    assert len(state["remaining"]) == 2
    run_monai_bundle(args, cwd=tmp_path, env=ENV)
    state = json.loads((state_dir / "state.json").read_text())
    assert state["remaining"] == []
    assert [m["cases"] for m in state["models"]] == [0, 2, 3]
    assert state["settings"]["strategy"] == "entropy"
    assert (state_dir / "learning_curves.png").stat().st_size > 0
    assert "| round | corrected cases |" in (state_dir / "report.md").read_text()


def test_experiments_json_writes_the_comparisons(quick_general: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "experiments.json"))
    settings = {
        "bundle_root": str(BUNDLE),
        "dataset_dir": str(tiny_phantoms),
        "experiments_dir": str(tmp_path / "exp"),
        "general_weights": str(quick_general),
        "n_heldout": 2,
        "seeds": [0],
        "strategies": ["random", "entropy"],
        "strategy_settings": {"n_per_round": 2, "annotator": "ground_truth", "retrain_iterations": 2},
        "transfer_pool_size": 2,
        "transfer_settings": {
            "strategy": "first",
            "n_per_round": 1,
            "annotator": "ground_truth",
            "retrain_iterations": 2,
        },
        "interaction_strategies": ["random"],
        "interaction_settings": {"n_per_round": 2, "annotator": "robot", "scribble_rounds": 1, "retrain_iterations": 2},
        "inference_overrides": TINY,
        "train_overrides": TINY,
        "device": "cpu",
    }
    for key, value in settings.items():
        parser[key] = value
    parser.get_parsed_content("run")
    for grid, methods in (("strategies", {"random", "entropy"}), ("transfer", {"transfer", "scratch"})):
        curves = json.loads((tmp_path / "exp" / grid / "curves.json").read_text())
        assert set(curves["runs"]) == methods
        assert (tmp_path / "exp" / grid / "curves.png").stat().st_size > 0
    transfer = json.loads((tmp_path / "exp" / "transfer" / "curves.json").read_text())["runs"]
    assert [p["cases"] for p in transfer["transfer"][0]] == [0, 1, 2]  # n_per_round 1: a model after each case
    robot = json.loads((tmp_path / "exp" / "interactions" / "curves.json").read_text())["runs"]["random (robot)"][0]
    assert robot[-1]["interactions"] > 0
    assert "| method |" in (tmp_path / "exp" / "strategies" / "curves.md").read_text()


def test_shipped_general_model_segments_a_seen_structure_from_a_box(tiny_phantoms: Path) -> None:
    """The shipped weights through ``inference.json`` from a box (CNN + CRF) on a tiny phantom (another grid)."""
    image = tiny_phantoms / "imagesTr" / "phantom_004.nii.gz"
    truth = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_004.nii.gz").dataobj) == 1  # liver (seen)
    where = np.argwhere(truth)
    box = [[int(v) for v in where.min(axis=0) - np.array([3, 3, 1])], [int(v) for v in where.max(axis=0) + 4]]
    pipeline = BundleInferencePipeline.from_bundle(BUNDLE, overrides={"refinement": "crf"}, device="cpu")
    pred = np.asarray(pipeline({"image": str(image), "box": box})["pred"])[0] > 0.5
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    # Measured on this 64 x 64 x 40 phantom (liver): the domain-randomised weights shipped since bundle 0.2.0 give
    # 0.68, the CT-only weights before them 0.91 (the randomised model trades CT accuracy for other contrasts: see
    # the bundle's docs, "Domain-randomised training"). The same box mirrored left-right, as a pipeline that mislays the
    # first axis would place it, scores 0.12.
    assert dice > 0.6, dice


def test_general_weights_load_into_the_training_network() -> None:
    """Transfer: train.json's network (with deep-supervision heads) starts from the shipped inference weights."""
    parser = load_bundle_config(CONFIGS / "train.json", BUNDLE)
    network = parser.get_parsed_content("network_def")
    load_weights(network, BUNDLE / "models" / "model.pt")
    assert network.deep_supervision
