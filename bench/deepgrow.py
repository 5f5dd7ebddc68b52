"""DeepGrow click benchmark: training throughput of the batched click simulation, and per-click inference latency.

Everything is measured in one run, on one device (``--device``), on synthetic in-memory data, so that neither data
loading nor disk speed is what is measured.

**1. Training iterations per second** (default ``K = 5``, batch 16, 256 x 256), three loops on the same network
(:class:`common.networks.DeepGrowUNet`, 2D, ``--channels``; every loop starts from the same initial weights), the
same loss (``DiceLoss(sigmoid=True, squared_pred=True)``), optimiser (``Adam``, lr 1e-4), batch and ``K``:

(a) ``ours``: a MONAI ``SupervisedTrainer`` whose ``iteration_update`` is
    :class:`common.clicks.BatchedClickInteraction` (click schedule ``"monai"``, i.e. the same click probabilities
    ``1 - j / K`` as MONAI's loop): first click, ``K`` no-grad rounds with batched click simulation on the device,
    one training step;
(b) ``monai``: the reference, a ``SupervisedTrainer`` with ``monai.apps.deepgrow.interaction.Interaction`` and the
    click transforms as MONAI's deepgrow tutorial (``deepgrow/ignite/train.py``) and MONAI Label's deepgrow train
    task build them: per sample ``Activationsd(sigmoid) -> ToNumpyd -> FindDiscrepancyRegionsd ->
    AddRandomGuidanced -> AddGuidanceSignald -> EnsureTyped``, with the first click from ``AddInitialSeedPointd ->
    AddGuidanceSignald`` in the data pipeline. That data pipeline runs *before* the timed loop (in a real run it
    runs in data-loader workers, in parallel with training), so (b) does not pay for its first click while (a) does;
    its host time per batch is reported separately (``data_pipeline_ms_per_batch``);
(c) ``limit``: the network-bound limit, the same ``K`` no-grad forward passes plus one training step (forward, loss,
    backward, ``Adam`` step) on tensors already on the device, no click simulation and no engine.

(a) and (b) receive the same batches (CPU ``MetaTensor`` batches from ``list_data_collate``, as a data loader
yields them; each sample has one star-shaped structure, one connected component, so MONAI's ``AddInitialSeedPointd``
also places one seed), run ``K`` rounds and click with the same probabilities; the JSON reports the mean number of
clicks per sample and of prediction rounds per iteration for both. The loops run interleaved, one iteration of
each per round (limit, ours, monai), so that load from other processes affects them alike; each keeps its network,
optimiser and click simulator across rounds. An iteration is timed from the engine's ``ITERATION_STARTED`` to its
``ITERATION_COMPLETED`` event (``torch.cuda.synchronize()`` at both on a GPU). Reported: iterations per second over
the ``--iters`` timed rounds after ``--warmup`` untimed ones (``iters / total time``), and the ratios
``ours / limit`` (target on a GPU: >= 0.85) and ``ours / monai``.
After the timed rounds, ``--profile-iters`` further iterations of each loop run with a synchronised per-part
breakdown (no-grad forward passes, training step, click simulation functions or transforms, decollate/collate,
``other`` = the rest), which shows where the time goes; those iterations are not part of the throughput (the
synchronisation between parts slows a GPU down).

**2. Per-click inference latency** (default 512 x 512), for the networks of ``--channels`` and the lighter
``--light-channels`` networks, eval mode, one image with 3 foreground and 2 background clicks:

- ``forward``: the network's forward pass alone on the guided input ``(1, 3, H, W)`` already on the device;
- ``transforms``: the bundle's pre-processing path on the image, which an interactive session keeps on the device
  between clicks (the bundle's ``inference.json`` moves it there before the click transforms):
  ``ClickMapsd`` (clicks checked on the host, the click map made on the image's device) + ``AddGuidanced``
  (guidance rendered there), :class:`common.clicks.ClickInferer`, threshold, mask back to the host;
- ``functional``: the functional path (what the click evaluation adapter ran before the bundle pipeline):
  ``click_map_from_points`` on the device, ``render_guidance``, concatenated with the image, then the same inferer,
  threshold and mask to the host;
- ``upload``: moving the image from the host to the device, paid once per image (reported, not part of the ratios).

Reported: median and 90th percentile over ``--repeats`` interleaved rounds after ``--latency-warmup``, the ratios
``pipeline / forward`` (target <= 1.15) and, on the CPU, whether the ``transforms`` path answers within 300 ms.

Run from the repository root::

    python bench/deepgrow.py --device cuda --out outputs/bench/deepgrow_cuda.json
    python bench/deepgrow.py --device cpu --iters 2 --warmup 1 --repeats 5 --out outputs/bench/deepgrow_cpu.json
    python bench/deepgrow.py --sizes 64x64 --batch 2 --k 2 --iters 1 --latency-sizes 64x64 --repeats 2  # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import monai
import numpy as np
import torch
from monai.apps.deepgrow import interaction as monai_interaction
from monai.apps.deepgrow.interaction import Interaction
from monai.apps.deepgrow.transforms import (
    AddGuidanceSignald,
    AddInitialSeedPointd,
    AddRandomGuidanced,
    FindDiscrepancyRegionsd,
)
from monai.data import list_data_collate
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from monai.losses import DiceLoss
from monai.transforms import Activationsd, Compose, EnsureTyped, ToNumpyd

import common.clicks.training as click_training
from common.benchmarking import device_description, run_environment
from common.clicks import BatchedClickInteraction, ClickInferer, binarize_logits
from common.networks import DeepGrowUNet
from common.transforms.guidance import AddGuidanced, ClickMapsd, click_map_from_points, render_guidance

__all__ = [
    "CPU_LATENCY_TARGET_MS",
    "LATENCY_RATIO_TARGET",
    "TRAIN_RATIO_TARGET",
    "LatencyRow",
    "TrainRow",
    "count_click_ops",
    "count_monai_clicks",
    "device_description",
    "format_latency_table",
    "format_train_table",
    "main",
    "monai_click_transforms",
    "monai_seed_transforms",
    "parse_channels",
    "parse_size",
    "synthetic_sample",
]

logger = logging.getLogger(__name__)

#: Target of ``ours it/s / limit it/s`` on a GPU.
TRAIN_RATIO_TARGET = 0.85
#: Target of ``(guidance + forward) / forward`` per click.
LATENCY_RATIO_TARGET = 1.15
#: Per-click latency target on a (2-core) CPU, for some network configuration.
CPU_LATENCY_TARGET_MS = 300.0
#: Default level widths of the bundle (``bundles/deepgrow_clicks/configs/train.json``).
BUNDLE_CHANNELS = (16, 32, 64, 128, 256)
#: Clicks of the latency benchmark: foreground and background.
LATENCY_CLICKS = (3, 2)
LEARNING_RATE = 1e-4

Size = tuple[int, int]
Channels = tuple[int, int, int, int, int]


# ----------------------------------------------------------------------------------------------------------- inputs


def parse_size(text: str) -> Size:
    """Parse ``"HxW"`` (e.g. ``"256x256"``) into ``(H, W)`` positive ints, each a multiple of 16.

    Raises:
        ValueError: not two ``x``-separated positive integers, or not multiples of 16 (the U-Net's 4 poolings).
    """
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or any(v < 1 for v in values):
        raise ValueError(f"size must be HxW with two positive integers, e.g. 256x256; got {text!r}")
    if any(v % 16 for v in values):
        raise ValueError(f"size {text!r}: both sides must be multiples of 16 (DeepGrowUNet pools 4 times)")
    return values[0], values[1]


def parse_channels(text: str) -> Channels:
    """Parse ``"16,32,64,128,256"`` into five positive level widths of :class:`DeepGrowUNet`.

    Raises:
        ValueError: not five comma-separated positive integers.
    """
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 5 or any(v < 1 for v in values):
        raise ValueError(
            f"channels must be five comma-separated positive integers, e.g. 16,32,64,128,256; got {text!r}"
        )
    return values[0], values[1], values[2], values[3], values[4]


def synthetic_sample(size: Size, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One 2D training sample: a smooth star-shaped structure in noise.

    The structure is ``r <= r0 * (1 + sum_k a_k cos(k theta + phi_k))`` around a random centre (``k = 2, 3, 4``,
    ``a_k < 0.12``): smooth, star-shaped, hence one connected component.

    Args:
        size: ``(H, W)``.
        rng: source of the shape and the noise.

    Returns:
        ``(image, label)``: float32 ``(1, H, W)`` each; the image is N(0, 0.3) noise + 1 inside the structure, the
        label 0/1.
    """
    height, width = size
    ii, jj = np.mgrid[0:height, 0:width].astype(np.float64)
    ci, cj = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    r0 = rng.uniform(0.12, 0.25) * min(height, width)
    theta = np.arctan2(ii - ci, jj - cj)
    radius = np.full_like(theta, r0)
    for k in (2, 3, 4):
        radius += r0 * rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0.0, 2 * np.pi))
    label = (np.hypot(ii - ci, jj - cj) <= radius).astype(np.float32)
    image = (rng.standard_normal((height, width)) * 0.3).astype(np.float32) + label
    return image[None], label[None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _network(channels: Sequence[int], seed: int, device: torch.device) -> DeepGrowUNet:
    """DeepGrowUNet 2D (image + 2 guidance -> 1 logit) with weights fixed by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = DeepGrowUNet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels)
    return network.to(device)


# --------------------------------------------------------------------------------------------------------- training


@dataclass
class TrainRow:
    """One training loop at one size and network width: ``ours``, ``monai`` or ``limit``.

    Attributes:
        size: ``(H, W)`` in pixels.
        channels: the network's five level widths.
        device: ``"cpu"`` or ``"cuda"``.
        batch: samples per batch.
        k: ``K``, the no-grad prediction rounds per iteration.
        variant: ``"ours"`` (BatchedClickInteraction), ``"monai"`` (monai.apps.deepgrow Interaction) or ``"limit"``
            (K forward passes + one training step on device tensors).
        iters: timed iterations.
        seconds: wall time of the timed iterations (s).
        it_per_s: ``iters / seconds``.
        ms_per_it: ``1000 * seconds / iters``.
        median_ms_per_it: median time of one timed iteration (ms; less sensitive to load spikes).
        ratio_to_limit: ``it_per_s / limit it_per_s``.
        clicks_per_sample: mean clicks per sample in the final guidance of the timed iterations (``None``: limit).
        rounds_per_iter: mean no-grad prediction rounds per timed iteration.
        iteration_s: wall time of each timed iteration (completion to completion, s).
        breakdown_ms: synchronised per-part milliseconds per iteration from the profiling iterations (not timed).
        data_pipeline_ms_per_batch: ``monai`` only: host time per batch of MONAI's first-click data pipeline
            (``AddInitialSeedPointd`` + ``AddGuidanceSignald``), which runs outside the timed loop.
        click_ops: ``ours`` only: operations of one call of the click rounds outside the network, see
            :func:`count_click_ops` (with the profiling iterations).
    """

    size: Size
    channels: list[int]
    device: str
    batch: int
    k: int
    variant: str
    iters: int
    seconds: float
    it_per_s: float
    ms_per_it: float
    median_ms_per_it: float
    ratio_to_limit: float
    clicks_per_sample: float | None
    rounds_per_iter: float
    iteration_s: list[float] = field(default_factory=list)
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    data_pipeline_ms_per_batch: float | None = None
    click_ops: dict[str, int] | None = None


def count_monai_clicks(guidance: str | Sequence[Any]) -> int:
    """Number of clicks in one MONAI deepgrow guidance (JSON ``[[positive points], [negative points]]``).

    MONAI pads with points of ``-1`` coordinates (no click); a real click has all coordinates ``>= 0``.
    """
    parsed: list[Any] = json.loads(guidance) if isinstance(guidance, str) else list(guidance)
    return sum(1 for channel in parsed for point in channel if min(point) >= 0)


def monai_seed_transforms(seed: int) -> Compose:
    """MONAI deepgrow's first click in the data pipeline (2D), as in its tutorial and MONAI Label's train task."""
    transforms = Compose(
        [
            AddInitialSeedPointd(label="label", guidance="guidance", sids="sids"),
            AddGuidanceSignald(image="image", guidance="guidance"),
            EnsureTyped(keys=("image", "label")),
        ]
    )
    transforms.set_random_state(seed=seed)
    return transforms


def monai_click_transforms(seed: int) -> Compose:
    """MONAI deepgrow's per-round click transforms, as in its tutorial (``deepgrow/ignite/train.py``)."""
    transforms = Compose(
        [
            Activationsd(keys="pred", sigmoid=True),
            ToNumpyd(keys=("image", "label", "pred")),
            FindDiscrepancyRegionsd(label="label", pred="pred", discrepancy="discrepancy"),
            AddRandomGuidanced(guidance="guidance", discrepancy="discrepancy", probability="probability"),
            AddGuidanceSignald(image="image", guidance="guidance"),
            EnsureTyped(keys=("image", "label")),
        ]
    )
    transforms.set_random_state(seed=seed)
    return transforms


@dataclass
class _Batches:
    ours: list[dict[str, Any]]
    monai: list[dict[str, Any]]
    monai_seed_s: list[float]


def _pinned(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with image and label in pinned memory, as ``DataLoader(pin_memory=True)`` delivers them."""
    return {k: v.pin_memory() if k in ("image", "label") else v for k, v in batch.items()}


def _make_batches(
    size: Size, batch: int, n_batches: int, rng: np.random.Generator, seed: int, pin: bool = False
) -> _Batches:
    """``n_batches`` collated batches for both loops from the same samples (see the module docstring)."""
    ensure = EnsureTyped(keys=("image", "label"))
    seeding = monai_seed_transforms(seed)
    out = _Batches([], [], [])
    for _ in range(n_batches):
        samples = [synthetic_sample(size, rng) for _ in range(batch)]
        ours = list_data_collate([ensure({"image": im, "label": lb}) for im, lb in samples])
        out.ours.append(_pinned(ours) if pin else ours)
        start = time.perf_counter()
        seeded = [seeding({"image": im.copy(), "label": lb.copy()}) for im, lb in samples]
        monai_batch = list_data_collate(seeded)
        out.monai.append(_pinned(monai_batch) if pin else monai_batch)
        out.monai_seed_s.append(time.perf_counter() - start)
    return out


class _Breakdown:
    """Synchronised wall time of named parts of training iterations (only while ``enabled``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = False
        self.seconds: dict[str, float] = {}
        self.iterations = 0
        self.total_s = 0.0
        self._starts: list[float] = []

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` wrapped so that its synchronised wall time is added to ``name``."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            _sync(self.device)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            _sync(self.device)
            self.add(name, time.perf_counter() - start)
            return result

        return wrapped

    @contextmanager
    def forward_hooks(self, network: torch.nn.Module, name: str) -> Iterator[None]:
        """Time the network's no-grad forward passes under ``name``."""

        def pre(module: torch.nn.Module, args: Any) -> None:
            if self.enabled and not torch.is_grad_enabled():
                _sync(self.device)
                self._starts.append(time.perf_counter())

        def post(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self.enabled and not torch.is_grad_enabled() and self._starts:
                _sync(self.device)
                self.add(name, time.perf_counter() - self._starts.pop())

        handles = [network.register_forward_pre_hook(pre), network.register_forward_hook(post)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def per_iteration_ms(self) -> dict[str, float]:
        """Milliseconds per iteration of each part, ``other`` (the iteration minus the parts) and ``total``."""
        n = max(self.iterations, 1)
        parts = {name: 1000 * s / n for name, s in self.seconds.items()}
        parts["other"] = 1000 * self.total_s / n - sum(parts.values())
        parts["total"] = 1000 * self.total_s / n
        return {k: round(v, 3) for k, v in parts.items()}


class _EngineLoop:
    """A training loop driven by MONAI's ``SupervisedTrainer`` with a click ``iteration_update``, one iteration per
    :meth:`step` (a fresh one-iteration trainer each time; network, optimiser and click simulator persist)."""

    def __init__(
        self,
        network: torch.nn.Module,
        update: Callable[..., Any],
        device: torch.device,
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        self.network = network
        self.update = update
        self.device = device
        self.record = record
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
        self.loss = DiceLoss(sigmoid=True, squared_pred=True)

    def step(self, batch: dict[str, Any], breakdown: _Breakdown | None = None) -> float:
        """Run one iteration on (a shallow copy of) ``batch``; return its synchronised wall time in seconds.

        The time runs from the engine's ``ITERATION_STARTED`` to its ``ITERATION_COMPLETED`` event, after MONAI's
        own completion handlers (decollate): click simulation, the training step and the engine's per-iteration
        work; fetching the batch from an in-memory list in between iterations costs microseconds.
        """
        from ignite.engine import Events

        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=1,
            train_data_loader=[dict(batch)],  # MONAI's Interaction adds keys to the dict it gets
            epoch_length=1,
            network=self.network,
            optimizer=self.optimizer,
            loss_function=self.loss,
            inferer=SimpleInferer(),
            iteration_update=self.update,
        )
        original = trainer._iteration

        def iteration(engine: SupervisedTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
            if breakdown is None:
                self.record(batchdata)
            return original(engine, batchdata)

        # the engine calls engine._iteration(engine, batchdata): route it through the recorder (and the breakdown)
        routed = breakdown.timed("train step", iteration) if breakdown else iteration
        trainer._iteration = routed  # type: ignore[method-assign]
        marks: list[float] = []

        def mark(engine: SupervisedTrainer) -> None:
            _sync(self.device)
            marks.append(time.perf_counter())

        trainer.add_event_handler(Events.ITERATION_STARTED, mark)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, mark)
        trainer.run()
        seconds = marks[1] - marks[0]
        if breakdown is not None:
            breakdown.iterations += 1
            breakdown.total_s += seconds
        return seconds


class _LimitLoop:
    """The network-bound limit: ``K`` no-grad forward passes and one training step on tensors on the device."""

    def __init__(self, network: torch.nn.Module, k: int, device: torch.device) -> None:
        self.network = network
        self.k = k
        self.device = device
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
        self.loss = DiceLoss(sigmoid=True, squared_pred=True)
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def step(self, batch: dict[str, Any], breakdown: _Breakdown | None = None) -> float:
        """One iteration on ``batch``'s guided image and label (moved to the device once, untimed).

        With ``breakdown``, the no-grad passes and the training step are also timed apart (one more device
        synchronisation between them).
        """
        if id(batch) not in self._inputs:
            x = torch.as_tensor(batch["image"]).as_subclass(torch.Tensor).to(self.device)
            y = torch.as_tensor(batch["label"]).as_subclass(torch.Tensor).to(self.device)
            self._inputs[id(batch)] = (x, y)
        x, y = self._inputs[id(batch)]
        _sync(self.device)
        start = time.perf_counter()
        self.network.eval()
        with torch.no_grad():
            for _ in range(self.k):
                self.network(x)
        if breakdown is not None:
            _sync(self.device)
        middle = time.perf_counter()
        self.network.train()
        self.optimizer.zero_grad(set_to_none=False)  # as SupervisedTrainer (optim_set_to_none=False)
        self.loss(self.network(x), y).mean().backward()
        self.optimizer.step()
        _sync(self.device)
        end = time.perf_counter()
        if breakdown is not None:
            breakdown.add("forward (no grad)", middle - start)
            breakdown.add("train step", end - middle)
            breakdown.iterations += 1
            breakdown.total_s += end - start
        return end - start


def _monai_update(k: int, seed: int, wrap: _Breakdown | None = None) -> Interaction:
    transforms = monai_click_transforms(seed)
    steps: list[Callable[..., Any]] = list(transforms.transforms)
    if wrap is not None:
        steps = [wrap.timed(type(t).__name__, t) for t in transforms.transforms]
    return Interaction(transforms=steps, max_interactions=k, train=True, key_probability="probability")


#: The functions of our click loop (``common.clicks.training``) timed separately in the breakdown.
CLICK_PARTS = (
    "error_regions",
    "start_chamfer_depth",
    "draw_clicks",
    "add_new_clicks",
    "add_guidance_stamps",
    "normalise_guidance",
)


def _profile_ours(loop: _EngineLoop, batch: dict[str, Any], n: int) -> dict[str, float]:
    """Synchronised per-part breakdown of ``n`` iterations of our loop (ms per iteration)."""
    breakdown = _Breakdown(loop.device)
    with ExitStack() as stack:
        for name in CLICK_PARTS:
            wrapped = breakdown.timed(name, getattr(click_training, name))
            stack.enter_context(mock.patch.object(click_training, name, wrapped))
        stack.enter_context(breakdown.forward_hooks(loop.network, "forward (no grad)"))
        breakdown.enabled = True
        for _ in range(n):
            loop.step(batch, breakdown)
    return breakdown.per_iteration_ms()


#: aten operations that make no kernel (views, aliases): not counted as kernels by :func:`count_click_ops`.
VIEW_OPS = frozenset(
    {
        "aten.view.default",
        "aten._unsafe_view.default",
        "aten.unsqueeze.default",
        "aten.squeeze.dim",
        "aten.squeeze.dims",
        "aten.select.int",
        "aten.slice.Tensor",
        "aten.unbind.int",
        "aten.permute.default",
        "aten.expand.default",
        "aten.alias.default",
        "aten.detach.default",
        "aten.lift_fresh.default",
        "aten.t.default",
    }
)


def count_click_ops(
    update: BatchedClickInteraction, batch: dict[str, Any], network: torch.nn.Module, device: torch.device
) -> dict[str, int]:
    """Operations of one call of our click rounds outside the network (``update.simulate`` on ``batch``).

    Returns ``ops`` (aten operations dispatched), ``kernels`` (those that are not views: on a GPU each is at least
    one kernel launch) and, on a GPU, ``syncs``: the operations that make the host wait for the device to finish
    all queued work (counted with ``torch.cuda.set_sync_debug_mode("warn")``; event waits of
    :class:`common.clicks.readback.DeviceReadback` are not among them, they leave later work queued).
    A device-independent view of the launch overhead that the throughput figures measure.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []
            self.in_network = False

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if not self.in_network:
                self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    image = torch.as_tensor(batch["image"]).as_subclass(torch.Tensor).to(device)
    label = torch.as_tensor(batch["label"]).as_subclass(torch.Tensor).to(device)
    counter = _Counter()
    handles = [
        network.register_forward_pre_hook(lambda *_: setattr(counter, "in_network", True)),
        network.register_forward_hook(lambda *_: setattr(counter, "in_network", False)),
    ]
    syncs: int | None = None
    try:
        _sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with counter:
                    update.simulate(image, label, network)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
        if device.type == "cuda":
            syncs = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        for handle in handles:
            handle.remove()
    result = {"ops": len(counter.ops), "kernels": sum(op not in VIEW_OPS for op in counter.ops)}
    if syncs is not None:
        result["syncs"] = syncs
    return result


def _profile_monai(loop: _EngineLoop, batch: dict[str, Any], n: int, k: int, seed: int) -> dict[str, float]:
    """Synchronised per-part breakdown of ``n`` iterations of MONAI's loop (ms per iteration)."""
    breakdown = _Breakdown(loop.device)
    original_update = loop.update
    with ExitStack() as stack:
        for name in ("decollate_batch", "list_data_collate"):
            wrapped = breakdown.timed(name, getattr(monai_interaction, name))
            stack.enter_context(mock.patch.object(monai_interaction, name, wrapped))
        stack.enter_context(breakdown.forward_hooks(loop.network, "forward (no grad)"))
        breakdown.enabled = True
        loop.update = _monai_update(k, seed, wrap=breakdown)  # the same transforms, each one timed
        try:
            for _ in range(n):
                loop.step(batch, breakdown)
        finally:
            loop.update = original_update
    return breakdown.per_iteration_ms()


def _bench_train_size(
    size: Size, channels: Channels, device: torch.device, args: argparse.Namespace, seed: int
) -> list[TrainRow]:
    """Time (c) limit, (a) ours and (b) monai at one size and network width, interleaved; see the module docstring."""
    rng = np.random.default_rng(seed)
    n_batches = min(args.warmup + args.iters, args.distinct_batches)
    batches = _make_batches(size, args.batch, n_batches, rng, seed, pin=device.type == "cuda")
    initial = {k: v.clone() for k, v in _network(channels, seed, device).state_dict().items()}

    def fresh() -> DeepGrowUNet:
        network = _network(channels, seed, device)
        network.load_state_dict(initial)
        return network

    ours_update = BatchedClickInteraction(
        max_interactions=args.k, sigma=args.sigma, train=True, schedule="monai", seed=seed
    )
    ours_clicks: list[torch.Tensor] = []
    ours_rounds: list[int] = []
    monai_guidance: list[Any] = []

    def record_ours(batchdata: dict[str, Any]) -> None:
        if ours_update.last_clicks is not None:  # the clicks of this batch: simulate() has just run
            ours_clicks.append(ours_update.last_clicks)
        ours_rounds.append(ours_update.last_rounds)

    def record_monai(batchdata: dict[str, Any]) -> None:
        monai_guidance.append(batchdata["guidance"])  # the final guidance; parsed after the timing

    limit = _LimitLoop(fresh(), args.k, device)
    ours = _EngineLoop(fresh(), ours_update, device, record_ours)
    reference = _EngineLoop(fresh(), _monai_update(args.k, seed), device, record_monai)
    times: dict[str, list[float]] = {"limit": [], "ours": [], "monai": []}
    for round_ in range(args.warmup + args.iters):
        i = round_ % len(batches.ours)
        step_times = {
            "limit": limit.step(batches.monai[i]),  # the guided image (image + first-click guidance) and label
            "ours": ours.step(batches.ours[i]),
            "monai": reference.step(batches.monai[i]),
        }
        if round_ >= args.warmup:
            for name, seconds in step_times.items():
                times[name].append(seconds)
        logger.info("%s round %d: %s", size, round_ + 1, step_times)

    clicks_ours = torch.cat(ours_clicks[args.warmup :]).float().mean().item()
    counts = [count_monai_clicks(g) for batch_guidance in monai_guidance[args.warmup :] for g in batch_guidance]
    breakdowns: dict[str, dict[str, float]] = {"limit": {}, "ours": {}, "monai": {}}
    ops: dict[str, int] | None = None
    if args.profile_iters:
        limit_breakdown = _Breakdown(device)
        for _ in range(args.profile_iters):
            limit.step(batches.monai[0], limit_breakdown)
        breakdowns["limit"] = limit_breakdown.per_iteration_ms()
        breakdowns["ours"] = _profile_ours(ours, batches.ours[0], args.profile_iters)
        breakdowns["monai"] = _profile_monai(reference, batches.monai[0], args.profile_iters, args.k, seed + 1)
        ops = count_click_ops(ours_update, batches.ours[0], ours.network, device)
    clicks: dict[str, float | None] = {"limit": None, "ours": clicks_ours, "monai": float(np.mean(counts))}
    rounds = {"limit": float(args.k), "ours": float(np.mean(ours_rounds[args.warmup :])), "monai": float(args.k)}
    limit_rate = args.iters / sum(times["limit"])
    seed_ms = 1000 * float(np.mean(batches.monai_seed_s))
    result = []
    for variant in ("ours", "monai", "limit"):
        seconds = sum(times[variant])
        result.append(
            TrainRow(
                size=size,
                channels=list(channels),
                device=device.type,
                batch=args.batch,
                k=args.k,
                variant=variant,
                iters=args.iters,
                seconds=seconds,
                it_per_s=args.iters / seconds,
                ms_per_it=1000 * seconds / args.iters,
                median_ms_per_it=1000 * float(np.median(times[variant])),
                ratio_to_limit=(args.iters / seconds) / limit_rate,
                clicks_per_sample=clicks[variant],
                rounds_per_iter=rounds[variant],
                iteration_s=times[variant],
                breakdown_ms=breakdowns[variant],
                data_pipeline_ms_per_batch=seed_ms if variant == "monai" else None,
                click_ops=ops if variant == "ours" else None,
            )
        )
    return result


TRAIN_COLUMNS = (
    "size",
    "device",
    "channels",
    "batch",
    "K",
    "loop",
    "iters",
    "it/s",
    "ms/it",
    "median ms",
    "vs limit",
    "clicks",
    "rounds",
)


def _table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *cells]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_train_table(rows: Sequence[TrainRow]) -> str:
    """The training rows as a plain-text table: the three loops side by side per size."""
    cells = [
        (
            "x".join(map(str, r.size)),
            r.device,
            ",".join(map(str, r.channels)),
            str(r.batch),
            str(r.k),
            r.variant,
            str(r.iters),
            f"{r.it_per_s:.3f}",
            f"{r.ms_per_it:.1f}",
            f"{r.median_ms_per_it:.1f}",
            f"{r.ratio_to_limit:.3f}",
            "-" if r.clicks_per_sample is None else f"{r.clicks_per_sample:.2f}",
            f"{r.rounds_per_iter:.2f}",
        )
        for r in rows
    ]
    return _table(TRAIN_COLUMNS, cells)


def _train_summary(rows: Sequence[TrainRow]) -> list[dict[str, Any]]:
    """Per size: ``ours / limit`` (with the GPU target) and ``ours / monai``."""
    out = []
    for size, channels in dict.fromkeys((r.size, tuple(r.channels)) for r in rows):
        by = {r.variant: r for r in rows if r.size == size and tuple(r.channels) == channels}
        ours, ref = by["ours"], by["monai"]
        on_gpu = ours.device == "cuda"
        out.append(
            {
                "size": list(size),
                "channels": list(channels),
                "ours_over_limit": ours.ratio_to_limit,
                "ours_over_monai": ours.it_per_s / ref.it_per_s,
                "monai_over_limit": ref.ratio_to_limit,
                "target": f">={TRAIN_RATIO_TARGET} of the limit (GPU)",
                "passed": (ours.ratio_to_limit >= TRAIN_RATIO_TARGET) if on_gpu else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------------------- latency


@dataclass
class LatencyRow:
    """Per-click latency of one network configuration at one size.

    Attributes:
        size: ``(H, W)``.
        device: ``"cpu"`` or ``"cuda"``.
        channels: the network's five level widths.
        parameters: number of network parameters.
        forward_ms, forward_p90_ms: forward pass alone (median, 90th percentile).
        transforms_ms, transforms_p90_ms: ClickMapsd + AddGuidanced on the image (on the device) + inferer + mask
            to host.
        functional_ms, functional_p90_ms: click map on the device, render_guidance, inferer, mask to host.
        transforms_ratio, functional_ratio: medians over ``forward_ms``.
        ratio_passed: both ratios <= :data:`LATENCY_RATIO_TARGET`.
        within_cpu_target: on the CPU, ``transforms_ms`` < :data:`CPU_LATENCY_TARGET_MS` (``None`` on a GPU).
        upload_ms: median time to move the image ``(1, H, W)`` from the host to the device: paid once per image
            in an interactive session, not per click (0 on the CPU).
        forward_times_ms, transforms_times_ms, functional_times_ms: every timed repeat.
    """

    size: Size
    device: str
    channels: list[int]
    parameters: int
    forward_ms: float
    forward_p90_ms: float
    transforms_ms: float
    transforms_p90_ms: float
    functional_ms: float
    functional_p90_ms: float
    transforms_ratio: float
    functional_ratio: float
    ratio_passed: bool
    within_cpu_target: bool | None
    upload_ms: float = 0.0
    forward_times_ms: list[float] = field(default_factory=list)
    transforms_times_ms: list[float] = field(default_factory=list)
    functional_times_ms: list[float] = field(default_factory=list)


def _latency_case(size: Size, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]], list[list[int]]]:
    """Image ``(1, H, W)`` and 3 foreground clicks inside its structure, 2 background clicks outside."""
    image, label = synthetic_sample(size, rng)
    inside, outside = np.argwhere(label[0] > 0), np.argwhere(label[0] == 0)
    n_fg, n_bg = LATENCY_CLICKS
    fg = inside[rng.choice(len(inside), n_fg, replace=False)].tolist()
    bg = outside[rng.choice(len(outside), n_bg, replace=False)].tolist()
    return image, fg, bg


def _bench_latency(
    size: Size, channels: Channels, device: torch.device, args: argparse.Namespace, seed: int
) -> LatencyRow:
    """Time forward alone and the two per-click pipelines, interleaved; see the module docstring."""
    rng = np.random.default_rng(seed)
    image, fg, bg = _latency_case(size, rng)
    network = _network(channels, seed, device).eval()
    inferer = ClickInferer(network_dims=2, divisible_by=16)
    click_maps = ClickMapsd(image_key="image")
    add_guidance = AddGuidanced(image_key="image", sigma=args.sigma)
    host_image = torch.from_numpy(image)
    device_image = host_image.to(device)  # an interactive session keeps the image on the device between clicks
    guided = add_guidance(click_maps({"image": device_image, "foreground": fg, "background": bg}))["image"]
    forward_input = guided[None]

    def forward() -> None:
        network(forward_input)

    def transforms() -> None:
        data = add_guidance(click_maps({"image": device_image, "foreground": fg, "background": bg}))
        binarize_logits(inferer(data["image"][None], network)).cpu()

    def functional() -> None:
        maps = click_map_from_points(fg, bg, size, device=device)[None]
        inputs = torch.cat([device_image[None], render_guidance(maps, args.sigma)], dim=1)
        binarize_logits(inferer(inputs, network)).cpu()

    def upload() -> None:
        host_image.to(device)

    times: dict[str, list[float]] = {"forward": [], "transforms": [], "functional": [], "upload": []}
    runs = {"forward": forward, "transforms": transforms, "functional": functional, "upload": upload}
    with torch.no_grad():
        for round_ in range(args.latency_warmup + args.repeats):
            for name, fn in runs.items():
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                if round_ >= args.latency_warmup:
                    times[name].append(1000 * (time.perf_counter() - start))

    def stats(values: list[float]) -> tuple[float, float]:
        return float(np.median(values)), float(np.percentile(values, 90))

    (fwd, fwd90), (tra, tra90), (fun, fun90), (up, _) = (
        stats(times[k]) for k in ("forward", "transforms", "functional", "upload")
    )
    return LatencyRow(
        size=size,
        device=device.type,
        channels=list(channels),
        parameters=sum(p.numel() for p in network.parameters()),
        forward_ms=fwd,
        forward_p90_ms=fwd90,
        transforms_ms=tra,
        transforms_p90_ms=tra90,
        functional_ms=fun,
        functional_p90_ms=fun90,
        transforms_ratio=tra / fwd,
        functional_ratio=fun / fwd,
        ratio_passed=max(tra, fun) / fwd <= LATENCY_RATIO_TARGET,
        within_cpu_target=(tra < CPU_LATENCY_TARGET_MS) if device.type == "cpu" else None,
        upload_ms=up,
        forward_times_ms=times["forward"],
        transforms_times_ms=times["transforms"],
        functional_times_ms=times["functional"],
    )


LATENCY_COLUMNS = (
    "size",
    "device",
    "channels",
    "params",
    "fwd ms",
    "fwd p90",
    "transforms ms",
    "p90",
    "ratio",
    "functional ms",
    "p90",
    "ratio",
    "upload ms",
    f"<={LATENCY_RATIO_TARGET}x",
    f"<{CPU_LATENCY_TARGET_MS:.0f}ms",
)


def format_latency_table(rows: Sequence[LatencyRow]) -> str:
    """The latency rows as a plain-text table: forward alone and both pipelines side by side."""
    cells = [
        (
            "x".join(map(str, r.size)),
            r.device,
            ",".join(map(str, r.channels)),
            f"{r.parameters / 1e6:.2f}M",
            f"{r.forward_ms:.1f}",
            f"{r.forward_p90_ms:.1f}",
            f"{r.transforms_ms:.1f}",
            f"{r.transforms_p90_ms:.1f}",
            f"{r.transforms_ratio:.3f}",
            f"{r.functional_ms:.1f}",
            f"{r.functional_p90_ms:.1f}",
            f"{r.functional_ratio:.3f}",
            f"{r.upload_ms:.2f}",
            "PASS" if r.ratio_passed else "FAIL",
            "-" if r.within_cpu_target is None else ("yes" if r.within_cpu_target else "no"),
        )
        for r in rows
    ]
    return _table(LATENCY_COLUMNS, cells)


# ------------------------------------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="DeepGrow clicks: training it/s (ours vs MONAI's deepgrow loop vs the network-bound limit) and "
        "per-click inference latency (guidance + forward vs forward alone).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where networks and data live")
    parser.add_argument(
        "--benchmarks", nargs="+", default=["train", "latency"], choices=["train", "latency"], help="what to run"
    )
    parser.add_argument("--sizes", nargs="+", default=["256x256"], help="training image sizes HxW")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--k", type=int, default=5, help="K: no-grad click rounds per training iteration")
    parser.add_argument("--iters", type=int, default=10, help="timed training iterations per loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training iterations first (>= 1)")
    parser.add_argument(
        "--profile-iters", type=int, default=1, help="extra synchronised iterations for the per-part breakdown (0: no)"
    )
    parser.add_argument("--distinct-batches", type=int, default=4, help="distinct synthetic batches, used in turn")
    parser.add_argument(
        "--channels",
        nargs="+",
        type=parse_channels,
        default=[BUNDLE_CHANNELS],
        help="DeepGrowUNet level widths, one or more configs (the default is train.json's); the training benchmark "
        "runs each, the latency benchmark these and --light-channels",
    )
    parser.add_argument(
        "--light-channels",
        nargs="*",
        type=parse_channels,
        default=[(8, 16, 32, 64, 128), (4, 8, 16, 32, 64)],
        help="lighter networks for the latency benchmark",
    )
    parser.add_argument("--latency-sizes", nargs="+", default=["512x512"], help="inference image sizes HxW")
    parser.add_argument("--repeats", type=int, default=20, help="timed latency rounds (median and p90 reported)")
    parser.add_argument("--latency-warmup", type=int, default=2, help="untimed latency rounds first")
    parser.add_argument("--sigma", type=float, default=2.0, help="guidance Gaussian sigma in pixels")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the data and the clicks")
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. other load on the machine)")
    parser.add_argument("--out", type=Path, default=None, help="write all figures to this JSON file")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Size], list[Size]]:
    try:
        sizes = [parse_size(s) for s in args.sizes]
        latency_sizes = [parse_size(s) for s in args.latency_sizes]
    except ValueError as err:
        parser.error(f"--sizes/--latency-sizes: {err}")
    positive = {"--batch": args.batch, "--k": args.k, "--iters": args.iters, "--warmup": args.warmup}
    positive |= {"--repeats": args.repeats, "--distinct-batches": args.distinct_batches}
    for name, value in positive.items():
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    for name, value in {"--profile-iters": args.profile_iters, "--latency-warmup": args.latency_warmup}.items():
        if value < 0:
            parser.error(f"{name} must be >= 0, got {value}")
    if args.threads < 0 or not args.sigma > 0:
        parser.error(f"--threads must be >= 0 and --sigma > 0, got {args.threads}, {args.sigma}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch (torch.cuda.is_available() is False)")
    return sizes, latency_sizes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, print the tables and return (and optionally write) the report.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``); see ``python bench/deepgrow.py --help``.

    Returns:
        The JSON-serialisable report: environment (device name, versions, threads, load average), configuration,
        the training rows with a summary per size, and the latency rows.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    sizes, latency_sizes = _check_args(parser, args)
    device = torch.device(args.device)
    load_before = _load()

    previous_threads, previous_cudnn = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    train_rows: list[TrainRow] = []
    latency_rows: list[LatencyRow] = []
    try:
        if "train" in args.benchmarks:
            for size in sizes:
                for channels in dict.fromkeys(args.channels):
                    train_rows.extend(_bench_train_size(size, channels, device, args, args.seed))
        if "latency" in args.benchmarks:
            for size in latency_sizes:
                for channels in dict.fromkeys([*args.channels, *args.light_channels]):
                    latency_rows.append(_bench_latency(size, channels, device, args, args.seed))
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_cudnn

    report: dict[str, Any] = {
        **run_environment("deepgrow_clicks", device, threads, args.cudnn_benchmark),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "note": args.note,
        "config": {
            "benchmarks": list(dict.fromkeys(args.benchmarks)),
            "network": "DeepGrowUNet(spatial_dims=2, in_channels=3, out_channels=1)",
            "channels": [list(c) for c in args.channels],
            "light_channels": [list(c) for c in args.light_channels],
            "sizes": [list(s) for s in sizes],
            "batch": args.batch,
            "k": args.k,
            "iters": args.iters,
            "warmup": args.warmup,
            "profile_iters": args.profile_iters,
            "distinct_batches": args.distinct_batches,
            "loss": "DiceLoss(sigmoid=True, squared_pred=True)",
            "optimizer": f"Adam(lr={LEARNING_RATE})",
            "click_schedule": "monai (p_j = 1 - j / K, both loops)",
            "latency_sizes": [list(s) for s in latency_sizes],
            "latency_clicks": {"foreground": LATENCY_CLICKS[0], "background": LATENCY_CLICKS[1]},
            "repeats": args.repeats,
            "latency_warmup": args.latency_warmup,
            "sigma": args.sigma,
            "seed": args.seed,
        },
        "targets": {
            "train_ours_over_limit_min_gpu": TRAIN_RATIO_TARGET,
            "latency_ratio_max": LATENCY_RATIO_TARGET,
            "cpu_latency_ms_max": CPU_LATENCY_TARGET_MS,
        },
        "train": [asdict(r) for r in train_rows],
        "train_summary": _train_summary(train_rows) if train_rows else [],
        "latency": [asdict(r) for r in latency_rows],
    }
    print(
        f"DeepGrow clicks benchmark: {report['device_name']}, torch {torch.__version__}, MONAI {monai.__version__}, "
        f"{threads} threads, load average {load_before}"
    )
    if train_rows:
        print(f"\ntraining: batch {args.batch}, K {args.k}, {args.iters} timed rounds after {args.warmup} warm-up")
        print(format_train_table(train_rows))
        for summary in report["train_summary"]:
            verdict = "" if summary["passed"] is None else (" PASS" if summary["passed"] else " FAIL")
            print(
                f"{'x'.join(map(str, summary['size']))} {summary['channels']}: "
                f"ours / limit {summary['ours_over_limit']:.3f} "
                f"(target {summary['target']}{verdict}), ours / MONAI {summary['ours_over_monai']:.2f}x, "
                f"MONAI / limit {summary['monai_over_limit']:.3f}"
            )
        for row in train_rows:
            if row.breakdown_ms:
                parts = ", ".join(f"{k} {v:.1f}" for k, v in row.breakdown_ms.items())
                print(f"  {row.variant} {row.channels} breakdown (ms/iteration, synchronised): {parts}")
            if row.click_ops is not None:
                counted = ", ".join(f"{k} {v}" for k, v in row.click_ops.items())
                print(f"  ours {row.channels} click rounds, one batch, outside the network: {counted}")
            if row.data_pipeline_ms_per_batch is not None:
                print(
                    f"  monai first-click data pipeline (outside its timed loop, data-loader workers): "
                    f"{row.data_pipeline_ms_per_batch:.1f} ms/batch"
                )
    if latency_rows:
        print(f"\nper-click latency ({LATENCY_CLICKS[0]} fg + {LATENCY_CLICKS[1]} bg clicks), median of {args.repeats}")
        print(format_latency_table(latency_rows))
        if device.type == "cpu":
            fast = [r for r in latency_rows if r.within_cpu_target]
            names = "; ".join(f"{r.channels} {r.transforms_ms:.0f} ms" for r in fast) or "none"
            print(f"CPU: networks answering a click in < {CPU_LATENCY_TARGET_MS:.0f} ms (transforms path): {names}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    main()
