"""In-process tests of the active-learning strategies and scoring methods (no server; needs the ``label`` extra).

A MONAI Label ``LocalDatastore`` on the tiny phantoms (``phantom_003`` and ``phantom_004`` unlabelled) plus a corrupt
image ``zz_corrupt``, and the repository's ``active_learning`` bundle with its shipped weights.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("monailabel")

from monailabel.datastore.local import LocalDatastore

from common.active_learning.strategies import STRATEGIES, score_cases
from common.bundle.pipeline import BundleInferencePipeline
from common.monailabel.bundles import discover_bundles
from common.monailabel.infer import BundleInteractionInferTask
from common.monailabel.strategies import (
    CaseScorer,
    build_active_learning,
    method_names,
    remember_box,
    request_options,
    stored_box,
)
from common.monailabel.studies import prepare_studies

UNLABELLED = ["phantom_003", "phantom_004"]
CORRUPT = "zz_corrupt"
WHOLE = [[0, 0, 0], [64, 64, 40]]
BOX = [[10, 12, 8], [40, 44, 30]]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> BundleInteractionInferTask:
    (bundle,) = discover_bundles(names=["active_learning"])
    return BundleInteractionInferTask(bundle, tmp_path_factory.mktemp("al_weights") / "model.pt")


@pytest.fixture
def store(tiny_phantoms: Path, tmp_path: Path) -> LocalDatastore:
    studies = tmp_path / "studies"
    prepare_studies(tiny_phantoms, studies, unlabelled=2)
    (studies / f"{CORRUPT}.nii.gz").write_bytes(b"not a NIfTI volume" * 8)
    return LocalDatastore(str(studies), extensions=("*.nii.gz",))


@pytest.fixture(scope="module")
def built(task: BundleInteractionInferTask) -> tuple[dict[str, Any], dict[str, Any]]:
    return build_active_learning({"active_learning": task}, taken=("random", "first"))


def test_method_names_keep_monai_labels_own_and_qualify_collisions() -> None:
    one = method_names(["al"], taken=("random", "first"))
    assert one == {
        "al_random": ("al", "random"),
        "al_first": ("al", "first"),
        "last": ("al", "last"),
        "entropy": ("al", "entropy"),
        "mc_dropout": ("al", "mc_dropout"),
        "tta": ("al", "tta"),
    }
    two = method_names(["a", "b"])
    assert two["entropy"] == ("a", "entropy")
    assert two["b_entropy"] == ("b", "entropy")
    assert len(two) == 2 * len(STRATEGIES)
    with pytest.raises(ValueError, match=r"named more than once: \['a'\]"):
        method_names(["a", "b", "a"])
    with pytest.raises(ValueError, match="'a_entropy' of bundle 'a' is already served"):
        method_names(["a"], taken=("entropy", "a_entropy"))


def test_request_options() -> None:
    assert request_options({}, "mc_dropout") == (0, 10)
    assert request_options({}, "tta") == (0, 8)
    assert request_options({"seed": 3, "samples": 4.0}, "entropy") == (3, 4)
    for bad, match in [
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": True}, "seed must be"),
        ({"samples": 1}, "samples must be an integer >= 2"),
        ({"samples": float("inf")}, "samples must be"),
        ({"samples": "4"}, "samples must be"),
        ({"samples": 2.5}, "samples must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            request_options(bad, "tta")


def test_remember_box_stores_one_box_per_bundle(store: LocalDatastore, caplog: pytest.LogCaptureFixture) -> None:
    assert remember_box(store, "phantom_003", "active_learning", BOX)
    assert remember_box(store, "phantom_003", "bifseg", [[1, 1, 5], [9, 9, 6]])
    assert remember_box(store, "phantom_003", "active_learning", WHOLE)  # the last box wins
    info = store.get_image_info("phantom_003")
    assert info["box"] == {"active_learning": WHOLE, "bifseg": [[1, 1, 5], [9, 9, 6]]}
    assert stored_box(info, "active_learning") == WHOLE
    assert stored_box(info, "other") is None
    assert not remember_box(store, "phantom_003", "active_learning", [1, 9, 2, 8, 3, 7])  # a raw roi
    with caplog.at_level(logging.WARNING, logger="common.monailabel.strategies"):
        assert not remember_box(store, "no_such_image", "active_learning", BOX)
    assert "could not store the box of no_such_image" in caplog.text


def test_network_input_is_the_bundles_preprocessing_inside_the_box(
    task: BundleInteractionInferTask, tiny_phantoms: Path
) -> None:
    scorer = CaseScorer(task, device="cpu")
    pipeline = BundleInferencePipeline.from_bundle(task.bundle.root, device="cpu")  # monai.bundle run's parts
    image = str(tiny_phantoms / "imagesTr" / "phantom_003.nii.gz")
    for box, used, source in ((None, WHOLE, "image"), (BOX, BOX, "user")):
        case = scorer.network_input(image, box)
        assert (case.box, case.box_source) == (used, source)
        reference = pipeline.preprocess({"image": image, "box": used})["image"]
        assert reference.shape[0] == 2  # the crop and the scribble codes; the network reads the crop
        assert case.x.dtype == torch.float32
        assert max(case.x.shape[2:]) == 64  # resized: longest side 64
        torch.testing.assert_close(case.x, reference.as_tensor()[None, :1].float())
    assert abs(float(case.x.mean())) < 0.05  # z-scored inside the box (then resized)
    with pytest.raises(ValueError, match="lies outside the image"):
        scorer.network_input(image, [[100, 0, 0], [110, 10, 10]])


def test_strategies_pick_the_best_readable_unlabelled_image(
    built: tuple[dict[str, Any], dict[str, Any]], store: LocalDatastore, task: BundleInteractionInferTask
) -> None:
    strategies, _ = built
    assert sorted(strategies) == [
        "active_learning_first",
        "active_learning_random",
        "entropy",
        "last",
        "mc_dropout",
        "tta",
    ]
    remember_box(store, "phantom_004", "active_learning", BOX)
    last = strategies["last"]({"strategy": "last"}, store)
    assert last["id"] == "phantom_004"
    assert set(last["skipped"]) == {CORRUPT}  # last by id, unreadable: skipped
    assert (last["scored_with"]["box"], last["scored_with"]["box_source"]) == (BOX, "user")
    assert strategies["active_learning_first"]({}, store)["id"] == "phantom_003"

    result = strategies["entropy"]({}, store)
    assert set(result["skipped"]) == {CORRUPT}
    assert result["candidates"] == 3
    scorer = CaseScorer(task, device="cpu")
    network, path, _ = scorer.network()
    inputs = [scorer.network_input(store.get_image_uri("phantom_003"), None).x]
    inputs.append(scorer.network_input(store.get_image_uri("phantom_004"), BOX).x)
    expected = score_cases("entropy", network, inputs)
    assert result["id"] == UNLABELLED[int(np.argmax(expected))]
    assert result["score"] == pytest.approx(float(expected.max()), rel=1e-6)
    assert result["scored_with"]["weights"] == str(path) == str(task.bundle.weights)


def test_scoring_stores_records_and_the_strategy_reuses_fresh_ones(
    built: tuple[dict[str, Any], dict[str, Any]],
    store: LocalDatastore,
    task: BundleInteractionInferTask,
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategies, scoring = built
    remember_box(store, "phantom_004", "active_learning", BOX)
    with caplog.at_level(logging.WARNING, logger="common.monailabel.strategies"):
        result = scoring["tta"]({"samples": 2}, store)
    assert f"tta: skipping image {CORRUPT}" in caplog.text
    assert set(result["scores"]) == set(UNLABELLED)
    assert (result["reused"], list(result["skipped"])) == ([], [CORRUPT])
    records = {i: store.get_image_info(i)["scores"]["tta"] for i in UNLABELLED}
    assert (records["phantom_003"]["box"], records["phantom_003"]["box_source"]) == (WHOLE, "image")
    assert (records["phantom_004"]["box"], records["phantom_004"]["box_source"]) == (BOX, "user")
    assert {r["weights"] for r in records.values()} == {str(task.bundle.weights)}
    assert all(r["samples"] == 2 and r["seed"] == 0 and r["strategy"] == "tta" for r in records.values())
    assert "scores" not in store.get_image_info(CORRUPT)

    again = scoring["tta"]({"samples": 2}, store)
    assert sorted(again["reused"]) == UNLABELLED  # fresh: not recomputed
    picked = strategies["tta"]({"samples": 2}, store)
    assert picked["reused"] == 2
    assert picked["score"] == max(r["score"] for r in records.values())
    assert scoring["tta"]({"samples": 2, "seed": 1}, store)["reused"] == []  # other options: recomputed

    remember_box(store, "phantom_003", "active_learning", BOX)  # a new box: that image is scored again
    after_box = scoring["tta"]({"samples": 2, "seed": 1}, store)
    assert after_box["reused"] == ["phantom_004"]
    assert store.get_image_info("phantom_003")["scores"]["tta"]["box_source"] == "user"

    trained = Path(task.trained_weights)
    shutil.copyfile(task.bundle.weights, trained)  # the app's retrained weights: every score is stale
    try:
        fresh = scoring["tta"]({"samples": 2, "seed": 1}, store)
        assert (fresh["reused"], fresh["weights"]) == ([], str(trained))
        assert store.get_image_info("phantom_004")["scores"]["tta"]["weights"] == str(trained)
    finally:
        os.remove(trained)


def test_nothing_unlabelled_gives_the_empty_answer(
    built: tuple[dict[str, Any], dict[str, Any]], store: LocalDatastore, tiny_phantoms: Path
) -> None:
    strategies, scoring = built
    for image in [*UNLABELLED, CORRUPT]:
        store.save_label(image, str(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz"), "final", {})
    assert all(strategy({}, store) is None for strategy in strategies.values())
    assert scoring["entropy"]({}, store)["scores"] == {}


def test_only_corrupt_images_left_gives_the_empty_answer(
    built: tuple[dict[str, Any], dict[str, Any]], store: LocalDatastore, tiny_phantoms: Path
) -> None:
    strategies, _ = built
    for image in UNLABELLED:
        store.save_label(image, str(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz"), "final", {})
    assert strategies["last"]({}, store) is None
    assert strategies["entropy"]({}, store) is None


def test_bad_options_raise(built: tuple[dict[str, Any], dict[str, Any]], store: LocalDatastore) -> None:
    strategies, scoring = built
    with pytest.raises(ValueError, match="samples must be an integer >= 2"):
        strategies["mc_dropout"]({"samples": 1}, store)
    with pytest.raises(ValueError, match="force must be true or false"):
        scoring["entropy"]({"force": "yes"}, store)


def test_bundles_without_a_box_get_no_strategies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (bundle,) = discover_bundles(names=["slice_propagation"])
    task = BundleInteractionInferTask(bundle, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="need a pre-processing with a box transform"):
        CaseScorer(task)
    assert build_active_learning({"slice_propagation": task}) == ({}, {})  # no "monailabel" section: not AL
