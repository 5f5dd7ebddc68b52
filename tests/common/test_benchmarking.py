from __future__ import annotations

import json

import torch

from common.benchmarking import device_description, run_environment


def test_cpu_description_names_the_core_count() -> None:
    assert "logical cores" in device_description(torch.device("cpu"))


def test_run_environment_is_json_and_names_the_run() -> None:
    env = run_environment("demo", torch.device("cpu"), threads=2, cudnn_benchmark=False)
    assert env["benchmark"] == "demo"
    assert env["device"] == "cpu"
    assert env["threads"] == 2
    assert env["torch"] == torch.__version__
    assert json.loads(json.dumps(env)) == env
