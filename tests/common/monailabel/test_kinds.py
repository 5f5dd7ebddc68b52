"""Tests of the interaction-kind registry (no ``monailabel`` needed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import common.monailabel.kinds as kinds_module
from common.monailabel import InteractionKind, get_kind, register_kind
from common.monailabel.items import box_scribbles_item, click_item, slice_propagation_item
from common.monailabel.kinds import INFER_TYPES, registered_kinds


def _lasso_item(request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    return {"lasso": request["lasso"]}


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Restore the registry after a test that registers kinds."""
    saved = dict(kinds_module._REGISTRY)
    yield
    kinds_module._REGISTRY.clear()
    kinds_module._REGISTRY.update(saved)


def test_builtin_kinds_map_to_the_viewer_types_and_builders() -> None:
    propagation, clicks = get_kind("slice_propagation"), get_kind("clicks")
    assert (propagation.infer_type, propagation.build_item, propagation.dimension) == (
        "scribbles",
        slice_propagation_item,
        3,
    )
    assert (clicks.infer_type, clicks.build_item, clicks.dimension) == ("deepgrow", click_item, None)
    boxes = get_kind("box_scribbles")  # the uploaded label volume holds the scribbles: Slicer's scribbles tools
    assert (boxes.infer_type, boxes.build_item, boxes.dimension) == ("scribbles", box_scribbles_item, None)
    assert {"slice_propagation", "clicks", "box_scribbles"} <= set(registered_kinds())


@pytest.mark.usefixtures("clean_registry")
def test_a_new_kind_plugs_in_by_registration() -> None:
    kind = InteractionKind("lasso", "scribbles", _lasso_item, "a closed contour around the structure")
    assert register_kind(kind) is kind
    assert get_kind("lasso").build_item({"lasso": [1, 2]}, Path(".")) == {"lasso": [1, 2]}


@pytest.mark.usefixtures("clean_registry")
def test_registering_a_name_twice_needs_replace() -> None:
    kind = InteractionKind("clicks", "deepgrow", _lasso_item, "other clicks")
    with pytest.raises(ValueError, match="already registered"):
        register_kind(kind)
    register_kind(kind, replace=True)
    assert get_kind("clicks").build_item is _lasso_item


def test_registered_kinds_is_a_copy() -> None:
    copy = registered_kinds()
    copy.pop("clicks")
    assert "clicks" in registered_kinds()


def test_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown interaction kind 'boxes'.*clicks"):
        get_kind("boxes")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", "deepgrow"), "non-empty identifier"),
        (("a b", "deepgrow"), "non-empty identifier"),
        (("boxes", "box"), "infer_type must be one of"),
    ],
)
def test_bad_kind_definitions_raise(args: tuple[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        InteractionKind(*args, build_item=_lasso_item, description="x")


def test_bad_dimension_raises() -> None:
    with pytest.raises(ValueError, match="dimension must be 2, 3 or None"):
        InteractionKind("boxes", "scribbles", _lasso_item, "x", dimension=4)


def test_infer_types_match_monailabel() -> None:
    infer_v2 = pytest.importorskip("monailabel.interfaces.tasks.infer_v2")
    assert set(INFER_TYPES) == {t.value for t in infer_v2.InferType}
