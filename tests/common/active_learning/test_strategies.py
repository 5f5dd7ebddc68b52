"""Tests of common.active_learning.strategies: known uncertainty orderings on tiny hand-made networks, purity
(modes, weights, global random state), seeding, batching, bad input, and the bundle's IsenseeUNet."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from common.active_learning import (
    DEFAULT_BATCH,
    STRATEGIES,
    foreground_probability,
    mc_dropout_variance,
    mean_entropy,
    rank_cases,
    score_cases,
    select_case,
    tta_variance,
)
from common.networks import IsenseeUNet

LN2 = math.log(2.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _conv(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


class LinearLogit(nn.Module):
    """Logits (0, a x) by a 1x1(x1) convolution: foreground probability sigmoid(a x), exactly flip-equivariant."""

    def __init__(self, a: float = 4.0, dims: int = 3) -> None:
        super().__init__()
        self.conv = _conv(dims)(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1] = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class ModeProbe(nn.Module):
    """Identity that records its ``training`` flag at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return x


class DropoutLogit(nn.Module):
    """Batch norm (identity statistics), then logits (0, Dropout(a x)) with element-wise dropout of rate 1/2.

    Each voxel's foreground logit is 0 or 2 a x with probability 1/2 each: its probability's variance is
    ``(sigmoid(2 a x) - 1/2)^2 / 4``, growing with ``|x|`` (0 at x = 0). A batch norm left in training mode would
    normalise a constant input to 0 (and update its running statistics).
    """

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(1)
        self.probe = ModeProbe()
        self.logit = nn.Conv3d(1, 1, 1, bias=False)
        self.dropout = nn.Dropout(p=0.5)
        with torch.no_grad():
            self.logit.weight.fill_(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.dropout(self.logit(self.probe(self.norm(x))))
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


class ShiftLogit(nn.Module):
    """Logits (0, a x[i + 1, j, k]): an asymmetric 3x3x3 kernel (one tap, replicate padding), not flip-equivariant
    along axis 0 (undoing a flip of axis 0 turns the shift into x[i - 1]); exactly equivariant along axes 1 and 2."""

    def __init__(self, a: float = 2.0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        self.a = a
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 2, 1, 1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.a * self.conv(x)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


class SymmetricLogit(nn.Module):
    """Logits (0, 3x3x3 box sum of x): a flip-symmetric kernel with zero padding, equivariant to every flip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.conv(x)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def _const(value: float, shape: tuple[int, ...] = (8, 8, 8)) -> torch.Tensor:
    return torch.full((1, 1, *shape), float(value))


def _binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _tiny_isensee() -> IsenseeUNet:
    torch.manual_seed(0)
    return IsenseeUNet(filters=(4, 8, 16), deep_supr_num=0)


# --------------------------------------------------------------------------------------------------- entropy
def test_entropy_of_a_known_network_orders_the_cases() -> None:
    net = LinearLogit(a=4.0)
    inputs = [_const(0.5), _const(3.0), _const(0.0)]
    scores = score_cases("entropy", net, inputs)
    assert scores.dtype == np.float64
    assert scores.shape == (3,)
    assert scores[2] == pytest.approx(LN2, abs=1e-12)  # p = 0.5
    assert scores[0] == pytest.approx(_binary_entropy(_sigmoid(2.0)), rel=1e-6)
    assert scores[1] == pytest.approx(_binary_entropy(_sigmoid(12.0)), rel=1e-4)
    assert rank_cases("entropy", net, inputs) == [2, 0, 1]
    assert select_case("entropy", net, inputs) == 2


def test_entropy_is_within_0_and_ln2_and_saturates_to_0() -> None:
    torch.manual_seed(0)
    net = _tiny_isensee()
    for scale in (0.1, 1.0, 30.0):
        value = mean_entropy(net, scale * torch.randn(1, 1, 12, 10, 8))
        assert 0.0 <= value <= LN2
    assert mean_entropy(LinearLogit(a=1.0), _const(1000.0)) == 0.0  # saturated: exactly 0, not NaN
    assert mean_entropy(LinearLogit(a=1.0), _const(0.0)) == pytest.approx(LN2, abs=1e-12)


def test_foreground_probability_is_the_softmax_of_channel_1() -> None:
    x = torch.linspace(-2, 2, 16).reshape(2, 1, 2, 4)
    net = LinearLogit(a=1.5, dims=2)
    prob = foreground_probability(net, x)
    assert prob.shape == (2, 2, 4)
    assert prob.dtype == torch.float32
    assert not prob.requires_grad
    torch.testing.assert_close(prob, torch.sigmoid(1.5 * x[:, 0]))


# ------------------------------------------------------------------------------------------------ mc dropout
def test_mc_dropout_variance_grows_with_the_input_and_matches_the_expectation() -> None:
    net = DropoutLogit(a=1.0)
    inputs = [_const(0.5, (16, 16, 16)), _const(0.0, (16, 16, 16)), _const(2.0, (16, 16, 16))]
    scores = score_cases("mc_dropout", net, inputs, samples=10)
    assert scores[1] == 0.0  # logit 0 with or without dropout
    assert rank_cases("mc_dropout", net, inputs, samples=10) == [2, 0, 1]
    for x, score in ((0.5, scores[0]), (2.0, scores[2])):
        expected = 0.9 * (_sigmoid(2.0 * x) - 0.5) ** 2 / 4  # population variance of 10 draws: (n - 1) / n
        assert score == pytest.approx(expected, rel=0.1)


def test_mc_dropout_switches_on_only_the_dropout_layers_and_restores_everything() -> None:
    net = DropoutLogit(a=1.0)
    net.train()
    net.logit.eval()  # a mixed state, restored as it was
    modes = {name: m.training for name, m in net.named_modules()}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    dropout_modes: list[bool] = []
    net.dropout.register_forward_hook(lambda m, i, o: dropout_modes.append(m.training))
    value = mc_dropout_variance(net, _const(2.0), samples=4, batch=1)
    assert value > 0.0  # a batch norm in training mode would have normalised the constant input to 0
    assert net.probe.seen == [False] * 4  # 4 forward passes, all in eval mode
    assert dropout_modes == [True] * 4
    assert {name: m.training for name, m in net.named_modules()} == modes
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[key]), key  # running statistics and batch count included
    assert all(p.grad is None for p in net.parameters())


def test_mc_dropout_is_seeded_and_leaves_the_global_random_state_alone() -> None:
    net = DropoutLogit(a=1.0)
    x = _const(1.0)
    torch.manual_seed(123)
    cpu_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # type: ignore[index]  # noqa: NPY002 - the global state itself
    first = mc_dropout_variance(net, x, samples=5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), cpu_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # type: ignore[index]  # noqa: NPY002
    torch.manual_seed(999)  # another global state: same scores
    assert mc_dropout_variance(net, x, samples=5, seed=7) == first
    assert mc_dropout_variance(net, x, samples=5, seed=8) != first
    for batch in (2, 5):
        assert mc_dropout_variance(net, x, samples=5, seed=7, batch=batch) == mc_dropout_variance(
            net, x, samples=5, seed=7, batch=batch
        )


def test_mc_dropout_batches_the_samples_in_chunks() -> None:
    net = DropoutLogit(a=1.0)
    sizes: list[int] = []
    net.probe.register_forward_hook(lambda m, i, o: sizes.append(int(o.shape[0])))
    mc_dropout_variance(net, _const(1.0), samples=7, batch=3)
    assert sizes == [3, 3, 1]
    sizes.clear()
    mc_dropout_variance(net, _const(1.0), samples=7)
    assert sizes == [DEFAULT_BATCH["cpu"]] * (7 // DEFAULT_BATCH["cpu"]) + (
        [7 % DEFAULT_BATCH["cpu"]] if 7 % DEFAULT_BATCH["cpu"] else []
    )


def test_mc_dropout_needs_a_dropout_layer() -> None:
    with pytest.raises(ValueError, match="dropout"):
        mc_dropout_variance(LinearLogit(), _const(1.0))
    with pytest.raises(ValueError, match="dropout"):
        score_cases("mc_dropout", IsenseeUNet(filters=(4, 8, 16), dropout=0.0, deep_supr_num=0), [_const(1.0)])
    net = DropoutLogit()
    net.dropout.p = 0.0
    with pytest.raises(ValueError, match="p > 0"):
        mc_dropout_variance(net, _const(1.0))


# -------------------------------------------------------------------------------------------------------- TTA
def test_tta_variance_is_zero_for_an_exactly_flip_equivariant_network() -> None:
    x = torch.randn(1, 1, 9, 7, 6, generator=torch.Generator().manual_seed(0))
    # zero up to the rounding of vectorised softmax on differently laid-out voxels
    assert tta_variance(LinearLogit(a=3.0), x, samples=8) == pytest.approx(0.0, abs=1e-15)
    assert tta_variance(SymmetricLogit(), x, samples=8) == pytest.approx(0.0, abs=1e-12)
    x2 = torch.randn(1, 1, 9, 7, generator=torch.Generator().manual_seed(1))
    assert tta_variance(LinearLogit(a=3.0, dims=2), x2, samples=4) == pytest.approx(0.0, abs=1e-15)


def test_tta_variance_is_lower_for_an_input_symmetric_along_the_kernels_asymmetric_axis() -> None:
    net = ShiftLogit(a=2.0)
    noise = torch.randn(8, generator=torch.Generator().manual_seed(0))
    along_1 = noise.reshape(1, 8, 1).expand(8, 8, 8)[None, None].contiguous()  # constant along axis 0
    along_0 = noise.reshape(8, 1, 1).expand(8, 8, 8)[None, None].contiguous()  # varies along axis 0
    scores = score_cases("tta", net, [along_0, _const(1.0), along_1], samples=8)
    assert scores[1] == pytest.approx(0.0, abs=1e-15)
    assert scores[2] == pytest.approx(0.0, abs=1e-12)
    assert scores[0] > 1e-3
    assert rank_cases("tta", net, [along_1, along_0], samples=8) == [1, 0]
    # by hand: with all 8 flips, half see x[i + 1] and half x[i - 1] (replicate padding) at each voxel
    x = noise.double()
    up = torch.sigmoid(2.0 * torch.cat([x[1:], x[-1:]]))
    down = torch.sigmoid(2.0 * torch.cat([x[:1], x[:-1]]))
    assert scores[0] == pytest.approx(float(((up - down) ** 2 / 4).mean()), rel=1e-5)


def test_tta_is_seeded_and_does_not_depend_on_the_batch() -> None:
    net = ShiftLogit()
    x = torch.randn(1, 1, 8, 6, 5, generator=torch.Generator().manual_seed(3))
    state = torch.random.get_rng_state()
    one = tta_variance(net, x, samples=5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert tta_variance(net, x, samples=5, seed=1) == one
    assert tta_variance(net, x, samples=5, seed=1, batch=5) == pytest.approx(one, rel=1e-6)
    assert tta_variance(net, x, samples=5, seed=1, batch=2) == pytest.approx(one, rel=1e-6)
    # 8 samples cover the 8 flip combinations whatever the seed
    assert tta_variance(net, x, samples=8, seed=0) == pytest.approx(tta_variance(net, x, samples=8, seed=5), rel=1e-6)


# --------------------------------------------------------------------------------------- first, last, random
def test_first_last_and_random_need_no_network() -> None:
    inputs = [_const(float(i), (2, 3, 4)) for i in range(5)]
    assert rank_cases("first", None, inputs) == [0, 1, 2, 3, 4]
    assert select_case("first", None, inputs) == 0
    assert rank_cases("last", None, inputs) == [4, 3, 2, 1, 0]
    assert select_case("last", None, inputs) == 4
    scores = score_cases("random", None, inputs, seed=3)
    np.testing.assert_array_equal(scores, np.random.default_rng(3).random(5))
    assert rank_cases("random", None, inputs, seed=3) == [int(i) for i in np.argsort(-scores)]
    orders = {tuple(rank_cases("random", None, inputs, seed=s)) for s in range(10)}
    assert len(orders) > 5


def test_ties_keep_the_given_order() -> None:
    net = LinearLogit(a=4.0)
    inputs = [_const(3.0), _const(0.0), _const(3.0), _const(0.0), _const(0.0)]
    assert rank_cases("entropy", net, inputs) == [1, 3, 4, 0, 2]
    assert rank_cases("mc_dropout", DropoutLogit(), [_const(0.0)] * 4) == [0, 1, 2, 3]
    assert rank_cases("tta", net, [_const(1.0)] * 3) == [0, 1, 2]
    # many ties (a non-stable sort reorders them)
    values = np.where(np.random.default_rng(0).random(100) < 0.5, 0.0, 3.0)
    ranked = rank_cases("entropy", net, [_const(v, (2, 2, 2)) for v in values])
    assert ranked == [i for i in range(100) if values[i] == 0.0] + [i for i in range(100) if values[i] == 3.0]


# ------------------------------------------------------------------------------------------------------- purity
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_restores_modes_and_weights(strategy: str) -> None:
    net = DropoutLogit()
    net.norm.train()
    assert net.norm.running_mean is not None
    net.norm.running_mean.fill_(0.1)
    modes = {name: m.training for name, m in net.named_modules()}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.random.get_rng_state()
    scores = score_cases(strategy, net, [_const(1.0), _const(-2.0)], samples=3)
    assert np.isfinite(scores).all()
    assert {name: m.training for name, m in net.named_modules()} == modes
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_modes_are_restored_when_the_network_fails() -> None:
    class Broken(DropoutLogit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)[:, :1]  # one channel

    net = Broken()
    net.train()
    with pytest.raises(ValueError, match="2-channel"):
        mc_dropout_variance(net, _const(1.0))
    assert all(m.training for m in net.modules())


# -------------------------------------------------------------------------------------------------- IsenseeUNet
@pytest.mark.parametrize("device", DEVICES)
def test_every_strategy_runs_on_a_tiny_isensee_unet(device: str) -> None:
    net = _tiny_isensee().to(device)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 1, 12, 10, 8, generator=gen), 3 * torch.randn(1, 1, 12, 10, 8, generator=gen)]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    for strategy in STRATEGIES:
        scores = score_cases(strategy, net, inputs, samples=3, seed=1)
        assert scores.shape == (2,)
        assert np.isfinite(scores).all()
        if strategy in ("mc_dropout", "tta"):
            assert (scores >= 0).all()
            assert (scores <= 0.25).all()
            np.testing.assert_array_equal(scores, score_cases(strategy, net, inputs, samples=3, seed=1))
        if strategy == "entropy":
            assert ((scores >= 0) & (scores <= LN2)).all()
        assert all(m.training for m in net.modules())
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    assert mc_dropout_variance(net, inputs[0], samples=3) > 0.0  # spatial dropout layers were switched on


def test_inputs_follow_the_networks_device_and_dtype() -> None:
    net = LinearLogit(a=2.0).double()
    assert mean_entropy(net, _const(0.0).float()) == pytest.approx(LN2, abs=1e-15)
    net2 = LinearLogit(a=2.0)
    assert mean_entropy(net2, _const(0.0).double()) == pytest.approx(LN2, abs=1e-12)


def test_2d_inputs_work_with_every_strategy() -> None:
    net = LinearLogit(a=2.0, dims=2)
    inputs = [torch.full((1, 1, 6, 5), 0.1), torch.full((1, 1, 6, 5), 2.0)]
    for strategy in STRATEGIES:
        if strategy == "mc_dropout":
            continue
        assert np.isfinite(score_cases(strategy, net, inputs, samples=4)).all()
    assert select_case("entropy", net, inputs) == 0


# ---------------------------------------------------------------------------------------------------- bad input
BAD_CALLS: list[tuple[str, Callable[[], object], str]] = [
    ("unknown strategy", lambda: score_cases("margin", LinearLogit(), [_const(1.0)]), "random, first, last, entropy"),
    ("no case", lambda: score_cases("entropy", LinearLogit(), []), "empty"),
    ("2D batch dims", lambda: score_cases("first", None, [torch.zeros(1, 4, 4)]), r"\(1, C, H, W\)"),
    ("batch of 2", lambda: score_cases("entropy", LinearLogit(), [torch.zeros(2, 1, 4, 4, 4)]), "inputs\\[0\\]"),
    ("empty tensor", lambda: score_cases("entropy", LinearLogit(), [torch.zeros(1, 1, 0, 4, 4)]), "empty"),
    ("NaN", lambda: score_cases("random", None, [_const(1.0), _const(float("nan"))]), r"inputs\[1\].*non-finite"),
    ("inf", lambda: mean_entropy(LinearLogit(), _const(float("inf"))), "non-finite"),
    ("integer input", lambda: mean_entropy(LinearLogit(), torch.zeros(1, 1, 2, 2, 2, dtype=torch.int64)), "floating"),
    ("not a tensor", lambda: score_cases("first", None, [np.zeros((1, 1, 2, 2))]), "torch.Tensor"),  # type: ignore[list-item]
    ("one tensor", lambda: score_cases("first", None, _const(1.0)), "sequence"),  # type: ignore[arg-type]
    ("network None", lambda: score_cases("entropy", None, [_const(1.0)]), "network is None"),
    ("network None tta", lambda: score_cases("tta", None, [_const(1.0)]), "network is None"),
    ("1 mc sample", lambda: score_cases("mc_dropout", DropoutLogit(), [_const(1.0)], samples=1), "samples"),
    ("1 tta sample", lambda: tta_variance(LinearLogit(), _const(1.0), samples=1), "samples"),
    ("batch 0", lambda: tta_variance(LinearLogit(), _const(1.0), batch=0), "batch"),
    ("negative seed", lambda: score_cases("random", None, [_const(1.0)], seed=-1), "seed"),
    ("wrong output", lambda: mean_entropy(nn.Conv3d(1, 3, 1), _const(1.0)), "2-channel"),
]


@pytest.mark.parametrize(("what", "call", "message"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_input_raises_a_value_error_naming_the_problem(what: str, call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
