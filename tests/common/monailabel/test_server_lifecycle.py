"""Lifecycle of training processes through real MONAI Label servers sharing one models folder (``--conf models_dir``).

- a finished training fills ``/info``'s ``train_stats`` (3D Slicer's accuracy bar) with the run's real best
  validation Dice (the value MONAI's own ``StatsHandler`` logged);
- while server A trains, a second server B on the same weights names the training's PID at start and refuses
  ``POST /train`` with 409; SIGTERM to A (``kill <pid>``, not its process group) stops A's training process;
- a training of B replaces the stale lock A's training left; SIGKILL to a server C leaves its training an orphan
  that stops itself; server D then removes the stale lock, marks the stats ``interrupted``, and trains normally;
- without a server: a lock held by a live process refuses a second training, and what a killed training leaves (stale
  lock, ``running`` stats, checkpoint temporary file, truncated ``model.pt``) is recognised and cleaned up.

Needs the ``label`` extra (``monailabel``); skipped without it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("monailabel")
psutil = pytest.importorskip("psutil")
requests = pytest.importorskip("requests")

from common.jsonio import read_json_object, write_json_atomic  # noqa: E402
from common.monailabel.lifecycle import STATS_NAME, recover_leftovers  # noqa: E402
from common.monailabel.training_lock import LOCK_NAME, TrainingBusyError, TrainingLock, lock_holder  # noqa: E402

MODEL = "slice_propagation"
TIMEOUT_S = 240.0
GONE_S = 10.0  # the server's grace period (5 s) + margin
SHORT = {"max_epochs": 1, "val_split": 0.25, "slices_per_volume": 2, "num_workers": 0}
LONG = {**SHORT, "max_epochs": 500}
# a process that takes the lock of argv[1], says so, and waits to be killed
HOLD = (
    "import sys, time\nfrom common.monailabel.training_lock import TrainingLock\n"
    "TrainingLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(60)"
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared_models")


@contextmanager
def _server(factory: Callable[..., Iterator[Any]], tmp: pytest.TempPathFactory, dataset: Path, models: Path) -> Any:
    servers = factory(tmp, dataset, conf=[("models", MODEL), ("models_dir", str(models))])
    try:
        yield next(servers)
    finally:
        servers.close()


@pytest.fixture(scope="module")
def server_a(
    start_label_server_factory: Callable[..., Iterator[Any]],
    tiny_phantoms: Path,
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
) -> Iterator[Any]:
    with _server(start_label_server_factory, tmp_path_factory, tiny_phantoms, models_dir) as server:
        yield server


def _post_train(server: Any, params: dict[str, Any]) -> Any:
    return requests.post(f"{server.url}/train/{MODEL}", json=params, timeout=60)


def _wait_for_lock(server: Any, weights: Path) -> int:
    """The PID of the training process once it holds the weights' lock."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        holder = lock_holder(weights)
        if holder is not None and holder.pid is not None:
            return holder.pid
        assert server.process.poll() is None, server.log_tail()
        time.sleep(0.2)
    pytest.fail(f"no training took the lock of {weights}:\n{server.log_tail()}")


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _seconds_until_gone(pid: int, limit: float) -> float:
    start = time.monotonic()
    while _running(pid) and time.monotonic() - start < limit:
        time.sleep(0.1)
    return time.monotonic() - start


def _kill_if_running(pid: int) -> None:
    if _running(pid):
        os.kill(pid, signal.SIGKILL)


def _logged_best(log: str) -> float:
    best = re.findall(r"Key metric: val_mean_dice best value: ([-+0-9.eE]+) at epoch: (\d+)", log)
    assert best, log[-4000:]
    return float(best[-1][0])


def _check_finished_stats(server: Any, weights: Path) -> None:
    train_stats = server.get("/info/").json()["train_stats"]
    assert next(iter(train_stats)) == MODEL  # 3D Slicer shows the first entry: the model that trained
    stats = train_stats[MODEL]
    assert stats["status"] == "done"
    assert stats["epoch"] == stats["total_epochs"] == 1
    assert "total_time" in stats
    assert stats["weights"] == str(weights)
    assert stats["key_metric_name"] == "val_mean_dice"
    assert stats["best_metric_epoch"] == 1
    assert stats["best_metric"] == _logged_best(server.log_tail(10**7))
    assert 0.0 < stats["best_metric"] <= 1.0
    assert not (weights.parent / LOCK_NAME).exists()  # released and removed at the end


def test_finished_training_fills_train_stats_with_its_best_dice(server_a: Any, models_dir: Path) -> None:
    weights = models_dir / MODEL / "model.pt"
    assert server_a.get("/info/").json()["train_stats"].get(MODEL, {}) == {}  # nothing trained yet
    started = _post_train(server_a, SHORT)
    assert started.status_code == 200, started.text
    status = server_a.wait_for_training(TIMEOUT_S)
    assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server_a.log_tail()
    _check_finished_stats(server_a, weights)
    assert weights.is_file()
    assert not [p.name for p in weights.parent.iterdir() if p.name.startswith("tmp")]  # atomic writes completed


