"""Tests for common.interaction.state."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

import common.interaction.state as state_module
from common.interaction.state import InteractionState


def _full_state() -> InteractionState:
    return InteractionState(
        foreground=[(1, 2, 3), (4, 5, 6)],
        background=[(7, 8, 9)],
        slices={5: np.eye(4, dtype=np.uint8)},
        axis=2,
        box=((0, 1, 2), (3, 4, 5)),
        scribbles_fg=np.ones((4, 4, 8), dtype=bool),
        scribbles_bg=np.zeros((4, 4, 8), dtype=bool),
        n_interactions=3,
        history=[{"type": "click", "coord": [1, 2, 3]}],
    )


def test_defaults_are_empty_and_not_shared() -> None:
    a, b = InteractionState(), InteractionState()
    a.foreground.append((0, 0, 0))
    a.history.append({"type": "click"})
    assert b.foreground == []
    assert b.history == []
    assert b.slices == {}
    assert b.axis == 2
    assert b.n_interactions == 0
    assert b.box is None
    assert b.is_empty()
    assert not a.is_empty()


def test_copy_is_deep() -> None:
    s = _full_state()
    c = s.copy()
    c.foreground.append((0, 0, 0))
    c.background.clear()
    c.slices[5][0, 0] = 0
    c.slices[6] = np.zeros((4, 4))
    assert c.scribbles_fg is not None
    c.scribbles_fg[...] = False
    c.history[0]["coord"].append(99)
    c.n_interactions += 1
    assert s.foreground == [(1, 2, 3), (4, 5, 6)]
    assert s.background == [(7, 8, 9)]
    assert s.slices[5][0, 0] == 1
    assert set(s.slices) == {5}
    assert s.scribbles_fg is not None
    assert s.scribbles_fg.all()
    assert s.history == [{"type": "click", "coord": [1, 2, 3]}]
    assert s.n_interactions == 3
    assert c.box == s.box


def test_click_array_format() -> None:
    s = _full_state()
    fg = s.click_array("foreground")
    assert fg.dtype == np.int64
    assert fg.shape == (2, 3)
    np.testing.assert_array_equal(fg, [[1, 2, 3], [4, 5, 6]])
    empty = InteractionState().click_array("background", ndim=2)
    assert empty.shape == (0, 2)
    assert empty.dtype == np.int64
    with pytest.raises(ValueError, match="kind"):
        s.click_array("positive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 coordinates"):
        s.click_array("foreground", ndim=2)


def test_is_empty_considers_every_field() -> None:
    assert not InteractionState(slices={0: np.zeros((2, 2))}).is_empty()
    assert not InteractionState(box=((0, 0, 0), (1, 1, 1))).is_empty()
    assert InteractionState(scribbles_fg=np.zeros((2, 2, 2))).is_empty()
    assert not InteractionState(scribbles_bg=np.ones((2, 2, 2))).is_empty()


def test_to_json_is_serialisable_and_complete() -> None:
    data = _full_state().to_json()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["foreground"] == [[1, 2, 3], [4, 5, 6]]
    assert back["background"] == [[7, 8, 9]]
    assert back["slices"] == [5]
    assert back["box"] == [[0, 1, 2], [3, 4, 5]]
    assert back["scribbles_fg_voxels"] == 128
    assert back["scribbles_bg_voxels"] == 0
    assert back["n_interactions"] == 3
    assert back["history"][0]["type"] == "click"


def test_docstring_examples() -> None:
    result = doctest.testmod(state_module)
    assert result.attempted > 0
    assert result.failed == 0
