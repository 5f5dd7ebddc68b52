"""Smoke runs of the DeepGrow click bundle through ``monai.bundle`` on tiny embedded data.

One short 2D training run (``train.json`` + ``quick.json``) feeds inference with clicks (``inference.json``: a
reoriented input comes back in its own space, only the clicked slice segmented), the click-protocol evaluation
(``evaluate.json``); a 3D run checks ``3d.json``. Bad requests are checked on the inference pre-processing
in-process, plus one through the CLI. (``verify_net_in_out`` and ``ckpt_export`` run for every bundle in
test_bundles.py.)
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from common.bundle import run_monai_bundle

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "deepgrow_clicks"
CONFIGS = BUNDLE / "configs"
ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}
KIDNEY = 3


def _bundle(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run_monai_bundle(args, cwd=cwd, env=ENV, check=ok)


def _configs(*names: str) -> str:
    return repr([str(CONFIGS / n) for n in names])


@pytest.fixture(scope="module")
def trained(train_quick: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the quick 2D configuration for one epoch; returns the run folder (``models/model.pt`` inside)."""
    return train_quick("deepgrow_clicks", tmp_path_factory.mktemp("deepgrow_clicks_run"), "--patch_size", "[64, 64]")


def test_training_saves_a_plain_state_dict(trained: Path) -> None:
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith("module.") for k in state)
    assert state["encoders.0.block.0.weight"].shape[1] == 3  # image + 2 guidance channels


def _reoriented_case(tiny_phantoms: Path, out: Path) -> tuple[Path, list[int], int]:
    """A phantom stored as (z, y, x) with x flipped (non-RAS); returns its path, a kidney click and the slice axis.

    The click is given in the stored array's voxel indices; the slice axis of the stored array is 0 (it runs
    along S).
    """
    image = nib.load(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz")
    label = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz").dataobj)
    perm = np.eye(4)[[2, 1, 0, 3]].T
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = label.shape[0] - 1
    affine = image.affine @ perm @ flip
    stored_img = np.flip(np.transpose(np.asarray(image.dataobj), (2, 1, 0)), axis=2).copy()
    stored_lab = np.flip(np.transpose(label, (2, 1, 0)), axis=2).copy()
    path = out / "case.nii.gz"
    nib.save(nib.Nifti1Image(stored_img, affine), path)
    inside = np.argwhere(stored_lab == KIDNEY)
    click = [int(v) for v in inside[len(inside) // 2]]
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    return path, click, 0


def test_inference_with_clicks_returns_mask_in_input_space_on_the_clicked_slice(
    trained: Path, tiny_phantoms: Path, tmp_path: Path
) -> None:
    img_path, click, slice_axis = _reoriented_case(tiny_phantoms, tmp_path)
    override = tmp_path / "datalist.json"
    override.write_text(json.dumps({"datalist": [{"image": str(img_path), "foreground": [click], "background": []}]}))
    out_dir = tmp_path / "out"
    _bundle(
        "run",
        "--config_file", repr([str(CONFIGS / "inference.json"), str(CONFIGS / "quick.json"), str(override)]),
        "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--output_dir", str(out_dir),
        cwd=tmp_path,
    )  # fmt: skip
    written = sorted(out_dir.glob("*.nii.gz"))
    assert [p.name for p in written] == ["case_clicks.nii.gz"]
    result, source = nib.load(written[0]), nib.load(img_path)
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
    mask = np.asarray(result.dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    # The 2D model segments only the clicked slice; every other slice of the stored array stays empty.
    other = np.delete(mask, click[slice_axis], axis=slice_axis)
    assert other.sum() == 0


def _inference_preprocessing(*extra: str) -> Any:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), *(str(CONFIGS / name) for name in extra)])
    return parser.get_parsed_content("preprocessing")


def _volume_file(tmp_path: Path, data: np.ndarray) -> str:
    path = tmp_path / "img.nii.gz"
    # at the model's spacing (2.5 mm in-plane), so the pre-processing does not resample it
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([2.5, 2.5, 3.5, 1.0])), path)
    return str(path)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"foreground": [[40, 5, 3]], "background": []}, "outside the image"),
        ({"foreground": [[4, 5, 3, 1]], "background": []}, "3 coordinates"),
        ({"foreground": [], "background": []}, "no clicks"),
        ({"foreground": [[4, 5]], "background": []}, "slice index"),
        ({"foreground": [[4, 5]], "background": [], "slice": 99}, "outside the volume"),
        ({"foreground": [[4, 5, 3]], "background": [], "slice": 2}, "no click lies on slice 2"),
    ],
)
def test_bad_click_requests_give_clear_errors(tmp_path: Path, request_: dict[str, Any], message: str) -> None:
    preprocessing = _inference_preprocessing()
    item = {"image": _volume_file(tmp_path, np.zeros((16, 16, 8))), **request_}
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the ValueError of the failing transform
        preprocessing(item)
    assert isinstance(info.value.__cause__, ValueError)
    assert message in str(info.value.__cause__)


def test_nan_image_is_rejected(tmp_path: Path) -> None:
    data = np.zeros((16, 16, 8))
    data[3, 3, 3] = np.nan
    item = {"image": _volume_file(tmp_path, data), "foreground": [[4, 5, 3]], "background": []}
    with pytest.raises(RuntimeError) as info:
        _inference_preprocessing()(item)
    assert "NaN" in str(info.value.__cause__)