def test_sigterm_stops_training_and_other_servers_refuse_to_train_the_same_weights(
    server_a: Any,
    start_label_server_factory: Callable[..., Iterator[Any]],
    tiny_phantoms: Path,
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
) -> None:
    weights = models_dir / MODEL / "model.pt"
    assert _post_train(server_a, LONG).status_code == 200
    pid = _wait_for_lock(server_a, weights)
    try:
        with _server(start_label_server_factory, tmp_path_factory, tiny_phantoms, models_dir) as server_b:
            assert f"is being trained by the training process PID {pid}" in server_b.log_tail(10**7)
            refused = _post_train(server_b, SHORT)
            assert refused.status_code == 409, refused.text
            assert refused.json()["pid"] == pid
            assert f"kill {pid}" in refused.json()["detail"]

            os.kill(server_a.process.pid, signal.SIGTERM)  # `kill <server pid>`: the training gets no signal
            assert _seconds_until_gone(pid, GONE_S) < GONE_S, server_a.log_tail()
            server_a.process.wait(timeout=30)
            assert f"stopping PID {pid}" in server_a.log_tail(10**7)
            # the lock file stays (its process died without cleaning up) but nobody holds it any more
            assert (weights.parent / LOCK_NAME).exists()
            assert lock_holder(weights) is None
            assert _post_train(server_b, SHORT).status_code == 200  # B may train now
            status = server_b.wait_for_training(TIMEOUT_S)
            assert status["status"] == "DONE", server_b.log_tail()
            assert f"replaced the stale training lock {weights.parent / LOCK_NAME}" in server_b.log_tail(10**7)
    finally:
        _kill_if_running(pid)


def test_server_restarted_after_sigkill_clears_the_stale_lock_and_trains(
    start_label_server_factory: Callable[..., Iterator[Any]],
    tiny_phantoms: Path,
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
) -> None:
    weights = models_dir / MODEL / "model.pt"
    with _server(start_label_server_factory, tmp_path_factory, tiny_phantoms, models_dir) as server_c:
        assert _post_train(server_c, LONG).status_code == 200
        pid = _wait_for_lock(server_c, weights)
        deadline = time.monotonic() + TIMEOUT_S  # until the first epoch's stats are written
        while server_c.get("/info/").json()["train_stats"].get(MODEL, {}).get("status") != "running":
            assert time.monotonic() < deadline, server_c.log_tail()
            time.sleep(0.2)
        try:
            os.kill(server_c.process.pid, signal.SIGKILL)  # no handler runs: the training is orphaned
            server_c.process.wait(timeout=10)
            assert _seconds_until_gone(pid, GONE_S) < GONE_S  # it stops itself (server watchdog)
        finally:
            _kill_if_running(pid)
    assert (weights.parent / LOCK_NAME).exists()

    with _server(start_label_server_factory, tmp_path_factory, tiny_phantoms, models_dir) as server_d:
        log = server_d.log_tail(10**7)
        assert f"removed the stale training lock of the training process PID {pid}" in log
        assert not (weights.parent / LOCK_NAME).exists()
        assert server_d.get("/info/").json()["train_stats"].get(MODEL, {})["status"] == "interrupted"
        assert _post_train(server_d, SHORT).status_code == 200
        status = server_d.wait_for_training(TIMEOUT_S)
        assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server_d.log_tail()
        _check_finished_stats(server_d, weights)


def test_lock_and_leftovers_of_a_killed_training_without_a_server(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    weights = tmp_path / MODEL / "model.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(weights)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingBusyError, match=f"training process PID {holder.pid} "):
            TrainingLock(weights, wait_s=0.2).acquire()
        record = lock_holder(weights)
        assert record is not None
        assert (record.pid, record.weights) == (holder.pid, str(weights))
        (busy,) = recover_leftovers(MODEL, weights)  # reported, nothing removed
        assert f"PID {holder.pid}" in busy
        assert (weights.parent / LOCK_NAME).exists()
    finally:
        holder.kill()
        holder.wait()

    write_json_atomic({"status": "running", "epoch": 3, "total_epochs": 10}, weights.parent / STATS_NAME)
    (weights.parent / "tmpab1c_d9z").write_bytes(b"half a checkpoint")  # ignite's atomic-write temporary name
    torch.save({"w": torch.arange(10000.0)}, weights)
    weights.write_bytes(weights.read_bytes()[:5000])  # cut while writing
    found = recover_leftovers(MODEL, weights)
    assert len(found) == 4, found
    assert f"removed the stale training lock of the training process PID {holder.pid}" in found[0]
    assert not (weights.parent / LOCK_NAME).exists()
    assert read_json_object(weights.parent / STATS_NAME)["status"] == "interrupted"
    assert not (weights.parent / "tmpab1c_d9z").exists()
    assert not weights.exists()
    assert (weights.parent / "model.pt.partial").is_file()

    torch.save({"w": torch.arange(10.0)}, weights)
    assert recover_leftovers(MODEL, weights) == []  # a complete checkpoint, no lock, finished stats: nothing to do
    with TrainingLock(weights):
        record = lock_holder(weights)
        assert record is not None
        assert record.pid == os.getpid()
    assert not (weights.parent / LOCK_NAME).exists()
