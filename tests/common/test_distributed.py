"""Distributed helpers on a CPU-only machine (the torchrun path itself is exercised by tests/bundles)."""

from __future__ import annotations

import pytest
import torch

from common import distributed


def test_cpu_defaults() -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    assert distributed.distributed_backend() == "gloo"
    assert distributed.local_device() == torch.device("cpu")
    assert distributed.ddp_device_ids(torch.device("cpu")) is None
    assert distributed.ddp_device_ids(torch.device("cuda:1")) == [1]
    assert distributed.is_main_process()


def test_init_outside_torchrun_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        distributed.init_distributed()


def test_single_process_group_roundtrip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29531")
    try:
        device = distributed.init_distributed(timeout_minutes=1)
        assert torch.distributed.is_initialized()
        assert torch.distributed.get_world_size() == 1
        assert device.type in ("cpu", "cuda")
        assert distributed.init_distributed() == device  # idempotent
    finally:
        distributed.cleanup_distributed()
    assert not torch.distributed.is_initialized()
