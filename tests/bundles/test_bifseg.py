"""BIFSeg bundle through ``monai.bundle``: training smoke run, ``inference.json`` with a box and scribbles in any
stored orientation, the evaluation, the 3D config and clear errors for bad requests."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from common.bundle import run_monai_bundle
from common.bundle.pipeline import BundleInferencePipeline

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "bifseg"
CONFIGS = BUNDLE / "configs"
ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
KIDNEY = 3


def _bundle(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run_monai_bundle(args, cwd=cwd, env=ENV, check=ok)


def _configs(*names: str) -> str:
    return repr([str(CONFIGS / n) for n in names])


def _stored_case(tiny_phantoms: Path, out: Path, reorient: bool) -> tuple[Path, np.ndarray, int]:
    """A phantom as generated (RAS) or stored (z, y, x) with a flip; returns its path, the kidney mask as stored and
    the stored array's axial axis."""
    image = nib.load(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz")
    label = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz").dataobj) == KIDNEY
    data = np.asarray(image.dataobj)
    affine = image.affine
    axis = 2
    if reorient:
        perm = np.eye(4)[[2, 1, 0, 3]].T
        flip = np.diag([1.0, 1.0, -1.0, 1.0])
        flip[2, 3] = label.shape[0] - 1
        affine = affine @ perm @ flip
        data = np.flip(np.transpose(data, (2, 1, 0)), axis=2).copy()
        label = np.flip(np.transpose(label, (2, 1, 0)), axis=2).copy()
        axis = 0
    path = out / f"case_{'restored' if reorient else 'ras'}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, label, axis


def _slice_box(mask: np.ndarray, axis: int, margin: int = 3) -> tuple[list[list[int]], int]:
    """A box on the structure's largest slice along ``axis`` ([[start], [stop]], stop exclusive) and that slice."""
    areas = np.moveaxis(mask, axis, -1).reshape(-1, mask.shape[axis]).sum(axis=0)
    k = int(np.argmax(areas))
    where = np.argwhere(np.take(mask, k, axis=axis))
    lo, hi = where.min(axis=0) - margin, where.max(axis=0) + 1 + margin
    start = [int(v) for v in lo]
    stop = [int(v) for v in hi]
    start.insert(axis, k)
    stop.insert(axis, k + 1)
    return [start, stop], k


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def trained(train_quick: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick 2D configuration trained for one epoch through ``monai.bundle``."""
    return train_quick("bifseg", tmp_path_factory.mktemp("bifseg_run"))


def test_training_saves_a_plain_state_dict_of_the_inference_network(trained: Path) -> None:
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["blocks.0.0.weight"].shape[1] == 1  # one image channel
    assert state["head.3.weight"].shape[0] == 2  # background, foreground


@pytest.mark.parametrize("reorient", [False, True], ids=["ras", "restored"])
def test_inference_json_box_and_scribbles_in_the_stored_grid(
    tiny_phantoms: Path, tmp_path: Path, reorient: bool
) -> None:
    """The shipped weights segment the kidney from a box on one slice in any stored orientation; scribbles hold."""
    path, truth, axis = _stored_case(tiny_phantoms, tmp_path, reorient)
    box, k = _slice_box(truth, axis)
    scribbles = np.zeros(truth.shape, np.uint8)
    inside = np.argwhere(np.take(truth, k, axis=axis))
    fg = [int(v) for v in inside[len(inside) // 2]]
    fg.insert(axis, k)
    bg = [box[0][a] if a != axis else k for a in range(3)]  # the box's corner voxel: background
    scribbles[tuple(fg)] = 3
    scribbles[tuple(bg)] = 2
    nib.save(nib.Nifti1Image(scribbles, nib.load(path).affine), tmp_path / "scribbles.nii.gz")
    item = {"image": str(path), "box": box, "scribbles": str(tmp_path / "scribbles.nii.gz")}
    (tmp_path / "datalist.json").write_text(json.dumps({"datalist": [item]}))
    _bundle(
        "run", "--config_file", repr([str(CONFIGS / "inference.json"), str(tmp_path / "datalist.json")]),
        "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path / "out"),
        cwd=tmp_path,
    )  # fmt: skip
    (written,) = sorted((tmp_path / "out").glob("*.nii.gz"))
    out = nib.load(written)
    np.testing.assert_allclose(out.affine, nib.load(path).affine, atol=1e-4)
    mask = np.asarray(out.dataobj) > 0
    assert mask.shape == truth.shape
    inside_box = np.zeros_like(mask)
    inside_box[tuple(slice(a, b) for a, b in zip(box[0], box[1], strict=True))] = True
    assert not mask[~inside_box].any()
    assert mask[tuple(fg)]
    assert not mask[tuple(bg)]
    assert _dice(np.take(mask, k, axis=axis), np.take(truth, k, axis=axis)) > 0.6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"box": [[200, 200, 10], [210, 210, 11]]}, "outside the image"),
        ({"box": [[10, 10, 10], [30, 30, 20]]}, "this is a 2D model"),
        ({"box": [[10, 10, 10], [10, 30, 11]]}, "zero width"),
        ({"box": "everything"}, "box must be"),
        ({"box": None}, "no box"),
    ],
)
def test_bad_requests_give_clear_errors(tiny_phantoms: Path, change: dict[str, Any], message: str) -> None:
    pipeline = BundleInferencePipeline.from_bundle(BUNDLE, device="cpu")
    item = {"image": str(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz"), **change}
    with pytest.raises(ValueError, match=message):
        pipeline(item)


def test_nan_image_and_wrong_grid_scribbles_are_refused(tiny_phantoms: Path, tmp_path: Path) -> None:
    image = nib.load(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz")
    data = np.asarray(image.dataobj).astype(np.float32)
    data[30, 30, 20] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), tmp_path / "nan.nii.gz")
    pipeline = BundleInferencePipeline.from_bundle(BUNDLE, device="cpu")
    box = [[20, 20, 20], [40, 40, 21]]
    with pytest.raises(ValueError, match="NaN"):
        pipeline({"image": str(tmp_path / "nan.nii.gz"), "box": box})
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), image.affine), tmp_path / "small.nii.gz")
    with pytest.raises(ValueError, match="image's grid"):
        pipeline({"image": image.get_filename(), "box": box, "scribbles": str(tmp_path / "small.nii.gz")})


def test_evaluate_json_scores_seen_and_unseen_2d_instances(trained: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
    _bundle(
        "run", "--config_file", _configs("inference.json", "evaluate.json", "quick.json"), "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(tiny_phantoms), "--output_dir", str(tmp_path), "--n_rounds", "2",
        "--ckpt_path", str(trained / "models" / "model.pt"), "--refinement", "crf",
        cwd=tmp_path,
    )  # fmt: skip
    folder = tmp_path / "interactive_bifseg_2d_crf"
    summary = json.loads((folder / "summary.json").read_text())
    assert {"seen", "unseen"} <= set(summary["methods"]["bifseg_2d_crf"]["per_group"])
    rows = (folder / "rounds.csv").read_text().splitlines()
    assert len(rows) > 1
    assert all("@" in r.split(",")[1] for r in rows[1:])


def test_3d_config_trains_and_segments_a_box(
    train_quick: Callable[..., Path], tiny_phantoms: Path, tmp_path: Path
) -> None:
    small = ("--resize_size", "24")  # 24-voxel crops instead of 80: the same code path, a CI-sized run
    run = train_quick("bifseg", tmp_path, "--config_file", _configs("train.json", "3d.json", "quick.json"), *small)
    weights = run / "models" / "model.pt"
    assert weights.is_file()
    pipeline = BundleInferencePipeline.from_bundle(
        BUNDLE,
        weights=weights,
        config_files=[CONFIGS / "inference.json", CONFIGS / "3d.json", CONFIGS / "quick.json"],
        overrides={"resize_size": 24},
        device="cpu",
    )
    truth = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz").dataobj) == KIDNEY
    where = np.argwhere(truth)
    box = [[int(v) for v in where.min(axis=0) - 2], [int(v) for v in where.max(axis=0) + 3]]
    out = pipeline({"image": str(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz"), "box": box})["pred"]
    assert tuple(out.shape[1:]) == truth.shape
    with pytest.raises(ValueError, match="this is a 3D model"):
        pipeline({"image": str(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz"), "box": [[10, 10, 5], [30, 30, 6]]})


def test_shipped_3d_weights_match_the_3d_network() -> None:
    from common.bundle.pipeline import load_bundle_config

    parser = load_bundle_config([CONFIGS / "inference.json", CONFIGS / "3d.json"], BUNDLE)
    network = parser.get_parsed_content("network_def")
    state = torch.load(BUNDLE / "models" / "model_3d.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    assert network.spatial_dims == 3


@pytest.mark.parametrize("extra", [[], ["3d.json"]], ids=["2d", "3d"])
def test_compare_json_builds_every_method_from_the_bundle_pipeline(extra: list[str]) -> None:
    from common.bundle.pipeline import load_bundle_config

    files = [CONFIGS / f for f in ["inference.json", *extra, "evaluate.json", "compare.json"]]
    adapters = load_bundle_config(files, BUNDLE).get_parsed_content("adapters")
    assert list(adapters) == ["cnn", "cnn_crf", "bifseg_unweighted", "bifseg", "grabcut", "random_walker"]
    modes = {name: adapters[name].pipeline.inferer for name in ("cnn", "cnn_crf", "bifseg_unweighted", "bifseg")}
    assert [m.mode for m in modes.values()] == ["cnn", "crf", "bifseg", "bifseg"]
    assert not modes["bifseg_unweighted"].params.weighted
    assert modes["bifseg"].params.weighted
    assert all(m.params.epsilon == 0.05 for m in modes.values())  # the bundle's refinement_params reach every mode
