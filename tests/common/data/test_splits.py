from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.data.msd import load_msd_dataset
from common.data.splits import Fold, case_ids, kfold_splits, select_fold


def _items(n: int) -> list[dict[str, Any]]:
    return [
        {
            "image": f"/d/imagesTr/case_{i:02d}.nii.gz",
            "label": f"/d/labelsTr/case_{i:02d}.nii.gz",
            "case_id": f"case_{i:02d}",
        }
        for i in range(n)
    ]


def _expanded(n: int, per_case: int) -> list[dict[str, Any]]:
    """``per_case`` items per case (like per-structure / per-slice samples), interleaved across cases."""
    return [{**item, "structure": s} for s in range(1, per_case + 1) for item in _items(n)]


def _val_cases(folds: list[Fold]) -> list[list[str]]:
    return [fold.val_cases for fold in folds]


def test_coverage_disjointness_and_sizes() -> None:
    items = _items(11)
    folds = kfold_splits(items, n_folds=5, seed=0)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    all_cases = sorted(i["case_id"] for i in items)
    val_cases = [c for f in folds for c in f.val_cases]
    assert sorted(val_cases) == all_cases  # every case in exactly one validation fold
    assert sorted(len(f.val) for f in folds) == [2, 2, 2, 2, 3]  # as equal as possible
    for f in folds:
        assert not set(f.train_cases) & set(f.val_cases)
        assert sorted(f.train_cases + f.val_cases) == all_cases
        assert len(f.train) + len(f.val) == len(items)


def test_deterministic_and_seed_dependent() -> None:
    items = _items(20)
    a = kfold_splits(items, n_folds=4, seed=7)
    b = kfold_splits(items, n_folds=4, seed=7)
    assert a == b
    c = kfold_splits(items, n_folds=4, seed=8)
    assert _val_cases(a) != _val_cases(c)


def test_shuffled_not_ordered() -> None:
    # the first fold is not simply the first cases in sorted order
    folds = kfold_splits(_items(20), n_folds=4, seed=0)
    assert _val_cases(folds) != [[f"case_{i:02d}" for i in range(k * 5, k * 5 + 5)] for k in range(4)]


def test_partition_does_not_depend_on_item_order() -> None:
    items = _items(13)
    rng = np.random.default_rng(123)
    shuffled = [items[i] for i in rng.permutation(len(items))]
    assert _val_cases(kfold_splits(items, 3, seed=5)) == _val_cases(kfold_splits(shuffled, 3, seed=5))


def test_item_order_is_kept_within_sides() -> None:
    items = _items(9)
    fold = kfold_splits(items, n_folds=3, seed=1)[0]
    order = [i["case_id"] for i in items]
    assert [i["case_id"] for i in fold.train] == [c for c in order if c in set(fold.train_cases)]
    assert [i["case_id"] for i in fold.val] == [c for c in order if c in set(fold.val_cases)]


def test_expanded_items_are_grouped_by_volume() -> None:
    items = _expanded(7, per_case=3)
    folds = kfold_splits(items, n_folds=3, seed=2)
    assert sorted(c for f in folds for c in f.val_cases) == sorted({i["case_id"] for i in items})
    for f in folds:
        assert not set(f.train_cases) & set(f.val_cases)  # no volume on both sides
        for c in f.val_cases:
            assert sum(i["case_id"] == c for i in f.val) == 3  # all samples of the case together
    # the volume split equals the split of the unexpanded list
    assert _val_cases(folds) == _val_cases(kfold_splits(_items(7), n_folds=3, seed=2))


def test_items_are_copies() -> None:
    items = _items(4)
    fold = kfold_splits(items, n_folds=2)[0]
    fold.val[0]["image"] = "changed"
    assert all(i["image"] != "changed" for i in items)


def test_case_id_derived_from_image_path() -> None:
    items = [{"image": f"/x/imagesTr/spleen_{i}.nii.gz"} for i in range(6)]
    assert case_ids(items) == sorted(f"spleen_{i}" for i in range(6))
    folds = kfold_splits(items, n_folds=3)
    assert sorted(c for f in folds for c in f.val_cases) == sorted(f"spleen_{i}" for i in range(6))


def test_select_fold_matches_kfold() -> None:
    items = _items(10)
    folds = kfold_splits(items, n_folds=5, seed=3)
    for k in range(5):
        assert select_fold(items, k, n_folds=5, seed=3) == folds[k]


def test_real_dataset_training_list(spleen_task: Path) -> None:
    ds = load_msd_dataset(spleen_task)
    folds = kfold_splits(ds.training, n_folds=5)
    assert sorted(len(f.val) for f in folds) == [1] * 5
    assert sorted(c for f in folds for c in f.val_cases) == sorted(i["case_id"] for i in ds.training)


@pytest.mark.parametrize(("n_folds", "message"), [(1, "at least 2"), (0, "at least 2"), (6, r"larger than .*\(5")])
def test_bad_n_folds(n_folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kfold_splits(_items(5), n_folds=n_folds)


def test_too_many_folds_names_the_bundle_override() -> None:
    """A 4-volume dataset with the bundles' default ``n_folds`` 5: the message says what to pass."""
    with pytest.raises(ValueError, match="n_folds=5") as info:
        select_fold(_items(4), 0)  # n_folds defaults to 5, like the bundles' train.json
    message = str(info.value)
    assert "n_folds=5 is larger than the number of volumes (4 distinct case ids)" in message
    assert "pass `--n_folds 4` (or fewer) to `monai.bundle run`" in message
    assert '"n_folds": 4' in message
    with pytest.raises(ValueError, match=r"pass `--n_folds N` with 2 <= N <= 4 .*`monai.bundle run`"):
        kfold_splits(_items(4), n_folds=1)


@pytest.mark.parametrize(
    ("n_cases", "message"), [(0, r"got 0 \(is the dataset's 'training' list empty\?"), (1, r"got 1 \('case_00'\)")]
)
def test_fewer_than_two_volumes(n_cases: int, message: str) -> None:
    with pytest.raises(ValueError, match=r"needs at least 2 labelled volumes, " + message):
        select_fold(_items(n_cases), 0, n_folds=2)


def test_dataset_with_only_test_images_cannot_be_split(spleen_task: Path) -> None:
    data = json.loads((spleen_task / "dataset.json").read_text())
    del data["training"]
    (spleen_task / "dataset.json").write_text(json.dumps(data))
    ds = load_msd_dataset(spleen_task)  # loads (for inference) ...
    with pytest.raises(ValueError, match=r"'training' list empty\? A dataset with only a 'test' list"):
        select_fold(ds.training, 0)  # ... but training's split says why it cannot train


def test_n_folds_counts_volumes_not_items() -> None:
    with pytest.raises(ValueError, match="larger than the number of volumes"):
        kfold_splits(_expanded(3, per_case=4), n_folds=4)  # 12 items but only 3 volumes


def test_bad_fold_index_and_items() -> None:
    with pytest.raises(ValueError, match=r"fold must be an integer in \[0, 5\)"):
        select_fold(_items(10), 5)
    with pytest.raises(ValueError, match=r"fold must be an integer in \[0, 5\)"):
        select_fold(_items(10), -1)
    with pytest.raises(ValueError, match="item 1 has neither 'case_id' nor an 'image'"):
        kfold_splits([{"case_id": "a"}, {"label": "x"}, {"case_id": "b"}], n_folds=2)
    with pytest.raises(ValueError, match="n_folds must be an integer"):
        kfold_splits(_items(5), n_folds=2.0)  # type: ignore[arg-type]
