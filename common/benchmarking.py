"""What every benchmark in ``bench/`` records about where it ran."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

import torch

__all__ = ["device_description", "run_environment"]


def device_description(device: torch.device) -> str:
    """A readable name of the device: the GPU's name, or the CPU model and its logical core count."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    name = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name or platform.machine()} ({os.cpu_count()} logical cores)"


def run_environment(benchmark: str, device: torch.device, threads: int, cudnn_benchmark: bool) -> dict[str, Any]:
    """The head of a benchmark's JSON report: name, time (UTC), device, software versions, threads, cuDNN mode."""
    import monai

    return {
        "benchmark": benchmark,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": device_description(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "threads": threads,
        "cudnn_benchmark": bool(cudnn_benchmark),
    }
