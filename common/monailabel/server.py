"""MONAI Label servers as subprocesses: start one on 127.0.0.1, wait until it answers, stop it with its children.

A server (this repository's app, a sample app of MONAI Label, or anything answering ``GET /info/``) runs in its own
process group (its training subprocesses with it), with its own ``TMPDIR`` (``WORKDIR/tmp``: uploads and results
must not pile up in the system's) and its output in ``WORKDIR/server.log``. :func:`start_server` returns once
``/info/`` answers 200; :func:`stop_server` sends SIGTERM to the whole group, then SIGKILL to what is left.
Used by the benchmark ``bench/label_server.py`` and the server tests.

Two helpers for MONAI Label's own sample apps: :func:`download_sample_app` copies one from the installed package
(offline), and :func:`write_torchvision_shim` writes a ``sitecustomize.py`` that lets ``import torchvision`` work
beside a CPU-only torch: PyPI's ``torchvision`` wheel is built against CUDA torch, its ``_C`` extension does not
load beside the CPU torch, and ``import torchvision`` then fails in ``torchvision/_meta_registrations.py``
(``operator torchvision::nms does not exist``, pytorch/vision#9085). MONAI Label imports torchvision in
``monailabel.transform.post`` (sample apps, ``BundleInferTask``). The shim declares the schemas of the two operators
torchvision registers fake kernels for (``nms``, ``qnms``); the operators themselves stay unavailable.
:func:`torchvision_import_error` tells whether the shim is needed.

This module only manages processes: it does not import ``monailabel`` (the commands it runs do); ``requests`` is
imported by :meth:`ServerProcess.get` only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "START_TIMEOUT_S",
    "TORCHVISION_SHIM",
    "ServerProcess",
    "download_sample_app",
    "free_port",
    "server_env",
    "start_server",
    "start_server_command",
    "stop_server",
    "torchvision_import_error",
    "write_torchvision_shim",
]

#: seconds :func:`start_server` waits for the first ``/info/`` answer by default
START_TIMEOUT_S = 240.0

#: ``sitecustomize.py`` that lets ``import torchvision`` work beside a CPU torch (see the module docstring): it
#: loads torchvision's ``_C`` extension as torchvision would, and where that fails declares the ``nms`` and ``qnms``
#: schemas torchvision's import registers fake kernels for
TORCHVISION_SHIM = '''"""Shim (common/monailabel/server.py): lets ``import torchvision`` work beside a CPU torch."""
import glob
import importlib.util
import os

_spec = importlib.util.find_spec("torchvision")
if _spec is not None and _spec.submodule_search_locations:
    import torch

    _extensions = glob.glob(os.path.join(list(_spec.submodule_search_locations)[0], "_C*.so"))
    try:
        if not _extensions:
            raise OSError("torchvision has no _C extension")
        torch.ops.load_library(_extensions[0])
    except (OSError, RuntimeError):
        _torchvision_schemas = torch.library.Library("torchvision", "DEF")
        _torchvision_schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_schemas.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
'''

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class ServerProcess:
    """A server started by :func:`start_server`.

    Attributes:
        name: what messages call it (e.g. ``"app"``, ``"sample app radiology"``).
        url: ``http://127.0.0.1:PORT`` (no trailing slash).
        process: the server process, leader of its own process group.
        log: the file with the server's stdout and stderr.
        tmp: the server's ``TMPDIR``.
        command: the command line it runs.
        start_s: seconds from the process start until ``/info/`` answered 200.
    """

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    tmp: Path
    command: list[str] = field(default_factory=list)
    start_s: float = 0.0

    def log_tail(self, n: int = 4000) -> str:
        """The last ``n`` characters of the server log (``""`` before it exists)."""
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""

    def get(self, path: str, timeout_s: float = 300.0) -> Any:
        """``GET url/path`` (``path`` starts with ``/``); a ``requests.Response``."""
        import requests  # type: ignore[import-untyped, unused-ignore]

        return requests.get(f"{self.url}{path}", timeout=timeout_s)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(device: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A server's environment: this process's, less ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` (so that the
    server's own thread setting applies), with ``CUDA_VISIBLE_DEVICES=""`` when ``device`` is ``"cpu"``, updated
    with ``extra`` (which may set the thread variables again)."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra or {})
    return env


def start_server_command(
    app: Path, studies: Path, conf: Sequence[tuple[str, str]] = (), port: int | None = None
) -> list[str]:
    """``python -m monailabel.main start_server`` for the app folder ``app`` on ``studies``, listening on 127.0.0.1
    at ``port`` (default: :func:`free_port`), with one ``--conf KEY VALUE`` per pair of ``conf``."""
    command = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(free_port() if port is None else port),
    ]  # fmt: skip
    for key, value in conf:
        command += ["--conf", key, value]
    return command


def _answers_info(url: str) -> bool:
    """Whether ``GET url/info/`` answers 200 within 5 s (no proxy: the servers are local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/info/", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):  # HTTPError (not 200), refused, reset, timed out
        return False


def _group_alive(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process group led by ``process`` still has a member that is not a zombie (``/proc``; elsewhere:
    any member). Reaps ``process`` if it has exited (a zombie leader would keep the group for ``os.killpg``)."""
    process.poll()
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        try:
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(process.pid) and fields[0] not in ("Z", "X"):
            return True
    return False


def stop_server(
    server: ServerProcess | subprocess.Popen[bytes], term_wait_s: float = 20.0, kill_wait_s: float = 10.0
) -> None:
    """Stop a server's whole process group (the server and its subprocesses, e.g. trainings): SIGTERM, then SIGKILL
    to what is still there after ``term_wait_s``; waits up to ``kill_wait_s`` more. Reaps the server process. A
    server whose group is already gone is left as it is.

    Args:
        server: a :class:`ServerProcess` or a process started with ``start_new_session=True`` (its pid is the
            group's id).
    """
    process = server.process if isinstance(server, ServerProcess) else server
    for sig, wait_s in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, kill_wait_s)):
        if not _group_alive(process):
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _group_alive(process) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=kill_wait_s)


def start_server(
    name: str,
    command: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    timeout_s: float = START_TIMEOUT_S,
) -> ServerProcess:
    """Run ``command`` (a server command line with ``--port PORT``; it listens on 127.0.0.1) in ``workdir``, in its
    own process group, with ``env`` plus ``TMPDIR=workdir/tmp``, its output in ``workdir/server.log``; wait until
    ``GET /info/`` answers 200.

    Args:
        name: what messages call the server.
        command: the command line, e.g. from :func:`start_server_command`.
        workdir: the server's working folder (made if missing).
        env: its environment, e.g. from :func:`server_env`.
        timeout_s: how long to wait for the first ``/info/`` answer.

    Returns:
        The running server, ``start_s`` set.

    Raises:
        ValueError: ``command`` has no ``--port PORT``.
        RuntimeError: the server exited or did not answer within ``timeout_s`` (it is stopped; the message ends with
            the end of its log).
    """
    command = list(command)
    if "--port" not in command[:-1]:
        raise ValueError(f"the command has no '--port PORT': {command}")
    port = command[command.index("--port") + 1]
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    log = workdir / "server.log"
    started = time.perf_counter()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=dict(env, TMPDIR=str(tmp)),
            start_new_session=True,
        )
    server = ServerProcess(name, f"http://127.0.0.1:{port}", process, log, tmp, command)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
            if _answers_info(server.url):
                server.start_s = time.perf_counter() - started
                return server
            time.sleep(0.5)
        raise RuntimeError(f"{name} not up after {timeout_s:.0f} s:\n{server.log_tail()}")
    except BaseException:
        stop_server(server)
        raise


def download_sample_app(out: Path, name: str) -> Path:
    """``monailabel apps --download --name <name> --output <out>``: MONAI Label's sample app ``name`` (e.g.
    ``radiology``, ``monaibundle``) copied from the installed package (offline) to ``out/name``; returns that folder.

    Raises:
        RuntimeError: the command failed (e.g. ``out/name`` exists) or made no ``main.py``.
    """
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", name, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
    )
    app = out / name
    if done.returncode != 0 or not (app / "main.py").is_file():
        raise RuntimeError(
            f"monailabel apps --download --name {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return app


def torchvision_import_error(env: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """Try ``import torchvision`` in a fresh interpreter with environment ``env`` (default: this process's).

    Returns:
        Its ``torch.get_num_threads()`` (what a server that sets no thread count uses) and the last line of the
        error of ``import torchvision`` (``None``: it imports).

    Raises:
        RuntimeError: torch itself does not import.
    """
    code = "import torch; print(torch.get_num_threads(), flush=True); import torchvision"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if not done.stdout.strip():
        raise RuntimeError(f"import torch fails: {done.stderr[-2000:]}")
    threads = int(done.stdout.split()[-1])
    if done.returncode == 0:
        return threads, None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return threads, lines[-1] if lines else f"exit status {done.returncode}"


def write_torchvision_shim(folder: Path, extra: str = "") -> Path:
    """Write :data:`TORCHVISION_SHIM` (followed by the code ``extra``, if any) as ``folder/sitecustomize.py``.

    Returns:
        ``folder`` (made if missing), to put on a server's ``PYTHONPATH``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(TORCHVISION_SHIM + (f"\n\n{extra.strip()}\n" if extra.strip() else ""))
    return folder
