"""The active-learning loop on real NIfTI phantoms, the bundle's real configs and a tiny network.

The loop is run through ``bundles/active_learning`` (its ``inference.json`` and ``train.json`` with a 3-level network
of 4-8 channels on 24-voxel crops, so that a whole loop takes seconds): interrupted and resumed it must end in the
same state as an uninterrupted run (labels, records, weights); labels are never overwritten; unusable cases are
skipped with their reason; bad settings are refused with a message naming the problem.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from common.active_learning import ActiveLearningLoop, LoopSettings, LoopState, case_key, retrain_model, split_pool
from common.data import expand_structures, load_msd_dataset

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "active_learning"
TINY = {"network_def#filters": [4, 8, 8], "network_def#deep_supr_num": 0, "resize_size": 24}
FAST = {"n_per_round": 2, "scribble_rounds": 1, "retrain_iterations": 4, "samples": 3}


@pytest.fixture(scope="module")
def cases(tiny_phantoms: Path) -> list[dict[str, Any]]:
    dataset = load_msd_dataset(tiny_phantoms)
    return expand_structures(dataset.training, dataset, level="volume", structures=["kidney_right"])


@pytest.fixture(scope="module")
def general(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 'general model': a few steps on seen structures (never on the loop's kidney_right)."""
    dataset = load_msd_dataset(tiny_phantoms)
    seen = expand_structures(dataset.training, dataset, level="volume", group="seen")[:4]
    out = tmp_path_factory.mktemp("general") / "general.pt"
    retrain_model(BUNDLE, seen, out, None, iterations=4, seed=0, overrides=TINY, device="cpu")
    return out


def make_loop(cases: list[dict[str, Any]], general: Path, state_dir: Path, **settings: Any) -> ActiveLearningLoop:
    pool, heldout = split_pool(cases, 2, seed=0)
    return ActiveLearningLoop(
        BUNDLE,
        pool,
        heldout,
        state_dir,
        LoopSettings(**{**FAST, **settings}),
        general_weights=general,
        inference_overrides=TINY,
        train_overrides=TINY,
        device="cpu",
        progress=False,
    )


def weights_equal(a: Path, b: Path) -> bool:
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def comparable(state: LoopState) -> dict[str, Any]:
    """The state without timings and absolute paths."""
    annotated = [{k: v for k, v in r.items() if k not in ("seconds", "label")} for r in state.annotated]
    models = [{"round": m["round"], "cases": m["cases"], "heldout": m["heldout"]} for m in state.models]
    return {"annotated": annotated, "models": models, "remaining": state.remaining, "rng": state.rng}


