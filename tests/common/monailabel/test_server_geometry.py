"""The MONAI Label app on one scan stored three ways: the same Dice, and exactly the bundle pipeline's mask.

The geometry phantoms (``tests/conftest.py``: as generated, re-stored slices-first with flips, resampled to 1 mm
in-plane) are served by a real server with the shipped weights. For each storage a viewer's request is sent, made in
that file's own voxel indices: the unseen right kidney's middle axial slice as an uploaded label
(``/infer/slice_propagation``) and one click per axial slice (``/infer/deepgrow_clicks``). Checked: the answer lies
in the file's grid, its Dice is within 0.03 of the native storage's, and it equals what the bundle's own pipeline
(``common.bundle.pipeline``, as ``evaluate.json`` runs it) returns for the same request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel")

from common.bundle.pipeline import BundleInferencePipeline
from common.data.geometry import axial_axis
from common.interaction import deepest_click_per_slice
from common.monailabel.kinds import get_kind

ROOT = Path(__file__).resolve().parents[3]
GEOMETRIES = ("native", "restored", "fine")
KIDNEY_RIGHT = 4
LabelServer = Any  # conftest.LabelServer


@pytest.fixture(scope="module")
def server(
    geometry_phantoms: Path, tmp_path_factory: pytest.TempPathFactory, start_label_server_factory: Any
) -> Iterator[LabelServer]:
    yield from start_label_server_factory(tmp_path_factory, geometry_phantoms)


def _truth(dataset: Path, case: str) -> tuple[np.ndarray, Any]:
    label = nib.load(str(dataset / "labelsTr" / f"{case}.nii.gz"))
    return np.asarray(label.dataobj) == KIDNEY_RIGHT, label


def _annotation(truth: np.ndarray, label: Any, path: Path) -> Path:
    axis = axial_axis(label.affine)
    present = np.flatnonzero(np.moveaxis(truth, axis, 0).any(axis=(1, 2)))
    k = int(present[len(present) // 2])
    annotation = np.zeros(truth.shape, np.uint8)
    index: list[Any] = [slice(None)] * 3
    index[axis] = k
    annotation[tuple(index)] = truth[tuple(index)]
    nib.save(nib.Nifti1Image(annotation, label.affine), str(path))
    return path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("model", ["slice_propagation", "deepgrow_clicks"])
def test_same_dice_in_every_storage_and_the_bundle_pipeline_mask(
    server: LabelServer, geometry_phantoms: Path, tmp_path: Path, model: str
) -> None:
    pipeline = BundleInferencePipeline.from_bundle(ROOT / "bundles" / model, device="cpu")
    kind = get_kind("slice_propagation" if model == "slice_propagation" else "clicks")
    scores = {}
    for geometry in GEOMETRIES:
        case = f"geo_{geometry}"
        truth, label = _truth(geometry_phantoms, case)
        image = server.studies / f"{case}.nii.gz"
        if model == "slice_propagation":
            upload = _annotation(truth, label, tmp_path / f"{case}_annotation.nii.gz")
            response = server.infer(model, case, label=upload)
            request: dict[str, Any] = {"image": str(image), "label": str(upload)}
        else:
            clicks = deepest_click_per_slice(truth, axial_axis(label.affine))
            response = server.infer(model, case, params={"foreground": clicks, "background": []})
            request = {"image": str(image), "foreground": clicks, "background": []}
        assert response.status_code == 200, response.text[:2000]
        path = tmp_path / f"{case}_{model}.nii.gz"
        path.write_bytes(response.content)
        result = nib.load(str(path))
        assert result.shape == truth.shape
        np.testing.assert_allclose(result.affine, label.affine, atol=1e-4)
        served = np.asarray(result.dataobj) > 0
        expected = np.asarray(pipeline({**request, **kind.build_item(request, tmp_path)})["pred"])[0] > 0.5
        np.testing.assert_array_equal(served, expected)  # the app runs exactly the bundle's pipeline
        scores[geometry] = _dice(served, truth)
    print(f"{model} Dice per storage through MONAI Label: {scores}")
    assert scores["native"] > 0.5, scores
    for geometry in ("restored", "fine"):
        assert abs(scores[geometry] - scores["native"]) <= 0.03, scores
