"""Training runs a user relies on: resume a stopped run, fine-tune from the shipped weights, never overwrite them.

Real ``monai.bundle run`` processes of both bundles' ``train.json`` + ``quick.json`` on the tiny phantoms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from common.training.checkpoints import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ("slice_propagation", "deepgrow_clicks", "bifseg")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_resume_continues_a_stopped_run(bundle: str, train_quick: Callable[..., Path], tmp_path: Path) -> None:
    shipped = ROOT / "bundles" / bundle / "models" / "model.pt"
    before = _digest(shipped)
    run = train_quick(bundle, tmp_path)  # one epoch
    first = latest_checkpoint(run / "models")
    assert first.endswith("epoch=1.pt")
    state = torch.load(first, weights_only=True)
    assert {"model", "optimizer", "trainer"} <= set(state)
    epoch_length = state["trainer"]["epoch_length"]
    assert state["trainer"]["iteration"] == epoch_length  # one epoch done
    train_quick(bundle, tmp_path, "--resume", "true", "--max_epochs", "2")
    second = latest_checkpoint(run / "models")
    assert second.endswith("epoch=2.pt")
    resumed = torch.load(second, weights_only=True)
    assert resumed["trainer"]["iteration"] == 2 * epoch_length  # epoch 2 ran on top of epoch 1, not from scratch
    for key, first_state in state["optimizer"]["state"].items():
        if "step" in first_state:  # Adam's step count went on from the stored one
            assert int(resumed["optimizer"]["state"][key]["step"]) == 2 * int(first_state["step"])
        else:  # SGD with momentum (BIFSeg's paper recipe): the momentum buffers were restored, then updated
            assert "momentum_buffer" in resumed["optimizer"]["state"][key]
            assert not torch.equal(
                resumed["optimizer"]["state"][key]["momentum_buffer"], first_state["momentum_buffer"]
            )
    if "lr_scheduler" in state:  # the schedule went on too
        assert resumed["lr_scheduler"]["last_epoch"] == 2 * state["lr_scheduler"]["last_epoch"]
    assert _digest(shipped) == before  # training never writes into the bundle's models/


@pytest.mark.parametrize("bundle", BUNDLES)
def test_finetune_starts_from_the_given_weights(bundle: str, train_quick: Callable[..., Path], tmp_path: Path) -> None:
    for name in ("source", "tuned"):
        (tmp_path / name).mkdir()
    source = train_quick(bundle, tmp_path / "source")
    weights = source / "models" / "model.pt"
    tuned = train_quick(
        bundle, tmp_path / "tuned", "--finetune", "true", "--finetune_path", str(weights), "--learning_rate", "0.0"
    )
    start = torch.load(weights, weights_only=True)
    after = torch.load(tuned / "models" / "model.pt", weights_only=True)
    # with a learning rate of 0 the weights stay those it started from (batch-norm running statistics aside)
    for key, value in start.items():
        if "running" in key or "num_batches" in key:
            continue
        torch.testing.assert_close(after[key], value, msg=key)
