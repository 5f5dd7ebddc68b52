"""Tests of common.clicks.readback.DeviceReadback."""

from __future__ import annotations

import pytest
import torch

from common.clicks.readback import DeviceReadback


def test_cpu_value_is_a_copy() -> None:
    source = torch.tensor([1, 7], dtype=torch.int32)
    readback = DeviceReadback(source)
    source[0] = 5
    assert readback.value().tolist() == [1, 7]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_value_arrives_after_queued_work() -> None:
    x = torch.ones(2048, 2048, device="cuda")
    for _ in range(20):  # queue some work ahead of the copy
        x = x @ x / 2048
    readback = DeviceReadback(torch.stack([x.sum().to(torch.int32), torch.tensor(3, device="cuda")]))
    later = x @ x  # work queued after the copy does not delay the value
    assert readback.value().tolist() == [2048 * 2048, 3]
    assert readback.value().device.type == "cpu"
    assert later.shape == (2048, 2048)
