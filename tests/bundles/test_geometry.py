"""One scan, several storages, one answer: both bundles with their shipped weights on the geometry phantoms.

The same phantom as generated (RAS, 2.5 mm in-plane), re-stored slices-first with flips (S, L, P), resampled to
1 mm in-plane and in an MRI-like contrast goes through ``evaluate.json`` (the robot users, one round on each unseen
structure) and through ``inference.json`` (``monai.bundle run``) with the interactions the robot gave. Checked: the
mean Dice of each storage is within 0.03 of the native one, and ``inference.json`` returns exactly the mask the
evaluation scored (same Dice) for the same case and interactions; the MRI-like copy runs through both paths and
through each intensity normalisation (the CT-trained weights are not expected to segment it). The MONAI Label side of
the same check lives in ``tests/common/monailabel/test_server_geometry.py``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from common.bundle import run_monai_bundle
from common.evaluation import dice

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
GEOMETRIES = ("native", "restored", "fine")
TOLERANCE = 0.03
#: bundle -> (kind of interaction, output postfix of inference.json, result folder of evaluate.json)
BUNDLES = {
    "slice_propagation": ("slices", "propagated", "interactive_nearest"),
    "deepgrow_clicks": ("clicks", "clicks", "interactive"),
}


def _configs(bundle: str, *names: str) -> str:
    return repr([str(ROOT / "bundles" / bundle / "configs" / n) for n in names])


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def evaluated(request: pytest.FixtureRequest, geometry_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run ``evaluate.json`` (shipped weights, one round, unseen structures) on all three storages at once."""
    bundle = request.param
    out = tmp_path_factory.mktemp(f"geometry_{bundle}")
    override = out / "items.json"
    override.write_text(
        json.dumps(
            {"eval_items": "$common.data.expand_structures(@eval_dataset.training, @eval_dataset, group='unseen')"}
        )
    )
    run_monai_bundle(
        ["run", "--config_file", _configs(bundle, "inference.json", "evaluate.json")[:-1] + f", {str(override)!r}]",
         "--bundle_root", str(ROOT / "bundles" / bundle), "--dataset_dir", str(geometry_phantoms),
         "--output_dir", str(out), "--n_rounds", "1"],
        cwd=out, env=ENV, timeout=900,
    )  # fmt: skip
    folder = out / BUNDLES[bundle][2]
    with open(folder / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    interactions = json.loads((folder / "interactions.json").read_text())
    return bundle, out, rows, interactions


def test_same_dice_in_every_storage(evaluated: Any) -> None:
    bundle, _, rows, _ = evaluated
    per_case: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        per_case[r["case_id"]].append(float(r["dice"]))
    assert sorted(per_case) == sorted(f"geo_{g}" for g in (*GEOMETRIES, "mri"))
    assert all(len(v) == 4 for v in per_case.values())  # the four unseen structures
    assert all(
        np.isfinite(v).all() for v in per_case.values()
    )  # the MRI-like copy runs too (CT weights: no Dice check)
    means = {case: float(np.mean(v)) for case, v in per_case.items()}
    print(f"{bundle} mean Dice per storage: {means}")
    assert means["geo_native"] > 0.3, means  # the shipped model works at all
    for geometry in ("restored", "fine"):
        assert abs(means[f"geo_{geometry}"] - means["geo_native"]) <= TOLERANCE, means
    restored = {r["structure"]: float(r["dice"]) for r in rows if r["case_id"] == "geo_restored"}
    native = {r["structure"]: float(r["dice"]) for r in rows if r["case_id"] == "geo_native"}
    if bundle == "slice_propagation":  # lossless re-storage, deterministic robot: exactly the same result
        assert restored == pytest.approx(native, abs=1e-6)


def _request_files(interaction: dict[str, Any], kind: str, image: Path, out: Path) -> dict[str, Any]:
    """The datalist item of ``inference.json`` for the robot's first-round interactions."""
    state = interaction["state"]
    if kind == "clicks":
        return {"image": str(image), "foreground": state["foreground"], "background": state["background"]}
    label = nib.load(str(image).replace("imagesTr", "labelsTr"))
    truth = np.asarray(label.dataobj) == interaction["structure"]
    annotation = np.zeros(truth.shape, np.uint8)
    index: list[Any] = [slice(None)] * 3
    for k in state["slices"]:
        index[state["axis"]] = k
        annotation[tuple(index)] = truth[tuple(index)]
    path = out / f"{image.name[:-7]}_annotation.nii.gz"
    nib.save(nib.Nifti1Image(annotation, label.affine), str(path))
    return {"image": str(image), "annotation": str(path)}


def test_inference_json_returns_the_mask_the_evaluation_scored(evaluated: Any, geometry_phantoms: Path) -> None:
    bundle, out, rows, interactions = evaluated
    kind, postfix, _ = BUNDLES[bundle]
    kidney = [i for i in interactions if i["structure_name"] == "kidney_right"]
    assert len(kidney) == 4
    datalist = [_request_files(i, kind, geometry_phantoms / "imagesTr" / f"{i['case_id']}.nii.gz", out) for i in kidney]
    override = out / "datalist.json"
    override.write_text(json.dumps({"datalist": datalist}))
    masks = out / "masks"
    run_monai_bundle(
        ["run", "--config_file", _configs(bundle, "inference.json")[:-1] + f", {str(override)!r}]",
         "--bundle_root", str(ROOT / "bundles" / bundle), "--output_dir", str(masks)],
        cwd=out, env=ENV, timeout=900,
    )  # fmt: skip
    scored = {r["case_id"]: float(r["dice"]) for r in rows if r["structure_name"] == "kidney_right"}
    for interaction in kidney:
        case = interaction["case_id"]
        result = nib.load(str(masks / f"{case}_{postfix}.nii.gz"))
        label = nib.load(str(geometry_phantoms / "labelsTr" / f"{case}.nii.gz"))
        assert result.shape == label.shape
        np.testing.assert_allclose(result.affine, label.affine, atol=1e-4)
        truth = np.asarray(label.dataobj) == interaction["structure"]
        assert dice(np.asarray(result.dataobj) > 0, truth) == pytest.approx(scored[case], abs=1e-6), case


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
@pytest.mark.parametrize("mode", ["ct_window", "percentile", "zscore"])
def test_every_intensity_normalisation_runs_on_the_mri_like_copy(
    bundle: str, mode: str, geometry_phantoms: Path, tmp_path: Path
) -> None:
    from common.bundle.pipeline import BundleInferencePipeline
    from common.interaction import InteractionState
    from common.interaction.requests import state_request
    from common.monailabel.kinds import get_kind

    pipeline = BundleInferencePipeline.from_bundle(
        ROOT / "bundles" / bundle, overrides={"intensity_mode": mode}, device="cpu"
    )
    image = geometry_phantoms / "imagesTr" / "geo_mri.nii.gz"
    truth = np.asarray(nib.load(str(image).replace("imagesTr", "labelsTr")).dataobj) == 4
    k = int(np.flatnonzero(truth.any(axis=(0, 1))).mean())
    i, j = (int(v) for v in np.argwhere(truth[..., k]).mean(axis=0))
    state = InteractionState(axis=2, foreground=[(i, j, k)])
    state.slices[k] = truth[..., k].astype(np.uint8)
    request = state_request(state, image, truth.shape, tmp_path)
    kind = get_kind("slice_propagation" if bundle == "slice_propagation" else "clicks")
    mask = np.asarray(pipeline({**request, **kind.build_item(request, tmp_path)})["pred"])[0]
    assert mask.shape == truth.shape
    assert set(np.unique(mask)) <= {0, 1}


# ------------------------------------------------------------------ the 2D click model on the viewer's stored slice
#: storage -> (geometry phantom, re-storing of its voxel axes or None). 3D Slicer's 2D DeepGrow sends clicks on the
#: stored slice k (index along stored axis 2) with ``slice: k`` and replaces only that slice with the answer: an
#: axial, coronal or sagittal plane depending on how the file is stored.
VIEWER_STORAGES: dict[str, tuple[str, tuple[int, int, int] | None]] = {
    "axial_last": ("geo_native", None),  # R, A, S: slice k is axial
    "axial_first": ("geo_restored", None),  # S, L, P: slice k is coronal
    "sagittal_last": ("geo_native", (1, 2, 0)),  # A, S, R: slice k is sagittal
    "sagittal_last_1mm": ("geo_fine", (1, 2, 0)),  # 1 mm in-plane: the plane is resampled, the slices are kept
}
#: Dice on the viewer's slice over five error-driven clicks. Both models were trained on axial slices only. The CT-only
#: weights of 0.2 measured 0.92 axial, 0.91 coronal, 0.88 / 0.83 sagittal after 5 clicks; the domain-randomised
#: weights of 0.3 reach 0.82 axial, 0.78 coronal (after 2 clicks; 0.68 after 5), 0.84 / 0.75 sagittal (after 4;
#: 0.56 / 0.75 after 5: an off-axial plane can lose ground after a background click). Before the viewer's plane was
#: honoured, the axial slices through the clicks came back instead: 0.21-0.24 on the stored slice. So: the best of the
#: five clicks must exceed VIEWER_SLICE_DICE and the last one VIEWER_SLICE_DICE_LAST, both far above the wrong plane.
VIEWER_SLICE_DICE = 0.7
VIEWER_SLICE_DICE_LAST = 0.5
KIDNEY_RIGHT = 4


@pytest.fixture(scope="module")
def click_pipeline() -> Any:
    from common.bundle.pipeline import BundleInferencePipeline

    return BundleInferencePipeline.from_bundle(ROOT / "bundles" / "deepgrow_clicks", device="cpu")


def _viewer_storage(geometry_phantoms: Path, storage: str, out: Path) -> tuple[Path, np.ndarray]:
    """The image file of ``storage`` and the right kidney's mask in its voxel order."""
    from common.data.variants import restore_array, restored_affine

    case, order = VIEWER_STORAGES[storage]
    image = nib.load(str(geometry_phantoms / "imagesTr" / f"{case}.nii.gz"))
    truth = np.asarray(nib.load(str(geometry_phantoms / "labelsTr" / f"{case}.nii.gz")).dataobj) == KIDNEY_RIGHT
    if order is None:
        return geometry_phantoms / "imagesTr" / f"{case}.nii.gz", truth
    flip = (False, False, False)
    data = restore_array(np.asarray(image.dataobj), order, flip)
    path = out / f"{case}_{storage}.nii"  # uncompressed: quick to write and read
    nib.save(nib.Nifti1Image(data, restored_affine(image.affine, image.shape, order, flip)), str(path))
    return path, restore_array(truth, order, flip)


@pytest.mark.parametrize("storage", sorted(VIEWER_STORAGES))
def test_2d_clicks_segment_the_viewers_stored_slice_in_every_storage(
    storage: str, click_pipeline: Any, geometry_phantoms: Path, tmp_path: Path
) -> None:
    from common.data.geometry import axial_axis
    from common.interaction import deepest_voxel

    path, truth = _viewer_storage(geometry_phantoms, storage, tmp_path)
    affine = nib.load(str(path)).affine
    present = np.flatnonzero(truth.any(axis=(0, 1)))
    k = int(present[len(present) // 2])  # the viewer's slice: stored index along axis 2
    target = truth[..., k]
    clicks: dict[str, list[list[int]]] = {"foreground": [], "background": []}
    scores = []
    on_slice = np.zeros(target.shape, bool)
    for _ in range(5):  # a user's clicks on the slice: each at the centre of the larger error
        missed, extra = target & ~on_slice, on_slice & ~target
        region, key = (missed, "foreground") if missed.sum() >= extra.sum() else (extra, "background")
        (i, j), _ = deepest_voxel(region, (1.0, 1.0))
        clicks[key].append([int(i), int(j), k])
        out = click_pipeline({"image": str(path), **clicks, "slice": k})  # the 3D Slicer request
        mask = np.asarray(out["pred"])[0] > 0.5
        assert mask.shape == truth.shape
        np.testing.assert_allclose(np.asarray(out["pred"].affine), affine, atol=1e-4)
        assert not np.delete(mask, k, axis=2).any(), "the answer must lie on the viewer's slice only"
        on_slice = mask[..., k]
        scores.append(dice(on_slice, target))
    print(f"{storage}: Dice on the viewer's slice {k} after 1..5 clicks: {np.round(scores, 3).tolist()}")
    assert max(scores) > VIEWER_SLICE_DICE, scores
    assert scores[-1] > VIEWER_SLICE_DICE_LAST, scores
    if storage.endswith("_1mm"):
        return
    # without a slice index: as before, the axial slice through the click (a request of the robot-user evaluation)
    first = [clicks["foreground"][0]]
    mask = np.asarray(click_pipeline({"image": str(path), "foreground": first, "background": []})["pred"])[0] > 0.5
    axis = axial_axis(affine)
    assert mask.any()
    assert set(np.argwhere(mask)[:, axis].tolist()) == {first[0][axis]}
