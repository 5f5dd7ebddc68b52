from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from common.data.msd import (
    MSDDataset,
    case_id_from_path,
    load_label_array,
    load_msd_dataset,
    parse_labels,
    validate_case,
)


def test_loads_fake_task09_spleen_like_the_real_one(spleen_task: Path) -> None:
    ds = load_msd_dataset(spleen_task, check_content=True)
    assert isinstance(ds, MSDDataset)
    assert ds.root == spleen_task.absolute()
    assert ds.name == "Spleen"
    assert ds.labels == {0: "background", 1: "spleen"}
    assert ds.seen == ("spleen",)
    assert ds.unseen == ()
    assert ds.structures() == {1: "spleen"}
    assert ds.structures("unseen") == {}
    assert ds.group_of("spleen") == "seen"
    assert ds.group_of(1) == "seen"
    # the ._ junk files are ignored: exactly the listed cases, in dataset.json order, absolute normalised paths
    assert [i["case_id"] for i in ds.training] == [f"spleen_{i}" for i in range(2, 7)]
    first = ds.training[0]
    assert set(first) == {"image", "label", "case_id"}
    assert first["image"] == str(spleen_task.absolute() / "imagesTr" / "spleen_2.nii.gz")
    assert first["label"] == str(spleen_task.absolute() / "labelsTr" / "spleen_2.nii.gz")
    assert "/./" not in first["image"]
    # "test" as a list of strings
    assert ds.test == [
        {"image": str(spleen_task.absolute() / "imagesTs" / f"test_{i}.nii.gz"), "case_id": f"test_{i}"}
        for i in range(2)
    ]
    assert ds.validation == []
    assert ds.properties["modality"] == {"0": "CT"}
    assert (spleen_task / "imagesTr" / "._spleen_2.nii.gz").exists()


def test_root_may_be_the_dataset_json_file(spleen_task: Path) -> None:
    assert load_msd_dataset(spleen_task / "dataset.json") == load_msd_dataset(spleen_task)


def test_structure_split_groups(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task, check_content=True)
    assert ds.seen == ("liver", "spleen", "kidney_left")
    assert ds.unseen == ("kidney_right",)
    assert ds.structures("seen") == {1: "liver", 2: "spleen", 3: "kidney_left"}
    assert ds.structures("unseen") == {4: "kidney_right"}
    assert ds.group_of("kidney_right") == "unseen"
    assert ds.group_of(4) == "unseen"
    assert ds.group_of("liver") == "seen"
    assert "structure_split" not in ds.properties


