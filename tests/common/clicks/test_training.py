"""Tests of common.clicks.training: click schedules and the batched DeepGrow click simulation (iteration_update)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.losses import DiceLoss
from torch import nn

from common.clicks import SCHEDULES, BatchedClickInteraction, binarize_logits, click_probabilities
from common.networks import DeepGrowUNet

TINY = (2, 4, 8, 16, 32)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def _discs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, 1, size, size)`` float labels, one random disc each (radius 3..7)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx = rng.uniform(8, size - 8, 2)
        r = rng.uniform(3, 7)
        out[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return torch.from_numpy(out)


class _Constant(nn.Module):
    """Predicts the same logit everywhere: -10 = empty prediction, +10 = everything foreground."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.value)


class _Oracle(nn.Module):
    """Predicts the ground truth perfectly."""

    def __init__(self, label: torch.Tensor) -> None:
        super().__init__()
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.label * 2 - 1) * 10


class _FromGuidance(nn.Module):
    """Predicts foreground where the foreground guidance exceeds 0.3 (deterministic on any device)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 1:2] - 0.3) * 10


def _tiny_net(spatial_dims: int = 2) -> DeepGrowUNet:
    return DeepGrowUNet(spatial_dims=spatial_dims, in_channels=3, out_channels=1, channels=TINY)


# --- click_probabilities / binarize_logits --------------------------------------------------------------------------


def test_click_probabilities_paper_schedule() -> None:
    assert click_probabilities(4, "paper") == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert click_probabilities(1, "paper") == pytest.approx([0.5])
    p = click_probabilities(15, "paper")
    assert len(p) == 15
    assert all(0 < v < 1 for v in p)
    assert p == sorted(p, reverse=True)


def test_click_probabilities_monai_schedule() -> None:
    assert click_probabilities(4, "monai") == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert click_probabilities(1, "monai") == pytest.approx([1.0])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_click_probabilities_k_zero(schedule: Any) -> None:
    assert click_probabilities(0, schedule) == []


@pytest.mark.parametrize("bad", [-1, 2.0, True, "5", None])
def test_click_probabilities_bad_k(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_interactions must be an integer >= 0"):
        click_probabilities(bad)


def test_click_probabilities_bad_schedule() -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        click_probabilities(3, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schedule"):
        BatchedClickInteraction(3, schedule="linear")  # type: ignore[arg-type]


def test_binarize_logits() -> None:
    one = torch.tensor([[[[-1.0, 0.0, 2.0]]]])
    assert binarize_logits(one).tolist() == [[[[False, False, True]]]]
    two = torch.tensor([[[[1.0, 0.0, 3.0]], [[0.0, 1.0, 3.0]]]])
    assert binarize_logits(two).tolist() == [[[[False, True, False]]]]
    with pytest.raises(ValueError, match="1- or 2-channel"):
        binarize_logits(torch.zeros(1, 3, 2, 2))


# --- simulate -------------------------------------------------------------------------------------------------------


def test_simulate_output_shape_channels_and_range() -> None:
    image, label = torch.rand(4, 1, 32, 32), _discs(4, 32)
    interaction = BatchedClickInteraction(3, seed=0)
    net = _tiny_net()
    out = interaction.simulate(image, label, net)
    assert out.shape == (4, 3, 32, 32)
    assert out.dtype == image.dtype
    torch.testing.assert_close(out[:, :1], image)
    guidance = out[:, 1:]
    assert float(guidance.min()) >= 0.0
    assert float(guidance.max()) <= 1.0 + 1e-6
    assert torch.allclose(guidance[:, 0].flatten(1).amax(1), torch.ones(4))  # every sample has a foreground click
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.shape == (4,)
    assert ((interaction.last_clicks >= 1) & (interaction.last_clicks <= 4)).all()
    assert 0 <= interaction.last_rounds <= 3


def test_simulate_3d() -> None:
    label = torch.zeros(2, 1, 16, 16, 16)
    label[:, :, 4:12, 5:11, 3:13] = 1
    out = BatchedClickInteraction(2, train=False).simulate(torch.rand(2, 1, 16, 16, 16), label, _tiny_net(3))
    assert out.shape == (2, 3, 16, 16, 16)
    assert float(out[:, 1:].min()) >= 0.0
    assert float(out[:, 1:].max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_first_click_is_inside_the_label(seed: int) -> None:
    label = _discs(6, 32, seed)
    interaction = BatchedClickInteraction(0, seed=seed)
    out = interaction.simulate(torch.zeros(6, 1, 32, 32), label, _Constant(-10.0))
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.tolist() == [1] * 6
    assert interaction.last_rounds == 0
    fg = out[:, 1].flatten(1)
    peak = fg.argmax(dim=1)
    assert all(bool(label[i, 0].flatten()[peak[i]]) for i in range(6))
    assert torch.allclose(fg.amax(1), torch.ones(6))
    assert float(out[:, 2].abs().max()) == 0.0  # no background click


def test_eval_mode_clicks_every_round_while_errors_remain() -> None:
    label = _discs(3, 32)
    k = 4
    empty = _Constant(-10.0)
    interaction = BatchedClickInteraction(k, train=False)
    out = interaction.simulate(torch.zeros(3, 1, 32, 32), label, empty)
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.tolist() == [1 + k] * 3
    assert interaction.last_rounds == k
    assert len(empty.inputs) == k  # one prediction per round, the whole batch at once
    assert float(out[:, 2].abs().max()) == 0.0  # an empty prediction only misses foreground
    # the guidance the network saw grows round by round (more foreground clicks)
    assert [float(x[:, 1].sum()) for x in empty.inputs] == sorted(float(x[:, 1].sum()) for x in empty.inputs)


def test_eval_mode_no_more_clicks_when_perfect() -> None:
    label = _discs(3, 32)
    interaction = BatchedClickInteraction(3, train=False)
    interaction.simulate(torch.zeros(3, 1, 32, 32), label, _Oracle(label))
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.tolist() == [1, 1, 1]


def test_false_positives_give_background_clicks() -> None:
    label = _discs(2, 32)
    interaction = BatchedClickInteraction(2, train=False)
    out = interaction.simulate(torch.zeros(2, 1, 32, 32), label, _Constant(10.0))
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.tolist() == [3, 3]
    bg = out[:, 2]
    assert torch.allclose(bg.flatten(1).amax(1), torch.ones(2))
    peak = bg.flatten(1).argmax(1)
    assert not any(bool(label[i, 0].flatten()[peak[i]]) for i in range(2))  # negative clicks outside the label


@pytest.mark.parametrize(("schedule", "minimum"), [("paper", 1), ("monai", 2)])
def test_train_schedule_gives_expected_number_of_clicks(schedule: Any, minimum: int) -> None:
    """Against an always-empty prediction every decided click lands, so clicks = 1 + Bernoulli(p_k) summed."""
    k, b = 3, 64
    label = torch.zeros(b, 1, 12, 12)
    label[:, :, 3:9, 3:9] = 1
    interaction = BatchedClickInteraction(k, schedule=schedule, seed=5)
    counts = []
    for _ in range(8):
        interaction.simulate(torch.zeros(b, 1, 12, 12), label, _Constant(-10.0))
        assert interaction.last_clicks is not None
        counts.append(interaction.last_clicks)
    clicks = torch.cat(counts).double()
    assert int(clicks.min()) >= minimum
    assert int(clicks.max()) <= 1 + k
    expected = 1 + sum(click_probabilities(k, schedule))
    assert float(clicks.mean()) == pytest.approx(expected, abs=0.15)


def test_same_seed_same_guidance_different_seed_different() -> None:
    image, label = torch.rand(4, 1, 32, 32), _discs(4, 32, seed=9)
    net = _tiny_net()

    def run(seed: int) -> torch.Tensor:
        return BatchedClickInteraction(4, seed=seed).simulate(image, label, net)

    torch.testing.assert_close(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    # a second batch of the same interaction continues the random stream
    interaction = BatchedClickInteraction(4, seed=3)
    first, second = interaction.simulate(image, label, net), interaction.simulate(image, label, net)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("guess", [1, 3, 64])
def test_erosion_guess_never_changes_the_clicks(guess: int) -> None:
    """Speculative rounds (a guessed number of erosions, checked later) give exactly the SciPy-depth clicks."""
    image, label = torch.rand(6, 1, 48, 48), _discs(6, 48, seed=4)
    label[0, 0, 5:35, 5:35] = 1  # a deep structure: depth 15
    net = _tiny_net().eval()
    calls: list[int] = []
    net.register_forward_hook(lambda *_: calls.append(1))

    def run(backend: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        calls.clear()
        interaction = BatchedClickInteraction(5, train=False, seed=2, depth_backend=backend, **kwargs)
        out = interaction.simulate(image, label, net)
        assert interaction.last_clicks is not None
        return out, interaction.last_clicks, len(calls)

    exact, exact_clicks, exact_calls = run("scipy")
    out, clicks, n_calls = run("erosion", erosion_guess=guess)
    torch.testing.assert_close(out, exact)
    assert torch.equal(clicks, exact_clicks)
    assert exact_calls == 5
    if guess == 1:
        assert n_calls > exact_calls  # short guesses redo rounds (their speculative forward passes are discarded)
    if guess == 64:
        assert n_calls == exact_calls


def test_erosion_guess_never_changes_the_clicks_3d() -> None:
    label = torch.zeros(3, 1, 16, 16, 16)
    label[0, :, 2:14, 3:13, 1:15] = 1  # depth 5
    label[1, :, 4:9, 4:9, 4:9] = 1
    label[2, :, 8:, :, :] = 1  # touches the border
    image, net = torch.rand(3, 1, 16, 16, 16), _tiny_net(3).eval()

    def run(backend: Any, guess: int = 16) -> torch.Tensor:
        interaction = BatchedClickInteraction(3, train=False, seed=1, depth_backend=backend, erosion_guess=guess)
        return interaction.simulate(image, label, net)

    exact = run("scipy")
    torch.testing.assert_close(run("erosion", 1), exact)
    torch.testing.assert_close(run("erosion", 2), exact)


def test_depth_check_is_queued_before_the_next_forward_and_read_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order that keeps a GPU busy: flag copied (behind the erosion), next forward queued, then the flag read."""
    import common.clicks.training as training
    from common.clicks.readback import DeviceReadback

    events: list[str] = []

    class _Recorded(DeviceReadback):
        def __init__(self, tensor: torch.Tensor) -> None:
            events.append("copy flag")
            super().__init__(tensor)

        def value(self) -> torch.Tensor:
            events.append("read flag")
            return super().value()

    monkeypatch.setattr(training, "DeviceReadback", _Recorded)
    net = _FromGuidance()
    net.register_forward_hook(lambda *_: events.append("forward"))
    interaction = BatchedClickInteraction(2, train=False, depth_backend="erosion", erosion_guess=32)
    interaction.simulate(torch.rand(2, 1, 32, 32), _discs(2, 32), net)
    assert events == ["copy flag", "forward", "read flag"] * 2 + ["copy flag", "read flag"]


