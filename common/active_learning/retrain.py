"""Retraining of the active-learning loop: the bundle's own ``train.json`` recipe on the corrected cases.

Groff 2018's "transfer learning" loop loads a new network with the *general* weights after every ``n`` corrected
cases and trains it on all corrected cases so far; the ablation trains from scratch. Both run the bundle's
``train.json`` parts (network, loss, optimizer, pre-processing with the random box margin, ``SupervisedTrainer``):
one recipe, not a second copy. What changes here:

- the training items are the corrected cases (``{"image", "label"}`` with a binary label, ``"structure": 1``);
- no validation, no checkpoints, no TensorBoard (the loop evaluates held-out cases itself), a learning rate without
  schedule for the short run;
- a fixed number of iterations (``epochs = ceil(iterations / n_items)``) and a seed: the same items, weights and seed
  give the same weights (the loop's resume relies on it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.handlers import from_engine
from monai.utils import set_determinism

from common.bundle.pipeline import load_bundle_config
from common.networks.weights import load_weights

__all__ = ["retrain_model"]

logger = logging.getLogger(__name__)


def retrain_model(
    bundle_root: str | Path,
    items: Sequence[Mapping[str, Any]],
    out_weights: str | Path,
    init_weights: str | Path | None,
    iterations: int = 60,
    seed: int = 0,
    config_files: Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train the bundle's network on ``items`` and save its state dict to ``out_weights``.

    Args:
        bundle_root: the bundle folder (``configs/train.json`` is read).
        items: training items ``{"image": path, "label": path, "structure": value, ...}`` (the label's voxels equal
            to ``structure`` are the object).
        out_weights: where the trained state dict is written (atomically: a partial file never replaces it).
        init_weights: the weights to start from (the general model: transfer), or ``None`` (from scratch: the
            network's initialisation, seeded).
        iterations: optimizer steps (rounded up to whole epochs over ``items``).
        seed: seed of the initialisation, the order of the items and the random box margins.
        config_files: config files instead of ``configs/train.json`` (later ones override earlier ones).
        overrides: ``{config id: value}`` set after reading (e.g. a smaller network for tests).
        device: where to train (default: the config's ``device``).

    Returns:
        ``{"epochs", "iterations", "seconds", "final_loss", "items"}``.

    Raises:
        ValueError: no items, ``iterations < 1``.
        FileNotFoundError: a missing config or initial weights file.
    """
    if not items:
        raise ValueError("retrain needs at least one corrected case; the training set is empty")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    root = Path(bundle_root)
    parser = load_bundle_config(list(config_files or [root / "configs" / "train.json"]), root)
    epochs = math.ceil(iterations / len(items))
    settings: dict[str, Any] = {
        "train_items": [dict(item) for item in items],
        "max_epochs": epochs,
        "num_workers": 0,
        "train#handlers": [],
        "train#dataset#progress": False,
    }
    settings.update(overrides or {})
    for key, value in settings.items():
        parser[key] = value
    if device is not None:
        parser["device"] = f"$torch.device({str(torch.device(device))!r})"
    set_determinism(seed=seed)
    try:
        network = parser.get_parsed_content("network")
        if init_weights is not None:
            load_weights(network, init_weights, parser.get_parsed_content("device"))
        trainer = parser.get_parsed_content("train#trainer")
        losses: list[float] = []
        loss_of = from_engine(["loss"], first=True)
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda engine: losses.append(float(loss_of(engine.state.output)))
        )
        start = time.perf_counter()
        trainer.run()
        seconds = time.perf_counter() - start
    finally:
        set_determinism(seed=None)
    out = Path(out_weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    module = getattr(network, "module", network)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, partial)
    partial.replace(out)
    logger.info("retrained on %d cases: %d epochs, %.1f s -> %s", len(items), epochs, seconds, out)
    return {
        "epochs": epochs,
        "iterations": epochs * len(items),
        "seconds": seconds,
        "final_loss": losses[-1] if losses else None,
        "items": len(items),
    }
