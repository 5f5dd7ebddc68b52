"""A real MONAI Label server on 127.0.0.1 for the app's tests (skipped where ``monailabel`` is not installed).

The server runs in its own process group with the app folder copied to a temporary folder (so MONAI Label's
``model/``, ``logs/`` ... never land in the repository) and the embedded tiny phantoms as studies. It is stopped
(SIGTERM, then SIGKILL) whatever the tests' outcome; its log is printed when it does not come up.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.monailabel.server import ServerProcess, server_env, start_server, start_server_command, stop_server

ROOT = Path(__file__).resolve().parents[3]
APP_DIR = ROOT / "common" / "monailabel" / "app"
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
TRAIN_TIMEOUT_S = 420.0


@dataclass(kw_only=True)
class LabelServer(ServerProcess):
    """A running MONAI Label server (:class:`~common.monailabel.server.ServerProcess`: ``url``, ``process``, its log
    file and its own temp folder ``tmp``, its ``TMPDIR``: uploads and results must not pile up there) with its
    studies/app folders and the phantom dataset."""

    studies: Path
    app: Path
    dataset: Path

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


def start_label_server(
    tmp_path_factory: pytest.TempPathFactory, dataset: Path, conf: Sequence[tuple[str, str]] = ()
) -> Iterator[LabelServer]:
    """Start a server on a fresh studies folder made from ``dataset`` (last case unlabelled); stop it afterwards."""
    pytest.importorskip("monailabel")
    pytest.importorskip("requests")
    from common.monailabel.studies import prepare_studies

    root = tmp_path_factory.mktemp("label_server")
    studies = root / "studies"
    prepare_studies(dataset, studies, unlabelled=1)
    app = root / "app"
    app.mkdir()
    shutil.copyfile(APP_DIR / "main.py", app / "main.py")
    command = start_server_command(app, studies, [("bundles", str(ROOT / "bundles")), *conf])
    env = server_env("cpu", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        started = start_server("MONAI Label server", command, root, env, START_TIMEOUT_S)
    except RuntimeError as err:  # exited or not up: the message ends with the server log
        pytest.fail(str(err))
    fields = {f.name: getattr(started, f.name) for f in dataclasses.fields(started)}
    server = LabelServer(**fields, studies=studies, app=app, dataset=dataset)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def start_label_server_factory() -> Callable[..., Iterator[LabelServer]]:
    """:func:`start_label_server`, for test modules that need other ``--conf`` options (``yield from`` it)."""
    return start_label_server


@pytest.fixture(scope="module")
def label_server(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelServer]:
    """A server for one test module: the app serving every complete bundle of the repository, tiny phantoms."""
    yield from start_label_server(tmp_path_factory, tiny_phantoms)
