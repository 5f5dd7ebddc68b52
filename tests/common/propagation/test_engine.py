from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from common.propagation import PropagationResult, propagate

#: the behaviour before the continuity filter and the area-ratio stops: only the emptiness stop (and edge / limit)
LEGACY: dict[str, Any] = {
    "connect_tolerance": None,
    "min_area_ratio": None,
    "max_area_ratio": None,
    "max_intensity_shift": None,
}


def _full_square(prop: SimpleNamespace) -> torch.Tensor:
    return torch.ones(prop.H, prop.W, dtype=torch.bool)


def test_recovers_structure_in_both_directions_from_one_middle_slice(prop: SimpleNamespace) -> None:
    gt = prop.ellipsoid()
    oracle = prop.GroundTruthOracle(gt)
    result = propagate(prop.slice_index_image(), {25: gt[..., 25]}, oracle, max_empty_slices=2, **LEGACY)
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
    result = propagate(prop.slice_index_image(), {25: gt[..., 25]}, oracle, max_empty_slices=max_empty, **LEGACY)
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
    result = propagate(image, user, oracle, max_empty_slices=2, **LEGACY)
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
    for merge, options in itertools.product(("nearest", "overwrite", "fusion"), (LEGACY, {})):
        result = propagate(prop.slice_index_image(), user, oracle, merge=merge, **options)
        assert result.probability is not None
        for s, m in user.items():
            assert torch.equal(result.mask[..., s], m), (merge, s)
            assert torch.equal(result.probability[..., s], m.float()), (merge, s)
            assert result.source[s] == s
            assert result.direction[s] == 0
        others = [k for k in range(prop.D) if k not in user]
        assert result.mask[..., others].all()  # the full slice overlaps the masks, and is < 3x their area
        assert not any(f.n_dropped for f in result.fronts)
        assert oracle.slices.count(12) == 0  # user slices are never predicted
        assert 13 not in oracle.slices
    # with a stricter explosion limit every front stops at once, dropping its slice
    result = propagate(prop.slice_index_image(), user, oracle, max_area_ratio=1.5)
    for s, m in user.items():
        assert torch.equal(result.mask[..., s], m)
    assert not result.mask[..., [k for k in range(prop.D) if k not in user]].any()
    assert {(f.stop, f.n_predicted, f.n_dropped) for f in result.fronts if f.n_predicted or f.n_dropped} == {
        ("area_explosion", 0, 1)
    }


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
    oracle = prop.CopyPrior(shift=1, scale=0.9)
    result = propagate(prop.slice_index_image(), {20: user}, oracle, max_empty_slices=None, **LEGACY)
    assert result.probability is not None
    for k in range(prop.D):
        expected = torch.roll(user, abs(k - 20), dims=0)
        assert torch.equal(result.mask[..., k], expected), k
        if k != 20:  # probabilities are kept as predicted (0.9), priors are binarised (no geometric decay)
            assert torch.allclose(result.probability[..., k], expected.float() * 0.9)


def test_sub_threshold_predictions_count_as_empty(prop: SimpleNamespace) -> None:
    oracle = prop.CopyPrior(scale=0.5)  # exactly the threshold: not foreground (strictly greater is needed)
    result = propagate(prop.slice_index_image(), {20: _full_square(prop)}, oracle, max_empty_slices=3, **LEGACY)
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
    result = propagate(prop.slice_index_image(), _three_user_slices(prop), watched, max_empty, merge, **LEGACY)
    assert result.n_calls == oracle.n_calls > 0
    assert _Watched.reads == ([] if max_empty is None else ["tolist"] * result.n_calls)
    reference = prop.GroundTruthOracle(gt)
    expected = propagate(prop.slice_index_image(), _three_user_slices(prop), reference, max_empty, merge, **LEGACY)
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

    result = propagate(image, user, drift, max_empty_slices=None, merge="fusion", **LEGACY)
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


# --- continuity filter and area-ratio stops -------------------------------------------------------------------------

SH, SW, SD = 32, 32, 40
S_FIRST, S_LAST = 8, 30  # the structure: a disc of radius 4 at (10, 10) on slices 8..30
N_FIRST, N_LAST = 20, 38  # its neighbour: a disc of radius 5 at (10, 23) on slices 20..38, 3 pixels from it
BRIDGE_FIRST = 26  # with a bridge: a 1-pixel line joins them on slices 26..38