def test_structure_lookup_errors(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    with pytest.raises(ValueError, match=r"unknown structure 'aorta'.*'kidney_right'"):
        ds.group_of("aorta")
    with pytest.raises(ValueError, match="unknown structure 0"):
        ds.group_of(0)  # background is not a structure
    with pytest.raises(ValueError, match="group must be"):
        ds.structures("train")
    assert ds.label_value("spleen") == 2


def test_validation_list_is_parsed(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    def move_last_to_validation(data: dict[str, Any]) -> None:
        data["validation"] = [data["training"].pop()]

    msd_tools.edit_json(multi_task, move_last_to_validation)
    ds = load_msd_dataset(multi_task, check_content=True)
    assert [i["case_id"] for i in ds.training] == ["case_a", "case_b"]
    assert [i["case_id"] for i in ds.validation] == ["case_c"]
    assert ds.validation[0]["label"].endswith("labelsTr/case_c.nii.gz")


def test_case_id_from_path() -> None:
    assert case_id_from_path("./imagesTr/spleen_2.nii.gz") == "spleen_2"
    assert case_id_from_path("/a/b/BRATS_001.nii") == "BRATS_001"
    assert case_id_from_path(Path("x/phantom_000.nii.gz")) == "phantom_000"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"0": "background", "one": "liver"}, "'one' is not an integer"),
        ({"1": "liver", "2": "spleen"}, "no background entry '0'"),
        ({"0": "background"}, "no structure besides background"),
        ({"0": "background", "1": "liver", "2": "liver"}, r"unique.*'liver'"),
        ({"0": "background", "1": ""}, "non-empty string name"),
        ({"0": "background", "-1": "x"}, "negative"),
        (["background", "liver"], "non-empty mapping"),
    ],
)
def test_parse_labels_errors(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_labels(raw, "dataset.json")


def test_parse_labels_sorts_and_converts() -> None:
    assert parse_labels({"2": "b", "0": "background", "1": "a"}) == {0: "background", 1: "a", 2: "b"}
    assert list(parse_labels({"2": "b", "0": "background", "1": "a"})) == [0, 1, 2]


def test_missing_root_and_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset folder not found: .*nowhere"):
        load_msd_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no dataset\.json in dataset folder .*empty"):
        load_msd_dataset(tmp_path / "empty")


def test_invalid_json_names_the_file(spleen_task: Path) -> None:
    (spleen_task / "dataset.json").write_text('{"name": "Spleen", "labels": {')
    with pytest.raises(ValueError, match=r"invalid JSON in .*Task09_Spleen/dataset.json"):
        load_msd_dataset(spleen_task)
    (spleen_task / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must contain a JSON object"):
        load_msd_dataset(spleen_task)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("labels"), r"dataset.json: missing required keys \['labels'\]"),
        (_drop("training"), r"lists no case: 'test' is empty; list labelled cases under 'training'"),
        (_set("training", []), r"lists no case: 'training', 'test' are all empty"),
        (lambda data: [data.pop("training"), data.pop("test")], r"no case list: .*'training' list .*'test' list"),
        (_drop("name"), r"missing required keys \['name'\]"),
        (_set("labels", {"0": "background", "x": "liver"}), "label key 'x' is not an integer"),
        (_set("labels", {"1": "liver", "2": "spleen", "3": "kidney_left", "4": "kidney_right"}), "no background"),
        (_set("structure_split", {"seen": ["liver", "aorta"], "unseen": []}), r"names \['aorta'\] which are not"),
        (
            _set("structure_split", {"seen": ["liver", "spleen", "kidney_left"], "unseen": ["kidney_right", "liver"]}),
            r"\['liver'\] are both seen and unseen",
        ),
        (
            _set("structure_split", {"seen": ["liver", "spleen"], "unseen": ["kidney_right"]}),
            r"\['kidney_left'\] are neither seen nor unseen",
        ),
        (_set("structure_split", {"seen": ["liver"]}), "'structure_split' must be"),
        (_set("structure_split", {"seen": "liver", "unseen": []}), "must be a list of structure names"),
        (_set("training", {"image": "x"}), "'training' must be a list"),
        (_set("training", [{"image": "./imagesTr/case_a.nii.gz"}]), r"'training'\[0\] lacks \['label'\]"),
        (_set("training", ["./imagesTr/case_a.nii.gz"]), r"'training'\[0\] must be an object"),
        (_set("training", [{"image": 3, "label": "./labelsTr/case_a.nii.gz"}]), "must be a file path string"),
        (_set("test", [{"label": "x"}]), r"'test'\[0\] lacks \['image'\]"),
        (
            lambda data: data["training"].append(dict(data["training"][0])),
            "case id 'case_a' appears twice in 'training'",
        ),
        (
            lambda data: data.__setitem__("validation", [data["training"][0]]),
            r"cases \['case_a'\] are in both 'training' and 'validation'",
        ),
    ],
)
def test_bad_dataset_json_gives_clear_error(
    multi_task: Path, msd_tools: SimpleNamespace, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    msd_tools.edit_json(multi_task, edit)
    with pytest.raises(ValueError, match=message) as info:
        load_msd_dataset(multi_task, check_files=False)
    assert str(multi_task / "dataset.json") in str(info.value)


def test_dataset_with_only_a_test_list_loads(spleen_task: Path, msd_tools: SimpleNamespace) -> None:
    """A folder of unlabelled images (``"test"`` only, no ``"training"``, as some MSD-style releases ship) loads for
    inference: no training case, the test images listed, and their files checked."""

    def keep_only_test(data: dict[str, Any]) -> None:
        del data["training"], data["numTraining"]

    msd_tools.edit_json(spleen_task, keep_only_test)
    ds = load_msd_dataset(spleen_task, check_content=True)
    assert ds.training == []
    assert ds.validation == []
    assert [i["case_id"] for i in ds.test] == ["test_0", "test_1"]
    assert ds.test[0]["image"] == str(spleen_task.absolute() / "imagesTs" / "test_0.nii.gz")
    assert ds.structures() == {1: "spleen"}
    assert "training" not in ds.properties
    assert "test" not in ds.properties
    (spleen_task / "imagesTs" / "test_1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"'test' case 'test_1' lists image"):
        load_msd_dataset(spleen_task)


def test_training_only_dataset_still_loads(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    msd_tools.edit_json(multi_task, lambda data: data.pop("test"))
    ds = load_msd_dataset(multi_task, check_content=True)
    assert len(ds.training) == 3
    assert ds.test == []


def test_missing_listed_file(spleen_task: Path) -> None:
    (spleen_task / "labelsTr" / "spleen_4.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"'training' case 'spleen_4' lists label .*labelsTr/spleen_4.nii.gz"):
        load_msd_dataset(spleen_task)
    ds = load_msd_dataset(spleen_task, check_files=False)  # the listing alone still parses
    assert len(ds.training) == 5


def test_missing_test_image(spleen_task: Path) -> None:
    (spleen_task / "imagesTs" / "test_1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"'test' case 'test_1' lists image .*imagesTs/test_1.nii.gz"):
        load_msd_dataset(spleen_task)


def test_check_content_shape_mismatch(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    msd_tools.save_nifti(multi_task / "imagesTr" / "case_b.nii.gz", np.zeros((24, 24, 15), np.float32))
    load_msd_dataset(multi_task)  # headers are not compared without check_content
    with pytest.raises(ValueError, match=r"shape mismatch: image .*case_b.nii.gz has spatial shape \(24, 24, 15\)"):
        load_msd_dataset(multi_task, check_content=True)


def test_check_content_accepts_multimodal_4d_image(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    msd_tools.save_nifti(multi_task / "imagesTr" / "case_b.nii.gz", np.zeros((24, 24, 16, 4), np.float32))
    load_msd_dataset(multi_task, check_content=True)
    msd_tools.save_nifti(multi_task / "imagesTr" / "case_b.nii.gz", np.zeros((24, 24, 15, 4), np.float32))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_msd_dataset(multi_task, check_content=True)


def test_check_content_affine_mismatch_with_tolerance(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    label = msd_tools.MULTI_CASES["case_a"]
    path = multi_task / "labelsTr" / "case_a.nii.gz"
    nearly = msd_tools.AFFINE.copy()
    nearly[0, 3] += 1e-5  # float32 header rounding level: accepted
    msd_tools.save_nifti(path, label, nearly)
    load_msd_dataset(multi_task, check_content=True)
    shifted = msd_tools.AFFINE.copy()
    shifted[2, 3] += 0.5
    msd_tools.save_nifti(path, label, shifted)
    with pytest.raises(ValueError, match=r"affine mismatch \(max difference 0.5 mm.*case_a.nii.gz"):
        load_msd_dataset(multi_task, check_content=True)


def test_check_content_unknown_label_values(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    label = msd_tools.MULTI_CASES["case_b"].copy()
    label[0, 0, 0] = 7
    label[1, 0, 0] = 9
    msd_tools.save_nifti(multi_task / "labelsTr" / "case_b.nii.gz", label)
    load_msd_dataset(multi_task)
    with pytest.raises(ValueError, match=r"labelsTr/case_b.nii.gz contains values \[7, 9\] that are not in"):
        load_msd_dataset(multi_task, check_content=True)


def test_check_content_unreadable_file(multi_task: Path) -> None:
    (multi_task / "labelsTr" / "case_c.nii.gz").write_bytes(b"this is not a nifti file")
    with pytest.raises(ValueError, match=r"cannot read NIfTI file .*labelsTr/case_c.nii.gz"):
        load_msd_dataset(multi_task, check_content=True)


def test_validate_case_directly(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    image = multi_task / "imagesTr" / "case_a.nii.gz"
    label = multi_task / "labelsTr" / "case_a.nii.gz"
    validate_case(image, label, msd_tools.MULTI_LABELS)
    validate_case(image, label, [0, 1, 2, 4])  # an iterable of values works too
    with pytest.raises(ValueError, match=r"contains values \[4\]"):
        validate_case(image, label, [0, 1, 2])
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz"):
        validate_case(multi_task / "missing.nii.gz", label, [0, 1, 2, 4])


def test_float_labels_are_accepted_if_integral(multi_task: Path, msd_tools: SimpleNamespace) -> None:
    path = multi_task / "labelsTr" / "case_a.nii.gz"
    msd_tools.save_nifti(path, msd_tools.MULTI_CASES["case_a"].astype(np.float32))
    loaded = load_label_array(path)
    assert np.issubdtype(loaded.dtype, np.integer)
    np.testing.assert_array_equal(loaded, msd_tools.MULTI_CASES["case_a"])
    bad = msd_tools.MULTI_CASES["case_a"].astype(np.float32)
    bad[0, 0, 0] = 0.5
    msd_tools.save_nifti(path, bad)
    with pytest.raises(ValueError, match=r"case_a.nii.gz has non-integer values, e.g. \[0.5\]"):
        load_msd_dataset(multi_task, check_content=True)


def test_copied_folder_gives_same_cases(spleen_task: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(spleen_task, tmp_path / "elsewhere" / "Task09_Spleen")
    a = load_msd_dataset(spleen_task)
    b = load_msd_dataset(copy)
    assert [i["case_id"] for i in a.training] == [i["case_id"] for i in b.training]
    assert all(i["image"].startswith(str(Path(copy).absolute())) for i in b.training)
    assert json.loads((copy / "dataset.json").read_text())["numTraining"] == 5
