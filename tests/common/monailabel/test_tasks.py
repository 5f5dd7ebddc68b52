"""In-process tests of the MONAI Label task and app classes (no server; needs the ``label`` extra)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import SaveImaged, SqueezeDimd

pytest.importorskip("monailabel")

from monailabel.utils.others.class_utils import get_class_of_subclass_from_file

from common.monailabel.application import InteractiveSegApp, UnknownNameRoute, read_label_names
from common.monailabel.bundles import discover_bundles
from common.monailabel.infer import BundleInteractionInferTask, box_key_of, bundle_labels, parsed_box
from common.monailabel.train import TRAIN_PARAMS, BundleInteractionTrainTask, label_table

ROOT = Path(__file__).resolve().parents[3]
APP_MAIN = ROOT / "common" / "monailabel" / "app" / "main.py"


@pytest.fixture(scope="module")
def bundle() -> Any:
    (served,) = discover_bundles(names=["slice_propagation"])
    return served


@pytest.fixture(scope="module")
def infer_task(bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> BundleInteractionInferTask:
    return BundleInteractionInferTask(bundle, tmp_path_factory.mktemp("weights") / "model.pt")


def test_app_folder_main_exposes_the_app_class_without_path_tricks() -> None:
    assert get_class_of_subclass_from_file("main", str(APP_MAIN), "MONAILabelApp") is InteractiveSegApp
    assert "sys.path" not in APP_MAIN.read_text()


def test_infer_task_reports_kind_weights_and_viewer_type(infer_task: BundleInteractionInferTask, bundle: Any) -> None:
    info = infer_task.info()
    assert (info["type"], info["kind"], info["dimension"], info["labels"]) == (
        "scribbles",
        "slice_propagation",
        3,
        {"structure": 1},
    )
    assert info["weights"] == str(bundle.weights)
    assert info["version"] == bundle.metadata()["version"]


def test_infer_task_uses_the_bundle_pipeline_without_its_writer(infer_task: BundleInteractionInferTask) -> None:
    pre = [type(t).__name__ for t in infer_task.pre_transforms()]
    assert pre[:2] == ["LoadImaged", "EnsureChannelFirstd"]
    assert "CheckAnnotationd" in pre
    post = infer_task.post_transforms()
    assert not any(isinstance(t, SaveImaged) for t in post)
    assert isinstance(post[-1], SqueezeDimd)
    assert type(infer_task.inferer()).__name__ == "SlicePropagationInferer"


def test_infer_task_call_returns_a_uint8_mask_in_the_image_grid(
    infer_task: BundleInteractionInferTask, tiny_phantoms: Path, tmp_path: Path
) -> None:
    image = tiny_phantoms / "imagesTr" / "phantom_001.nii.gz"
    label = nib.load(str(tiny_phantoms / "labelsTr" / "phantom_001.nii.gz"))
    spleen = np.asarray(label.dataobj) == 2
    k = int(np.flatnonzero(spleen.any(axis=(0, 1))).mean())
    annotation = np.zeros(spleen.shape, dtype=np.uint8)
    annotation[..., k] = 2 * spleen[..., k]  # one segment exported with value 2: binarised by the kind
    upload = tmp_path / "upload.nii.gz"
    nib.save(nib.Nifti1Image(annotation, label.affine), str(upload))
    result_file, result = infer_task({"image": str(image), "label": str(upload)})
    try:
        out = nib.load(result_file)
        pred = np.asarray(out.dataobj)
        assert pred.dtype == np.uint8
        assert pred.shape == spleen.shape
        np.testing.assert_allclose(out.affine, label.affine, atol=1e-4)
        np.testing.assert_array_equal(pred[..., k], spleen[..., k])
        assert result["kind"] == "slice_propagation"
        assert result["bundle"] == "slice_propagation"
    finally:
        Path(result_file).unlink()


def test_infer_task_request_errors_are_value_errors(
    infer_task: BundleInteractionInferTask, tiny_phantoms: Path
) -> None:
    with pytest.raises(ValueError, match="multipart file 'label'"):
        infer_task({"image": str(tiny_phantoms / "imagesTr" / "phantom_001.nii.gz")})


def test_trained_weights_replace_the_shipped_ones_once_they_exist(bundle: Any, tmp_path: Path) -> None:
    trained = tmp_path / "model.pt"
    task = BundleInteractionInferTask(bundle, trained)
    assert task.get_path() == str(bundle.weights)
    shutil.copyfile(bundle.weights, trained)
    assert task.get_path() == str(trained)


@pytest.mark.parametrize(
    ("channel_def", "expected"),
    [
        ({"0": "background", "1": "structure"}, {"structure": 1}),
        ({"0": "Kidney"}, {"kidney": 1}),
        ({"0": "background", "1": "a", "2": "b"}, {"structure": 1}),
        ({}, {"structure": 1}),
    ],
)
def test_bundle_labels(channel_def: dict[str, str], expected: dict[str, int]) -> None:
    metadata = {"network_data_format": {"outputs": {"pred": {"channel_def": channel_def}}}}
    assert bundle_labels(metadata) == expected


@pytest.fixture(scope="module")
def train_task(bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> BundleInteractionTrainTask:
    return BundleInteractionTrainTask(bundle, tmp_path_factory.mktemp("trained") / "model.pt", {1: "liver"})


def test_train_task_options_come_from_the_bundle(train_task: BundleInteractionTrainTask) -> None:
    config = train_task.config()
    train = json.loads(train_task.bundle.train_config.read_text())
    assert config["max_epochs"] == train["max_epochs"]
    assert {k: config[k] for k in TRAIN_PARAMS} == {k: train[k] for k in TRAIN_PARAMS}
    assert "multi_gpu" not in config
    assert "gpus" not in config


def test_train_request_check_fills_defaults(train_task: BundleInteractionTrainTask) -> None:
    checked = train_task._check_request({"model": "slice_propagation", "learning_rate": 1e-3, "num_workers": 0})
    assert checked["max_epochs"] == 30
    assert checked["val_split"] == 0.2
    assert checked["multi_gpu"] is False
    assert checked["learning_rate"] == 1e-3
    assert checked["num_workers"] == 0


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"max_epochs": 0}, "max_epochs must be a positive integer"),
        ({"max_epochs": "1"}, "max_epochs must be a positive integer"),
        ({"val_split": 0}, r"val_split must be a number in \(0, 1\)"),
        ({"val_split": 1.0}, r"val_split must be a number in \(0, 1\)"),
        ({"slices_per_volume": 0}, "slices_per_volume must be an integer >= 1"),
        ({"slices_per_volume": 2.5}, "slices_per_volume must be an integer >= 1"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0"),
        ({"learning_rate": -1e-3}, "learning_rate must be positive"),
        ({"learning_rate": "fast"}, "learning_rate must be a number"),
    ],
)
def test_bad_train_requests_raise(train_task: BundleInteractionTrainTask, request_: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_task._check_request(request_)


def test_training_partitions_by_volume_then_expands_structures(
    train_task: BundleInteractionTrainTask, tiny_phantoms: Path
) -> None:
    items = [
        {"image": str(tiny_phantoms / "imagesTr" / f"phantom_{i:03d}.nii.gz"), "label": str(p)}
        for i, p in enumerate(sorted((tiny_phantoms / "labelsTr").glob("*.nii.gz")))
    ]
    train, val = BundleInteractionTrainTask(train_task.bundle, train_task.trained_weights)._partition_datalist(
        items, {"val_split": 0.2}
    )
    assert {i["label"] for i in train}.isdisjoint({i["label"] for i in val})
    assert len({i["label"] for i in train}) == 4
    assert len({i["label"] for i in val}) == 1
    assert {i["structure_name"] for i in train} == {f"label_{v}" for v in range(1, 11)}
    named = train_task._partition_datalist(items, {"val_split": 0.2})[0]
    assert {i["structure"] for i in named} == {1}
    assert named[0]["structure_name"] == "liver"


def test_training_needs_a_validation_volume(train_task: BundleInteractionTrainTask, tiny_phantoms: Path) -> None:
    items = [{"image": "a", "label": str(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz")}] * 2
    with pytest.raises(ValueError, match="both need at least one"):
        train_task._partition_datalist(items, {"val_split": 0.1})


def test_train_task_needs_model_pt_name(bundle: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be named model\.pt"):
        BundleInteractionTrainTask(bundle, tmp_path / "weights.pt")


def test_label_table(tiny_phantoms: Path) -> None:
    items = [{"label": str(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz")}]
    assert label_table(items) == {v: f"label_{v}" for v in range(1, 11)}
    assert label_table(items, {0: "background", 2: "spleen"}) == {2: "spleen"}


def test_label_table_of_empty_labels_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="no structure"):
        label_table([{"label": str(path)}])


def test_read_label_names(tmp_path: Path) -> None:
    assert read_label_names(str(tmp_path)) is None
    assert read_label_names("http://dicomweb.example/studies") is None
    (tmp_path / "labels.json").write_text('{"0": "background", "4": "kidney_right"}')
    assert read_label_names(str(tmp_path)) == {0: "background", 4: "kidney_right"}
    (tmp_path / "labels.json").write_text('["liver"]')
    with pytest.raises(ValueError, match="must be a JSON object"):
        read_label_names(str(tmp_path))


def test_box_bundles_report_the_box_they_used(infer_task: BundleInteractionInferTask, tmp_path: Path) -> None:
    assert infer_task.box_key is None  # slice propagation reads no box
    (bundle,) = discover_bundles(names=["active_learning"])
    task = BundleInteractionInferTask(bundle, tmp_path / "model.pt")
    assert task.box_key == "box" == box_key_of(task.pre_transforms())
    assert (task.info()["type"], task.info()["dimension"]) == ("scribbles", 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]),
        (((0, 0), (5, 5)), [[0, 0], [5, 5]]),
        ([np.int64(1), np.int64(9)], None),
        ([[1, 2, 3], [4, 5]], None),
        ([[4, 2, 3], [4, 5, 6]], None),  # zero width
        ([[-1, 2, 3], [4, 5, 6]], None),
        ([[1.0, 2, 3], [4, 5, 6]], None),
        ([[True, 2, 3], [4, 5, 6]], None),
        ([1, 4, 2, 5, 3, 6], None),  # a raw roi, not parsed yet
        (None, None),
    ],
)
def test_parsed_box(value: Any, expected: list[list[int]] | None) -> None:
    assert parsed_box(value) == expected


def test_active_learning_training_starts_from_the_general_weights(tmp_path: Path) -> None:
    (bundle,) = discover_bundles(names=["active_learning"])
    trained = tmp_path / "model.pt"
    shutil.copyfile(bundle.weights, trained)  # an earlier retraining
    task = BundleInteractionTrainTask(bundle, trained)
    assert task.retrain_from == "general_weights"
    assert task.latest_weights() == trained
    assert task.start_weights() == bundle.weights
    handlers: list[dict[str, Any]] = []
    task._load_checkpoint(str(trained), True, handlers)
    assert handlers[0]["load_path"] == str(bundle.weights)
    assert task.started_from == bundle.weights
    scratch: list[dict[str, Any]] = []
    task._load_checkpoint(str(trained), False, scratch)  # pretrained false: from scratch, no loader
    assert scratch == []


def test_other_bundles_keep_training_from_the_newest_weights(bundle: Any, tmp_path: Path) -> None:
    trained = tmp_path / "model.pt"
    task = BundleInteractionTrainTask(bundle, trained)
    assert (task.retrain_from, task.start_weights()) == ("latest", bundle.weights)
    shutil.copyfile(bundle.weights, trained)
    assert task.start_weights() == trained


def test_unknown_name_route_matches_only_unknown_names() -> None:
    from fastapi.routing import Match

    route = UnknownNameRoute("/scoring", lambda: {"entropy", "tta"}, "scoring method")

    def match(path: str, method: str = "POST") -> Any:
        return route.matches({"type": "http", "path": path, "method": method, "root_path": ""})[0]

    assert match("/scoring/nope") == Match.FULL
    assert match("/scoring/entropy") == Match.NONE  # MONAI Label's own endpoint answers known names
    assert match("/scoring/") == Match.NONE
    assert match("/scoring/nope", "GET") == Match.PARTIAL
