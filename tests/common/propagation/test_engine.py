from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from common.propagation import PropagationResult, propagate


def _full_square(prop: SimpleNamespace) -> torch.Tensor:
    return torch.ones(prop.H, prop.W, dtype=torch.bool)


def test_recovers_structure_in_both_directions_from_one_middle_slice(prop: SimpleNamespace) -> None:
    gt = prop.ellipsoid()
    oracle = prop.GroundTruthOracle(gt)
    result = propagate(prop.slice_index_image(), {25: gt[..., 25]}, oracle, max_empty_slices=2)
    assert isinstance(result, PropagationResult)
    assert result.mask.shape == gt.shape
    assert result.mask.dtype == torch.bool
    assert torch.equal(result.mask, gt)
    # up: 26..40 with the structure, then 41, 42 empty -> stop; down: 24..10, then 9, 8 empty -> stop
    by_direction = {f.direction: f for f in result.fronts}
    assert by_direction[1].slices == list(range(26, 43))
    assert by_direction[-1].slices == list(range(24, 7, -1))
    assert by_direction[1].stop == by_direction[-1].stop == "empty"
    assert sorted(oracle.slices) == sorted([*range(26, 43), *range(8, 25)])
    assert result.n_predicted == 34
    assert oracle.n_calls == result.n_calls == 17  # both fronts in lockstep: one call per step
    assert oracle.batch_sizes == [2] * 17
    # provenance: everything came from slice 25, up above it and down below it, nothing beyond the stops
    assert result.source[25] == 25
    assert result.direction[25] == 0
    assert all(result.source[k] == 25 and result.direction[k] == 1 for k in range(26, 43))
    assert all(result.source[k] == 25 and result.direction[k] == -1 for k in range(8, 25))
    assert all(result.source[k] == -1 and result.direction[k] == 0 for k in [*range(8), *range(43, prop.D)])


@pytest.mark.parametrize("max_empty", [1, 2, 3, 5, None])
def test_stops_after_max_empty_slices(prop: SimpleNamespace, max_empty: int | None) -> None:
    gt = prop.ellipsoid()
    oracle = prop.GroundTruthOracle(gt)
    result = propagate(prop.slice_index_image(), {25: gt[..., 25]}, oracle, max_empty_slices=max_empty)
    # beyond the structure there are D-1-LAST slices above and FIRST slices below
    above, below = prop.D - 1 - prop.LAST, prop.FIRST
    n_up = (prop.LAST - 25) + (above if max_empty is None else min(max_empty, above))
    n_down = (25 - prop.FIRST) + (below if max_empty is None else min(max_empty, below))
    by_direction = {f.direction: f for f in result.fronts}
    assert by_direction[1].n_predicted == n_up
    assert by_direction[-1].n_predicted == n_down
    assert len(oracle.slices) == n_up + n_down
    assert torch.equal(result.mask, gt)  # the empty slices are part of the output, as empty
    expected_stop_up = "edge" if max_empty is None or max_empty > above else "empty"
    assert by_direction[1].stop == expected_stop_up


def test_isolated_empty_slice_does_not_stop_but_consecutive_ones_do(prop: SimpleNamespace) -> None:
    image = prop.slice_index_image()
    user = {25: _full_square(prop)}
    oracle = prop.Constant(empty=(30, 33, 34))  # ignores the prior: 30 alone, then 33 + 34 in a row
    result = propagate(image, user, oracle, max_empty_slices=2)
    up = next(f for f in result.fronts if f.direction == 1)
    assert up.slices == list(range(26, 35))
    assert up.stop == "empty"
    assert not result.mask[..., 30].any()
    assert result.mask[..., 31].all()
    assert not result.mask[..., 33:35].any()
    assert not result.mask[..., 35:].any()  # never predicted
    down = next(f for f in result.fronts if f.direction == -1)
    assert down.stop == "edge"
    assert down.n_predicted == 25


def test_stops_at_volume_edges(prop: SimpleNamespace) -> None:
    gt = prop.ellipsoid(first=0, last=prop.D - 1)
    oracle = prop.GroundTruthOracle(gt)
    result = propagate(prop.slice_index_image(), {20: gt[..., 20]}, oracle)
    assert torch.equal(result.mask, gt)
    assert {(f.direction, f.stop, f.n_predicted) for f in result.fronts} == {(-1, "edge", 20), (1, "edge", 27)}
    assert len(oracle.slices) == prop.D - 1
    assert sorted(oracle.slices) == [k for k in range(prop.D) if k != 20]


