"""Recorded 3D Slicer and OHIF v3 requests replayed against a real MONAI Label server with the app.

The request bodies are in ``requests/`` (see its README for the plugin functions they come from). Each replay sends
the exact ``params`` and, where the plugin uploads a label map, the label map the plugin would export (every segment,
value = segment index + 1). Slicer's client sends no ``output`` query: the answer is multipart (result JSON and an
``.nrrd`` result file).

The correction round trip follows what a Slicer user does with slice propagation: annotate one slice, get the
result, erase a slice where it went too far and redraw another one, send the whole segment again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel")

#: Dice on the clicked slice after the recorded requests' clicks (see the test).
MIN_ONE_CLICK_DICE = 0.3
REQUESTS = Path(__file__).parent / "requests"
CASE = "phantom_004"
LabelServer = Any  # conftest.LabelServer (conftest modules are not importable with --import-mode=importlib)


@pytest.fixture(scope="module")
def server(label_server: LabelServer) -> LabelServer:
    return label_server


def recorded(name: str) -> dict[str, Any]:
    """A recorded request of ``requests/<name>.json``."""
    loaded: dict[str, Any] = json.loads((REQUESTS / f"{name}.json").read_text())
    return loaded


def _truth(server: LabelServer) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(server.dataset / "labelsTr" / f"{CASE}.nii.gz"))
    return np.asarray(image.dataobj), image.affine


def _slices(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask.any(axis=(0, 1))).tolist()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def slicer_labelmap(server: LabelServer, segments: list[dict[str, Any]], path: Path) -> Path:
    """The label map 3D Slicer exports for ``segments`` (value = ``id``), drawn from the ground truth."""
    truth, affine = _truth(server)
    volume = np.zeros(truth.shape, dtype=np.uint8)
    for segment in segments:
        structure = truth == segment["structure"] if segment.get("structure") is not None else None
        for k in segment["slices"]:
            assert structure is not None
            on_slice = structure[..., k]
            stroke = segment.get("stroke")
            if stroke == "inside":  # a short foreground stroke through the structure's middle row
                i, j = np.argwhere(on_slice)[len(np.argwhere(on_slice)) // 2]
                volume[i, max(j - 1, 0) : j + 2, k] = segment["id"]
            elif stroke == "outside":  # a background stroke 3 voxels left of the structure
                i0 = int(np.argwhere(on_slice)[:, 0].min()) - 3
                js = np.argwhere(on_slice)[:, 1]
                volume[i0, int(js.min()) : int(js.max()) + 1, k] = segment["id"]
            else:  # the segment painted on the whole slice
                volume[..., k][on_slice] = segment["id"]
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return path


def send(server: LabelServer, model: str, params: dict[str, Any], upload: Path | None, output: str | None) -> Any:
    """``POST /infer/<model>?image=<case>`` as the client does (``output`` omitted when ``None``)."""
    import requests

    query = {"image": CASE} if output is None else {"image": CASE, "output": output}
    files = {"label": (upload.name, upload.read_bytes(), "application/octet-stream")} if upload else None
    return requests.post(
        f"{server.url}/infer/{model}", params=query, files=files, data={"params": json.dumps(params)}, timeout=300
    )


def read_result(response: Any, folder: Path) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The result mask (``[i, j, k]`` as stored) and, for a multipart answer, the result JSON."""
    from monai.transforms import LoadImage
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    assert response.status_code == 200, response.text[:2000]
    content, result_json = response.content, None
    if response.headers["content-type"].startswith("multipart/"):
        for part in MultipartDecoder.from_response(response).parts:
            disposition = part.headers[b"Content-Disposition"].decode()
            if "filename=" in disposition:
                assert '.nrrd"' in disposition, disposition
                content = part.content
            else:
                result_json = json.loads(part.content)
    path = folder / "result.nrrd"
    path.write_bytes(content)
    array = np.asarray(LoadImage(image_only=True, reader="ITKReader")(str(path)))
    return array > 0, result_json


