"""Merge rules on two user slices whose masks differ, so the output tells which user slice each slice came from.

User slice A = 10 carries mask ``MA`` (rows 2..9), user slice B = 20 carries ``MB`` (rows 6..13); they overlap in
rows 6..9. A copy-the-prior oracle propagates each user mask unchanged, so every predicted slice is exactly the mask
of the user slice it came from; the "lossy" oracle loses B's mask below slice 14 (a source-dependent failure).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from common.propagation import (
    MERGE_RULES,
    FusionMerge,
    MergeContext,
    MergeRule,
    NearestMerge,
    OverwriteMerge,
    get_merge_rule,
    propagate,
)

A, B, D = 10, 20, 32
SHAPE = (16, 12)


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    ma = torch.zeros(SHAPE, dtype=torch.bool)
    mb = torch.zeros(SHAPE, dtype=torch.bool)
    ma[2:10, 1:8] = True
    mb[6:14, 4:11] = True
    return ma, mb


MA, MB = _masks()
OVERLAP = MA & MB


def _image(prop: SimpleNamespace) -> torch.Tensor:
    return prop.slice_index_image((*SHAPE, D))


def _expect(result: object, provenance: dict[int, tuple[int, int]]) -> None:
    source = {k: (s, d) for k, (s, d) in enumerate(zip(result.source, result.direction, strict=True))}  # type: ignore[attr-defined]
    assert source == provenance


def _nearest_provenance(midpoint_owner_up: bool = True) -> dict[int, tuple[int, int]]:
    prov = {k: (A, -1) for k in range(A)}
    prov |= {A: (A, 0), B: (B, 0)}
    prov |= {k: (A, 1) for k in range(A + 1, 16)}
    prov |= {k: (B, -1) for k in range(16, B)}
    prov |= {k: (B, 1) for k in range(B + 1, D)}
    if not midpoint_owner_up:
        prov[15] = (B, -1)
    return prov


def _lossy(prop: SimpleNamespace) -> Callable[[torch.Tensor], torch.Tensor]:
    """Copies the prior, except that B's mask (recognised by a pixel only B has) is lost below slice 14."""

    class Lossy(prop.Recorder):  # type: ignore[name-defined]
        def predict(self, k: int, prior: torch.Tensor) -> torch.Tensor:
            if bool(prior[12, 9]) and k < 14:
                return torch.zeros(SHAPE)
            return prior.float()

    return Lossy()


@pytest.mark.parametrize("order", [(A, B), (B, A)])
def test_nearest_takes_the_nearest_user_slice(prop: SimpleNamespace, order: tuple[int, int]) -> None:
    oracle = prop.CopyPrior()
    user = {s: (MA if s == A else MB) for s in order}
    result = propagate(_image(prop), user, oracle, merge="nearest")
    _expect(result, _nearest_provenance())
    for k in range(D):
        expected = MA if result.source[k] == A else MB
        assert torch.equal(result.mask[..., k], expected), k
    assert result.n_predicted == D - 2  # every non-user slice predicted exactly once
    assert sorted(oracle.slices) == [k for k in range(D) if k not in (A, B)]
    fronts = {(f.source, f.direction): (f.n_predicted, f.stop) for f in result.fronts}
    assert fronts == {(A, -1): (10, "edge"), (A, 1): (5, "limit"), (B, -1): (4, "limit"), (B, 1): (11, "edge")}


def test_nearest_with_odd_gap_has_no_tie(prop: SimpleNamespace) -> None:
    result = propagate(_image(prop), {A: MA, 15: MB}, prop.CopyPrior(), merge=NearestMerge(tie="average"))
    assert result.source[11:15] == (A, A, 15, 15)
    assert result.n_predicted == D - 2


def test_nearest_average_tie_blends_the_midpoint(prop: SimpleNamespace) -> None:
    oracle = prop.CopyPrior()
    result = propagate(_image(prop), {A: MA, B: MB}, oracle, merge=NearestMerge(tie="average"))
    assert result.probability is not None
    expected = 0.5 * MA.float() + 0.5 * MB.float()
    assert torch.equal(result.probability[..., 15], expected)
    assert torch.equal(result.mask[..., 15], OVERLAP)  # 0.5 is not > threshold 0.5
    assert oracle.slices.count(15) == 2
    assert result.weights[15].tolist() == [0.5, 0.5]
    assert result.source[15] == A  # provenance ties go to the lower user slice
    _expect(result, _nearest_provenance())


@pytest.mark.parametrize("order", [(A, B), (B, A)])
def test_overwrite_later_user_slice_wins_the_gap(prop: SimpleNamespace, order: tuple[int, int]) -> None:
    oracle = prop.CopyPrior()
    user = {s: (MA if s == A else MB) for s in order}
    result = propagate(_image(prop), user, oracle, merge="overwrite")
    later = order[-1]
    prov = _nearest_provenance()
    prov |= {k: (later, 1 if later == A else -1) for k in range(A + 1, B)}
    _expect(result, prov)
    for k in range(A + 1, B):
        assert torch.equal(result.mask[..., k], MA if later == A else MB)
    assert result.n_predicted == 10 + 9 + 9 + 11  # both fronts cross the whole gap
    assert result.reached[A + 1 : B].all()