@pytest.fixture(scope="module")
def full_run(cases: list[dict[str, Any]], general: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state_dir = tmp_path_factory.mktemp("full")
    make_loop(cases, general, state_dir, strategy="entropy").run()
    return state_dir


def test_loop_annotates_the_pool_retrains_and_reports(full_run: Path, cases: list[dict[str, Any]]) -> None:
    state = LoopState.load(full_run / "state.json")
    pool, _ = split_pool(cases, 2, seed=0)
    assert state.remaining == []
    assert state.skipped == []
    assert sorted(r["key"] for r in state.annotated) == sorted(case_key(c) for c in pool)
    # round 0 = general model, then one retraining after 2 cases and one for the last case
    assert [(m["round"], m["cases"]) for m in state.models] == [(0, 0), (1, 2), (2, 3)]
    for model in state.models[1:]:
        assert Path(model["weights"]).is_file()
        assert 0.0 <= model["heldout"]["mean_dice"] <= 1.0
        assert len(model["heldout"]["per_case"]) == 2
    for record in state.annotated:
        label = nib.load(record["label"])
        image = nib.load(next(c["image"] for c in pool if case_key(c) == record["key"]))
        assert label.shape == image.shape
        assert np.allclose(label.affine, image.affine)
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
        assert record["interactions"] >= 1
        assert record["rounds"] >= 1
        assert len(record["dice_per_round"]) == 2
    # entropy picks in decreasing score order among what was left: the first pick has the highest score then
    assert np.isfinite([r["score"] for r in state.annotated]).all()
    for name in ("report.json", "report.md", "learning_curves.png"):
        assert (full_run / name).stat().st_size > 0
    report = json.loads((full_run / "report.json").read_text())
    assert [p["cases"] for p in report["curve"]] == [0, 2, 3]


def test_interrupted_and_resumed_loop_ends_in_the_same_state(
    full_run: Path, cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    loop = make_loop(cases, general, tmp_path, strategy="entropy")
    first = loop.run(max_cases=1)  # interrupted after one case
    assert len(first.annotated) == 1
    assert len(first.remaining) == 2
    again = make_loop(cases, general, tmp_path, strategy="entropy").run(max_cases=1)  # a second interruption
    assert len(again.annotated) == 2
    resumed = make_loop(cases, general, tmp_path, strategy="entropy").run()
    reference = LoopState.load(full_run / "state.json")
    assert comparable(resumed) == comparable(reference)
    for mine, theirs in zip(resumed.models[1:], reference.models[1:], strict=True):
        assert weights_equal(Path(mine["weights"]), Path(theirs["weights"]))
    for mine, theirs in zip(resumed.annotated, reference.annotated, strict=True):
        a, b = nib.load(mine["label"]), nib.load(theirs["label"])
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def test_a_label_written_before_a_crash_is_adopted_not_redone(
    cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    loop = make_loop(cases, general, tmp_path, strategy="first", annotator="ground_truth")
    state = loop.run(max_cases=1)
    key = state.annotated[0]["key"]
    label = loop.label_file(key)
    before = label.read_bytes()
    # the crash: the label and its record are on disk, the state was not saved yet
    state.annotated.clear()
    state.remaining.insert(0, key)
    state.save(tmp_path / "state.json")
    resumed = make_loop(cases, general, tmp_path, strategy="first", annotator="ground_truth").run()
    assert resumed.annotated[0]["key"] == key
    assert label.read_bytes() == before
    assert len(resumed.annotated) == 3


def test_a_label_the_loop_did_not_write_is_never_overwritten(
    cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    loop = make_loop(cases, general, tmp_path, strategy="first", annotator="ground_truth")
    pool, _ = split_pool(cases, 2, seed=0)
    user_label = loop.label_file(case_key(pool[0]))
    user_label.parent.mkdir(parents=True)
    user_label.write_bytes(b"a user's own label")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        loop.run()
    assert user_label.read_bytes() == b"a user's own label"


def test_ground_truth_annotator_hands_in_the_label(cases: list[dict[str, Any]], general: Path, tmp_path: Path) -> None:
    state = make_loop(cases, general, tmp_path, strategy="last", annotator="ground_truth").run()
    pool, _ = split_pool(cases, 2, seed=0)
    assert [r["key"] for r in state.annotated] == [case_key(c) for c in reversed(pool)]  # "last" = pool order reversed
    for record, case in zip(state.annotated, reversed(pool), strict=True):
        truth = np.asarray(nib.load(case["label"]).dataobj) == case["structure"]
        assert np.array_equal(np.asarray(nib.load(record["label"]).dataobj).astype(bool), truth)
        assert record["interactions"] == 0
        assert record["final_dice"] == 1.0


def test_unusable_cases_are_skipped_with_their_reason(
    cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    pool, heldout = split_pool(cases, 2, seed=0)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file")
    no_label = dict(pool[0], case_id="no_label", structure=99, structure_name="absent")
    broken = dict(pool[1], case_id="broken", image=str(corrupt))
    loop = ActiveLearningLoop(
        BUNDLE,
        [*pool, no_label, broken],
        heldout,
        tmp_path / "loop",
        LoopSettings(**{**FAST, "annotator": "ground_truth", "strategy": "first"}),
        general_weights=general,
        inference_overrides=TINY,
        train_overrides=TINY,
        device="cpu",
        progress=False,
    )
    state = loop.run()
    reasons = {s["key"]: s["reason"] for s in state.skipped}
    assert set(reasons) == {case_key(no_label), case_key(broken)}
    assert "empty" in reasons[case_key(no_label)]
    assert "cannot read image" in reasons[case_key(broken)]
    assert len(state.annotated) == len(pool)
    assert state.remaining == []


def test_transfer_starts_from_the_general_weights_scratch_does_not(
    cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    frozen = {**TINY, "learning_rate": 0.0}  # no update: the result is the starting point
    items = [dict(c, structure=c["structure"]) for c in cases[:1]]
    retrain_model(BUNDLE, items, tmp_path / "transfer.pt", general, iterations=1, overrides=frozen, device="cpu")
    retrain_model(BUNDLE, items, tmp_path / "scratch.pt", None, iterations=1, overrides=frozen, device="cpu")
    assert weights_equal(tmp_path / "transfer.pt", general)
    assert not weights_equal(tmp_path / "scratch.pt", general)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pool": []}, "the pool is empty"),
        ({"heldout": []}, "the held-out set is empty"),
        ({"settings": {"n_per_round": 9}}, "n_per_round=9 is larger than the pool of 3"),
        ({"settings": {"strategy": "most_fun"}}, "unknown strategy 'most_fun'; strategies: random, first"),
        ({"settings": {"annotator": "intern"}}, "unknown annotator"),
        ({"settings": {"retrain_iterations": 0}}, "retrain_iterations must be an int >= 1"),
    ],
)
def test_bad_loop_input_is_refused(
    change: dict[str, Any], message: str, cases: list[dict[str, Any]], general: Path, tmp_path: Path
) -> None:
    pool, heldout = split_pool(cases, 2, seed=0)
    args: dict[str, Any] = {"pool": pool, "heldout": heldout, "settings": {}}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        ActiveLearningLoop(
            BUNDLE,
            args["pool"],
            args["heldout"],
            tmp_path,
            {**FAST, **args["settings"]},
            general_weights=general,
            inference_overrides=TINY,
            progress=False,
        )


def test_resume_with_other_settings_is_refused(cases: list[dict[str, Any]], general: Path, tmp_path: Path) -> None:
    make_loop(cases, general, tmp_path, strategy="first", annotator="ground_truth").run(max_cases=1)
    with pytest.raises(ValueError, match="other settings"):
        make_loop(cases, general, tmp_path, strategy="random", annotator="ground_truth").run()


def test_state_and_models_survive_in_a_copied_folder(full_run: Path, tmp_path: Path) -> None:
    """The state file is plain JSON: a copied run folder loads (reports and curves can be regenerated anywhere)."""
    copy = tmp_path / "copy"
    shutil.copytree(full_run, copy)
    state = LoopState.load(copy / "state.json")
    assert state.cases_in_last_model == 3
    (copy / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable active-learning loop state"):
        LoopState.load(copy / "state.json")


def test_curves_leave_out_a_constant_quantity(tmp_path: Path) -> None:
    import matplotlib.image

    from common.active_learning import plot_curves

    points = [{"cases": c, "interactions": 0, "dice": 0.5 + 0.1 * c} for c in range(3)]
    one = plot_curves({"a": [points]}, tmp_path / "one.png")
    points = [{"cases": c, "interactions": 5 * c, "dice": 0.5 + 0.1 * c} for c in range(3)]
    two = plot_curves({"a": [points, points]}, tmp_path / "two.png")
    width_one, width_two = (matplotlib.image.imread(p).shape[1] for p in (one, two))
    assert width_two > 1.8 * width_one  # two panels against one
