"""Training through a real MONAI Label server: ``POST /train/slice_propagation`` for one short epoch.

The weights land in the app's model folder (the bundle's ``models/model.pt`` is not touched) and the next inference
uses them. A server of its own, so that the inference tests always see the shipped weights. Needs the ``label``
extra (``monailabel``); skipped without it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("monailabel")

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "bundles" / "slice_propagation" / "models" / "model.pt"
# one short epoch on 3 training + 1 validation volumes of 64 x 64 x 40 (2 slices per structure and volume)
TRAIN_PARAMS = {"max_epochs": 1, "val_split": 0.25, "slices_per_volume": 2, "num_workers": 0}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_epoch_of_training_writes_app_weights_that_inference_then_uses(label_server: Any, tmp_path: Path) -> None:
    shipped = _sha256(SHIPPED)
    trained = label_server.app / "model" / "slice_propagation" / "model.pt"
    response = label_server.get("/train/")  # nothing ran yet
    assert response.status_code == 404

    import requests

    started = requests.post(f"{label_server.url}/train/slice_propagation", json=TRAIN_PARAMS, timeout=60)
    assert started.status_code == 200, started.text
    status = label_server.wait_for_training()
    details = "\n".join(status.get("details", []))
    assert status["status"] == "DONE", details[-4000:] + label_server.log_tail()
    assert "Epoch: 1/1" in details
    assert "val_mean_dice" in details
    assert f"Restored all variables from {SHIPPED}" in label_server.log_tail(10**7)  # fine-tuned from the shipped

    state = torch.load(trained, weights_only=True)
    reference = torch.load(SHIPPED, weights_only=True)
    assert state.keys() == reference.keys()
    assert any(not torch.equal(state[k], reference[k]) for k in state)  # the epoch changed the weights
    assert _sha256(SHIPPED) == shipped  # the bundle's own weights are untouched

    info = label_server.get("/info/").json()
    assert info["models"]["slice_propagation"]["weights"] == str(trained)

    label_image = nib.load(str(label_server.dataset / "labelsTr" / "phantom_004.nii.gz"))
    mask = np.asarray(label_image.dataobj) == 4
    k = int(np.flatnonzero(mask.any(axis=(0, 1))).mean())
    annotation = np.zeros(mask.shape, dtype=np.uint8)
    annotation[..., k] = mask[..., k]
    upload = tmp_path / "annotation.nii.gz"
    nib.save(nib.Nifti1Image(annotation, label_image.affine), str(upload))
    result = label_server.infer("slice_propagation", "phantom_004", label=upload, output="json")
    assert result.status_code == 200, result.text
    assert result.json()["weights"] == str(trained)


def test_train_request_with_unknown_model_is_refused(label_server: Any) -> None:
    import requests

    response = requests.post(f"{label_server.url}/train/no_such_model", json=TRAIN_PARAMS, timeout=60)
    assert response.status_code == 200  # MONAI Label starts the training process before the app sees the model
    status = label_server.wait_for_training()
    assert status["status"] == "ERROR"
    assert status["request"]["model"] == "no_such_model"
    assert "There is no model 'no_such_model'" in label_server.log_tail(10**7)
    label_server.assert_up()