def test_overwrite_keeps_earlier_result_beyond_where_the_later_front_stopped(prop: SimpleNamespace) -> None:
    result = propagate(  # the legacy emptiness rule alone (no continuity filter, no other stops)
        _image(prop), {A: MA, B: MB}, _lossy(prop), merge="overwrite", max_empty_slices=2, connect_tolerance=None
    )
    down_b = next(f for f in result.fronts if (f.source, f.direction) == (B, -1))
    assert down_b.slices == [19, 18, 17, 16, 15, 14, 13, 12]
    assert down_b.stop == "empty"
    prov = _nearest_provenance()
    prov |= {k: (B, -1) for k in range(12, B)} | {11: (A, 1)}
    _expect(result, prov)
    assert torch.equal(result.mask[..., 11], MA)  # only A reached it
    assert not result.mask[..., 12:14].any()  # B's (empty) predictions overwrote A's
    assert all(torch.equal(result.mask[..., k], MB) for k in range(14, B))
    # the other order: A was given later and its front reached the whole gap
    result = propagate(_image(prop), {B: MB, A: MA}, _lossy(prop), merge="overwrite")
    assert all(torch.equal(result.mask[..., k], MA) for k in range(A + 1, B))


def test_fusion_blends_linearly_between_user_slices(prop: SimpleNamespace) -> None:
    oracle = prop.CopyPrior()
    result = propagate(_image(prop), {A: MA, B: MB}, oracle, merge="fusion")
    assert result.probability is not None
    for k in range(A + 1, B):
        w_a = (B - k) / (B - A)
        expected = w_a * MA.float() + (1 - w_a) * MB.float()
        assert torch.allclose(result.probability[..., k], expected, atol=1e-6), k
        assert torch.equal(result.mask[..., k], MA if k < 15 else (OVERLAP if k == 15 else MB)), k
        assert result.weights[k].tolist() == pytest.approx([w_a, 1 - w_a])
    _expect(result, _nearest_provenance())  # dominant weight; the midpoint tie goes to the lower slice
    for k in [*range(A), *range(B + 1, D)]:  # outside: like nearest
        assert torch.equal(result.mask[..., k], MA if k < A else MB)
    assert result.n_predicted == 10 + 9 + 9 + 11


def test_fusion_counts_a_stopped_front_as_empty(prop: SimpleNamespace) -> None:
    result = propagate(_image(prop), {A: MA, B: MB}, _lossy(prop), merge="fusion", max_empty_slices=2)
    assert result.probability is not None
    assert torch.allclose(result.probability[..., 11], 0.9 * MA.float())  # B's front stopped at 12
    assert result.reached[11].tolist() == [True, False]
    assert torch.allclose(result.probability[..., 13], 0.7 * MA.float())  # B predicted empty there
    assert torch.equal(result.mask[..., 16], MB)


def test_the_three_rules_give_different_results(prop: SimpleNamespace) -> None:
    masks = {name: propagate(_image(prop), {A: MA, B: MB}, prop.CopyPrior(), merge=name).mask for name in MERGE_RULES}
    names = sorted(masks)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not torch.equal(masks[first], masks[second]), (first, second)


def test_three_user_slices_overwrite_order(prop: SimpleNamespace) -> None:
    user = {15: MB, 5: MA, 25: MA}  # 15 given first, then 5, then 25
    result = propagate(_image(prop), user, prop.CopyPrior(), merge="overwrite")
    assert all(result.source[k] == 5 for k in range(6, 15))
    assert all(result.source[k] == 25 for k in range(16, 25))
    assert result.source[:5] == (5,) * 5
    assert all(result.source[k] == 25 for k in range(26, D))


def test_custom_rule_through_the_single_hook(prop: SimpleNamespace) -> None:
    class LowerWins(MergeRule):
        name = "lower_wins"

        def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
            has_lower = ctx.lower >= 0
            return has_lower.float(), (~has_lower).float()

    result = propagate(_image(prop), {A: MA, B: MB}, prop.CopyPrior(), merge=LowerWins())
    assert result.source[A + 1 : B] == (A,) * (B - A - 1)
    assert result.source[:A] == (A,) * A
    assert all(torch.equal(result.mask[..., k], MA) for k in range(A + 1, B))


def test_merge_context_rank_and_neighbours(prop: SimpleNamespace) -> None:
    seen: list[MergeContext] = []

    class Spy(NearestMerge):
        def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append(ctx)
            return super().weights(ctx)

    propagate(_image(prop), {B: MB, A: MA}, prop.CopyPrior(), merge=Spy())
    ctx = seen[0]
    assert ctx.order == (B, A)
    assert ctx.depth == D
    assert ctx.lower[[0, A, A + 1, B, B + 1]].tolist() == [-1, -1, A, A, B]
    assert ctx.upper[[0, A, A + 1, B, B + 1]].tolist() == [A, B, B, -1, -1]
    assert ctx.rank(torch.tensor([A, B, -1])).tolist() == [1, 0, -1]
    assert ctx.is_user.nonzero().flatten().tolist() == [A, B]


def test_get_merge_rule() -> None:
    assert isinstance(get_merge_rule("overwrite"), OverwriteMerge)
    assert isinstance(get_merge_rule("fusion"), FusionMerge)
    rule = NearestMerge(tie="average")
    assert get_merge_rule(rule) is rule
    with pytest.raises(ValueError, match="merge must be one of"):
        get_merge_rule("best")
    with pytest.raises(ValueError, match="tie must be"):
        NearestMerge(tie="upper")  # type: ignore[arg-type]


def test_bad_weights_from_a_rule_are_reported(prop: SimpleNamespace) -> None:
    class Broken(MergeRule):
        def weights(self, ctx: MergeContext) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.ones(3), torch.ones(3)

    with pytest.raises(ValueError, match=r"returned w_up of shape"):
        propagate(_image(prop), {A: MA}, prop.CopyPrior(), merge=Broken())