def test_slicer_scribbles_upload_propagates_the_selected_segment(server: LabelServer, tmp_path: Path) -> None:
    request = recorded("slicer_scribbles_slice_propagation")
    upload = slicer_labelmap(server, request["upload"]["segments"], tmp_path / request["upload"]["file_name"])
    result, result_json = read_result(send(server, "slice_propagation", request["params"], upload, None), tmp_path)
    truth, _ = _truth(server)
    kidney = truth == 4
    assert result_json is not None
    assert result_json["bundle"] == "slice_propagation"
    assert result.shape == truth.shape
    np.testing.assert_array_equal(result[..., 19], kidney[..., 19])  # the user's slice, exactly as drawn
    assert len(_slices(result)) > 3  # propagated beyond it
    assert _dice(result, kidney) > 0.5
    liver = truth[..., 27] == 1  # the other segment, drawn on slice 27, is not taken as the structure
    assert np.logical_and(result[..., 27], liver).sum() < 0.1 * liver.sum()


def test_slicer_correction_round_trip_repropagates_the_corrections(server: LabelServer, tmp_path: Path) -> None:
    request = recorded("slicer_scribbles_slice_propagation")
    params = {**request["params"], "selected_label_name": "liver", "reset_state": True}
    upload = slicer_labelmap(server, request["upload"]["segments"], tmp_path / "first.nii.gz")
    first, _ = read_result(send(server, "slice_propagation", params, upload, None), tmp_path)
    truth, affine = _truth(server)
    liver = truth == 1
    reached = _slices(first)
    assert reached[0] < 27 < reached[-1], reached
    # the user imports the result into the liver segment, erases it 3 slices above the annotation and redraws the
    # ground truth 4 slices below; Slicer then exports every segment again (liver = 1, kidney_right = 2)
    erased, redrawn = 30, 23
    segment = first.copy()
    segment[..., erased] = False
    segment[..., redrawn] = liver[..., redrawn]
    volume = np.zeros(truth.shape, dtype=np.uint8)
    volume[..., 19][truth[..., 19] == 4] = 2
    volume[segment] = 1
    second_upload = tmp_path / "second.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), str(second_upload))
    params.pop("reset_state")
    second, _ = read_result(send(server, "slice_propagation", params, second_upload, None), tmp_path)
    np.testing.assert_array_equal(second[..., 27], liver[..., 27])  # first annotation kept exactly
    np.testing.assert_array_equal(second[..., redrawn], liver[..., redrawn])  # the correction, exactly
    assert not second[..., erased:].any()  # nothing at or beyond the erased slice
    assert second[..., erased - 1].any()  # ... but up to it
    assert _slices(second)[0] < redrawn  # re-propagated from the redrawn slice
    # the same segment sent back unchanged gives the same result (the user's slices are remembered)
    volume[:] = 0
    volume[..., 19][truth[..., 19] == 4] = 2
    volume[second] = 1
    nib.save(nib.Nifti1Image(volume, affine), str(second_upload))
    third, _ = read_result(send(server, "slice_propagation", params, second_upload, None), tmp_path)
    np.testing.assert_array_equal(third, second)


def test_slicer_bifseg_scribbles_with_roi(server: LabelServer, tmp_path: Path) -> None:
    request = recorded("slicer_scribbles_bifseg")
    upload = slicer_labelmap(server, request["upload"]["segments"], tmp_path / request["upload"]["file_name"])
    result, result_json = read_result(send(server, "bifseg", request["params"], upload, None), tmp_path)
    truth, _ = _truth(server)
    i0, i1, j0, j1, k, _ = request["params"]["roi"]  # flat on slice k: the 2D model
    assert result_json is not None
    assert result_json["box"] == [[i0, j0, k], [i1, j1, k + 1]]
    outside = result.copy()
    outside[i0:i1, j0:j1, k] = False
    assert not outside.any()
    assert _dice(result[..., k], truth[..., k] == 4) > 0.5


@pytest.mark.parametrize("name", ["slicer_deepgrow_2d", "ohif_v3_point_prompts"])
def test_deepgrow_click_requests_segment_the_clicked_slice(server: LabelServer, tmp_path: Path, name: str) -> None:
    request = recorded(name)
    output = "image" if name.startswith("ohif") else None
    result, _ = read_result(send(server, "deepgrow_clicks", request["params"], None, output), tmp_path)
    truth, _ = _truth(server)
    k = request["params"]["foreground"][0][2]
    assert _slices(result) == [k]
    dice = _dice(result[..., k], truth[..., k] == request["structure"])
    # one click on a large organ (OHIF's request: the liver) covers part of it: 0.37 with the randomised weights of
    # 0.3, above 0.5 with the CT-only ones of 0.2; any other structure or slice scores about 0
    assert dice > MIN_ONE_CLICK_DICE, dice
