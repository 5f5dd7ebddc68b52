"""Tests of the checks of a viewer's ``params`` (no ``monailabel`` needed)."""

from __future__ import annotations

from typing import Any

import pytest

from common.monailabel.params import (
    MAX_PARAMS_BYTES,
    RESERVED_PARAMS,
    check_label_tag,
    check_params,
    parse_params,
)


def test_parse_params_reads_json_objects() -> None:
    assert parse_params(None) == {}
    assert parse_params("") == {}
    assert parse_params(b'{"foreground": [[1, 2.5, 3]]}') == {"foreground": [[1, 2.5, 3]]}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2]", "JSON object.*got a JSON array"),
        ('"x"', "got a JSON string"),
        ("{foreground: 1}", "not valid JSON.*line 1 column 2"),
        ('{"x": NaN}', "NaN is not a number JSON allows"),
        ('{"x": -Infinity}', "-Infinity is not a number JSON allows"),
        ('{"x": 1e400}', "1e400, which is out of range"),
        (b"\xff\xfe", "UTF-8"),
        ("{" + " " * MAX_PARAMS_BYTES + "}", "at most"),
    ],
)
def test_parse_params_rejects_what_is_not_a_plain_json_object(text: str | bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_params(text)


def test_slicers_segment_name_becomes_label_name_and_never_a_path() -> None:
    checked = check_params({"label": "/studies/labels/final/case.nii.gz", "foreground": [[1, 2, 3]]})
    assert "label" not in checked
    assert checked["label_name"] == "/studies/labels/final/case.nii.gz"  # a name: it is never opened
    with pytest.raises(ValueError, match="name of the viewer's segment"):
        check_params({"label": ["/etc/passwd"]})


@pytest.mark.parametrize("key", sorted(RESERVED_PARAMS))
def test_reserved_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"may not set \\['{key}'\\]"):
        check_params({key: "x"})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"result_extension": ".exe"}, "result_extension must be one of"),
        ({"result_dtype": "complex128"}, "result_dtype must be one of"),
        ({"device": "tpu"}, "device must be"),
        ({"device": ["cuda:0; rm -rf /"]}, "device must be"),
        ({"logging": 3}, "logging must be one of"),
        ({"slice": [48]}, "slice must be a non-negative integer"),
        ({"slice": "abc"}, "slice must be a non-negative integer"),
        ({"slice": -1}, "slice must be a non-negative integer"),
        ({"slice": 2.5}, "slice must be a non-negative integer"),
        ({"slice": True}, "slice must be a non-negative integer"),
        ({"timeout": 0}, "timeout must be"),
        ({"save_label": "maybe"}, "save_label must be true or false"),
        ({"save_label": True, "label_tag": "final"}, "may not save its result as the 'final' label"),
        ({"save_label": True, "label_tag": "../x"}, "not allowed"),
    ],
)
def test_bad_values_are_refused_with_the_reason(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_params(params)


def test_viewer_values_are_normalised() -> None:
    checked = check_params(
        {"slice": "19", "device": ["cpu", "cuda"], "result_compress": "false", "save_label": 1, "result_dtype": "uint8"}
    )
    assert checked["slice"] == 19
    assert checked["device"] == "cpu"
    assert checked["result_compress"] is False
    assert checked["save_label"] is True
    assert checked["label_tag"] == "original"  # MONAI Label's default tag for saved inferences
    assert check_params({"slice": 19.0})["slice"] == 19
    assert "label_tag" not in check_params({"label_tag": "final"})  # only read with save_label
    assert check_params({"label_value": 4, "roi": []}) == {"label_value": 4, "roi": []}  # passed on


@pytest.mark.parametrize("tag", ["final", "original", "v1.2", "user-7_b"])
def test_plain_tags_are_accepted(tag: str) -> None:
    assert check_label_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "../final", "a/b", "a\\b", ".hidden", "x..y", "a" * 65, None, 3])
def test_tags_that_could_name_another_folder_are_refused(tag: Any) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        check_label_tag(tag)
    with pytest.raises(ValueError, match="'final'"):
        check_label_tag("final", allow_final=False)
