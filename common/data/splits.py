"""Seeded k-fold cross-validation splits by volume (case id).

All items of one case (e.g. the per-structure or per-slice samples produced by
:func:`common.data.structures.expand_structures`) always land on the same side of a fold, so no volume is ever seen
in both training and validation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.data.msd import case_id_from_path

__all__ = ["Fold", "case_ids", "kfold_splits", "select_fold"]


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold.

    Attributes:
        index: fold number in ``[0, n_folds)``.
        train: items of the training cases (shallow copies, input order kept).
        val: items of the validation cases (shallow copies, input order kept).
    """

    index: int
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]

    @property
    def train_cases(self) -> list[str]:
        """Sorted case ids of the training side."""
        return case_ids(self.train)

    @property
    def val_cases(self) -> list[str]:
        """Sorted case ids of the validation side."""
        return case_ids(self.val)


def _case_id(item: Mapping[str, Any], index: int) -> str:
    if not isinstance(item, Mapping):
        raise ValueError(f"item {index} must be a dict, got {type(item).__name__}")
    if "case_id" in item:
        return str(item["case_id"])
    if "image" in item and isinstance(item["image"], (str, os.PathLike)):
        return case_id_from_path(str(item["image"]))
    raise ValueError(f"item {index} has neither 'case_id' nor an 'image' path to derive it from: {dict(item)!r}")


def case_ids(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sorted distinct case ids of ``items`` (from ``"case_id"``, else from the ``"image"`` file name)."""
    return sorted({_case_id(item, i) for i, item in enumerate(items)})


def kfold_splits(items: Sequence[Mapping[str, Any]], n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Split items into ``n_folds`` folds by volume.

    The distinct case ids are sorted (so the result does not depend on the input order), shuffled with
    ``np.random.default_rng(seed)`` and cut into ``n_folds`` contiguous chunks whose sizes differ by at most one.
    Fold ``i`` validates on chunk ``i`` and trains on all other cases, so every case is in exactly one validation fold.

    Args:
        items: dicts with ``"case_id"`` (or an ``"image"`` path it is derived from); several items may share a case.
        n_folds: number of folds, ``2 <= n_folds <= number of cases``.
        seed: seed of the shuffle.

    Returns:
        ``n_folds`` :class:`Fold` objects, in fold order.

    Raises:
        ValueError: bad ``n_folds`` (the message says which ``--n_folds`` bundle override fits the data), fewer
            than 2 volumes, or an item without a case id.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise ValueError(f"n_folds must be an integer, got {n_folds!r}")
    ids = case_ids(items)
    if len(ids) < 2:
        hint = (
            " (is the dataset's 'training' list empty? A dataset with only a 'test' list can be used for inference, "
            "not for training)"
            if not ids
            else f" ({ids[0]!r})"
        )
        raise ValueError(
            f"k-fold cross-validation needs at least 2 labelled volumes, got {len(ids)}{hint}: add training cases"
        )
    if n_folds < 2:
        raise ValueError(
            f"n_folds must be at least 2, got {n_folds}: pass `--n_folds N` with 2 <= N <= {len(ids)} (the number "
            "of volumes) to `monai.bundle run`"
        )
    if n_folds > len(ids):
        raise ValueError(
            f"n_folds={n_folds} is larger than the number of volumes ({len(ids)} distinct case ids): each fold "
            f"needs at least one validation volume; pass `--n_folds {len(ids)}` (or fewer) to `monai.bundle run`, "
            f'or set "n_folds": {len(ids)} in the config'
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    chunks = np.array_split(order, int(n_folds))
    fold_of = {ids[j]: f for f, chunk in enumerate(chunks) for j in chunk.tolist()}
    item_folds = [fold_of[_case_id(item, i)] for i, item in enumerate(items)]
    folds = []
    for f in range(int(n_folds)):
        train = [dict(item) for item, g in zip(items, item_folds, strict=True) if g != f]
        val = [dict(item) for item, g in zip(items, item_folds, strict=True) if g == f]
        folds.append(Fold(index=f, train=train, val=val))
    return folds


def select_fold(items: Sequence[Mapping[str, Any]], fold: int, n_folds: int = 5, seed: int = 0) -> Fold:
    """Return fold ``fold`` of :func:`kfold_splits` ``(items, n_folds, seed)``.

    Raises:
        ValueError: ``fold`` not in ``[0, n_folds)`` (and the errors of :func:`kfold_splits`).
    """
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an integer in [0, {n_folds}) (the bundle's `--fold`), got {fold!r}")
    return kfold_splits(items, n_folds=n_folds, seed=seed)[int(fold)]
