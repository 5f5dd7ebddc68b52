"""The click path through a real MONAI Label server, with the DeepGrow bundle's own configs.

The server serves a copy of ``bundles/deepgrow_clicks/configs`` with freshly initialised weights (seeded), so the
click plumbing is tested whether or not trained weights are shipped yet: viewer-style params -> the ``clicks`` kind
-> the bundle's ``ClickMapsd`` / inferer / ``Invertd`` -> a mask in the image grid, predicted only on clicked slices
(the 2D model's contract), and bad clicks answered with 400. Untrained weights say nothing about accuracy; that is
checked against the shipped weights in ``test_server_infer.py``. Needs the ``label`` extra; skipped without it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("monailabel")

from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[3]
DEEPGROW = ROOT / "bundles" / "deepgrow_clicks"
CASE = "phantom_004"


@pytest.fixture(scope="module")
def server(
    tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory, start_label_server_factory: Any
) -> Iterator[Any]:
    if not (DEEPGROW / "configs" / "inference.json").is_file():
        pytest.skip(f"{DEEPGROW} has no configs/inference.json")
    bundles = tmp_path_factory.mktemp("bundles")
    copy = bundles / DEEPGROW.name
    shutil.copytree(DEEPGROW / "configs", copy / "configs")
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (copy / "models").mkdir()
    torch.save(network.state_dict(), copy / "models" / "model.pt")
    conf = [("bundles", str(bundles)), ("models", DEEPGROW.name)]
    yield from start_label_server_factory(tmp_path_factory, tiny_phantoms, conf=conf)


def _image(server: Any) -> tuple[tuple[int, ...], np.ndarray]:
    image = nib.load(str(server.studies / f"{CASE}.nii.gz"))
    return tuple(image.shape), image.affine


def _kidney_clicks(server: Any) -> tuple[list[int], list[int]]:
    """Two foreground clicks inside the right kidney on two different slices."""
    label = np.asarray(nib.load(str(server.dataset / "labelsTr" / f"{CASE}.nii.gz")).dataobj) == 4
    zs = np.flatnonzero(label.any(axis=(0, 1)))
    clicks = []
    for k in (int(zs[len(zs) // 3]), int(zs[2 * len(zs) // 3])):
        inside = np.argwhere(label[..., k])
        clicks.append([*map(int, inside[len(inside) // 2]), k])
    return clicks[0], clicks[1]


def test_info_reports_a_2d_click_model(server: Any) -> None:
    model = server.get("/info/").json()["models"]["deepgrow_clicks"]
    assert model["type"] == "deepgrow"
    assert model["kind"] == "clicks"
    assert model["dimension"] == 2  # 3D Slicer then sends the current slice's clicks and updates that slice only


def test_clicks_give_a_mask_in_the_image_grid_on_the_clicked_slices_only(server: Any, tmp_path: Path) -> None:
    first, second = _kidney_clicks(server)
    background = [first[0], 0, first[2]]
    params = {"foreground": [first, second], "background": [background], "label": "kidney_right"}  # as Slicer sends
    response = server.infer("deepgrow_clicks", CASE, params=params)
    assert response.status_code == 200, response.text[:2000]
    path = tmp_path / "clicks.nii.gz"
    path.write_bytes(response.content)
    result = nib.load(str(path))
    pred = np.asarray(result.dataobj)
    shape, affine = _image(server)
    assert pred.shape == shape
    assert pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1}
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)
    assert pred[..., [first[2], second[2]]].any()  # the seeded untrained network does predict there
    other_slices = np.delete(pred, [first[2], second[2]], axis=2)
    assert not other_slices.any()


def test_result_json_names_the_click_bundle(server: Any) -> None:
    first, _ = _kidney_clicks(server)
    response = server.infer("deepgrow_clicks", CASE, params={"foreground": [first]}, output="json")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["bundle"], result["kind"]) == ("deepgrow_clicks", "clicks")
    assert result["weights"].endswith("deepgrow_clicks/models/model.pt")


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"foreground": [[64, 0, 10]]}, "lies outside the image"),
        ({"background": [[0, 0, -1]]}, "lies outside the image"),
        ({}, "no clicks"),
        ({"foreground": [], "background": []}, "no clicks"),
        ({"foreground": "[[1, 2, 3]]"}, "must be a list of clicks"),
        ({"foreground": [[1.5, 2, 3]]}, "integer voxel indices"),
        ({"foreground": [[1, 2]]}, "2 coordinates"),
    ],
)
def test_bad_clicks_get_400_and_the_server_stays_up(server: Any, params: dict[str, Any], detail: str) -> None:
    response = server.infer("deepgrow_clicks", CASE, params=params)
    assert response.status_code == 400, response.text[:2000]
    assert detail in response.json()["detail"]
    server.assert_up()
