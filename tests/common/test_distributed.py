"""Distributed helpers on a CPU-only machine (the torchrun smoke run of each bundle is in tests/bundles; the slow
test here checks, under torchrun, that rank 1 stays quiet)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

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


class _Collect(logging.Handler):
    """Collects every record that reaches it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _tiny_training_run(engine_logger_level: int = logging.INFO) -> tuple[list[logging.LogRecord], Engine]:
    """One epoch of an ignite engine with the handlers the bundles' train.json attach (StatsHandler with its own
    logger, LrScheduleHandler printing the lr through the engine's logger); returns what reached any logger."""
    from monai.handlers import LrScheduleHandler, StatsHandler

    collect = _Collect()
    names = ["", "monai.handlers.StatsHandler", "ignite", "monai"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def step(_engine: Engine, _batch: object) -> dict[str, float]:
        optimizer.step()
        return {"loss": 0.5}

    engine = Engine(step)
    loggers = [logging.getLogger(n) for n in names] + [engine.logger]
    engine.logger.setLevel(engine_logger_level)  # INFO as the bundles' logging.conf sets the root logger
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    for logger in loggers:
        logger.addHandler(collect)
    try:
        StatsHandler(tag_name="train_loss", output_transform=lambda out: out["loss"]).attach(engine)
        LrScheduleHandler(scheduler, print_lr=True).attach(engine)
        engine.run([0, 1], max_epochs=1)
        logging.getLogger("monai").warning("a warning still gets through")
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    return collect.records, engine


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logging.disable(logging.NOTSET)


def test_quiet_non_main_process_on_a_fake_rank_1(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    # what the old multi_gpu_train.json did: the engine logger at WARNING; StatsHandler still logs the loss
    records, _ = _tiny_training_run(engine_logger_level=logging.WARNING)
    assert any("train_loss" in r.getMessage() for r in records if r.levelno == logging.INFO)
    assert distributed.quiet_non_main_process() is True
    records, _ = _tiny_training_run()  # handlers built after the call (StatsHandler resets its logger to INFO)
    assert {r.getMessage() for r in records} == {"a warning still gets through"}
    assert not logging.getLogger("monai.handlers.StatsHandler").isEnabledFor(logging.INFO)
    assert logging.getLogger("x").isEnabledFor(logging.WARNING)


def test_quiet_non_main_process_keeps_rank_0_and_single_process_runs(restore_logging: None) -> None:
    assert distributed.is_main_process()  # not distributed: the main process
    assert distributed.quiet_non_main_process() is False
    records, _ = _tiny_training_run()
    messages = [r.getMessage() for r in records]
    assert any("train_loss" in m for m in messages)
    assert any("Current learning rate" in m for m in messages)


def test_quiet_non_main_process_min_level(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    assert distributed.quiet_non_main_process(min_level=logging.ERROR)
    assert not logging.getLogger("x").isEnabledFor(logging.WARNING)
    assert logging.getLogger("x").isEnabledFor(logging.ERROR)
    for bad in (0, -5, "WARNING", True, 30.0):
        with pytest.raises(ValueError, match="min_level must be a positive logging level"):
            distributed.quiet_non_main_process(min_level=bad)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["slice_propagation", "deepgrow_clicks"])
def test_rank_1_is_quiet_under_torchrun(bundle: str, tiny_phantoms: Path, tmp_path: Path) -> None:
    """multi_gpu_train.json for one epoch under torchrun (2 CPU processes, gloo), each rank's output in its own
    file (``--redirects 3``): rank 0 logs the training, rank 1 only the two lines printed before its configs run."""
    root = Path(__file__).resolve().parents[2] / "bundles" / bundle
    configs = [str(root / "configs" / f) for f in ("train.json", "quick.json", "multi_gpu_train.json")]
    logs = tmp_path / "logs"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "--redirects", "3", "--log-dir", str(logs),
        "-m", "monai.bundle", "run", "--config_file", repr(configs), "--bundle_root", str(root),
        "--dataset_dir", str(tiny_phantoms), "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "ckpt"), "--max_epochs", "1",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    out = {}
    for rank in (0, 1):
        files = sorted(logs.glob(f"*/attempt_0/{rank}/std*.log"))
        assert len(files) == 2, f"rank {rank} logs not found under {logs}: {files}"
        out[rank] = {f.stem: f.read_text(errors="replace") for f in files}
    assert result.returncode == 0, result.stderr[-3000:] + out[0]["stderr"][-3000:] + out[1]["stderr"][-3000:]
    assert "train_loss" in out[0]["stdout"]
    assert "Epoch[1] Complete" in out[0]["stdout"]
    assert "Loading dataset" in out[0]["stderr"]
    rank1_info = [line for line in out[1]["stdout"].splitlines() if " - INFO - " in line]
    allowed = ("Setting logging properties based on config", "common.distributed - INFO - process group ready: rank 1")
    assert all(any(a in line for a in allowed) for line in rank1_info), rank1_info
    assert "Loading dataset" not in out[1]["stderr"]  # no progress bars either
