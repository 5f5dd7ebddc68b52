"""Loading trained weights into a network, with errors a user can act on."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["load_weights"]


def _unpickler_detail(err: Exception) -> str:
    """The specific reason in torch's long weights-only error message (the text after "WeightsUnpickler error:")."""
    text = str(err)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if found else []
    return lines[0] if lines else text.splitlines()[0] if text else type(err).__name__


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a plain ``state_dict`` checkpoint (``models/model.pt``) into ``network`` and return the network.

    Checkpoints are read with ``weights_only=True`` (as MONAI 1.6 and MONAI Label do): a file holding pickled
    arbitrary objects is refused, nothing in it is executed. A ``(Distributed)DataParallel`` prefix (``module.``)
    is stripped (and a wrapped ``network`` is loaded through its ``.module``), and so is one level of
    ``{"model": state_dict, ...}`` nesting (e.g. a MONAI ``CheckpointSaver`` file that also holds the optimizer
    state).

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (train the bundle first, or point ``ckpt_dir`` at the weights).
        ValueError: the file cannot be read as a weights-only checkpoint, does not hold a state dict, or does not
            match the network (the message lists the first mismatching keys or the size mismatches).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train the bundle first or set ckpt_dir/ckpt_path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"checkpoint {path} cannot be loaded with weights_only=True ({_unpickler_detail(err)}): it is not a plain "
            "state dict of tensors (e.g. a pickled module or other objects) or not a torch file at all; "
            "save the weights with torch.save(network.state_dict(), path)"
        ) from err
    except Exception as err:  # torch.load raises KeyError/RuntimeError/EOFError on files it cannot parse
        raise ValueError(
            f"cannot read checkpoint {path} as a torch file: {type(err).__name__}: {err or 'empty or truncated file'}"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise ValueError(
            f"checkpoint {path} does not hold a state dict (a mapping of parameter names to tensors), "
            f"got {type(state).__name__}"
        )
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    target = network.module if isinstance(network, wrappers) else network
    expected = set(target.state_dict())
    # strip the (Distributed)DataParallel prefix, unless the network itself has a submodule named "module"
    state = {(k if k in expected else k.removeprefix("module.")): v for k, v in state.items()}
    try:
        result = target.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches are raised even with strict=False
        raise ValueError(
            f"checkpoint {path} does not match the network (is network_def the one it was trained with?): {err}"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"checkpoint {path} does not match the network (is network_def the one it was trained with?): "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return network
