"""Distributed (DDP) set-up used by every bundle's ``multi_gpu_train.json``.

The same config runs under ``torchrun`` on GPUs (NCCL, one GPU per process) and on CPU-only machines (gloo), so CI
can test the distributed path without a GPU. Configs call these functions instead of carrying the logic in ``$``
expressions.

Example (``multi_gpu_train.json``)::

    "device": "$common.distributed.local_device()",
    "initialize": ["$common.distributed.init_distributed()", ...],
    "finalize": ["$common.distributed.cleanup_distributed()"]
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "cleanup_distributed",
    "ddp_device_ids",
    "distributed_backend",
    "init_distributed",
    "is_main_process",
    "local_device",
]

logger = logging.getLogger(__name__)


def distributed_backend() -> str:
    """``"nccl"`` where CUDA is available, else ``"gloo"`` (CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` with CUDA, else the CPU.

    Raises:
        RuntimeError: with CUDA, if ``LOCAL_RANK`` names a GPU that does not exist.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(f"cuda:{local_rank}")


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """``device_ids`` argument of ``DistributedDataParallel``: ``[index]`` on a GPU, ``None`` on the CPU."""
    return [device.index if device.index is not None else 0] if device.type == "cuda" else None


def init_distributed(timeout_minutes: float = 30.0) -> torch.device:
    """Initialise the default process group from ``torchrun``'s environment (idempotent) and return the device.

    Raises:
        RuntimeError: if not started by ``torchrun`` (``RANK``/``WORLD_SIZE`` unset), with the command to use.
    """
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError(
                "multi_gpu_train.json must be started by torchrun, e.g. `torchrun --nproc_per_node 2 -m monai.bundle "
                "run --config_file \"['configs/train.json','configs/multi_gpu_train.json']\"`"
            )
        device = local_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=distributed_backend(), timeout=timedelta(minutes=timeout_minutes))
        logger.info("process group ready: rank %d of %d on %s", dist.get_rank(), dist.get_world_size(), device)
    return local_device()


def is_main_process() -> bool:
    """True on rank 0, or when not running distributed (used to save checkpoints and logs once)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_initialized():
        dist.destroy_process_group()
