"""One training per weights file: an ``flock`` on ``<weights folder>/train.lock`` held by the training process.

The lock file names the process (:class:`LockRecord`). A second training of the same weights fails with
:class:`TrainingBusyError` naming the holder. The kernel releases the lock of a process that dies, however it dies, so
a file left by a killed training is *stale* and is replaced (POSIX only: without ``fcntl`` the file is written but
nothing is locked). Used by the app's train task (:mod:`common.monailabel.train`) and the server's lifecycle guard
(:mod:`common.monailabel.lifecycle`); imports no ``monailabel``.
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "SERVER_PID_ENV",
    "LockRecord",
    "TrainingBusyError",
    "TrainingLock",
    "foreign_holder",
    "lock_holder",
    "pid_reused",
    "psutil_module",
    "remove_stale_lock",
]

logger = logging.getLogger(__name__)

#: The lock file a training holds, next to the weights it writes.
LOCK_NAME = "train.lock"
#: Environment variable naming the PID of the server whose background processes inherit it.
SERVER_PID_ENV = "COMMON_MONAILABEL_SERVER_PID"


def psutil_module() -> Any:
    """``psutil`` (a MONAI Label dependency; no type stubs)."""
    return importlib.import_module("psutil")


def _try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting; ``False`` when another open file holds it."""
    if sys.platform == "win32":
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not unlinked or replaced meanwhile)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def pid_reused(pid: int | None) -> str:
    """``""`` when process ``pid`` is gone, else ``" (PID <pid> now runs: <command line>)"``: the lock file's process
    died and the PID was given to another one (the kernel's lock, not the PID, tells whether a lock is held)."""
    if pid is None:
        return ""
    psutil = psutil_module()
    try:
        return f" (PID {pid} now runs: {' '.join(psutil.Process(pid).cmdline())[:160]})"
    except psutil.Error:
        return ""


@dataclass(frozen=True)
class LockRecord:
    """What a lock file says about its training: ``pid`` (the training process), ``server_pid`` (the server that
    started it, ``None`` when unknown), ``started`` (ISO time) and ``weights`` (the file it writes)."""

    pid: int | None = None
    server_pid: int | None = None
    started: str | None = None
    weights: str | None = None

    @classmethod
    def current(cls, weights: Path) -> LockRecord:
        """The record of this process training ``weights``."""
        server = os.environ.get(SERVER_PID_ENV, "")
        started = datetime.datetime.now().isoformat(timespec="seconds")
        return cls(os.getpid(), int(server) if server.isdigit() else None, started, str(weights))

    @classmethod
    def parse(cls, text: str) -> LockRecord:
        """The record in a lock file's text (fields missing when the text is not a record)."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            return cls()
        if not isinstance(raw, dict):
            return cls()
        ints = {k: raw[k] if isinstance(raw.get(k), int) else None for k in ("pid", "server_pid")}
        texts = {k: str(raw[k]) if raw.get(k) is not None else None for k in ("started", "weights")}
        return cls(ints["pid"], ints["server_pid"], texts["started"], texts["weights"])

    def to_json(self) -> str:
        """The lock file text."""
        return json.dumps(
            {"pid": self.pid, "server_pid": self.server_pid, "started": self.started, "weights": self.weights}
        )

    def describe(self) -> str:
        """``"the training process PID 123 (started ..., by the server PID 45)"`` for messages."""
        if self.pid is None:
            return "a process that left no record"
        server = f", by the MONAI Label server PID {self.server_pid}" if self.server_pid is not None else ""
        return f"the training process PID {self.pid} (started {self.started}{server})"


def _read_record(fd: int) -> LockRecord:
    os.lseek(fd, 0, os.SEEK_SET)
    return LockRecord.parse(os.read(fd, 65536).decode(errors="replace"))


class TrainingBusyError(RuntimeError):
    """Another live process trains the same weights file.

    Args:
        weights: the weights file.
        holder: the lock record of the process training it.
    """

    def __init__(self, weights: Path, holder: LockRecord) -> None:
        self.weights = Path(weights)
        self.holder = holder
        stop = f" or stop it (kill {holder.pid})" if holder.pid is not None else ""
        super().__init__(
            f"{self.weights} is being trained by {holder.describe()}: two trainings must not write the same "
            f"weights; wait until it ends{stop}"
        )


class TrainingLock:
    """The exclusive right to train one weights file: an ``flock`` on ``<weights folder>/train.lock``.

    Use as a context manager (or :meth:`acquire` / :meth:`release`) in the process that trains. The lock file holds
    the :class:`LockRecord` of that process; it is removed on release. The kernel releases the lock of a process
    that dies, so a file left by a killed training is stale and the next :meth:`acquire` replaces it (with a log
    line).

    Args:
        weights: the weights file the training writes.
        wait_s: how long :meth:`acquire` retries a lock held by someone else (a server probing the lock holds it
            for microseconds).
    """

    def __init__(self, weights: Path, wait_s: float = 1.0) -> None:
        self.weights = Path(weights)
        self.path = self.weights.parent / LOCK_NAME
        self.wait_s = wait_s
        self._fd: int | None = None

    def acquire(self) -> LockRecord | None:
        """Take the lock and write this process's record.

        Returns:
            The record of a stale lock file that was replaced (``None``: there was none).

        Raises:
            TrainingBusyError: a live process holds the lock.
            RuntimeError: this object already holds it.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_flock(fd):
                holder = _read_record(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise TrainingBusyError(self.weights, holder)
                time.sleep(0.05)
                continue
            if not _same_file(fd, self.path):  # removed by a stale-lock cleanup meanwhile: lock the new file
                os.close(fd)
                continue
            previous = _read_record(fd)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, LockRecord.current(self.weights).to_json().encode())
            self._fd = fd
            break
        if previous.pid is None:
            return None
        logger.warning(
            "replaced the stale training lock %s: %s is gone%s",
            self.path,
            previous.describe(),
            pid_reused(previous.pid),
        )
        return previous

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError as err:  # Windows: an open file cannot be removed
            logger.debug("lock file %s not removed: %s", self.path, err)
        finally:
            os.close(fd)

    def __enter__(self) -> TrainingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(weights: Path) -> LockRecord | None:
    """The record of the live process training ``weights`` (``None``: nobody trains it).

    Takes and releases the lock at once when it is free (:class:`TrainingLock` retries meanwhile).
    """
    path = Path(weights).parent / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return None if _try_flock(fd) else _read_record(fd)
    finally:
        os.close(fd)


def foreign_holder(weights: Path) -> LockRecord | None:
    """Like :func:`lock_holder`, but ``None`` also when this process or one of its background tasks holds the lock
    (MONAI Label itself runs one training at a time per server)."""
    holder = lock_holder(weights)
    if holder is None or os.getpid() in (holder.pid, holder.server_pid):
        return None
    return holder


def remove_stale_lock(weights: Path) -> LockRecord | None:
    """Remove ``weights``' lock file when no live process holds it.

    Returns:
        The stale record (``None``: no lock file, a live holder, or no ``flock`` on this platform).
    """
    if sys.platform == "win32":
        return None
    path = Path(weights).parent / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if not _try_flock(fd) or not _same_file(fd, path):
            return None
        stale = _read_record(fd)
        os.unlink(path)  # while holding the lock: a training waiting on this file retries on the new one
        return stale
    finally:
        os.close(fd)
