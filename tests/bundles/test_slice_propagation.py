"""Smoke runs of the slice-propagation bundle through ``monai.bundle`` on tiny embedded data.

One short training run (``train.json`` + ``quick.json``, 1 epoch) feeds inference (``inference.json``: a reoriented
input comes back in its own space with the user's slice untouched), the correction-protocol evaluation
(``evaluate.json``); ``verify_net_in_out`` and ``ckpt_export`` run for every bundle in test_bundles.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.bundle import run_monai_bundle

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "slice_propagation"
CONFIGS = BUNDLE / "configs"
ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}


def _bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_monai_bundle(args, cwd=cwd, env=ENV)


def _configs(*names: str) -> str:
    return repr([str(CONFIGS / n) for n in names])


@pytest.fixture(scope="module")
def trained(train_quick: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the quick configuration for one epoch; returns the run folder (``models/model.pt`` inside)."""
    return train_quick("slice_propagation", tmp_path_factory.mktemp("slice_propagation_run"))


def test_training_saves_a_plain_state_dict(trained: Path) -> None:
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.startswith("module.") for k in state)


def _reoriented_case(tiny_phantoms: Path, out: Path) -> tuple[Path, Path, np.ndarray, int]:
    """A phantom stored with a flipped, permuted (non-RAS) affine and an annotation of the kidney's middle slice.

    Returns image path, annotation path, the annotation array as stored, and its slice axis in the stored array.
    """
    image = nib.load(tiny_phantoms / "imagesTr" / "phantom_000.nii.gz")
    label = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz").dataobj)
    kidney = (label == 3).astype(np.uint8)
    zs = np.flatnonzero(kidney.any(axis=(0, 1)))
    middle = int((zs[0] + zs[-1] + 1) // 2)
    annotation = np.zeros_like(kidney)
    annotation[..., middle] = kidney[..., middle]
    # store as (z, y, x) with x flipped: array axis 0 runs along S.
    perm = np.eye(4)[[2, 1, 0, 3]].T
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    flip[2, 3] = kidney.shape[0] - 1
    affine = image.affine @ perm @ flip
    stored_img = np.flip(np.transpose(np.asarray(image.dataobj), (2, 1, 0)), axis=2).copy()
    stored_ann = np.flip(np.transpose(annotation, (2, 1, 0)), axis=2).copy()
    img_path, ann_path = out / "case.nii.gz", out / "case_annotation.nii.gz"
    nib.save(nib.Nifti1Image(stored_img, affine), img_path)
    nib.save(nib.Nifti1Image(stored_ann, affine), ann_path)
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    return img_path, ann_path, stored_ann, 0


def test_inference_returns_mask_in_input_space_with_user_slice_untouched(
    trained: Path, tiny_phantoms: Path, tmp_path: Path
) -> None:
    img_path, ann_path, stored_ann, slice_axis = _reoriented_case(tiny_phantoms, tmp_path)
    override = tmp_path / "datalist.json"
    override.write_text(json.dumps({"datalist": [{"image": str(img_path), "annotation": str(ann_path)}]}))
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
    assert [p.name for p in written] == ["case_propagated.nii.gz"]
    result = nib.load(written[0])
    source = nib.load(img_path)
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
    mask = np.asarray(result.dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    annotated = np.flatnonzero(stored_ann.any(axis=(1, 2)))
    assert annotated.size == 1
    k = int(annotated[0])
    np.testing.assert_array_equal(np.take(mask, k, axis=slice_axis), np.take(stored_ann, k, axis=slice_axis))
    assert np.asarray(nib.load(ann_path).dataobj).sum() == stored_ann.sum()  # the user's file is not modified


def test_evaluate_records_seen_and_unseen_rounds(trained: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
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
    with open(tmp_path / "interactive_nearest" / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["group"] for r in rows} == {"seen", "unseen"}
    assert {r["round"] for r in rows} == {"1", "2"}
    assert (tmp_path / "interactive_nearest" / "curves.png").stat().st_size > 0
    first_round = [r for r in rows if r["round"] == "1"]
    assert all(r["n_interactions"] == "1" for r in first_round)  # one annotated slice
