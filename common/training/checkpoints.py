"""Resumable training: find the newest full checkpoint (model, optimizer, scheduler, trainer state) of a run.

The bundles' ``train.json`` save one after every epoch with MONAI's ``CheckpointSaver`` (``file_prefix="checkpoint"``,
``save_interval=1``, ``n_saved=1``), next to the best model ``model.pt`` (a plain state dict, the file that ships).
``--resume true`` loads the newest one with ``CheckpointLoader`` and training goes on from the epoch after it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CHECKPOINT_PREFIX", "latest_checkpoint"]

#: ``file_prefix`` of the per-epoch checkpoints in the bundles' ``train.json``.
CHECKPOINT_PREFIX = "checkpoint"

_EPOCH = re.compile(r"epoch=(\d+)")


def latest_checkpoint(ckpt_dir: str | Path, prefix: str = CHECKPOINT_PREFIX) -> str:
    """Path of the full checkpoint of the latest epoch in ``ckpt_dir``.

    Args:
        ckpt_dir: the run's checkpoint folder (``ckpt_dir`` of ``train.json``).
        prefix: file name prefix of the per-epoch checkpoints.

    Returns:
        The path (as a string, for ``CheckpointLoader``) of ``{prefix}*epoch=N*.pt`` with the largest ``N``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no such checkpoint (the message says how to start).
    """
    folder = Path(ckpt_dir)
    candidates = [p for p in folder.glob(f"{prefix}*.pt") if _EPOCH.search(p.name)] if folder.is_dir() else []
    if not candidates:
        raise FileNotFoundError(
            f"nothing to resume: no '{prefix}*epoch=N.pt' checkpoint in {folder}; train without --resume first, or "
            "point --ckpt_dir at the run folder that holds it"
        )
    best = max(candidates, key=lambda p: (int(_EPOCH.search(p.name).group(1)), p.stat().st_mtime))  # type: ignore[union-attr]
    return str(best)
