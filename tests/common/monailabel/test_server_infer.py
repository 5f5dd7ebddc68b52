"""Inference through a real MONAI Label server with the app and the embedded phantoms (REST, no mocks).

``/info``, ``/infer/slice_propagation`` with an uploaded annotated slice, ``/infer/deepgrow_clicks`` with clicks (once
that bundle has weights), 8 concurrent requests, and bad requests answered with an error status while the server
stays up. Needs the ``label`` extra (``monailabel``); skipped without it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel")

from common.monailabel.bundles import REQUIRED_PARTS

ROOT = Path(__file__).resolve().parents[3]
CASE = "phantom_004"  # left unlabelled in the studies folder: the case a user would annotate
KIDNEY_RIGHT = 4  # an unseen structure
DEEPGROW = ROOT / "bundles" / "deepgrow_clicks"
LabelServer = Any  # conftest.LabelServer (conftest modules are not importable with --import-mode=importlib)


@pytest.fixture(scope="module")
def server(label_server: LabelServer) -> LabelServer:
    return label_server


def _ground_truth(server: LabelServer, case: str = CASE) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(server.dataset / "labelsTr" / f"{case}.nii.gz"))
    return np.asarray(image.dataobj), image.affine


def _image(server: LabelServer, case: str = CASE) -> tuple[tuple[int, ...], np.ndarray]:
    image = nib.load(str(server.studies / f"{case}.nii.gz"))
    return tuple(image.shape), image.affine


def _middle_slice(mask: np.ndarray) -> int:
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    return int((zs[0] + zs[-1] + 1) // 2)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))
    return path


def _annotation(server: LabelServer, tmp_path: Path, structure: int = KIDNEY_RIGHT) -> tuple[Path, np.ndarray, int]:
    """The structure's middle slice as a binary upload; returns its path, the structure's full mask and the slice."""
    label, affine = _ground_truth(server)
    mask = label == structure
    k = _middle_slice(mask)
    annotation = np.zeros(label.shape, dtype=np.uint8)
    annotation[..., k] = mask[..., k]
    return _save(annotation, affine, tmp_path / "annotation.nii.gz"), mask, k


def _nifti(response: Any, tmp_path: Path, name: str = "result.nii.gz") -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text[:2000]
    path = tmp_path / name
    path.write_bytes(response.content)
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_info_lists_the_bundles_with_their_kinds(server: LabelServer) -> None:
    info = server.get("/info/").json()
    model = info["models"]["slice_propagation"]
    assert (model["type"], model["kind"], model["labels"], model["dimension"]) == (
        "scribbles",
        "slice_propagation",
        {"structure": 1},
        3,
    )
    assert model["weights"] == str(ROOT / "bundles" / "slice_propagation" / "models" / "model.pt")
    trainer = info["trainers"]["slice_propagation"]["config"]
    assert trainer["max_epochs"] == 30
    assert trainer["slices_per_volume"] == 8
    assert "multi_gpu" not in trainer
    assert info["datastore"]["total"] == 5
    assert info["datastore"]["completed"] == 4


def test_annotated_slice_is_propagated_in_the_image_grid(server: LabelServer, tmp_path: Path) -> None:
    annotation, truth, k = _annotation(server, tmp_path)
    pred, affine = _nifti(server.infer("slice_propagation", CASE, label=annotation), tmp_path)
    shape, image_affine = _image(server)
    assert pred.shape == shape
    assert pred.dtype == np.uint8
    assert set(np.unique(pred)) == {0, 1}
    np.testing.assert_allclose(affine, image_affine, atol=1e-4)
    np.testing.assert_array_equal(pred[..., k], truth[..., k])  # the user's slice comes back exactly
    predicted_slices = np.flatnonzero(pred.any(axis=(0, 1)))
    true_slices = np.flatnonzero(truth.any(axis=(0, 1)))
    assert len(predicted_slices) > len(true_slices) // 2  # propagated well beyond the annotated slice
    assert _dice(pred > 0, truth) > 0.6  # shipped weights, unseen structure (0.76 measured)


def test_label_value_picks_one_structure_of_a_multi_label_upload(server: LabelServer, tmp_path: Path) -> None:
    label, affine = _ground_truth(server)
    k = _middle_slice(label == KIDNEY_RIGHT)
    upload = np.zeros_like(label)
    upload[..., k] = label[..., k]  # the whole labelled slice, every structure in its own value
    path = _save(upload, affine, tmp_path / "all_structures.nii.gz")
    rejected = server.infer("slice_propagation", CASE, label=path)
    assert rejected.status_code == 400
    assert "label_value" in rejected.json()["detail"]
    pred, _ = _nifti(
        server.infer("slice_propagation", CASE, label=path, params={"label_value": KIDNEY_RIGHT}), tmp_path
    )
    np.testing.assert_array_equal(pred[..., k], label[..., k] == KIDNEY_RIGHT)
    assert _dice(pred > 0, label == KIDNEY_RIGHT) > 0.6


def test_result_json_names_bundle_weights_and_latencies(server: LabelServer, tmp_path: Path) -> None:
    annotation, _, _ = _annotation(server, tmp_path)
    response = server.infer("slice_propagation", CASE, label=annotation, output="json")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["bundle"] == "slice_propagation"
    assert result["kind"] == "slice_propagation"
    assert result["weights"].endswith("bundles/slice_propagation/models/model.pt")
    assert result["label_names"] == {"structure": 1}
    assert 0 < result["latencies"]["total"] < 60


def test_eight_concurrent_requests_are_all_answered(server: LabelServer, tmp_path: Path) -> None:
    annotation, truth, k = _annotation(server, tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: server.infer("slice_propagation", CASE, label=annotation), range(8)))
    preds = [_nifti(r, tmp_path, f"result_{i}.nii.gz")[0] for i, r in enumerate(responses)]
    for pred in preds:
        np.testing.assert_array_equal(pred, preds[0])  # same request, same answer
    np.testing.assert_array_equal(preds[0][..., k], truth[..., k])


def _bad_label_grid(server: LabelServer, tmp_path: Path) -> Path:
    label, affine = _ground_truth(server)
    return _save((label == KIDNEY_RIGHT)[..., :-4], affine, tmp_path / "cropped.nii.gz")


@pytest.mark.parametrize(
    ("case", "status", "detail"),
    [
        ("unknown model", 404, "unknown model 'no_such_model'"),
        ("unknown image id", 404, "unknown image id 'phantom_999'"),
        ("no annotation uploaded", 400, "multipart file 'label'"),
        ("annotation on another grid", 400, "shape"),
        ("empty annotation", 400, "annotat"),
        ("bad label_value", 400, "label_value must be a positive integer"),
        ("malformed params JSON", 400, "params is not valid JSON"),
    ],
)
def test_bad_requests_get_an_error_status_and_the_server_stays_up(
    server: LabelServer, tmp_path: Path, case: str, status: int, detail: str | None
) -> None:
    annotation, _truth, _ = _annotation(server, tmp_path)
    label, affine = _ground_truth(server)
    requests_by_case: dict[str, dict[str, Any]] = {
        "unknown model": {"model": "no_such_model", "label": annotation},
        "unknown image id": {"model": "slice_propagation", "image": "phantom_999", "label": annotation},
        "no annotation uploaded": {"model": "slice_propagation"},
        "annotation on another grid": {"model": "slice_propagation", "label": _bad_label_grid(server, tmp_path)},
        "empty annotation": {
            "model": "slice_propagation",
            "label": _save(np.zeros(label.shape), affine, tmp_path / "empty.nii.gz"),
        },
        "bad label_value": {"model": "slice_propagation", "label": annotation, "params": {"label_value": -2}},
        "malformed params JSON": {"model": "slice_propagation", "label": annotation, "params": '{"label_value": '},
    }
    request = requests_by_case[case]
    response = server.infer(request.pop("model"), request.pop("image", CASE), **request)
    assert response.status_code == status, response.text[:2000]
    if detail is not None:
        assert detail in response.json()["detail"]
    server.assert_up()


def _deepgrow_served(server: LabelServer) -> bool:
    return "deepgrow_clicks" in server.get("/info/").json()["models"]


def test_clicks_on_the_deepgrow_bundle(server: LabelServer, tmp_path: Path) -> None:
    if not _deepgrow_served(server):
        missing = [p for p in REQUIRED_PARTS if not (DEEPGROW / p).is_file()]
        pytest.skip(f"{DEEPGROW.name} is not served: missing {missing} (test_server_clicks.py covers the click path)")
    label, _ = _ground_truth(server)
    truth = label == KIDNEY_RIGHT
    k = _middle_slice(truth)
    inside = np.argwhere(truth[..., k])
    click = [*map(int, inside[len(inside) // 2]), k]
    pred, affine = _nifti(server.infer("deepgrow_clicks", CASE, params={"foreground": [click]}), tmp_path)
    shape, image_affine = _image(server)
    assert pred.shape == shape
    assert set(np.unique(pred)) <= {0, 1}
    np.testing.assert_allclose(affine, image_affine, atol=1e-4)
    assert pred[tuple(click)] == 1
    assert pred[..., k].sum() > 0
    outside = server.infer("deepgrow_clicks", CASE, params={"foreground": [[shape[0] + 5, 0, k]]})
    assert outside.status_code == 400
    assert "outside the image" in outside.json()["detail"]
    no_clicks = server.infer("deepgrow_clicks", CASE, params={})
    assert no_clicks.status_code == 400
    assert "no clicks" in no_clicks.json()["detail"]
    server.assert_up()
