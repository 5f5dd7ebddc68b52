"""MONAI Label's own ``monaibundle`` sample app serving the exported bundles: a real server, no repository code.

The app is the stock one (``monailabel apps --download --name monaibundle``), the bundles are this repository's,
exported by :mod:`common.bundle.export` into the app's ``model/`` folder, the studies are the tiny phantoms. The
server and its training subprocess run with a ``sitecustomize`` on ``PYTHONPATH`` that refuses any import of
``common``, so everything they run comes from the exported bundles. It also works around the CPU build of torch:
PyPI's ``torchvision`` wheel is a CUDA build whose ``_C`` extension cannot load next to a CPU-only torch, and
``import torchvision`` then fails in ``torchvision/_meta_registrations.py`` (``operator torchvision::nms does not
exist``, pytorch/vision#9085); MONAI Label's ``BundleInferTask`` imports torchvision (``monailabel.transform.post``),
so the stock app does not start. Defining the schemas of the two operators it registers fake kernels for
(``nms``, ``qnms``) before torchvision is imported lets the import succeed (the ops themselves stay unavailable;
nothing here uses them). ``--conf sam2 false``: SAM2 would download its weights at start-up.

One server per module (~10 s to start); the default run trains one bundle for one epoch (bifseg, the fastest:
~25 s on 2 cores); ``-m slow`` trains the others.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from common.bundle import find_bundles
from common.bundle.export import export_bundle

ROOT = Path(__file__).resolve().parents[3]
MODELS = ("deepgrow_clicks", "slice_propagation", "bifseg", "active_learning")
START_TIMEOUT_S = 180.0
TRAIN_TIMEOUT_S = 600.0
IMAGE = "phantom_000"  # labelled in the studies folder
LIVER = 1

#: ``sitecustomize.py`` of the server: the torchvision workaround, and ``common`` refused.
SITECUSTOMIZE = """
import glob
import importlib.abc
import importlib.util
import os
import sys


def _torchvision_without_its_extension():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    extension = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so"))
    try:
        if extension:
            torch.ops.load_library(extension[0])
            return
    except OSError:
        pass
    global _TORCHVISION
    _TORCHVISION = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _TORCHVISION.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _RefuseCommon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "common" or name.startswith("common."):
            raise ImportError("REFUSED: an exported bundle imported " + name)
        return None


