"""A real MONAI Label server on 127.0.0.1 for the app's tests (skipped where ``monailabel`` is not installed).

The server runs in its own process group with the app folder copied to a temporary folder (so MONAI Label's
``model/``, ``logs/`` ... never land in the repository) and the embedded tiny phantoms as studies. It is stopped
(SIGTERM, then SIGKILL) whatever the tests' outcome; its log is printed when it does not come up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
APP_DIR = ROOT / "common" / "monailabel" / "app"
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
TRAIN_TIMEOUT_S = 420.0


@dataclass
class LabelServer:
    """A running MONAI Label server: ``url``, its studies/app folders, the phantom dataset, its log file and its own
    temp folder (``TMPDIR``: uploads and results must not pile up there)."""

    url: str
    studies: Path
    app: Path
    dataset: Path
    log: Path
    process: subprocess.Popen[bytes]
    tmp: Path

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server log (for assertion messages)."""
        return self.log.read_text(errors="replace")[-n:]

    def get(self, path: str) -> Any:
        """``GET url/path`` (a ``requests.Response``)."""
        import requests

        return requests.get(f"{self.url}{path}", timeout=REQUEST_TIMEOUT_S)

    def infer(
        self,
        model: str,
        image: str,
        label: Path | None = None,
        params: dict[str, Any] | str | None = None,
        output: str = "image",
    ) -> Any:
        """``POST /infer/<model>?image=...`` as viewers send it: optional ``label`` upload, ``params`` JSON form field
        (a string is sent verbatim, e.g. malformed JSON)."""
        import requests

        files = {"label": (label.name, label.read_bytes(), "application/octet-stream")} if label else None
        data = {"params": params if isinstance(params, str) else json.dumps(params or {})}
        return requests.post(
            f"{self.url}/infer/{model}",
            params={"image": image, "output": output},
            files=files,
            data=data,
            timeout=REQUEST_TIMEOUT_S,
        )

    def wait_for_training(self, timeout_s: float = TRAIN_TIMEOUT_S, poll_s: float = 0.5) -> dict[str, Any]:
        """Poll ``GET /train/`` until the last training task is neither submitted, queued nor running; its status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status: dict[str, Any] = self.get("/train/").json()
            if status.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
                return status
            time.sleep(poll_s)
        pytest.fail(f"training not finished after {timeout_s:.0f} s:\n{self.log_tail()}")

    def assert_up(self) -> None:
        """The server process is alive and answers ``/info/``."""
        assert self.process.poll() is None, self.log_tail()
        assert self.get("/info/").status_code == 200, self.log_tail()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_until_up(server: LabelServer, requests: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"MONAI Label server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/info/", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"MONAI Label server not up after {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def start_label_server(
    tmp_path_factory: pytest.TempPathFactory, dataset: Path, conf: Sequence[tuple[str, str]] = ()
) -> Iterator[LabelServer]:
    """Start a server on a fresh studies folder made from ``dataset`` (last case unlabelled); stop it afterwards."""
    pytest.importorskip("monailabel")
    requests = pytest.importorskip("requests")
    from common.monailabel.studies import prepare_studies

    root = tmp_path_factory.mktemp("label_server")
    studies = root / "studies"
    prepare_studies(dataset, studies, unlabelled=1)
    app = root / "app"
    app.mkdir()
    shutil.copyfile(APP_DIR / "main.py", app / "main.py")
    port = _free_port()
    log = root / "server.log"
    command = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
        "--conf", "bundles", str(ROOT / "bundles"),
    ]  # fmt: skip
    for key, value in conf:
        command += ["--conf", key, value]
    tmp = root / "tmp"
    tmp.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp))
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
    server = LabelServer(f"http://127.0.0.1:{port}", studies, app, dataset, log, process, tmp)
    try:
        _wait_until_up(server, requests)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def start_label_server_factory() -> Callable[..., Iterator[LabelServer]]:
    """:func:`start_label_server`, for test modules that need other ``--conf`` options (``yield from`` it)."""
    return start_label_server


@pytest.fixture(scope="module")
def label_server(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelServer]:
    """A server for one test module: the app serving every complete bundle of the repository, tiny phantoms."""
    yield from start_label_server(tmp_path_factory, tiny_phantoms)
