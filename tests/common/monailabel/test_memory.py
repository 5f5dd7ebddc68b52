"""Tests of the server's result memory and of telling a viewer's corrections from the result it was sent."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from common.monailabel.memory import RememberedResult, ResultMemory, correction_slices, memory_key

AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])


def _result(slices: range, user: tuple[int, ...], shape: tuple[int, int, int] = (6, 7, 12)) -> RememberedResult:
    mask = np.zeros(shape, dtype=bool)
    mask[1:4, 2:5, slices.start : slices.stop] = True
    return RememberedResult(mask, AFFINE, 2, user)


def test_memory_returns_what_was_put_and_forgets_the_least_recently_used() -> None:
    memory = ResultMemory(capacity=2)
    a, b, c = _result(range(2, 5), (3,)), _result(range(4, 9), (6,)), _result(range(0, 2), (1,))
    memory.put("a", a)
    memory.put("b", b)
    got = memory.get("a")  # "a" is now the most recently used
    assert got is not None
    np.testing.assert_array_equal(got.mask, a.mask)
    np.testing.assert_allclose(got.affine, AFFINE)
    assert (got.axis, got.user_slices) == (2, (3,))
    memory.put("c", c)
    assert memory.get("b") is None
    assert memory.get("a") is not None
    assert len(memory) == 2
    memory.forget("a")
    assert memory.get("a") is None
    with pytest.raises(ValueError, match="capacity"):
        ResultMemory(0)


def test_memory_is_safe_under_concurrent_writers() -> None:
    memory = ResultMemory(capacity=8)
    results = [_result(range(i % 10, i % 10 + 2), (i % 10,)) for i in range(64)]
    threads = [threading.Thread(target=memory.put, args=(i % 8, r)) for i, r in enumerate(results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(memory) == 8
    assert all(memory.get(k) is not None for k in range(8))


def test_matches_checks_shape_affine_and_axis() -> None:
    result = _result(range(2, 5), (3,))
    assert result.matches((6, 7, 12), AFFINE, 2)
    assert not result.matches((6, 7, 11), AFFINE, 2)
    assert not result.matches((6, 7, 12), AFFINE * 1.01, 2)
    assert not result.matches((6, 7, 12), AFFINE, 0)


def test_memory_key_names_model_image_and_segment() -> None:
    request = {"image": "/studies/a.nii.gz", "selected_label_name": "spleen", "label_value": 3}
    assert memory_key("slice_propagation", request) == ("slice_propagation", "/studies/a.nii.gz", "spleen")
    assert memory_key("m", {"image": "x", "label_value": 3}) == ("m", "x", "3")
    assert memory_key("m", {"image": "x"}) == ("m", "x", "")


def test_first_request_every_non_empty_slice_is_the_users() -> None:
    upload = _result(range(3, 6), ()).mask
    assert correction_slices(upload, None, 2) == ([3, 4, 5], [])


def test_round_trip_changed_and_earlier_slices_are_the_users() -> None:
    previous = _result(range(2, 9), (5,))  # annotation on slice 5, the model predicted 2-4 and 6-8
    upload = previous.mask.copy()
    upload[..., 8] = False  # erased a leak
    upload[0, 0, 3] = True  # corrected slice 3
    assert correction_slices(upload, previous, 2) == ([3, 5], [8])
    # unchanged: the same user slices as before
    assert correction_slices(previous.mask.copy(), previous, 2) == ([5], [])


def test_upload_not_built_on_the_result_is_a_first_request() -> None:
    previous = _result(range(2, 9), (5,))
    fresh = np.zeros_like(previous.mask)
    fresh[1:3, 2:5, 6] = True  # a client that sends only its annotated slices, other ones this time
    fresh[0, 0, 2] = True  # ... not reproducing any predicted slice
    assert correction_slices(fresh, previous, 2) == ([2, 6], [])


def test_correction_slices_checks_shapes() -> None:
    previous = _result(range(2, 9), (5,))
    with pytest.raises(ValueError, match="3D"):
        correction_slices(np.zeros((4, 4), dtype=bool), previous, 2)
    with pytest.raises(ValueError, match="remembered result has shape"):
        correction_slices(np.zeros((6, 7, 11), dtype=bool), previous, 2)
