"""The bundle checks find the problems they are meant to find (each check fails on a broken bundle)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from common.bundle import (
    INFERENCE_IDS,
    REQUIRED_FILES,
    common_references,
    config_portability_problems,
    find_bundles,
    metadata_problems,
    missing_config_ids,
    missing_files,
    network_def_problems,
    read_config,
)

NET = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": 2, "out_channels": 2}
TENSOR = {
    "type": "image",
    "format": "hounsfield",
    "num_channels": 2,
    "spatial_shape": [256, 256],
    "dtype": "float32",
    "value_range": [-2.048, 2.048],
    "is_patch_data": False,
    "channel_def": {"0": "image", "1": "prior"},
}
METADATA: dict[str, Any] = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.1.0",
    "changelog": {"0.1.0": "first version"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2"},
    "task": "test",
    "description": "test bundle",
    "authors": "us",
    "copyright": "us",
    "network_data_format": {
        "inputs": {"image": TENSOR},
        "outputs": {"pred": dict(TENSOR, channel_def={"0": "bg", "1": "fg"})},
    },
}


def test_valid_metadata_has_no_problem() -> None:
    assert metadata_problems(METADATA) == []


def test_metadata_without_changelog_entry_for_version() -> None:
    meta = dict(METADATA, version="0.2.0")
    assert metadata_problems(meta) == ["metadata version '0.2.0' has no changelog entry"]


def test_metadata_schema_errors_name_the_field() -> None:
    meta = copy.deepcopy(METADATA)
    del meta["network_data_format"]["inputs"]["image"]["channel_def"]
    meta["version"] = "one"
    meta["changelog"]["one"] = "x"
    problems = metadata_problems(meta)
    assert any("channel_def" in p and "inputs/image" in p for p in problems)
    assert any(p.startswith("metadata schema: version") for p in problems)


def test_channel_def_must_match_num_channels() -> None:
    meta = copy.deepcopy(METADATA)
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 3
    assert metadata_problems(meta) == ["inputs.image: channel_def has 2 entries, num_channels is 3"]


def test_network_def_mismatch_is_reported() -> None:
    assert network_def_problems({"network_def": NET}, {"network_def": NET}) == []
    other = dict(NET, in_channels=3)
    assert "differs" in network_def_problems({"network_def": NET}, {"network_def": other})[0]
    assert "missing" in network_def_problems({}, {"network_def": NET})[0]


def test_missing_config_ids_are_listed() -> None:
    config = {"bundle_root": ".", "device": "cpu", "network_def": NET, "network": "$@network_def", "inferer": {}}
    assert missing_config_ids(config, INFERENCE_IDS) == [
        "missing config id 'preprocessing'",
        "missing config id 'postprocessing'",
    ]
    nested = {"train": {"trainer": {"max_epochs": 1}}}
    assert missing_config_ids(nested, ["train#trainer#max_epochs", "train#handlers"]) == [
        "missing config id 'train#handlers'"
    ]


def test_portability_problems() -> None:
    config = {
        "a": "%configs/train.json#network_def",
        "b": "/home/someone/data/Task09",
        "c": "$@bundle_root + '/models/model.pt'",
        "d": ["%network_def", "https://example.org/x"],
    }
    problems = config_portability_problems(config)
    assert problems == [
        "a: cross-file macro '%configs/train.json#network_def'",
        "b: absolute path '/home/someone/data/Task09'",
    ]


def test_common_references_deepest_first() -> None:
    config = {
        "imports": ["$import common"],
        "pre": {"_target_": "Compose", "transforms": [{"_target_": "common.data.structures.SelectStructured"}]},
        "ds": "$common.data.load_msd_dataset(@dataset_dir)",
        "other": "$monai.common.thing",  # not our package
    }
    assert common_references(config) == ["pre#transforms#0", "ds"]


def test_missing_files_and_find_bundles(tmp_path: Path) -> None:
    bundle = tmp_path / "bundles" / "b1"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    (tmp_path / "bundles" / "not_a_bundle").mkdir()
    assert find_bundles(tmp_path / "bundles") == [bundle]
    assert find_bundles(tmp_path / "nowhere") == []
    assert missing_files(bundle) == [f"missing file {f}" for f in REQUIRED_FILES if f != "configs/metadata.json"]


def test_read_config_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        read_config(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="JSON object"):
        read_config(tmp_path / "list.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        read_config(tmp_path / "missing.json")
