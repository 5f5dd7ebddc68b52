"""Tests of which bundles the MONAI Label app serves (no ``monailabel`` needed)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from common.monailabel import DEFAULT_BUNDLE_KINDS, discover_bundles, get_kind
from common.monailabel.bundles import REQUIRED_PARTS, default_bundles_dir, parse_kinds, parse_names

ROOT = Path(__file__).resolve().parents[3]


def _bundle(root: Path, name: str, parts: tuple[str, ...] = REQUIRED_PARTS) -> Path:
    """A bundle folder holding the files ``parts`` (contents do not matter for discovery)."""
    for part in parts:
        path = root / name / part
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": name}) if part.endswith(".json") else "weights")
    return root / name


def test_default_bundles_dir_is_the_repository_folder() -> None:
    assert default_bundles_dir() == ROOT / "bundles"


def test_repository_slice_propagation_bundle_is_served_with_its_kind() -> None:
    served = {b.name: b for b in discover_bundles()}
    bundle = served["slice_propagation"]
    assert bundle.kind is get_kind("slice_propagation")
    assert bundle.root == ROOT / "bundles" / "slice_propagation"
    assert bundle.weights.is_file()
    assert bundle.train_config.is_file()
    assert bundle.metadata()["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "structure"
    assert set(served) <= set(DEFAULT_BUNDLE_KINDS)


def test_discovery_skips_incomplete_and_unmapped_bundles_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _bundle(tmp_path, "slice_propagation")
    _bundle(tmp_path, "deepgrow_clicks", parts=("configs/inference.json",))  # weights not trained yet
    _bundle(tmp_path, "my_segmenter")  # no kind for it
    (tmp_path / "notes").mkdir()  # not a bundle at all
    with caplog.at_level(logging.WARNING, logger="common.monailabel.bundles"):
        served = discover_bundles(tmp_path)
    assert [b.name for b in served] == ["slice_propagation"]
    assert "deepgrow_clicks: missing ['configs/metadata.json', 'models/model.pt']" in caplog.text
    assert "my_segmenter: no interaction kind" in caplog.text


def test_kinds_option_plugs_a_bundle_in_by_configuration(tmp_path: Path) -> None:
    _bundle(tmp_path, "my_clicker")
    _bundle(tmp_path, "slice_propagation")
    served = discover_bundles(tmp_path, kinds=parse_kinds("my_clicker:clicks, slice_propagation:clicks"))
    assert [(b.name, b.kind.name) for b in served] == [("my_clicker", "clicks"), ("slice_propagation", "clicks")]


def test_names_select_bundles_and_must_be_complete(tmp_path: Path) -> None:
    _bundle(tmp_path, "slice_propagation")
    _bundle(tmp_path, "deepgrow_clicks", parts=("configs/inference.json", "configs/metadata.json"))
    assert [b.name for b in discover_bundles(tmp_path, names=["slice_propagation"])] == ["slice_propagation"]
    with pytest.raises(FileNotFoundError, match=r"'deepgrow_clicks'.*missing \['models/model.pt'\]"):
        discover_bundles(tmp_path, names=["deepgrow_clicks"])
    with pytest.raises(FileNotFoundError, match=r"no bundle 'nope'.*\['deepgrow_clicks', 'slice_propagation'\]"):
        discover_bundles(tmp_path, names=["nope"])


def test_a_named_bundle_without_kind_says_how_to_give_one(tmp_path: Path) -> None:
    _bundle(tmp_path, "my_segmenter")
    with pytest.raises(ValueError, match="--conf kinds 'my_segmenter:<kind>'"):
        discover_bundles(tmp_path, names=["my_segmenter"])


def test_nothing_to_serve_raises(tmp_path: Path) -> None:
    _bundle(tmp_path, "slice_propagation", parts=("configs/inference.json",))
    with pytest.raises(ValueError, match="no bundle to serve"):
        discover_bundles(tmp_path)


def test_missing_bundles_folder_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--conf bundles"):
        discover_bundles(tmp_path / "absent")


def test_repository_bundle_copied_elsewhere_is_served_from_there(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "bundles" / "slice_propagation" / "configs", tmp_path / "slice_propagation" / "configs")
    shutil.copytree(ROOT / "bundles" / "slice_propagation" / "models", tmp_path / "slice_propagation" / "models")
    (bundle,) = discover_bundles(tmp_path)
    assert bundle.root == (tmp_path / "slice_propagation").resolve()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, {}),
        ("", {}),
        ("a:clicks", {"a": "clicks"}),
        (" a : clicks , b:slice_propagation ,", {"a": "clicks", "b": "slice_propagation"}),
        ('{"a": "clicks"}', {"a": "clicks"}),
        ({"a": "clicks"}, {"a": "clicks"}),
    ],
)
def test_parse_kinds_forms(spec: object, expected: dict[str, str]) -> None:
    assert parse_kinds(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("a=clicks", "must look like bundle_name:kind_name"),
        ("a:", "must look like bundle_name:kind_name"),
        ('{"a": ', "not a valid JSON object"),
        ('{"a": 1}', "must map bundle names to kind names"),
        ("a:boxes", "unknown interaction kind 'boxes'"),
    ],
)
def test_parse_kinds_errors(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_kinds(spec)


def test_parse_names() -> None:
    assert parse_names(None) is None
    assert parse_names(" , ") is None
    assert parse_names("a, b") == ["a", "b"]
    assert parse_names(["a"]) == ["a"]


def test_metadata_must_be_a_json_object(tmp_path: Path) -> None:
    _bundle(tmp_path, "slice_propagation")
    (bundle,) = discover_bundles(tmp_path)
    bundle.metadata_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        bundle.metadata()
    bundle.metadata_file.write_text("{")
    with pytest.raises(ValueError, match=r"metadata\.json is not valid JSON"):
        bundle.metadata()


def test_repository_active_learning_bundle_is_served_with_box_scribbles_and_retrains_from_general_weights() -> None:
    served = {b.name: b for b in discover_bundles()}
    bundle = served["active_learning"]
    assert bundle.kind is get_kind("box_scribbles")
    assert bundle.retrain_from == "general_weights"
    assert served["slice_propagation"].retrain_from is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (None, None),
        ({}, None),
        ({"retrain_from": "latest"}, "latest"),
        ({"retrain_from": "general_weights", "description": "..."}, "general_weights"),
    ],
)
def test_retrain_from_reads_the_monailabel_section(tmp_path: Path, section: object, expected: str | None) -> None:
    _bundle(tmp_path, "slice_propagation")
    (bundle,) = discover_bundles(tmp_path)
    metadata = {"name": "x"} if section is None else {"name": "x", "monailabel": section}
    bundle.metadata_file.write_text(json.dumps(metadata))
    assert bundle.retrain_from == expected


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"retrain_from": "scratch"}, r"must be one of \['latest', 'general_weights'\], got 'scratch'"),
        ({"retrain_from": 1}, "must be one of"),
        (["general_weights"], '"monailabel" must be a JSON object'),
    ],
)
def test_bad_retrain_from_is_refused(tmp_path: Path, section: object, match: str) -> None:
    _bundle(tmp_path, "slice_propagation")
    (bundle,) = discover_bundles(tmp_path)
    bundle.metadata_file.write_text(json.dumps({"monailabel": section}))
    with pytest.raises(ValueError, match=match):
        _ = bundle.retrain_from