def test_erosion_guess_follows_recent_depths() -> None:
    label = torch.zeros(2, 1, 48, 48)
    label[0, 0, 5:35, 5:35] = 1  # depth 15
    label[1, 0, 10:20, 10:20] = 1  # depth 5
    interaction = BatchedClickInteraction(1, train=False, depth_backend="erosion", erosion_guess=4)
    assert interaction._erosion_guess(0) == 4
    interaction.simulate(torch.rand(2, 1, 48, 48), label, _tiny_net())
    assert interaction._erosion_guess(0) == 15  # the first click's region is the label
    assert 1 <= interaction._erosion_guess(1) <= 20
    with pytest.raises(ValueError, match="erosion_guess must be an integer >= 1"):
        BatchedClickInteraction(1, erosion_guess=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_click_rounds_never_drain_the_device_queue() -> None:
    """On a GPU the rounds contain no synchronising operation (``.item()``, ``nonzero``, blocking copies): the
    only waits are :class:`DeviceReadback` events, which leave the next forward pass queued."""
    device = torch.device("cuda")
    image, label = torch.rand(4, 1, 48, 48), _discs(4, 48)
    net = _FromGuidance()
    BatchedClickInteraction(3, train=False).simulate(image.to(device), label.to(device), net)  # cached tables
    interaction = BatchedClickInteraction(3, train=False, erosion_guess=48)  # deeper than any disc: no redo
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = interaction.simulate(image.to(device, non_blocking=True), label.to(device, non_blocking=True), net)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    on_cpu = BatchedClickInteraction(3, train=False, depth_backend="scipy").simulate(image, label, net)
    torch.testing.assert_close(out.cpu(), on_cpu, atol=1e-5, rtol=0)


def test_network_mode_is_restored() -> None:
    net = _tiny_net()
    image, label = torch.rand(2, 1, 32, 32), _discs(2, 32)
    net.train()
    BatchedClickInteraction(1, train=False).simulate(image, label, net)
    assert net.training
    net.eval()
    BatchedClickInteraction(1, train=False).simulate(image, label, net)
    assert not net.training


def test_simulate_rejects_mismatched_label() -> None:
    interaction = BatchedClickInteraction(1)
    with pytest.raises(ValueError, match=r"'label' .* must be \(B, 1, \*spatial\)"):
        interaction.simulate(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 15), _Constant(-10.0))
    with pytest.raises(ValueError, match="must be"):
        interaction.simulate(torch.zeros(2, 1, 16, 16), torch.zeros(2, 2, 16, 16), _Constant(-10.0))