def test_in_plane_clicks_with_a_slice_index_are_accepted(tmp_path: Path) -> None:
    item = {"image": _volume_file(tmp_path, np.zeros((16, 16, 8))), "foreground": [[4, 5]], "slice": 6}
    out = _inference_preprocessing()(item)
    assert out["image"].shape == (3, 16, 16, 8)
    assert float(out["image"][1, 4, 5, 6]) == pytest.approx(1.0)
    assert float(out["image"][1, :, :, 5].max()) == 0.0  # 2D guidance: nothing on the neighbouring slice


@pytest.mark.parametrize(("configs", "last"), [((), "A"), (("3d.json",), "S")])
def test_the_2d_model_works_on_the_viewers_slice_the_3d_model_on_the_ras_volume(
    tmp_path: Path, configs: tuple[str, ...], last: str
) -> None:
    # stored S, L, P (slices first): 3D Slicer's slice k (stored axis 2) is a coronal plane
    affine = np.array([[0.0, -2.5, 0.0, 40.0], [0.0, 0.0, -2.5, 40.0], [3.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "slp.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 16, 12), np.float32), affine), path)
    item = {"image": str(path), "foreground": [[2, 3, 5], [4, 6, 5]], "background": [[1, 1, 7]], "slice": 5}
    out = _inference_preprocessing(*configs)(item)
    assert nib.aff2axcodes(out["image"].affine.numpy())[2] == last
    guidance = out["image"][1:].numpy()
    if last == "A":  # the 2D model: the viewer's clicks, on one slice of the last axis; the click off it dropped
        assert guidance[1].max() == 0.0
        assert len(np.flatnonzero(guidance[0].max(axis=(0, 1)))) == 1
    else:  # the 3D model: every click, as before
        assert guidance[1].max() == pytest.approx(1.0)


def test_cli_reports_a_click_outside_the_image(trained: Path, tmp_path: Path) -> None:
    override = tmp_path / "datalist.json"
    image = _volume_file(tmp_path, np.zeros((16, 16, 8)))
    override.write_text(json.dumps({"datalist": [{"image": image, "foreground": [[99, 1, 1]]}]}))
    result = _bundle(
        "run",
        "--config_file", repr([str(CONFIGS / "inference.json"), str(CONFIGS / "quick.json"), str(override)]),
        "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--output_dir", str(tmp_path / "out"),
        cwd=tmp_path,
        ok=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "foreground click [99, 1, 1] lies outside the image" in result.stderr + result.stdout


def test_evaluate_records_clicks_per_slice_for_seen_and_unseen(
    trained: Path, tiny_phantoms: Path, tmp_path: Path
) -> None:
    _bundle(
        "run",
        "--config_file", _configs("inference.json", "evaluate.json", "quick.json"),
        "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(tiny_phantoms),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--output_dir", str(tmp_path),
        "--n_rounds", "2",
        cwd=tmp_path,
    )  # fmt: skip
    with open(tmp_path / "interactive" / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["group"] for r in rows} == {"seen", "unseen"}
    assert {r["round"] for r in rows} == {"1", "2"}
    assert (tmp_path / "interactive" / "curves.png").stat().st_size > 0
    interactions = json.loads((tmp_path / "interactive" / "interactions.json").read_text())
    first = interactions[0]["state"]
    label = np.asarray(nib.load(tiny_phantoms / "labelsTr" / f"{interactions[0]['case_id']}.nii.gz").dataobj)
    slices_with_structure = int((label == interactions[0]["structure"]).any(axis=(0, 1)).sum())
    # round 1 puts one foreground click on every slice of the structure
    assert first["history"][0]["foreground_clicks"] == slices_with_structure


def test_3d_config_trains_and_segments_a_volume(tiny_phantoms: Path, tmp_path: Path) -> None:
    configs = ("train.json", "quick.json", "3d.json")
    _bundle(
        "run",
        "--config_file", _configs(*configs),
        "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(tiny_phantoms),
        "--output_dir", str(tmp_path / "runs"),
        "--ckpt_dir", str(tmp_path / "models"),
        "--max_epochs", "1",
        "--train#trainer#epoch_length", "2",
        "--patch_size", "[32, 32, 32]",
        cwd=tmp_path,
    )  # fmt: skip
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["encoders.0.block.0.weight"].dim() == 5  # 3D convolutions
    image = tiny_phantoms / "imagesTr" / "phantom_001.nii.gz"
    configs_3d = ("inference.json", "quick.json", "3d.json")
    override = tmp_path / "datalist.json"
    override.write_text(json.dumps({"datalist": [{"image": str(image), "foreground": [[30, 30, 20]]}]}))
    _bundle(
        "run",
        "--config_file", repr([str(CONFIGS / n) for n in configs_3d] + [str(override)]),
        "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(tmp_path / "models" / "model.pt"),
        "--output_dir", str(tmp_path / "out"),
        cwd=tmp_path,
    )  # fmt: skip
    result = nib.load(tmp_path / "out" / "phantom_001_clicks.nii.gz")
    assert result.shape == nib.load(image).shape
