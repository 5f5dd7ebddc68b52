"""Shared by the bundle smoke tests: one short training run of a bundle's quick configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from common.bundle import run_monai_bundle

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
#: Two threads (the CI machine has 2 cores) and no GPU even if one exists, so the smoke runs behave like CI.
BUNDLE_ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="session")
def train_quick(tiny_phantoms: Path) -> Callable[..., Path]:
    """``train_quick(bundle_name, run_dir, *extra_args)``: train ``train.json`` + ``quick.json`` for one epoch on
    the tiny phantoms; returns ``run_dir`` (checkpoint in ``run_dir/models/model.pt``, logs in ``run_dir/runs``)."""

    def train(bundle_name: str, run_dir: Path, *extra_args: str) -> Path:
        configs = BUNDLES_DIR / bundle_name / "configs"
        run_monai_bundle(
            ["run", "--config_file", repr([str(configs / "train.json"), str(configs / "quick.json")]),
             "--bundle_root", str(BUNDLES_DIR / bundle_name), "--dataset_dir", str(tiny_phantoms),
             "--output_dir", str(run_dir / "runs"), "--ckpt_dir", str(run_dir / "models"), "--max_epochs", "1",
             *extra_args],
            cwd=run_dir, env=BUNDLE_ENV,
        )  # fmt: skip
        return run_dir

    return train
