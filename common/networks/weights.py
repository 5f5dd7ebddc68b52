"""Loading trained weights into a network, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["load_weights"]


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a plain ``state_dict`` checkpoint (``models/model.pt``) into ``network`` and return the network.

    Checkpoints are read with ``weights_only=True`` (as MONAI 1.6 and MONAI Label do). A ``DistributedDataParallel``
    prefix (``module.``) is stripped, and so is one level of ``{"model": state_dict}`` nesting.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train the bundle first, or point ``ckpt_dir`` at the weights).
        ValueError: the checkpoint does not match the network (the message lists the first mismatching keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train the bundle first or set ckpt_dir/ckpt_path")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(state, dict) and set(state) == {"model"}:
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {path} does not match the network (is network_def the one it was trained with?): "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return network
