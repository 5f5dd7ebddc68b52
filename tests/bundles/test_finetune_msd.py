"""The model cards' fine-tuning command on a real MSD task layout: the shipped weights, ``--finetune true``, a
``dataset.json`` as the Decathlon ships it (no ``structure_split``: every structure counts as seen)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.bundle import run_monai_bundle
from common.data import expand_structures, load_msd_dataset
from common.data.phantoms import PHANTOM_LABELS

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
BUNDLE_ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}  # as CI: 2 cores, no GPU

SPLEEN = next(value for value, name in PHANTOM_LABELS.items() if name == "spleen")
#: quick.json shrinks the networks; these overrides restore the shipped ones so that their weights load.
SHIPPED_NETWORK = {
    "deepgrow_clicks": ["--network_def#channels", "[16, 32, 64, 128, 256]"],
    "slice_propagation": ["--network_def#depth", "4", "--network_def#base_channels", "16"],
}


@pytest.fixture(scope="module")
def spleen_task(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``Task09_Spleen``-like folder from the tiny phantoms: the spleen as label 1, MSD's own ``dataset.json`` keys."""
    root = tmp_path_factory.mktemp("msd") / "Task09_Spleen"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for index, image in enumerate(sorted((tiny_phantoms / "imagesTr").glob("*.nii.gz"))):
        name = f"spleen_{index}.nii.gz"
        shutil.copy(image, root / "imagesTr" / name)
        label: nib.Nifti1Image = nib.load(str(tiny_phantoms / "labelsTr" / image.name))  # type: ignore[assignment]
        spleen = (np.asanyarray(label.dataobj) == SPLEEN).astype(np.uint8)
        nib.save(nib.Nifti1Image(spleen, label.affine), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    dataset = {
        "name": "Spleen", "description": "Spleen Segmentation", "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"}, "numTraining": len(training), "numTest": 0,
        "training": training, "test": [],
    }  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return root


def test_an_msd_task_is_all_seen(spleen_task: Path) -> None:
    dataset = load_msd_dataset(spleen_task)
    items = expand_structures(dataset.training, dataset, level="volume", group="seen")
    assert len(items) == len(dataset.training)
    assert {item["structure_name"] for item in items} == {"spleen"}


@pytest.mark.parametrize("bundle", sorted(SHIPPED_NETWORK))
def test_finetune_the_shipped_weights_on_an_msd_task(bundle: str, spleen_task: Path, tmp_path: Path) -> None:
    configs = BUNDLES_DIR / bundle / "configs"
    shipped = BUNDLES_DIR / bundle / "models" / "model.pt"
    before = shipped.read_bytes()
    mode = json.loads((configs / "inference.json").read_text())["intensity_mode"]  # what the shipped weights expect
    run_monai_bundle(
        ["run", "--config_file", repr([str(configs / "train.json"), str(configs / "quick.json")]),
         "--bundle_root", str(configs.parent), "--dataset_dir", str(spleen_task), "--finetune", "true",
         "--learning_rate", "1e-5", "--intensity_mode", mode, "--max_epochs", "1",
         "--output_dir", str(tmp_path / "runs"), "--ckpt_dir", str(tmp_path / "models"), *SHIPPED_NETWORK[bundle]],
        cwd=tmp_path, env=BUNDLE_ENV,
    )  # fmt: skip
    tuned = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    start = torch.load(shipped, weights_only=True)
    assert set(tuned) == set(start)  # the shipped network
    for key, value in start.items():  # started from the shipped weights: 1e-5 steps move them very little
        if value.is_floating_point() and "running" not in key:
            assert float((tuned[key] - value).abs().max()) < 1e-2, key
    assert shipped.read_bytes() == before  # the shipped weights are never written
