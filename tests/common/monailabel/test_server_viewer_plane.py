"""3D Slicer's 2D DeepGrow request, replayed against a real MONAI Label server on a scan not stored axially.

3D Slicer's MONAI Label module (``onClickDeepgrow``) sends a 2D click model the clicks of the current point's stored
slice ``k`` (voxel indices ``[i, j, k]`` of the image as stored), ``slice: k``, the segment's name under ``label`` and
its result format, then replaces only stored slice ``k`` of the segment with the answer
(``updateSegmentationMask``). The geometry phantoms' re-stored copy (``geo_restored``: axes S, L, P) makes that slice
a coronal plane. Checked with the shipped weights: the returned ``.nrrd`` lies on the image's grid, is non-zero on
stored slice ``k`` only, matches the right kidney there and equals the bundle pipeline's mask for the same request;
without ``slice`` the model keeps segmenting the axial slice through the click.
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
from common.interaction import deepest_voxel

sitk = pytest.importorskip("SimpleITK")

ROOT = Path(__file__).resolve().parents[3]
MODEL = "deepgrow_clicks"
CASE = "geo_restored"
KIDNEY_RIGHT = 4
#: Dice on the viewer's (coronal) slice after the user's five clicks: 0.91 with the CT-only weights of 0.2, 0.68 with
#: the domain-randomised weights of 0.3 (trained on axial slices; weaker off-axis, see the bundle's docs). The axial
#: slices through the clicks, which came back before the viewer's plane was honoured, score 0.21-0.24.
MIN_DICE = 0.5
LabelServer = Any  # conftest.LabelServer


@pytest.fixture(scope="module")
def server(
    geometry_phantoms: Path, tmp_path_factory: pytest.TempPathFactory, start_label_server_factory: Any
) -> Iterator[LabelServer]:
    yield from start_label_server_factory(tmp_path_factory, geometry_phantoms, conf=[("models", MODEL)])


@pytest.fixture(scope="module")
def slicer_clicks(geometry_phantoms: Path) -> tuple[int, dict[str, list[list[int]]], np.ndarray]:
    """A user's five clicks on the right kidney's middle stored slice ``k`` (each at the centre of the larger error
    of the answer so far, answered by the bundle pipeline); returns ``k``, the clicks and the truth as stored."""
    image = geometry_phantoms / "imagesTr" / f"{CASE}.nii.gz"
    truth = np.asarray(nib.load(str(geometry_phantoms / "labelsTr" / f"{CASE}.nii.gz")).dataobj) == KIDNEY_RIGHT
    assert nib.aff2axcodes(nib.load(str(image)).affine)[2] in ("A", "P")  # stored slice k is coronal
    pipeline = BundleInferencePipeline.from_bundle(ROOT / "bundles" / MODEL, device="cpu")
    present = np.flatnonzero(truth.any(axis=(0, 1)))
    k = int(present[len(present) // 2])
    clicks: dict[str, list[list[int]]] = {"foreground": [], "background": []}
    answer = np.zeros(truth.shape[:2], bool)
    for _ in range(5):
        missed, extra = truth[..., k] & ~answer, answer & ~truth[..., k]
        region, key = (missed, "foreground") if missed.sum() >= extra.sum() else (extra, "background")
        (i, j), _ = deepest_voxel(region, (1.0, 1.0))
        clicks[key].append([int(i), int(j), k])
        answer = np.asarray(pipeline({"image": str(image), **clicks, "slice": k})["pred"])[0, ..., k] > 0.5
    return k, clicks, truth


def _read_stored(path: Path) -> tuple[np.ndarray, Any]:
    """An image file as a ``[i, j, k]`` array in its stored voxel order, and the SimpleITK image (geometry)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_slicer_2d_deepgrow_request_updates_exactly_the_viewers_slice(
    server: LabelServer, slicer_clicks: Any, tmp_path: Path
) -> None:
    k, clicks, truth = slicer_clicks
    params = {  # onClickDeepgrow's params for a 2D model, as 3D Slicer sends them
        "label": "kidney_right",
        "foreground": clicks["foreground"],
        "background": clicks["background"],
        "slice": k,
        "result_extension": ".nrrd",
        "result_dtype": "uint8",
    }
    response = server.infer(MODEL, CASE, params=params)
    assert response.status_code == 200, response.text[:2000]
    path = tmp_path / "result.nrrd"
    path.write_bytes(response.content)
    mask, result = _read_stored(path)
    _, source = _read_stored(server.studies / f"{CASE}.nii.gz")
    assert mask.shape == truth.shape
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_allclose(result.GetOrigin(), source.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(result.GetSpacing(), source.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(result.GetDirection(), source.GetDirection(), atol=1e-4)
    assert not np.delete(mask, k, axis=2).any(), "3D Slicer keeps only stored slice k: nothing may lie elsewhere"
    score = _dice(mask[..., k] > 0, truth[..., k])
    print(f"Dice on the viewer's (coronal) slice {k} through MONAI Label: {score:.3f}")
    assert score > MIN_DICE
    image = str(server.studies / f"{CASE}.nii.gz")
    pipeline = BundleInferencePipeline.from_bundle(ROOT / "bundles" / MODEL, device="cpu")
    expected = np.asarray(pipeline({"image": image, **clicks, "slice": k})["pred"])[0] > 0.5
    np.testing.assert_array_equal(mask > 0, expected)  # the app runs the bundle's pipeline


def test_without_a_slice_the_axial_slice_through_the_click_is_segmented(
    server: LabelServer, slicer_clicks: Any, tmp_path: Path
) -> None:
    k, clicks, _ = slicer_clicks
    click = clicks["foreground"][0]
    response = server.infer(MODEL, CASE, params={"foreground": [click], "background": []})
    assert response.status_code == 200, response.text[:2000]
    path = tmp_path / "result.nii.gz"
    path.write_bytes(response.content)
    mask = np.asarray(nib.load(str(path)).dataobj) > 0
    assert mask.any()
    axial = 0  # geo_restored stores S first
    assert set(np.argwhere(mask)[:, axial].tolist()) == {click[axial]}
    assert mask[..., k].sum() < mask.sum()  # an axial slice, not the viewer's coronal one