def _disc(ci: int, cj: int, r: float) -> torch.Tensor:
    i = torch.arange(SH).view(-1, 1)
    j = torch.arange(SW).view(1, -1)
    return (i - ci) ** 2 + (j - cj) ** 2 <= r**2


def _scene(bridge: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool ``(SH, SW, SD)`` structure and everything a tissue-blind network segments (structure | neighbour)."""
    k = torch.arange(SD)
    structure = _disc(10, 10, 4)[..., None] & ((k >= S_FIRST) & (k <= S_LAST))
    neighbour = _disc(10, 23, 5)[..., None] & ((k >= N_FIRST) & (k <= N_LAST))
    tissue = structure | neighbour
    if bridge:
        tissue[10, 14:19, BRIDGE_FIRST : N_LAST + 1] = True
    return structure, tissue


class _Tissue:
    """Oracle network that segments all tissue of the slice it is asked for (probability 0.9) when its prior is not
    empty: it follows the structure onto whatever is next to it. Records the slices it predicted."""

    def __init__(self, tissue: torch.Tensor) -> None:
        self.tissue = tissue
        self.slices: list[int] = []
        self.batch_sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        out = []
        for b in range(x.shape[0]):
            k = round(float(x[b, 0, 0, 0]))
            self.slices.append(k)
            alive = bool((x[b, 1] > 0.5).any())
            out.append(self.tissue[..., k].float() * 0.9 if alive else torch.zeros(SH, SW))
        return torch.stack(out)


def _image() -> torch.Tensor:
    return torch.arange(SD, dtype=torch.float32).expand(SH, SW, SD).clone()


def _front(result: PropagationResult, source: int, direction: int) -> Any:
    return next(f for f in result.fronts if (f.source, f.direction) == (source, direction))


def test_without_the_filter_the_front_runs_onto_the_neighbour() -> None:
    structure, tissue = _scene()
    result = propagate(_image(), {19: structure[..., 19]}, _Tissue(tissue), **LEGACY)
    assert torch.equal(result.mask[..., 20:39], tissue[..., 20:39])  # the whole neighbour: the leak
    up = _front(result, 19, 1)
    assert (up.slices[-1], up.stop) == (SD - 1, "edge")  # 39 is empty, the edge comes first


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3])
def test_the_filter_stops_where_the_structure_ends(tolerance: int) -> None:
    structure, tissue = _scene()
    oracle = _Tissue(tissue)
    result = propagate(_image(), {19: structure[..., 19]}, oracle, connect_tolerance=tolerance)
    assert torch.equal(result.mask, structure)
    up, down = _front(result, 19, 1), _front(result, 19, -1)
    assert (up.slices, up.stop, up.n_dropped) == (list(range(20, 32)), "disconnected", 0)  # 31: only the neighbour
    assert (down.slices, down.stop) == (list(range(18, 6, -1)), "empty")  # 7: nothing predicted
    assert sorted(oracle.slices) == [*range(7, 19), *range(20, 32)]
    assert result.probability is not None
    assert not result.probability[tissue & ~structure].any()  # the removed neighbour's probability is 0 too
    assert torch.equal(result.probability > 0.5, result.mask)


def test_a_tolerance_wider_than_the_gap_keeps_the_neighbour() -> None:
    structure, tissue = _scene()
    user = {19: structure[..., 19]}
    result = propagate(_image(), user, _Tissue(tissue), connect_tolerance=4, max_area_ratio=None)
    assert torch.equal(result.mask[..., 20:31], tissue[..., 20:31])  # 3 empty columns: 4 pixels apart
    assert torch.equal(result.mask[..., 31:39], tissue[..., 31:39])
    up = _front(result, 19, 1)
    assert (up.slices[-1], up.stop) == (SD - 1, "empty")  # 39, the last slice, is empty


def test_a_bridge_defeats_the_filter_but_not_the_area_explosion_stop() -> None:
    structure, tissue = _scene(bridge=True)
    user = {19: structure[..., 19]}
    leaky = propagate(_image(), user, _Tissue(tissue), max_area_ratio=None)
    assert torch.equal(leaky.mask[..., BRIDGE_FIRST:39], tissue[..., BRIDGE_FIRST:39])  # across the bridge
    assert not leaky.mask[..., 20:BRIDGE_FIRST][~structure[..., 20:BRIDGE_FIRST]].any()  # before it: filtered
    oracle = _Tissue(tissue)
    result = propagate(_image(), user, oracle, max_area_ratio=2.0)
    up = _front(result, 19, 1)
    # area 49 -> 49 + 5 + 81: the slice that crosses the bridge is dropped, the front stops before it
    assert (up.slices, up.stop, up.n_dropped) == (list(range(20, BRIDGE_FIRST)), "area_explosion", 1)
    expected = structure.clone()
    expected[..., BRIDGE_FIRST:] = False
    assert torch.equal(result.mask, expected)
    assert result.probability is not None
    assert not result.probability[..., BRIDGE_FIRST].any()
    assert result.reached[BRIDGE_FIRST].tolist() == [False, False]
    assert result.source[BRIDGE_FIRST] == -1
    assert oracle.slices.count(BRIDGE_FIRST) == 1  # predicted once, then dropped
    assert result.n_predicted == len(oracle.slices) == up.n_predicted + 1 + _front(result, 19, -1).n_predicted


class _Scripted:
    """Oracle returning fixed masks per slice (empty where none is given), whatever the prior."""

    def __init__(self, masks: dict[int, torch.Tensor], shape: tuple[int, int] = (SH, SW)) -> None:
        self.masks, self.shape = masks, shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ks = [round(float(x[b, 0, 0, 0])) for b in range(x.shape[0])]
        return torch.stack([self.masks.get(k, torch.zeros(self.shape, dtype=torch.bool)).float() for k in ks])


def _square(side: int, top: int = 4, left: int = 4) -> torch.Tensor:
    m = torch.zeros(SH, SW, dtype=torch.bool)
    m[top : top + side, left : left + side] = True
    return m


@pytest.mark.parametrize(
    ("sides", "lo", "hi", "kept", "stop"),
    [
        # side lengths of the squares predicted on slices 11, 12, ... from a 10 x 10 user square on slice 10
        ((10, 9, 3, 3), 0.2, 3.0, 2, "area_collapse"),  # 81 -> 9 < 0.2 * 81
        ((10, 9, 3, 3), None, 3.0, 5, "empty"),  # 15 is empty
        ((10, 9, 5, 5), 0.3, 3.0, 5, "empty"),  # 81 -> 25: 0.31, not below 0.3
        ((10, 9, 4, 4), 0.2, 3.0, 2, "area_collapse"),  # 81 -> 16 < 0.2 * 81 = 16.2
        ((6, 6, 11, 11), 0.2, 3.0, 2, "area_explosion"),  # 36 -> 121 > 3 * 36
        ((6, 6, 11, 11), 0.2, 3.5, 5, "empty"),
        ((6, 6, 11, 11), 0.2, None, 5, "empty"),
        ((6, 6, 11, 11, 21), 0.2, 3.5, 4, "area_explosion"),  # 121 -> 441 > 3.5 * 121 on slice 15
    ],
)
def test_area_ratio_stops(sides: tuple[int, ...], lo: float | None, hi: float | None, kept: int, stop: str) -> None:
    masks = {11 + i: _square(side) for i, side in enumerate(sides)}
    result = propagate(_image(), {10: _square(10)}, _Scripted(masks), min_area_ratio=lo, max_area_ratio=hi)
    up = _front(result, 10, 1)
    assert up.slices == list(range(11, 11 + kept))
    assert up.stop == stop
    assert up.n_dropped == (1 if stop.startswith("area") else 0)
    assert result.probability is not None
    for k in range(11, SD):
        empty = torch.zeros(SH, SW, dtype=torch.bool)
        expected = masks.get(k, empty) if k < 11 + kept else empty
        assert torch.equal(result.mask[..., k], expected), k
        assert torch.equal(result.probability[..., k], expected.float()), k
    assert result.reached[11 : 11 + kept, 0].all()
    assert not result.reached[11 + kept :, 0].any()  # a dropped slice counts as not reached
    assert result.n_predicted == up.n_predicted + up.n_dropped + _front(result, 10, -1).n_predicted


def test_a_dropped_slice_leaves_it_to_the_other_front_with_overwrite() -> None:
    """A (given first) and B (given later) with ``"overwrite"``: B's down front explodes at 15; B's result wins where
    its front got to (19..16), A's result is used on 15 (dropped by B) and below."""
    a, b = 10, 20
    mask_a, mask_b = _square(6, top=4), _square(6, top=5)

    def network(x: torch.Tensor) -> torch.Tensor:  # copies A's square; B's too, except an explosion on 15
        out = []
        for i in range(x.shape[0]):
            k, from_a = round(float(x[i, 0, 0, 0])), bool(x[i, 1, 4].any())
            out.append(mask_a if from_a else (_square(16, top=5) if k == 15 else mask_b))
        return torch.stack(out).float()

    result = propagate(_image(), {a: mask_a, b: mask_b}, network, merge="overwrite")
    down_b, up_a = _front(result, b, -1), _front(result, a, 1)
    assert (down_b.slices, down_b.stop, down_b.n_dropped) == ([19, 18, 17, 16], "area_explosion", 1)
    assert (up_a.slices, up_a.stop, up_a.n_dropped) == (list(range(11, 20)), "limit", 0)
    assert result.source[11:16] == (a,) * 5
    assert result.source[16:20] == (b,) * 4
    assert all(torch.equal(result.mask[..., k], mask_a) for k in range(11, 16))
    assert all(torch.equal(result.mask[..., k], mask_b) for k in range(16, 20))


def test_islands_are_removed_and_the_filtered_mask_is_the_next_prior() -> None:
    """The network adds a far island to whatever it gets: the prior it receives never contains an island."""
    user = _square(6)
    island = _square(3, top=25, left=25)
    priors: list[torch.Tensor] = []

    def with_island(x: torch.Tensor) -> torch.Tensor:
        priors.extend(x[:, 1].clone())
        return ((x[:, 1] > 0.5) | island).float()

    result = propagate(_image(), {20: user}, with_island, max_empty_slices=None, max_area_ratio=None)
    assert torch.equal(result.mask, user[..., None].expand(SH, SW, SD))
    assert all(torch.equal(p, user.float()) for p in priors)
    legacy = propagate(_image(), {20: user}, with_island, **LEGACY)
    assert torch.equal(legacy.mask[..., 21], user | island)


@pytest.mark.parametrize("merge", ["nearest", "overwrite", "fusion"])
@pytest.mark.parametrize("bridge", [False, True])
def test_batched_and_sequential_fronts_identical_with_the_new_stops(merge: str, bridge: bool) -> None:
    structure, tissue = _scene(bridge=bridge)
    user = {12: structure[..., 12], 19: structure[..., 19], 27: structure[..., 27]}
    runs = []
    for kwargs in ({"batch_fronts": True}, {"batch_fronts": False}, {"max_batch_size": 4}):
        oracle = _Tissue(tissue)
        runs.append((propagate(_image(), user, oracle, merge=merge, max_area_ratio=2.0, **kwargs), oracle))
    (a, oracle_a), *others = runs
    for b, oracle_b in others:
        assert a.probability is not None
        assert b.probability is not None
        assert torch.equal(a.mask, b.mask)
        assert torch.equal(a.probability, b.probability)
        assert a.fronts == b.fronts
        assert a.source == b.source
        assert sorted(oracle_a.slices) == sorted(oracle_b.slices)
    stops = {f.stop for f in a.fronts}
    assert stops >= ({"area_explosion"} if bridge else {"disconnected"})
    assert set(runs[1][1].batch_sizes) == {1}
    assert max(oracle_a.batch_sizes) == 6
    assert not a.mask[~structure].any()  # nothing outside the structure survives, whatever the merge rule


def test_flood_fill_and_scipy_give_the_same_propagation(monkeypatch: pytest.MonkeyPatch) -> None:
    import common.propagation.engine as engine_module
    from common.propagation.continuity import connected_to_prior

    structure, tissue = _scene()
    user = {19: structure[..., 19], 12: structure[..., 12]}
    expected = propagate(_image(), user, _Tissue(tissue), connect_tolerance=1, merge="fusion")
    methods: list[str] = []

    def flood(foreground: torch.Tensor, prior: torch.Tensor, tolerance: int) -> torch.Tensor:
        methods.append("flood")
        return connected_to_prior(foreground, prior, tolerance, method="flood")

    monkeypatch.setattr(engine_module, "connected_to_prior", flood)
    result = propagate(_image(), user, _Tissue(tissue), connect_tolerance=1, merge="fusion")
    assert methods
    assert expected.probability is not None
    assert result.probability is not None
    assert torch.equal(result.mask, expected.mask)
    assert torch.equal(result.probability, expected.probability)
    assert result.fronts == expected.fronts


def test_with_the_filter_the_first_empty_slice_stops_whatever_max_empty_slices() -> None:
    """Nothing can connect to an empty prior: the same output as the legacy rule, fewer predictions."""
    gt = _scene()[0]
    for max_empty in (1, 2, 5, None):
        result = propagate(_image(), {19: gt[..., 19]}, _Tissue(gt), max_empty_slices=max_empty)
        assert torch.equal(result.mask, gt)
        assert {(f.direction, f.stop, f.slices[-1]) for f in result.fronts} == {(1, "empty", 31), (-1, "empty", 7)}


@pytest.mark.parametrize("max_empty", [None, 2])
def test_host_reads_with_the_continuity_filter(
    prop: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, max_empty: int | None
) -> None:
    """With the torch flood fill (the GPU path) a step reads back the flood fill's convergence once (the seeds cover
    almost all of each new slice) and the stop numbers of all fronts once: two host syncs per step."""
    import common.propagation.engine as engine_module
    from common.propagation.continuity import connected_to_prior

    def flood(foreground: torch.Tensor, prior: torch.Tensor, tolerance: int) -> torch.Tensor:
        return connected_to_prior(foreground, prior, tolerance, method="flood")

    monkeypatch.setattr(engine_module, "connected_to_prior", flood)
    gt = prop.ellipsoid()
    oracle = prop.GroundTruthOracle(gt)

    def watched(x: torch.Tensor) -> torch.Tensor:
        return oracle(x.as_subclass(torch.Tensor)).as_subclass(_Watched)

    _Watched.reads.clear()
    result = propagate(prop.slice_index_image(), _three_user_slices(prop), watched, max_empty)
    assert result.n_calls == oracle.n_calls > 0
    assert _Watched.reads == ["equal", "tolist"] * result.n_calls
    assert torch.equal(result.mask, gt)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connect_tolerance": -1}, "connect_tolerance must be an integer >= 0"),
        ({"connect_tolerance": 1.5}, "connect_tolerance must be an integer >= 0"),
        ({"connect_tolerance": True}, "connect_tolerance must be an integer"),
        ({"min_area_ratio": 0}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"min_area_ratio": 1.0}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"min_area_ratio": float("nan")}, "min_area_ratio must be a number"),
        ({"min_area_ratio": "0.2"}, "min_area_ratio must be a number"),
        ({"max_area_ratio": 1.0}, "max_area_ratio must be a finite number > 1"),
        ({"max_area_ratio": float("inf")}, "max_area_ratio must be a finite number > 1"),
        ({"max_area_ratio": False}, "max_area_ratio must be a finite number > 1"),
    ],
)
def test_bad_continuity_options(prop: SimpleNamespace, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        propagate(prop.slice_index_image(), {20: _full_square(prop)}, prop.CopyPrior(), **kwargs)  # type: ignore[arg-type]


def test_intensity_shift_stops_a_front_that_slides_onto_another_tissue() -> None:
    """A tube of intensity 1.0 (slices 0..9) touches a blob of intensity 0.3 (slices 10..19) of the same outline:
    an oracle that segments "whatever touches the prior" runs on into the blob unless the intensity rule stops it."""
    from common.propagation import propagate

    h = w = 16
    image = torch.zeros((h, w, 20))
    image[4:12, 4:12, :10] = 1.0
    image[4:12, 4:12, 10:] = 0.3
    truth = image > 0

    def oracle(x: torch.Tensor) -> torch.Tensor:  # foreground = bright or mid tissue under the prior's box
        return (x[:, 0] > 0.1).float()

    user = {5: truth[..., 5]}
    off = propagate(image, user, oracle, connect_tolerance=None, min_area_ratio=None, max_area_ratio=None,
                    max_intensity_shift=None)  # fmt: skip
    assert off.mask[..., 10:].any()  # the leak
    on = propagate(image, user, oracle, max_intensity_shift=0.2)
    assert not on.mask[..., 10:].any()
    assert on.mask[..., :10].all(dim=-1)[4:12, 4:12].all()
    up = next(f for f in on.fronts if f.direction == 1)
    assert (up.stop, up.n_predicted, up.n_dropped) == ("intensity_shift", 4, 1)  # slices 6..9 kept, 10 dropped
    with pytest.raises(ValueError, match="max_intensity_shift"):
        propagate(image, user, oracle, max_intensity_shift=0.0)