@pytest.mark.parametrize("k", [0, 47])
def test_user_slice_at_the_edge_propagates_one_way(prop: SimpleNamespace, k: int) -> None:
    oracle = prop.CopyPrior()
    result = propagate(prop.slice_index_image(), {k: _full_square(prop)}, oracle)
    assert result.n_predicted == prop.D - 1
    assert result.mask.all()
    assert {f.n_predicted for f in result.fronts} == {0, prop.D - 1}


def test_user_slices_are_never_changed(prop: SimpleNamespace) -> None:
    generator = np.random.default_rng(0)
    user = {
        s: torch.as_tensor(generator.random((prop.H, prop.W)) > 0.6) for s in (0, 12, 13, 30, prop.D - 1)
    }  # random masks the oracle would never predict
    oracle = prop.Constant()  # always predicts the full slice
    for merge in ("nearest", "overwrite", "fusion"):
        result = propagate(prop.slice_index_image(), user, oracle, merge=merge)
        assert result.probability is not None
        for s, m in user.items():
            assert torch.equal(result.mask[..., s], m), (merge, s)
            assert torch.equal(result.probability[..., s], m.float()), (merge, s)
            assert result.source[s] == s
            assert result.direction[s] == 0
        others = [k for k in range(prop.D) if k not in user]
        assert result.mask[..., others].all()
        assert oracle.slices.count(12) == 0  # user slices are never predicted
        assert 13 not in oracle.slices


def test_inputs_are_not_modified(prop: SimpleNamespace) -> None:
    image = prop.slice_index_image()
    gt = prop.ellipsoid()
    annotation = {25: gt[..., 25].clone(), 14: gt[..., 14].numpy().astype(np.uint8)}
    image_copy = image.clone()
    annotation_copy = {k: torch.as_tensor(v).clone().numpy() for k, v in annotation.items()}

    class Vandal(prop.GroundTruthOracle):  # type: ignore[name-defined]
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            out = super().__call__(x)
            x.fill_(7.0)  # a misbehaving predict_fn that scribbles over its input
            return out

    result = propagate(image, annotation, Vandal(gt), merge="fusion")
    assert torch.equal(image, image_copy)
    assert list(annotation) == [25, 14]
    for k, v in annotation.items():
        np.testing.assert_array_equal(torch.as_tensor(v).numpy(), annotation_copy[k])
    assert torch.equal(result.mask, gt)
    result.mask.fill_(False)  # the output does not alias the inputs
    assert torch.equal(annotation[25], torch.as_tensor(annotation_copy[25]))


def test_prior_is_the_previous_binarised_prediction(prop: SimpleNamespace) -> None:
    """A drifting copy network moves the mask one row per slice: each prediction must feed the next."""
    user = torch.zeros(prop.H, prop.W, dtype=torch.bool)
    user[2:6, 3:9] = True
    result = propagate(prop.slice_index_image(), {20: user}, prop.CopyPrior(shift=1, scale=0.9), max_empty_slices=None)
    assert result.probability is not None
    for k in range(prop.D):
        expected = torch.roll(user, abs(k - 20), dims=0)
        assert torch.equal(result.mask[..., k], expected), k
        if k != 20:  # probabilities are kept as predicted (0.9), priors are binarised (no geometric decay)
            assert torch.allclose(result.probability[..., k], expected.float() * 0.9)


def test_sub_threshold_predictions_count_as_empty(prop: SimpleNamespace) -> None:
    oracle = prop.CopyPrior(scale=0.5)  # exactly the threshold: not foreground (strictly greater is needed)
    result = propagate(prop.slice_index_image(), {20: _full_square(prop)}, oracle, max_empty_slices=3)
    assert result.n_predicted == 6
    assert int(result.mask.sum()) == prop.H * prop.W
    result = propagate(prop.slice_index_image(), {20: _full_square(prop)}, oracle, threshold=0.4)
    assert result.mask.all()


def _three_user_slices(prop: SimpleNamespace) -> dict[int, torch.Tensor]:
    gt = prop.ellipsoid()
    return {25: gt[..., 25], 12: gt[..., 12], 38: gt[..., 38]}