def test_call_rejects_bad_batches() -> None:
    interaction = BatchedClickInteraction(1)
    with pytest.raises(ValueError, match="needs batch data"):
        interaction(object(), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch has no 'label'"):
        interaction(object(), {"image": torch.zeros(1, 1, 8, 8)})


def test_instantiable_from_bundle_config() -> None:
    parser = ConfigParser(
        {"u": {"_target_": "common.clicks.BatchedClickInteraction", "max_interactions": 5, "schedule": "monai"}}
    )
    u = parser.get_parsed_content("u")
    assert isinstance(u, BatchedClickInteraction)
    assert u.probabilities == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


# --- as iteration_update of MONAI engines ---------------------------------------------------------------------------


def _loader(n: int, size: int, batch_size: int) -> DataLoader:
    label = _discs(n, size, seed=1)
    image = label + 0.3 * torch.rand(n, 1, size, size)
    data = [{"image": image[i], "label": label[i]} for i in range(n)]
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)


def test_supervised_trainer_iteration_update() -> None:
    net = _tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    interaction = BatchedClickInteraction(2, seed=0)
    seen: list[tuple[int, ...]] = []
    net.register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=_loader(4, 32, 2),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=DiceLoss(sigmoid=True, squared_pred=True),
        iteration_update=interaction,
        decollate=False,
    )
    trainer.run()
    assert trainer.state.iteration == 2
    output = trainer.state.output
    assert isinstance(output, dict)
    assert np.isfinite(float(output["loss"].detach()))
    assert tuple(output["image"].shape) == (2, 3, 32, 32)  # the trainer's step ran on the guided input
    assert output["pred"].shape == (2, 1, 32, 32)
    assert all(shape == (2, 3, 32, 32) for shape in seen)
    assert 2 <= len(seen) <= 2 * (1 + 2)  # per iteration: up to K no-grad rounds + the training forward
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters(), strict=True))
    assert net.training
    assert interaction.last_clicks is not None
    assert interaction.last_clicks.shape == (2,)


def test_supervised_evaluator_iteration_update() -> None:
    net = _tiny_net()
    interaction = BatchedClickInteraction(2, train=False)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=_loader(3, 32, 3),
        network=net,
        iteration_update=interaction,
        decollate=False,
    )
    evaluator.run()
    output = evaluator.state.output
    assert isinstance(output, dict)
    assert tuple(output["image"].shape) == (3, 3, 32, 32)
    assert tuple(output["pred"].shape) == (3, 1, 32, 32)
    assert torch.isfinite(output["pred"]).all()
    assert interaction.last_rounds == 2
    assert interaction.last_clicks is not None
    assert ((interaction.last_clicks >= 1) & (interaction.last_clicks <= 3)).all()
