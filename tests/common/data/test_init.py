"""``common.data`` re-exports its public names lazily; each one resolves, and configs can name them."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

import common.data


@pytest.mark.parametrize("name", common.data.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(common.data, name) is not None


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = common.data.no_such_thing


def test_config_can_target_short_path() -> None:
    parser = ConfigParser({"t": {"_target_": "common.data.SelectStructured", "keys": "label"}})
    assert type(parser.get_parsed_content("t")).__name__ == "SelectStructured"