@pytest.mark.parametrize("merge", ["nearest", "overwrite", "fusion"])
def test_batched_and_unbatched_fronts_give_identical_results(prop: SimpleNamespace, merge: str) -> None:
    gt = prop.ellipsoid()
    user = _three_user_slices(prop)
    batched, single, capped = prop.GroundTruthOracle(gt), prop.GroundTruthOracle(gt), prop.GroundTruthOracle(gt)
    a = propagate(prop.slice_index_image(), user, batched, merge=merge, batch_fronts=True)
    b = propagate(prop.slice_index_image(), user, single, merge=merge, batch_fronts=False)
    c = propagate(prop.slice_index_image(), user, capped, merge=merge, max_batch_size=4)
    for other in (b, c):
        assert other.probability is not None
        assert a.probability is not None
        assert torch.equal(a.mask, other.mask)
        assert torch.equal(a.probability, other.probability)
        assert a.source == other.source
        assert a.direction == other.direction
        assert a.fronts == other.fronts
    assert torch.equal(a.mask, gt)
    assert sorted(batched.slices) == sorted(single.slices) == sorted(capped.slices)
    assert set(single.batch_sizes) == {1}
    assert single.n_calls == a.n_predicted
    assert batched.n_calls == max(f.n_predicted for f in a.fronts)  # one call per lockstep step
    assert max(batched.batch_sizes) == 6  # 3 user slices x 2 directions
    assert max(capped.batch_sizes) == 4
    assert batched.n_calls < single.n_calls


def test_predict_fn_output_is_checked(prop: SimpleNamespace) -> None:
    image, user = prop.slice_index_image(), {20: _full_square(prop)}
    with pytest.raises(ValueError, match="predict_fn must return foreground probabilities of shape"):
        propagate(image, user, lambda x: x)  # (B, 2, H, W)
    with pytest.raises(ValueError, match="predict_fn must return a torch tensor"):
        propagate(image, user, lambda x: x[:, 1].numpy())  # type: ignore[arg-type, return-value]
    result = propagate(image, user, lambda x: x[:, 1:])  # (B, 1, H, W) is accepted
    assert result.mask.all()


