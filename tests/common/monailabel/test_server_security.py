"""A battery of hostile and malformed requests against a real MONAI Label server with the app.

Each request gets the stated 4xx answer with a reason in words; after the whole battery, every file of the studies
folder (the users' final labels included) and a file outside it are unchanged (compared by hash), nothing was written
outside the studies folder, no upload is left in the server's temp folder, and the server still answers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel")
requests = pytest.importorskip("requests")

CASE = "phantom_004"  # unlabelled
LABELLED = "phantom_000"  # has a final label
LabelServer = Any  # conftest.LabelServer (conftest modules are not importable with --import-mode=importlib)


@pytest.fixture(scope="module")
def server(label_server: LabelServer) -> LabelServer:
    return label_server


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".lock" not in p.name and p.name != "datastore_v2.json"
    }


def _nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


class Battery:
    """Builds the requests of the battery for one server (files in ``folder``)."""

    def __init__(self, server: LabelServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        image = nib.load(str(server.studies / f"{CASE}.nii.gz"))
        self.shape, self.affine = tuple(image.shape), image.affine
        truth = np.asarray(nib.load(str(server.dataset / "labelsTr" / f"{CASE}.nii.gz")).dataobj)
        annotation = np.zeros(self.shape, dtype=np.uint8)
        annotation[..., 27] = truth[..., 27] == 1
        self.annotation = _nifti(annotation, self.affine, folder / "annotation.nii.gz")
        self.final_label = server.studies / "labels" / "final" / f"{LABELLED}.nii.gz"

    def upload(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def infer(
        self,
        model: str = "slice_propagation",
        params: Any = None,
        label: Path | None = None,
        image: str | None = CASE,
        file: Path | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        files = {}
        if label is not None:
            files["label"] = (label.name, label.read_bytes(), "application/octet-stream")
        if file is not None:
            files["file"] = (file.name, file.read_bytes(), "application/octet-stream")
        data = {"params": params if isinstance(params, str) else json.dumps({} if params is None else params)}
        q = {"output": "image", **({"image": image} if image is not None else {}), **(query or {})}
        return requests.post(f"{self.server.url}/infer/{model}", params=q, files=files or None, data=data, timeout=300)

    def put_label(self, label: Path, tag: str = "final", image: str = CASE) -> Any:
        return requests.put(
            f"{self.server.url}/datastore/label",
            params={"image": image, "tag": tag},
            files={"label": (label.name, label.read_bytes(), "application/octet-stream")},
            timeout=60,
        )

    def cases(self) -> list[tuple[str, Callable[[], Any], int, str]]:
        """``(name, request, expected status, a phrase of the reason)``."""
        studies = self.server.studies
        clicks = {"foreground": [[42, 37, 27]], "background": []}
        garbage = self.upload("garbage.nii.gz", gzip.compress(b"\x00\x01 not a nifti header " * 40))
        fake = self.upload("fake.nii.gz", b"this is text named like a NIfTI file\n" * 10)
        text = self.upload("notes.txt", b"hello")
        small = _nifti(np.ones((8, 8, 8), dtype=np.uint8), self.affine, self.folder / "small.nii.gz")
        moved = self.affine.copy()
        moved[:3, 3] += 7.0
        shifted = _nifti(np.ones(self.shape, dtype=np.uint8), moved, self.folder / "shifted.nii.gz")
        soft = _nifti(np.full(self.shape, 0.5, dtype=np.float32), self.affine, self.folder / "soft.nii.gz")
        return [
            ("image id is an absolute path", lambda: self.infer(image=str(studies / f"{CASE}.nii.gz"),
                                                                 label=self.annotation), 404, "unknown image id"),
            ("image id climbs out of the studies", lambda: self.infer(image=f"../studies/{CASE}",
                                                                       label=self.annotation), 404, "unknown image id"),
            ("no image at all", lambda: self.infer(image=None, label=self.annotation), 400, "no image"),
            ("params label is a server path, no upload", lambda: self.infer(params={"label": str(self.final_label)}),
             400, "upload the label volume"),
            ("params label is not a name", lambda: self.infer(params={"label": {"path": "/etc"}},
                                                                label=self.annotation), 400, "name of the viewer's"),
            ("params sets the image", lambda: self.infer(params={"image": str(studies / f"{LABELLED}.nii.gz")},
                                                           label=self.annotation), 400, "may not set ['image']"),
            ("params sets image_path and model_filename",
             lambda: self.infer(params={"image_path": "/etc/passwd", "model_filename": "../x.pt"},
                                label=self.annotation), 400, "may not set"),
            ("save_label as final", lambda: self.infer(params={"save_label": True, "label_tag": "final"},
                                                         label=self.annotation), 400, "may not save its result"),
            ("save_label with a traversing tag", lambda: self.infer(params={"save_label": True, "label_tag": "../../x"},
                                                                      label=self.annotation), 400, "not allowed"),
            ("garbage .nii.gz upload", lambda: self.infer(label=garbage), 400, "cannot read"),
            ("text named .nii.gz upload", lambda: self.infer(label=fake), 400, "cannot read"),
            (".txt upload", lambda: self.infer(label=text), 400, "not an image file"),
            ("image upload that is not an image", lambda: self.infer(image=None, file=fake, label=self.annotation),
             400, "cannot read"),
            ("coordinate 1e400", lambda: self.infer("deepgrow_clicks", '{"foreground": [[1e400, 37, 27]]}'),
             400, "out of range"),
            ("NaN coordinate", lambda: self.infer("deepgrow_clicks", '{"foreground": [[NaN, 37, 27]]}'),
             400, "not a number JSON allows"),
            ("slice as [48]", lambda: self.infer("deepgrow_clicks", {**clicks, "slice": [48]}), 400,
             "slice must be a non-negative integer"),
            ('slice "abc"', lambda: self.infer("deepgrow_clicks", {**clicks, "slice": "abc"}), 400,
             "slice must be a non-negative integer"),
            ("click outside the image", lambda: self.infer("deepgrow_clicks", {"foreground": [[420, 37, 27]]}),
             400, "outside"),
            ("unknown result_dtype", lambda: self.infer("deepgrow_clicks", {**clicks, "result_dtype": "complex128"}),
             400, "result_dtype must be one of"),
            ("result_extension .exe", lambda: self.infer("deepgrow_clicks", {**clicks, "result_extension": ".exe"}),
             400, "result_extension must be one of"),
            ("params is a JSON array", lambda: self.infer("deepgrow_clicks", "[1, 2, 3]"), 400, "JSON object"),
            ("params is not JSON", lambda: self.infer("deepgrow_clicks", "{foreground: "), 400, "not valid JSON"),
            ("unknown device", lambda: self.infer("deepgrow_clicks", {**clicks, "device": "tpu:0"}), 400,
             "device must be"),
            ("unknown model", lambda: self.infer("no_such_model", clicks), 404, "unknown model"),
            ("unknown session", lambda: self.infer("deepgrow_clicks", clicks, query={"session_id": "nope"}), 404,
             "unknown or expired session"),
            ("PUT label with a traversing tag", lambda: self.put_label(self.annotation, tag="../../.."), 400,
             "not allowed"),
            ("PUT label with a separator in the tag", lambda: self.put_label(self.annotation, tag="a/b"), 400,
             "not allowed"),
            ("PUT .txt as final label", lambda: self.put_label(text), 400, "not an image file"),
            ("PUT garbage .nii.gz as final label", lambda: self.put_label(garbage), 400, "cannot read"),
            ("PUT final label of another shape", lambda: self.put_label(small), 400, "shape"),
            ("PUT final label on another grid", lambda: self.put_label(shifted), 400, "grid"),
            ("PUT final label with fractional values", lambda: self.put_label(soft), 400, "integer label values"),
            ("PUT label for an unknown image", lambda: self.put_label(self.annotation, image="../x"), 404,
             "unknown image id"),
            ("DELETE label with a traversing tag", lambda: requests.delete(
                f"{self.server.url}/datastore/label", params={"id": LABELLED, "tag": "../../.."}, timeout=60), 400,
             "not allowed"),
            ("GET label with a traversing tag", lambda: requests.get(
                f"{self.server.url}/datastore/label", params={"label": LABELLED, "tag": "../labels"}, timeout=60), 400,
             "not allowed"),
            ("PUT image with a traversing id", lambda: requests.put(
                f"{self.server.url}/datastore/image", params={"image": "../../evil"},
                files={"file": ("x.nii.gz", self.annotation.read_bytes(), "application/octet-stream")}, timeout=60),
             400, "not allowed"),
            ("PUT image that is not an image", lambda: requests.put(
                f"{self.server.url}/datastore/image", params={"image": "new_case"},
                files={"file": ("x.nii.gz", fake.read_bytes(), "application/octet-stream")}, timeout=60),
             400, "cannot read"),
        ]  # fmt: skip


def test_hostile_requests_get_4xx_and_change_nothing(server: LabelServer, tmp_path: Path) -> None:
    outside = server.studies.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.nii.gz").write_bytes((server.studies / "labels" / "final" / f"{LABELLED}.nii.gz").read_bytes())
    before_studies, before_outside = _hashes(server.studies), _hashes(server.studies.parent)
    before_tmp = sorted(p.name for p in server.tmp.iterdir())  # MONAI Label's logging config, written at start
    battery = Battery(server, tmp_path)
    table = []
    for name, send, status, reason in battery.cases():
        response = send()
        detail = (
            response.json().get("detail", "")
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )
        table.append(f"{response.status_code}  {name}: {str(detail)[:110]}")
        assert response.status_code == status, f"{name}: {response.status_code} {response.text[:500]}"
        assert reason in str(detail), f"{name}: {detail}"
    print("\n".join(table))  # the battery's table (pytest -s)
    time.sleep(1.0)  # the server removes sent result files in a background task
    assert _hashes(server.studies) == before_studies
    after_outside = _hashes(server.studies.parent)
    new = sorted(set(after_outside) - set(before_outside) - {"server.log"})
    assert not [p for p in new if not p.startswith(("app/", "tmp/"))], new
    assert all(after_outside[p] == h for p, h in before_outside.items() if not p.startswith(("app/", "server.log"))), (
        "a file outside the app folder changed"
    )
    left = sorted(p.name for p in server.tmp.iterdir())
    assert left == before_tmp, "uploads or results left in the server's temp folder"
    server.assert_up()


def test_save_label_stores_an_inference_under_original_never_final(server: LabelServer, tmp_path: Path) -> None:
    battery = Battery(server, tmp_path)
    final = server.studies / "labels" / "final"
    before = _hashes(final)
    response = requests.post(
        f"{server.url}/infer/slice_propagation",
        params={"image": LABELLED, "output": "json"},
        files={"label": ("a.nii.gz", _annotation_for(server, LABELLED, tmp_path).read_bytes())},
        data={"params": json.dumps({"save_label": True})},
        timeout=300,
    )
    assert response.status_code == 200, response.text[:1000]
    assert (server.studies / "labels" / "original" / f"{LABELLED}.nii.gz").is_file()
    assert _hashes(final) == before
    del battery


def _annotation_for(server: LabelServer, case: str, folder: Path) -> Path:
    image = nib.load(str(server.dataset / "labelsTr" / f"{case}.nii.gz"))
    truth = np.asarray(image.dataobj)
    annotation = np.zeros(truth.shape, dtype=np.uint8)
    k = int(np.flatnonzero((truth == 1).any(axis=(0, 1))).mean())
    annotation[..., k] = truth[..., k] == 1
    return _nifti(annotation, image.affine, folder / f"{case}_annotation.nii.gz")


def test_a_valid_final_label_is_accepted_and_keeps_its_values(server: LabelServer, tmp_path: Path) -> None:
    label = _annotation_for(server, CASE, tmp_path)
    response = Battery(server, tmp_path).put_label(label, tag="final", image=CASE)
    assert response.status_code == 200, response.text[:1000]
    stored = server.studies / "labels" / "final" / f"{CASE}.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(str(stored)).dataobj), np.asarray(nib.load(str(label)).dataobj))
    stored.unlink()  # leave the case unlabelled for the other tests


def test_info_answers_while_inferences_run(server: LabelServer, tmp_path: Path) -> None:
    battery = Battery(server, tmp_path)
    done: list[float] = []
    start = time.monotonic()

    def infer() -> None:
        assert battery.infer(label=battery.annotation, params={"reset_state": True}).status_code == 200
        done.append(time.monotonic() - start)

    threads = [threading.Thread(target=infer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    info = requests.get(f"{server.url}/info/", timeout=30)
    info_latency = time.monotonic() - t0
    status = requests.get(f"{server.url}/train/", params={"check_if_running": True}, timeout=30)
    for t in threads:
        t.join()
    assert info.status_code == 200
    assert status.status_code in (200, 404)  # 404: no training ever ran
    assert info_latency < 2.0, info_latency
    assert len(done) == 4
    assert info_latency < max(done), (info_latency, done)  # answered before the queued inferences were done


def test_slicers_image_upload_with_its_volume_name_and_no_silent_replacement(server: LabelServer) -> None:
    # 3D Slicer's client: PUT /datastore/?image=<volume node name> with the volume as "file"
    image = server.studies / f"{CASE}.nii.gz"
    name = "3: AX T1 POST"
    send = lambda: requests.put(  # noqa: E731
        f"{server.url}/datastore/",
        params={"image": name},
        files={"file": ("tmpa1b2c3.nii.gz", image.read_bytes(), "application/octet-stream")},
        timeout=60,
    )
    response = send()
    assert response.status_code == 200, response.text
    assert response.json() == {"image": name}
    stored = server.studies / f"{name}.nii.gz"
    assert stored.read_bytes() == image.read_bytes()
    again = send()
    assert again.status_code == 409
    assert "is taken" in again.json()["detail"]
    clicks = {"foreground": [[42, 37, 27]], "background": []}
    result = requests.post(
        f"{server.url}/infer/deepgrow_clicks",
        params={"image": name, "output": "json"},
        data={"params": json.dumps(clicks)},
        timeout=300,
    )
    assert result.status_code == 200, result.text[:1000]


def test_ohif_raw_label_map_is_stored_on_the_image_grid(server: LabelServer, tmp_path: Path) -> None:
    # OHIF's MonaiLabelClient.save_label: the label map's raw voxels (uint8, the image's Fortran order) as label.bin
    label = nib.load(str(_annotation_for(server, CASE, tmp_path)))
    voxels = np.asarray(label.dataobj).astype(np.uint8)
    response = requests.put(
        f"{server.url}/datastore/label",
        params={"image": CASE, "tag": "ohif"},
        files={"label": ("label.bin", voxels.tobytes(order="F"), "application/octet-stream")},
        data={"params": json.dumps({"label_info": [{"name": "liver", "idx": 1}]})},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:1000]
    stored = nib.load(str(server.studies / "labels" / "ohif" / f"{CASE}.nii.gz"))
    np.testing.assert_array_equal(np.asarray(stored.dataobj), voxels)
    np.testing.assert_allclose(stored.affine, label.affine, atol=1e-4)
    short = requests.put(
        f"{server.url}/datastore/label",
        params={"image": CASE, "tag": "ohif"},
        files={"label": ("label.bin", voxels.tobytes(order="F")[:-10], "application/octet-stream")},
        timeout=60,
    )
    assert short.status_code == 400
    assert "voxel count" in short.json()["detail"]
