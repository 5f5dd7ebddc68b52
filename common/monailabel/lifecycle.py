"""Lifecycle of the app's training processes: one training per weights file, none outliving its server.

MONAI Label runs ``POST /train/<model>`` in a background process (``python -m monailabel.interfaces.utils.app -m
train``, a child of the server, in the server's process group). Left alone, such a process outlives a server stopped
with ``kill`` (SIGTERM: uvicorn shuts down, then re-raises the signal and the process dies at once) or killed
(SIGKILL), and a restarted server can then start a second training on the same weights file. This module:

- **lock** (:mod:`common.monailabel.training_lock`): a training holds ``<weights folder>/train.lock`` while it runs;
  a second training of the same weights fails naming the holder; a lock left by a dead process is stale;
- **server guard** (:func:`install_server_guard`, in the server process only): SIGTERM, SIGINT and SIGHUP handlers,
  chained in front of uvicorn's, and an interpreter-exit hook stop every child process of the server (trainings,
  scorings and their data-loader workers: SIGTERM, then SIGKILL after a grace period) before the server goes;
  ``POST /train/<model>`` is answered ``409`` while a process this server did not start trains that model's weights
  (:class:`TrainBusyRoute`): the other training is *reported, not stopped*: it may belong to a live server (another
  port or user sharing the models folder), whose training and status would be lost; an orphan of a killed server
  stops itself (next point), so a live holder is someone's running work;
- **orphan watchdog** (:func:`watch_server`, in the training process): a training started by a server that is gone
  (killed with SIGKILL, crashed) stops itself within about a second;
- **leftovers** (:func:`recover_leftovers`, at server start): a stale lock is removed, a ``running`` train stats file
  (:data:`STATS_NAME`) of a training that is gone is marked ``interrupted``, temporary files of an interrupted
  checkpoint write are removed, and a truncated ``model.pt`` is set aside as ``model.pt.partial`` (inference then
  uses the bundle's weights); each with a log line.

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, Match

from common.jsonio import read_json_object, write_json_atomic
from common.monailabel.routes import install_first, server_routes
from common.monailabel.training_lock import (
    LOCK_NAME,
    SERVER_PID_ENV,
    LockRecord,
    TrainingBusyError,
    TrainingLock,
    foreign_holder,
    lock_holder,
    pid_reused,
    psutil_module,
    remove_stale_lock,
)

__all__ = [
    "LOCK_NAME",
    "SERVER_PID_ENV",
    "STATS_NAME",
    "LockRecord",
    "TrainBusyRoute",
    "TrainingBusyError",
    "TrainingLock",
    "install_server_guard",
    "recover_leftovers",
    "stop_child_processes",
    "watch_server",
]  # the lock names are re-exported from common.monailabel.training_lock

logger = logging.getLogger(__name__)

#: The train stats file (MONAI Label's ``train_stats`` format), next to the weights.
STATS_NAME = "train_stats.json"
#: Seconds a stopped process gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
#: Seconds between two checks of the orphan watchdog.
WATCH_INTERVAL_S = 1.0

# ignite's atomic checkpoint writes go through ``tempfile.NamedTemporaryFile(dir=...)``: "tmp" + 8 characters
_CHECKPOINT_TMP = re.compile(r"tmp[a-z0-9_]{8}")
_ZIP_MAGIC = b"PK\x03\x04"


def _truncated_checkpoint(path: Path) -> bool:
    """Whether ``path`` is an empty file or a zip (``torch.save``'s format) cut before its end."""
    with path.open("rb") as f:
        head = f.read(4)
    return not head or (head == _ZIP_MAGIC and not zipfile.is_zipfile(path))


def recover_leftovers(name: str, weights: Path) -> list[str]:
    """Clean up what a killed server or training left next to ``weights`` (see the module docstring).

    Nothing is touched while a live process trains ``weights`` (reported instead).

    Args:
        name: the model name (for messages).
        weights: the app's weights file of that model (``.../model.pt``).

    Returns:
        The messages logged, one per finding.
    """
    weights = Path(weights)
    found: list[str] = []
    holder = lock_holder(weights)
    if holder is not None and os.getpid() in (holder.pid, holder.server_pid):
        return found  # this server's own training (the app was created again, e.g. after /reload)
    if holder is not None:
        found.append(
            f"{name}: {weights} is being trained by {holder.describe()}; this server does not stop it and refuses "
            f"POST /train/{name} (409) while it runs"
        )
    else:
        stale = remove_stale_lock(weights)
        if stale is not None:
            found.append(f"{name}: removed the stale training lock of {stale.describe()}: gone{pid_reused(stale.pid)}")
        stats_path = weights.parent / STATS_NAME
        stats = read_json_object(stats_path)
        if stats.get("status") == "running":
            stats["status"] = "interrupted"
            write_json_atomic(stats, stats_path)
            found.append(
                f"{name}: the last training stopped at epoch {stats.get('epoch')}/{stats.get('total_epochs')} "
                f"without finishing (its server or process was killed); {stats_path} marked interrupted"
            )
        if weights.parent.is_dir():
            for tmp in sorted(weights.parent.iterdir()):
                if tmp.is_file() and (_CHECKPOINT_TMP.fullmatch(tmp.name) or tmp.name.endswith(".tmp")):
                    tmp.unlink()
                    found.append(f"{name}: removed {tmp}, an unfinished write of an interrupted training")
        if weights.is_file() and _truncated_checkpoint(weights):
            partial = weights.with_name(weights.name + ".partial")
            os.replace(weights, partial)
            found.append(
                f"{name}: {weights} is truncated (an interrupted write): moved to {partial}; inference uses the "
                "bundle's weights until the next training"
            )
    for message in found:
        logger.warning(message)
    return found


def stop_child_processes(reason: str, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop every descendant process of this process: SIGTERM, then SIGKILL for those alive after ``grace_s``.

    Args:
        reason: why (for the log lines).
        grace_s: seconds between SIGTERM and SIGKILL.

    Returns:
        The PIDs of the processes that were stopped.
    """
    psutil = psutil_module()
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            logger.warning("%s: stopping PID %d (%s)", reason, child.pid, " ".join(child.cmdline())[:160])
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        try:
            logger.warning("%s: PID %d did not stop after %.0f s: killing it", reason, child.pid, grace_s)
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [child.pid for child in children]


_watched = False


def watch_server(interval_s: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """In a background process of a server with the guard installed: stop this process when that server is gone.

    A daemon thread checks every ``interval_s`` whether this process still has the server as its parent; when not
    (the server was killed and this process re-parented), it stops this process's children, then sends itself
    SIGTERM. Does nothing (``None``) in any other process (``run_sync`` trainings, command-line runs) or when
    already watching.
    """
    global _watched
    server = os.environ.get(SERVER_PID_ENV, "")
    if _watched or not server.isdigit() or int(server) != os.getppid():
        return None
    server_pid = int(server)

    def watch() -> None:
        while os.getppid() == server_pid:
            time.sleep(interval_s)
        reason = f"the MONAI Label server PID {server_pid} is gone (killed?): stopping its background process"
        logger.error("%s %d", reason, os.getpid())
        stop_child_processes(reason, grace_s=1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="server-watchdog", daemon=True)
    thread.start()
    _watched = True
    return thread


class TrainBusyRoute(APIRoute):
    """``POST <prefix>/{name}`` answered ``409`` while a process this server did not start trains ``name``'s weights.

    It matches only then, so other requests reach MONAI Label's own endpoint unchanged (put it first in the routes).

    Args:
        prefix: the train path, e.g. ``"/train"``.
        weights: ``{model name: weights file}`` (read at each request).
    """

    def __init__(self, prefix: str, weights: Callable[[], Mapping[str, Path]]) -> None:
        self.weights = weights
        super().__init__(f"{prefix}/{{name}}", self._refuse, methods=["POST"], include_in_schema=False)

    async def _refuse(self, request: Request) -> JSONResponse:
        holder: LockRecord = request.scope.get("train_busy_holder", LockRecord())
        path = self.weights().get(str(request.path_params.get("name")), Path("?"))
        detail = str(TrainingBusyError(path, holder))
        return JSONResponse({"detail": detail, "pid": holder.pid, "server_pid": holder.server_pid}, status_code=409)

    def matches(self, scope: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Starlette's match, only when the named model's weights are held by a foreign process."""
        match, child = super().matches(scope)
        if match != Match.FULL:
            return Match.NONE, {}
        path = self.weights().get(str(child.get("path_params", {}).get("name")))
        holder = foreign_holder(path) if path is not None else None
        if holder is None:
            return Match.NONE, {}
        return match, {**child, "train_busy_holder": holder}


class _Guard:
    """The server guard's state (one per server process)."""

    def __init__(self) -> None:
        self.weights: dict[str, Path] = {}
        self.installed = False

    def on_signal(self, previous: Any) -> Callable[[int, FrameType | None], None]:
        """A signal handler that stops the children, then does what ``previous`` (the handler it replaces) did."""

        def handler(signum: int, frame: FrameType | None) -> None:
            stop_child_processes(f"server stopping ({signal.Signals(signum).name})")
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        return handler

    def install(self, prefix: str) -> None:
        """Signal handlers, exit hook and the 409 route (once)."""
        if self.installed:
            return
        self.installed = True
        signals = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                signal.signal(sig, self.on_signal(signal.getsignal(sig)))
        else:
            logger.warning("server guard installed outside the main thread: no signal handlers")
        # runs at interpreter exit *before* the non-daemon threads are joined (MONAI Label's task thread waits on its
        # process); atexit handlers would run after that join
        register = getattr(threading, "_register_atexit", atexit.register)
        register(lambda: stop_child_processes("server exiting"))
        route = TrainBusyRoute(prefix, lambda: self.weights)
        install_first(route, lambda r: isinstance(r, TrainBusyRoute) and r.path == route.path)


_GUARD = _Guard()


def install_server_guard(weights: Mapping[str, Path]) -> bool:
    """In a running MONAI Label server: install the guard (module docstring) and recover the leftovers of ``weights``.

    Signal handlers, exit hook and route are installed once per process; ``weights`` replaces the previous mapping
    (MONAI Label may create the app again). Does nothing outside the server (MONAI Label's background processes never
    import ``monailabel.app``).

    Args:
        weights: ``{model name: weights file}`` of the app's train tasks.

    Returns:
        Whether the guard is in place.
    """
    if server_routes() is None:
        return False
    from monailabel.config import settings

    os.environ[SERVER_PID_ENV] = str(os.getpid())
    _GUARD.weights = {name: Path(path) for name, path in weights.items()}
    _GUARD.install(settings.MONAI_LABEL_API_STR + "/train")
    for name, path in _GUARD.weights.items():
        recover_leftovers(name, path)
    return True
