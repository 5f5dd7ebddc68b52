"""Tests for common.training.schedule (MultiStepLR milestones that stay valid for short runs)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

import common
from common.training import step_milestones

#: The fractions of the bundles' train.json (``lr_milestone_fractions``).
BUNDLE_FRACTIONS = [0.3333333, 0.6666667, 0.8333333]


def _old_expression(max_epochs: int, fractions: list[float]) -> list[int]:
    """The expression train.json used: ``[max(1, round(@max_epochs * f)) for f in @lr_milestone_fractions]``."""
    return [max(1, round(max_epochs * f)) for f in fractions]


def _lrs_per_epoch(milestones: list[int], max_epochs: int, lr: float = 1e-3, gamma: float = 0.1) -> list[float]:
    """Learning rate used in each epoch 1..max_epochs with MultiStepLR stepped once per epoch (LrScheduleHandler)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    used = []
    for _ in range(max_epochs):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize(
    ("max_epochs", "expected"),
    [(1, []), (2, [1]), (3, [1, 2]), (4, [1, 3]), (6, [2, 4, 5]), (30, [10, 20, 25]), (100, [33, 67, 83])],
)
def test_bundle_fractions(max_epochs: int, expected: list[int]) -> None:
    assert step_milestones(max_epochs, BUNDLE_FRACTIONS) == expected


@pytest.mark.parametrize("max_epochs", [30, 60, 90, 120, 300])
def test_long_runs_keep_the_old_milestones(max_epochs: int) -> None:
    assert step_milestones(max_epochs, BUNDLE_FRACTIONS) == _old_expression(max_epochs, BUNDLE_FRACTIONS)


def test_one_epoch_run_no_longer_collapses_the_learning_rate() -> None:
    """The old expression gave [1, 1, 1]: MultiStepLR applies a repeated milestone once per repetition, so the lr
    fell to 1e-3 * 0.1**3 = 1e-6 at once (seen in the multi-GPU smoke run's log: 'Current learning rate: 1e-06')."""
    old = _old_expression(1, BUNDLE_FRACTIONS)
    assert old == [1, 1, 1]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=old, gamma=0.1)
    optimizer.step()
    scheduler.step()
    assert math.isclose(optimizer.param_groups[0]["lr"], 1e-6)  # the bug being fixed
    assert _lrs_per_epoch(step_milestones(1, BUNDLE_FRACTIONS), 1) == [1e-3]


@pytest.mark.parametrize("max_epochs", range(1, 41))
def test_properties_for_every_run_length(max_epochs: int) -> None:
    milestones = step_milestones(max_epochs, BUNDLE_FRACTIONS)
    assert milestones == sorted(set(milestones))
    assert all(isinstance(m, int) and 0 < m < max_epochs for m in milestones)
    assert len(milestones) <= min(len(BUNDLE_FRACTIONS), max_epochs - 1)
    lrs = _lrs_per_epoch(milestones, max_epochs)
    assert lrs[0] == 1e-3
    # each decay is one factor gamma and is used by at least one epoch
    distinct = sorted(set(lrs), reverse=True)
    assert len(distinct) == len(milestones) + 1
    assert all(math.isclose(b / a, 0.1) for a, b in itertools.pairwise(distinct))


def test_order_duplicates_and_number_types() -> None:
    assert step_milestones(10, [0.8, 0.5, 0.5, 0.2]) == [2, 5, 8]
    assert step_milestones(np.int64(10), (np.float32(0.5),)) == [5]  # type: ignore[arg-type]
    assert step_milestones(10, []) == []
    assert step_milestones(4, [0.125]) == [1]  # 0.5 rounds half up, not to even
    assert step_milestones(4, [0.1]) == []  # 0.4 -> 0: a decay before the first epoch is dropped


@pytest.mark.parametrize(
    ("max_epochs", "fractions", "message"),
    [
        (0, [0.5], r"max_epochs must be an integer >= 1, got 0"),
        (-3, [0.5], r"max_epochs must be an integer >= 1, got -3"),
        (2.0, [0.5], r"max_epochs must be an integer >= 1, got 2.0"),
        (True, [0.5], r"max_epochs must be an integer >= 1, got True"),
        (10, [0.5, 1.0], r"fractions\[1\] must be in the open interval \(0, 1\).*got 1.0"),
        (10, [0.0], r"fractions\[0\] must be in the open interval \(0, 1\)"),
        (10, [-0.2], r"fractions\[0\] must be in the open interval"),
        (10, [float("nan")], r"fractions\[0\] must be in the open interval"),
        (10, [33], r"fractions\[0\] must be in the open interval .*got 33"),
        (10, ["0.5"], r"fractions\[0\] must be a number in \(0, 1\), got '0.5'"),
        (10, "0.5", r"fractions must be a sequence of numbers"),
        (10, 0.5, r"fractions must be a sequence of numbers"),
    ],
)
def test_invalid_arguments(max_epochs: Any, fractions: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_milestones(max_epochs, fractions)


def test_config_expression_for_train_json() -> None:
    """The expression the bundles' train.json uses, with only ``$import common`` (lazy sub-package access)."""
    assert "training" in common.SUBPACKAGES
    parser = ConfigParser(
        {
            "imports": ["$import torch", "$import common"],
            "max_epochs": 1,
            "lr_milestone_fractions": BUNDLE_FRACTIONS,
            "optimizer": {
                "_target_": "torch.optim.SGD",
                "params": "$[torch.nn.Parameter(torch.zeros(1))]",
                "lr": 0.001,
            },
            "lr_scheduler": {
                "_target_": "torch.optim.lr_scheduler.MultiStepLR",
                "optimizer": "@optimizer",
                "milestones": "$common.training.step_milestones(@max_epochs, @lr_milestone_fractions)",
                "gamma": 0.1,
            },
        }
    )
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert sorted(scheduler.milestones.elements()) == []
    parser["max_epochs"] = 30
    parser.parse()
    assert sorted(parser.get_parsed_content("lr_scheduler").milestones.elements()) == [10, 20, 25]