def test_numpy_and_integer_images(prop: SimpleNamespace) -> None:
    image = prop.slice_index_image().numpy().astype(np.int16)
    seen: list[torch.dtype] = []

    def copy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.dtype)
        return x[:, 1]

    result = propagate(image, {20: np.ones((prop.H, prop.W), dtype=np.uint8)}, copy, keep_probability=False)
    assert result.probability is None
    assert result.mask.all()
    assert set(seen) == {torch.float32}
    result = propagate(prop.slice_index_image(dtype=torch.float64), {20: _full_square(prop)}, copy)
    assert result.probability is not None
    assert result.probability.dtype == torch.float64
    assert set(seen[-3:]) == {torch.float64}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 1.0}, "threshold must be a number in"),
        ({"threshold": -0.1}, "threshold must be a number in"),
        ({"max_empty_slices": 0}, "max_empty_slices must be an integer >= 1 or None"),
        ({"max_empty_slices": 1.5}, "max_empty_slices must be an integer"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"merge": "average"}, "merge must be one of"),
    ],
)
def test_bad_options(prop: SimpleNamespace, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        propagate(prop.slice_index_image(), {20: _full_square(prop)}, prop.CopyPrior(), **kwargs)  # type: ignore[arg-type]


class _Watched(torch.Tensor):
    """Tensor subclass recording every read of its values back to the host (a device sync on a GPU)."""

    reads: ClassVar[list[str]] = []
    HOST_READS: ClassVar[frozenset[str]] = frozenset(
        {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "equal"}
    )

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if getattr(func, "__name__", "") in cls.HOST_READS:
            cls.reads.append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize(
    ("max_empty", "merge"), [(None, "nearest"), (None, "fusion"), (2, "nearest"), (1, "overwrite")]
)
def test_host_reads_of_predictions_only_for_the_emptiness_stop(
    prop: SimpleNamespace, max_empty: int | None, merge: str
) -> None:
    """Without an emptiness stop nothing derived from a prediction is read back while propagating (no device
    sync per step); with one, exactly one read per step (the non-empty flags of all fronts at once)."""
    gt = prop.ellipsoid()
    oracle = prop.GroundTruthOracle(gt)

    def watched(x: torch.Tensor) -> torch.Tensor:
        return oracle(x.as_subclass(torch.Tensor)).as_subclass(_Watched)

    _Watched.reads.clear()
    result = propagate(prop.slice_index_image(), _three_user_slices(prop), watched, max_empty, merge)
    assert result.n_calls == oracle.n_calls > 0
    assert _Watched.reads == ([] if max_empty is None else ["tolist"] * result.n_calls)
    reference = prop.GroundTruthOracle(gt)
    expected = propagate(prop.slice_index_image(), _three_user_slices(prop), reference, max_empty, merge)
    assert torch.equal(result.mask, expected.mask)
    assert result.fronts == expected.fronts


@pytest.mark.parametrize(
    "make_image",
    [
        lambda g: torch.randn(24, 20, 48, generator=g),  # contiguous (H, W, D)
        lambda g: torch.randn(48, 24, 20, generator=g).permute(1, 2, 0),  # stored slice-major: already (D, H, W)
        lambda g: torch.randn(24, 48, 20, generator=g).transpose(1, 2),  # another non-contiguous layout
        lambda g: (torch.randn(24, 20, 48, generator=g) * 100).to(torch.int16),  # converted to float32
        lambda g: torch.randn(24, 20, 48, generator=g, dtype=torch.float64)[:, :, :],
    ],
)
def test_predict_fn_receives_exact_image_slices_and_priors(prop: SimpleNamespace, make_image: Any) -> None:
    """Every batch is contiguous ``(B, 2, H, W)``: channel 0 exactly ``image[..., t]`` in the working dtype, channel 1
    the user mask or the binarised previous prediction of the same front, whatever the image's memory layout."""
    image = make_image(torch.Generator().manual_seed(3))
    dtype = image.dtype if image.is_floating_point() else torch.float32
    user = {30: prop.ellipsoid()[..., 30], 14: prop.ellipsoid()[..., 14]}
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def drift(x: torch.Tensor) -> torch.Tensor:  # the mask moves one row per slice, probability 0.75
        assert x.is_contiguous()
        assert x.dtype == dtype
        out = torch.roll(x[:, 1], 1, dims=1) * 0.75
        calls.append((x.clone(), out))
        return out

    result = propagate(image, user, drift, max_empty_slices=None, merge="fusion")
    assert len(calls) == result.n_calls
    prior = {(f.source, f.direction): user[f.source].to(dtype) for f in result.fronts}
    for step, (x, out) in enumerate(calls):
        active = [f for f in result.fronts if f.n_predicted > step]  # lockstep, in the fronts' order
        assert x.shape == (len(active), 2, prop.H, prop.W)
        for b, front in enumerate(active):
            t = front.source + front.direction * (step + 1)
            assert torch.equal(x[b, 0], image[..., t].to(dtype)), (step, front)
            assert torch.equal(x[b, 1], prior[(front.source, front.direction)]), (step, front)
            prior[(front.source, front.direction)] = (out[b] > 0.5).to(dtype)
    assert all(f.n_predicted <= len(calls) for f in result.fronts)


@pytest.mark.parametrize(("merge", "max_empty"), [("nearest", 2), ("overwrite", 1), ("fusion", None), ("fusion", 2)])
def test_no_uninitialised_memory_reaches_the_result(
    prop: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, merge: str, max_empty: int | None
) -> None:
    """Buffers are allocated without zero-filling; every value read later must have been written first. With
    ``torch.empty`` returning NaN-filled memory the result must not change."""
    gt = prop.ellipsoid()
    user = _three_user_slices(prop)
    expected = propagate(prop.slice_index_image(), user, prop.GroundTruthOracle(gt), max_empty, merge)
    real_empty = torch.empty

    def nan_empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan") if t.is_floating_point() else 1)

    monkeypatch.setattr(torch, "empty", nan_empty)
    result = propagate(prop.slice_index_image(), user, prop.GroundTruthOracle(gt), max_empty, merge)
    assert expected.probability is not None
    assert result.probability is not None
    assert torch.equal(result.mask, expected.mask)
    assert torch.equal(result.probability, expected.probability)
    assert any(not r.all() for r in result.reached.unbind(1))  # some slices unreached in a direction: zeroed rows
