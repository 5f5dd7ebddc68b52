"""MONAI Label's own ``monaibundle`` sample app serving the exported bundles: a real server, no repository code.

The app is the stock one (``monailabel apps --download --name monaibundle``), the bundles are this repository's,
exported by :mod:`common.bundle.export` into the app's ``model/`` folder, the studies are the tiny phantoms. The
server and its training subprocess run with a ``sitecustomize`` on ``PYTHONPATH`` that refuses any import of
``common``, so everything they run comes from the exported bundles. It also works around the CPU build of torch:
PyPI's ``torchvision`` wheel is a CUDA build whose ``_C`` extension cannot load next to a CPU-only torch, and
``import torchvision`` then fails (``operator torchvision::nms does not exist``); MONAI Label's ``BundleInferTask``
imports torchvision, so the stock app would not start: the shim of :mod:`common.monailabel.server` declares the two
operators' schemas (the ops themselves stay unavailable; nothing here uses them). ``--conf sam2 false``: SAM2 would
download its weights at start-up.

One server per module (~10 s to start); the default run trains one bundle for one epoch (bifseg, the fastest:
~25 s on 2 cores); ``-m slow`` trains the others.
"""

from __future__ import annotations

import dataclasses
import json
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
from common.monailabel.server import (
    ServerProcess,
    download_sample_app,
    server_env,
    start_server,
    start_server_command,
    stop_server,
    write_torchvision_shim,
)

ROOT = Path(__file__).resolve().parents[3]
MODELS = ("deepgrow_clicks", "slice_propagation", "bifseg", "active_learning")
START_TIMEOUT_S = 180.0
TRAIN_TIMEOUT_S = 600.0
IMAGE = "phantom_000"  # labelled in the studies folder
LIVER = 1

#: appended to the torchvision shim (``sitecustomize.py`` of the server): any import of ``common`` refused
REFUSE_COMMON = """
import importlib.abc
import sys


class _RefuseCommon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "common" or name.startswith("common."):
            raise ImportError("REFUSED: an exported bundle imported " + name)
        return None


sys.meta_path.insert(0, _RefuseCommon())
"""


@dataclass(kw_only=True)
class StockServer(ServerProcess):
    """The running stock app (:class:`~common.monailabel.server.ServerProcess`: ``url``, ``process``, ``log``) with
    its app folder (bundles in ``app/model``) and studies."""

    app: Path
    studies: Path

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


@pytest.fixture(scope="module")
def stock_server(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockServer]:
    """MONAI Label's downloaded monaibundle app with every bundle exported into its ``model/`` folder."""
    pytest.importorskip("monailabel")
    pytest.importorskip("requests")
    from common.monailabel.studies import prepare_studies

    root = tmp_path_factory.mktemp("stock_app")
    app = download_sample_app(root / "apps", "monaibundle")
    for bundle in find_bundles(ROOT / "bundles"):
        if bundle.name in MODELS:
            export_bundle(bundle, app / "model")
    site = write_torchvision_shim(root / "site", REFUSE_COMMON)
    studies = root / "studies"
    prepare_studies(tiny_phantoms, studies, unlabelled=1)
    conf = [("models", ",".join(MODELS)), ("zoo_source", "local"), ("sam2", "false")]
    env = server_env("cpu", {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        started = start_server("the stock app", start_server_command(app, studies, conf), root, env, START_TIMEOUT_S)
    except RuntimeError as err:  # exited or not up: the message ends with the server log
        pytest.fail(str(err))
    fields = {f.name: getattr(started, f.name) for f in dataclasses.fields(started)}
    server = StockServer(**fields, app=app, studies=studies)
    try:
        yield server
        assert "REFUSED" not in server.log.read_text(errors="replace")
    finally:
        stop_server(server)


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
