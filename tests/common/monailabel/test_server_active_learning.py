"""The active-learning bundle through a real MONAI Label server: strategies, scoring, the user's box, retraining.

One server (``--conf models active_learning``) on the tiny phantoms: ``phantom_004`` unlabelled, plus two uploaded
unlabelled images, ``phantom_extra`` (a flipped phantom) and ``zz_corrupt`` (not an image). Every strategy answers an
unlabelled image and skips the corrupt one; scoring stores a record per readable unlabelled image, inside the box the
user drew (stored by a box inference) or on the whole image; ``/train`` starts from the bundle's general weights even
when retrained weights exist; unknown names get 404 with the names; with every image labelled the strategies answer
MONAI Label's empty ``{}``. Needs the ``label`` extra (``monailabel``); skipped without it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("monailabel")

from common.boxes import parse_box

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = "active_learning"
SHIPPED = ROOT / "bundles" / BUNDLE / "models" / "model.pt"
CASE = "phantom_004"  # unlabelled in the studies folder
EXTRA = "phantom_extra"  # uploaded, unlabelled, never boxed
CORRUPT = "zz_corrupt"  # uploaded, unlabelled, not an image; last by id
READABLE = {CASE, EXTRA}
OURS = ["active_learning_random", "active_learning_first", "last", "entropy", "mc_dropout", "tta"]
FAST = {"samples": 2}  # MC dropout / TTA draws per image: enough to exercise them
WAIT_S = 420
LIVER = 1
LabelServer = Any  # conftest.LabelServer (conftest modules are not importable with --import-mode=importlib)


def _put(server: LabelServer, path: str, params: dict[str, str], name: str, content: bytes) -> Any:
    import requests

    files = {"file" if path == "/datastore/image" else "label": (name, content, "application/gzip")}
    response = requests.put(f"{server.url}{path}", params=params, files=files, timeout=60)
    assert response.status_code == 200, response.text
    return response


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, path: Path) -> bytes:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(
    start_label_server_factory: Callable[..., Iterator[LabelServer]],
    tiny_phantoms: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabelServer]:
    for running in start_label_server_factory(tmp_path_factory, tiny_phantoms, conf=[("models", BUNDLE)]):
        tmp = tmp_path_factory.mktemp("uploads")
        image = nib.load(str(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz"))
        flipped = np.ascontiguousarray(np.asarray(image.dataobj)[::-1])
        _put(
            running,
            "/datastore/image",
            {"image": EXTRA},
            f"{EXTRA}.nii.gz",
            _nifti_bytes(flipped, image.affine, tmp / "x.nii.gz"),
        )
        # the app refuses such an upload (400); a broken file copied into the studies folder still gets listed
        (running.studies / f"{CORRUPT}.nii.gz").write_bytes(b"not a NIfTI volume" * 8)
        deadline = time.monotonic() + 30
        while CORRUPT not in running.get("/datastore/?output=all").json().get("objects", {}):
            assert time.monotonic() < deadline, "the datastore did not list the copied file"
            time.sleep(0.2)
        yield running


def _info(server: LabelServer, image: str) -> dict[str, Any]:
    response = server.get(f"/datastore/image/info?image={image}")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def _post(server: LabelServer, path: str, body: dict[str, Any] | None = None) -> Any:
    import requests

    return requests.post(f"{server.url}{path}", json=body or {}, timeout=300)


def _wait(server: LabelServer, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status: dict[str, Any] = server.get(f"/{what}/").json()
        if status.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
            return status
        time.sleep(1.0)
    pytest.fail(f"{what} not finished after {WAIT_S} s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def user_box(server: LabelServer) -> list[list[int]]:
    """A 3D box inference on ``CASE`` (as 3D Slicer sends a ROI); returns the box the server should have stored."""
    label = np.asarray(nib.load(str(server.dataset / "labelsTr" / f"{CASE}.nii.gz")).dataobj) == LIVER
    (i0, i1), (j0, j1), (k0, k1) = ((int(a.min()), int(a.max())) for a in np.nonzero(label))
    roi = [i0 - 3, i1 + 3, j0 - 3, j1 + 3, k0 - 1, k1 + 1]
    response = server.infer(BUNDLE, CASE, params={"roi": roi}, output="json")
    assert response.status_code == 200, response.text
    start, stop = parse_box(roi, label.shape)
    expected = [list(start), list(stop)]
    assert response.json()["box"] == expected
    return expected


def test_info_lists_the_strategies_and_scoring_methods(server: LabelServer) -> None:
    info = server.get("/info/").json()
    model = info["models"][BUNDLE]
    assert (model["type"], model["kind"], model["dimension"]) == ("scribbles", "box_scribbles", 3)
    assert set(info["strategies"]) == {"random", "first", *OURS}
    assert set(info["scoring"]) == set(OURS)
    assert info["strategies"]["mc_dropout"]["bundle"] == BUNDLE
    assert info["scoring"]["active_learning_first"]["strategy"] == "first"


def test_a_box_inference_stores_the_users_box(server: LabelServer, user_box: list[list[int]]) -> None:
    assert _info(server, CASE)["box"] == {BUNDLE: user_box}
    assert "box" not in _info(server, EXTRA)


@pytest.mark.parametrize("name", ["random", "first", *OURS])
def test_every_strategy_answers_an_unlabelled_image(server: LabelServer, user_box: list[list[int]], name: str) -> None:
    response = _post(server, f"/activelearning/{name}", FAST)
    assert response.status_code == 200, response.text
    result = response.json()
    if name in ("random", "first"):  # MONAI Label's own: any unlabelled image, the corrupt one included
        assert result["id"] in {*READABLE, CORRUPT}
        return
    assert result["id"] in READABLE
    expected = {"active_learning_first": CASE, "last": EXTRA}  # "last" skips the corrupt image, last by id
    if name in expected:
        assert result["id"] == expected[name]
    if name in ("last", "entropy", "mc_dropout", "tta"):  # they read the corrupt image: skipped, with the reason
        assert "cannot" in result["skipped"][CORRUPT] or "Error" in result["skipped"][CORRUPT]
        assert f"{name}: skipping image {CORRUPT}" in server.log_tail(10**7)
    assert result["candidates"] == 3
    used = result["scored_with"]
    assert (used["strategy"], used["bundle"]) == (name.removeprefix("active_learning_"), BUNDLE)
    whole = [[0, 0, 0], [64, 64, 40]]
    assert (used["box"], used["box_source"]) == ((user_box, "user") if result["id"] == CASE else (whole, "image"))


def test_scoring_stores_a_score_for_every_unlabelled_image(server: LabelServer, user_box: list[list[int]]) -> None:
    response = _post(server, "/scoring/entropy?run_sync=true")
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result["scores"]) == READABLE
    assert set(result["skipped"]) == {CORRUPT}
    for image, box, source in ((CASE, user_box, "user"), (EXTRA, [[0, 0, 0], [64, 64, 40]], "image")):
        record = _info(server, image)["scores"]["entropy"]
        assert record["score"] == result["scores"][image]
        assert 0 < record["score"] <= np.log(2)
        assert (record["strategy"], record["weights"], record["box"], record["box_source"]) == (
            "entropy", str(SHIPPED), box, source
        )  # fmt: skip
        assert abs(record["ts"] - time.time()) < 600
    assert "scores" not in _info(server, CORRUPT)

    # MONAI Label's default: a background process (a new app instance) writes the datastore; the server reloads it
    started = _post(server, "/scoring/tta", FAST)
    assert started.status_code == 200, started.text
    status = _wait(server, "scoring")
    assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server.log_tail()
    deadline = time.monotonic() + 30
    while not all("tta" in _info(server, i).get("scores", {}) for i in READABLE) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(_info(server, i)["scores"]["tta"]["samples"] == 2 for i in READABLE)
    strategy = _post(server, "/activelearning/tta", FAST).json()
    assert strategy["reused"] == 2  # the stored scores are fresh: the network did not run again
    assert strategy["score"] == max(_info(server, i)["scores"]["tta"]["score"] for i in READABLE)


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("/activelearning/nope", None, 404, "unknown strategy 'nope'; strategies: ['active_learning_first'"),
        ("/scoring/nope", None, 404, "unknown scoring method 'nope'; scoring methods: ['active_learning_first'"),
        ("/scoring/nope?run_sync=true", None, 404, "unknown scoring method 'nope'"),
        ("/activelearning/mc_dropout", {"samples": 1}, 400, "samples must be an integer >= 2"),
        ("/scoring/entropy?run_sync=true", {"seed": -1}, 400, "seed must be an integer >= 0"),
    ],
)
def test_unknown_names_and_bad_options_get_4xx(
    server: LabelServer, path: str, body: dict[str, Any] | None, status: int, detail: str
) -> None:
    response = _post(server, path, body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    server.assert_up()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_starts_from_the_general_weights_and_writes_only_into_the_app(
    server: LabelServer, tmp_path: Path
) -> None:
    models = SHIPPED.parent
    names = sorted(p.name for p in models.iterdir())
    retrained = server.app / "model" / BUNDLE / "model.pt"  # an earlier retraining's weights: not the start
    retrained.parent.mkdir(parents=True, exist_ok=True)
    shipped = torch.load(SHIPPED, weights_only=True)
    torch.save({k: v + 0.5 if v.is_floating_point() else v for k, v in shipped.items()}, retrained)
    fake = _sha256(retrained)
    for case in ("phantom_000", "phantom_001", "phantom_002", "phantom_003"):  # binary final labels: 4 samples
        label = nib.load(str(server.dataset / "labelsTr" / f"{case}.nii.gz"))
        binary = (np.asarray(label.dataobj) == LIVER).astype(np.uint8)
        content = _nifti_bytes(binary, label.affine, tmp_path / f"{case}.nii.gz")
        _put(server, "/datastore/label", {"image": case, "tag": "final"}, f"{case}.nii.gz", content)

    params = {"max_epochs": 1, "val_split": 0.25, "num_workers": 0, "val_interval": 1}
    started = _post(server, f"/train/{BUNDLE}", params)
    assert started.status_code == 200, started.text
    status = _wait(server, "train")
    log = server.log_tail(10**7)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))[-4000:] + log[-4000:]
    assert f"training {BUNDLE} from {SHIPPED} (retrain_from: general_weights)" in log
    assert f"Restored all variables from {SHIPPED}" in log
    assert f"Restored all variables from {retrained}" not in log
    assert _sha256(retrained) != fake  # the new weights replaced the earlier retrained ones ...
    state = torch.load(retrained, weights_only=True)
    assert any(not torch.equal(state[k], shipped[k]) for k in state)  # ... after an epoch from the general ones
    # nothing written into the bundle's models/ (its model.pt may be replaced meanwhile by the bundle's own training)
    assert sorted(p.name for p in models.iterdir()) == names
    assert _sha256(retrained) not in {_sha256(p) for p in models.iterdir()}
    assert sorted(p.name for p in retrained.parent.glob("checkpoint*.pt")) == ["checkpoint_checkpoint_epoch=1.pt"]


def test_with_every_image_labelled_strategies_answer_empty(server: LabelServer, tmp_path: Path) -> None:
    image = nib.load(str(server.dataset / "imagesTr" / "phantom_000.nii.gz"))
    content = _nifti_bytes(np.zeros(image.shape, np.uint8), image.affine, tmp_path / "empty.nii.gz")
    for case in (CASE, EXTRA):
        _put(server, "/datastore/label", {"image": case, "tag": "final"}, f"{case}.nii.gz", content)
    import requests

    refused = requests.put(  # no label can be checked against an unreadable image: the user removes the image
        f"{server.url}/datastore/label",
        params={"image": CORRUPT, "tag": "final"},
        files={"label": (f"{CORRUPT}.nii.gz", content, "application/gzip")},
        timeout=60,
    )
    assert refused.status_code == 400
    assert "cannot read" in refused.json()["detail"]
    assert requests.delete(f"{server.url}/datastore/image", params={"id": CORRUPT}, timeout=60).status_code == 200
    deadline = time.monotonic() + 30  # the datastore notices the removed file asynchronously (auto reload)
    while CORRUPT in server.get("/datastore/?output=all").json().get("objects", {}):
        assert time.monotonic() < deadline, "the removed image is still listed"
        time.sleep(0.2)
    for name in ("random", "first", *OURS):
        response = _post(server, f"/activelearning/{name}", FAST)
        assert (response.status_code, response.json()) == (200, {}), name
    response = _post(server, "/scoring/entropy?run_sync=true")
    assert response.status_code == 200, response.text
    assert (response.json()["scores"], response.json()["skipped"]) == ({}, {})
    server.assert_up()
    assert json.loads(json.dumps(server.get("/info/").json()["strategies"]))  # still listed
