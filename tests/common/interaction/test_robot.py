"""Tests for common.interaction.robot (base class and helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from common.interaction.robot import RobotUser, error_masks
from common.interaction.state import InteractionState


class _CountingRobot(RobotUser):
    """Minimal variant: one 'interaction' per call until a budget is used up."""

    name = "counting"

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        if state.n_interactions >= self.budget:
            return None
        new = state.copy()
        new.n_interactions += 1
        new.history.append({"type": "noop"})
        return new


def test_error_masks() -> None:
    label = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])
    fn, fp = error_masks(label, pred)
    np.testing.assert_array_equal(fn, [[False, True, False, False]])
    np.testing.assert_array_equal(fp, [[False, False, True, False]])
    assert fn.dtype == bool
    assert fp.dtype == bool
    with pytest.raises(ValueError, match="same shape"):
        error_masks(label, pred[:, :3])


def test_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        RobotUser()  # type: ignore[abstract]


def test_reset_stores_case() -> None:
    robot = _CountingRobot(2)
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    label[1, 1, 1] = 3
    robot.reset(np.zeros((4, 5, 6), np.float32), label, [1, 2, 3])
    assert robot.spacing == (1.0, 2.0, 3.0)
    assert robot.label is not None
    assert robot.label.dtype == bool
    assert robot.label.sum() == 1


@pytest.mark.parametrize(
    ("image_shape", "label_shape", "spacing", "match"),
    [
        ((4, 4, 4), (4, 4, 5), (1, 1, 1), "same shape"),
        ((4,), (4,), (1,), "2D or 3D"),
        ((4, 4, 4), (4, 4, 4), (1, 1), "spacing"),
        ((4, 4, 4), (4, 4, 4), (1, -1, 1), "spacing"),
    ],
)
def test_reset_validates(
    image_shape: tuple[int, ...], label_shape: tuple[int, ...], spacing: tuple[float, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _CountingRobot(1).reset(np.zeros(image_shape), np.zeros(label_shape), spacing)


def test_one_hook_variant_and_config() -> None:
    robot = _CountingRobot(2)
    label = np.ones((3, 3, 3))
    robot.reset(label, label, (1, 1, 1))
    s0 = InteractionState()
    s1 = robot.next_interaction(label, label, s0)
    assert s1 is not None
    assert s1.n_interactions == 1
    assert s0.n_interactions == 0
    s2 = robot.next_interaction(label, label, s1)
    assert s2 is not None
    assert robot.next_interaction(label, label, s2) is None
    cfg = robot.config()
    assert cfg == {"name": "counting", "class": "_CountingRobot", "budget": 2}