_torchvision_without_its_extension()
sys.meta_path.insert(0, _RefuseCommon())
"""


@dataclass
class StockServer:
    """The running stock app: ``url``, its app folder (bundles in ``app/model``), studies and log."""

    url: str
    app: Path
    studies: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def get(self, path: str) -> Any:
        import requests

        return requests.get(f"{self.url}{path}", timeout=300)

    def infer(self, model: str, params: dict[str, Any], label: Path | None = None) -> Any:
        import requests

        files = {"label": (label.name, label.read_bytes(), "application/octet-stream")} if label else None
        return requests.post(
            f"{self.url}/infer/{model}",
            params={"image": IMAGE, "output": "image"},
            files=files,
            data={"params": json.dumps(params)},
            timeout=300,
        )

    def train(self, model: str, max_epochs: int = 1) -> dict[str, Any]:
        """``POST /train/<model>``, then wait for the task to end; returns MONAI Label's task record."""
        import requests

        started = requests.post(f"{self.url}/train/{model}", json={"max_epochs": max_epochs}, timeout=60)
        assert started.status_code == 200, started.text + self.log_tail()
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            task: dict[str, Any] = self.get("/train/?check_if_running=false").json()
            if task.get("status") not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(1.0)
        pytest.fail(f"training {model} did not end in {TRAIN_TIMEOUT_S:.0f} s:\n{self.log_tail()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture(scope="module")
def stock_server(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockServer]:
    """MONAI Label's downloaded monaibundle app with every bundle exported into its ``model/`` folder."""
    pytest.importorskip("monailabel")
    requests = pytest.importorskip("requests")
    from common.monailabel.studies import prepare_studies

    root = tmp_path_factory.mktemp("stock_app")
    download = subprocess.run(
        [sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
         "--output", str(root / "apps")],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert download.returncode == 0, download.stdout + download.stderr
    app = root / "apps" / "monaibundle"
    for bundle in find_bundles(ROOT / "bundles"):
        if bundle.name in MODELS:
            export_bundle(bundle, app / "model")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    studies = root / "studies"
    prepare_studies(tiny_phantoms, studies, unlabelled=1)
    port = _free_port()
    log = root / "server.log"
    command = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "models", ",".join(MODELS), "--conf", "zoo_source", "local", "--conf", "sam2", "false",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
    server = StockServer(f"http://127.0.0.1:{port}", app, studies, log, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the stock app exited with {process.returncode}:\n{server.log_tail()}")
            try:
                if requests.get(f"{server.url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the stock app is not up after {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
        assert "REFUSED" not in server.log.read_text(errors="replace")
    finally:
        _stop(process)


def _arrays(studies: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image's voxels, its final label and affine."""
    image = nib.load(studies / f"{IMAGE}.nii.gz")
    label = np.asarray(nib.load(studies / "labels" / "final" / f"{IMAGE}.nii.gz").dataobj)
    return np.asarray(image.dataobj), label, image.affine


def _mask(response: Any, studies: Path, tmp_path: Path) -> np.ndarray:
    """The returned mask (checked to be in the image's grid), as a bool array."""
    assert response.status_code == 200, response.text[:2000]
    path = tmp_path / "result.nii.gz"
    path.write_bytes(response.content)
    result = nib.load(path)
    image, _, affine = _arrays(studies)
    assert result.shape == image.shape
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)
    mask = np.asarray(result.dataobj)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    return mask > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(int(a.sum() + b.sum()), 1))


def _largest_slice(structure: np.ndarray) -> int:
    return int(np.argmax(structure.sum(axis=(0, 1))))


def test_info_lists_the_exported_bundles_as_the_stock_app_types_them(stock_server: StockServer) -> None:
    info = stock_server.get("/info/").json()
    types = {name: info["models"][name]["type"] for name in MODELS}
    assert types == {
        "deepgrow_clicks": "deepgrow",
        "slice_propagation": "segmentation",
        "bifseg": "segmentation",
        "active_learning": "segmentation",
    }
    assert set(MODELS) <= set(info["trainers"])


def test_deepgrow_clicks_segments_the_clicked_slice(stock_server: StockServer, tmp_path: Path) -> None:
    from scipy.ndimage import distance_transform_edt

    _, label, _ = _arrays(stock_server.studies)
    liver = label == LIVER
    k = _largest_slice(liver)
    depth = distance_transform_edt(liver[..., k])
    i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
    response = stock_server.infer("deepgrow_clicks", {"foreground": [[int(i), int(j), k]], "background": []})
    mask = _mask(response, stock_server.studies, tmp_path)
    assert np.unique(np.nonzero(mask)[2]).tolist() == [k]  # the 2D model segments the clicked slice only
    assert mask[i, j, k]
    assert _dice(mask[..., k], liver[..., k]) > 0.3  # one click (the shipped model: 0.6 on average)


def test_slice_propagation_needs_the_uploaded_annotation_and_propagates_it(
    stock_server: StockServer, tmp_path: Path
) -> None:
    missing = stock_server.infer("slice_propagation", {})
    assert missing.status_code == 400, missing.text
    assert "upload it as the label file" in missing.json()["detail"]
    _, label, affine = _arrays(stock_server.studies)
    liver = label == LIVER
    k = _largest_slice(liver)
    annotation = np.zeros(label.shape, np.uint8)
    annotation[..., k] = liver[..., k]
    upload = tmp_path / "annotation.nii.gz"
    nib.save(nib.Nifti1Image(annotation, affine), upload)
    mask = _mask(stock_server.infer("slice_propagation", {}, label=upload), stock_server.studies, tmp_path)
    np.testing.assert_array_equal(mask[..., k], liver[..., k])  # the user's slice comes back as drawn
    assert len(np.unique(np.nonzero(mask)[2])) > 3  # propagated beyond it
    assert _dice(mask, liver) > 0.5


def test_box_bundles_need_a_box_and_segment_inside_it(stock_server: StockServer, tmp_path: Path) -> None:
    missing = stock_server.infer("bifseg", {})
    assert missing.status_code == 400, missing.text
    assert "needs a box" in missing.json()["detail"]
    _, label, _ = _arrays(stock_server.studies)
    liver = label == LIVER
    k = _largest_slice(liver)
    i, j = np.nonzero(liver[..., k])
    box_2d = [[int(i.min()), int(j.min()), k], [int(i.max()) + 1, int(j.max()) + 1, k + 1]]
    mask = _mask(stock_server.infer("bifseg", {"box": box_2d}), stock_server.studies, tmp_path)
    assert np.unique(np.nonzero(mask)[2]).tolist() == [k]
    assert _dice(mask[..., k], liver[..., k]) > 0.5
    inside = np.zeros_like(mask)
    (i0, j0, _), (i1, j1, _) = box_2d
    inside[i0:i1, j0:j1, k] = True
    assert not (mask & ~inside).any()
    i, j, z = np.nonzero(liver)
    box_3d = [[int(i.min()), int(j.min()), int(z.min())], [int(i.max()) + 1, int(j.max()) + 1, int(z.max()) + 1]]
    mask = _mask(stock_server.infer("active_learning", {"box": box_3d}), stock_server.studies, tmp_path)
    assert _dice(mask, liver) > 0.5


def _train_and_check(stock_server: StockServer, model: str, tmp_path: Path) -> None:
    weights = stock_server.app / "model" / model / "models" / "model.pt"
    before = weights.stat().st_mtime_ns
    task = stock_server.train(model)
    assert task["status"] == "DONE", json.dumps(task, indent=1) + stock_server.log_tail()
    details = "\n".join(task.get("details", []))
    assert "Epoch[1] Complete" in details, details
    assert weights.stat().st_mtime_ns > before  # the best model went to models/, the weights the app serves


def test_train_one_epoch_on_the_datastore_labels(stock_server: StockServer, tmp_path: Path) -> None:
    _train_and_check(stock_server, "bifseg", tmp_path)
    _, label, _ = _arrays(stock_server.studies)
    liver = label == LIVER
    k = _largest_slice(liver)
    i, j = np.nonzero(liver[..., k])
    box = [[int(i.min()), int(j.min()), k], [int(i.max()) + 1, int(j.max()) + 1, k + 1]]
    mask = _mask(stock_server.infer("bifseg", {"box": box}), stock_server.studies, tmp_path)  # the new weights
    assert mask[..., k].any()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["deepgrow_clicks", "slice_propagation", "active_learning"])
def test_train_one_epoch_every_other_bundle(stock_server: StockServer, model: str, tmp_path: Path) -> None:
    _train_and_check(stock_server, model, tmp_path)
