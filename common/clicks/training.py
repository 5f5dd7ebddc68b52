"""DeepGrow's iterative click simulation as an ``iteration_update`` of a standard MONAI engine, batched on device.

Per batch (DeepGrow's training-time click simulation, Sakinis et al., arXiv:1903.08205, 2019): one foreground click
from the ground truth, then up to ``K`` no-grad prediction rounds; in round ``k`` each sample receives one
error-driven click with probability ``p_k`` (falling linearly with ``k``), then the engine's normal iteration (one
gradient step for a trainer, one scored prediction for an evaluator) runs on the final guidance.

Unlike ``monai.apps.deepgrow.interaction.Interaction`` nothing leaves the device between rounds: clicks live in a
batched boolean click map ``(B, 2, *spatial)`` on the training device, the error regions, distances and draws are
computed for the whole batch (:mod:`common.transforms.clicks`), and guidance is updated for the whole batch by one
kernel stamp per new click (:func:`common.transforms.guidance.add_guidance_stamps`); no decollate/collate, no JSON,
no per-sample CPU transform. Random decisions (which samples click in which round, and the uniform numbers of the
draws) come from a seeded CPU ``torch.Generator``, so runs are reproducible and independent of the device.

On a GPU the rounds are many small kernels, so what matters is that the device never waits for the host. The only
data-dependent decision is how many erosions the chamfer depth needs; a round runs a guessed number (the largest
depth of recent batches), queues the click, the guidance update and the next forward pass, and only then reads
whether the guess sufficed, waiting for that one flag rather than for the whole queue
(:class:`common.clicks.readback.DeviceReadback`). A short guess is corrected by finishing the erosion and redoing
the round, so the clicks are exactly those of :func:`common.transforms.clicks.simulate_error_clicks`.

Batch layout expected from the data loader: ``batchdata["image"]`` ``(B, C_img, *spatial)`` without guidance and
``batchdata["label"]`` ``(B, 1, *spatial)`` binary; the network receives ``(B, C_img + 2, *spatial)`` and returns
``(B, 1, *spatial)`` logits (sigmoid) or ``(B, 2, *spatial)`` logits (softmax; argmax gives the mask).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from monai.utils import convert_to_tensor

from common.clicks.readback import DeviceReadback
from common.transforms.clicks import (
    ClickBatch,
    DepthBackend,
    add_new_clicks,
    draw_clicks,
    error_regions,
    start_chamfer_depth,
)
from common.transforms.guidance import add_guidance_stamps, normalise_guidance

__all__ = ["SCHEDULES", "BatchedClickInteraction", "binarize_logits", "click_probabilities"]

logger = logging.getLogger(__name__)

Schedule = Literal["paper", "monai"]
#: Names of the click-probability schedules, see :func:`click_probabilities`.
SCHEDULES: tuple[str, ...] = ("paper", "monai")
#: Batches whose largest error-region depth sets the next erosion guess.
_DEPTH_MEMORY = 32


def click_probabilities(max_interactions: int, schedule: Schedule = "paper") -> list[float]:
    """Probability that a sample receives a click in round ``k = 1 .. K`` (training).

    - ``"paper"``: ``p_k = (K + 1 - k) / (K + 1)``: falls linearly and is below 1 from the first round, so a sample
      ends with ``t in [0, K]`` extra clicks as in the paper (``K = 1`` gives 1 or 2 clicks).
    - ``"monai"``: ``p_k = 1 - (k - 1) / K`` as in ``monai.apps.deepgrow.interaction.Interaction``: the first
      round always clicks, ``t in [1, K]``.

    Raises:
        ValueError: ``max_interactions < 0`` or an unknown schedule.
    """
    if isinstance(max_interactions, bool) or not isinstance(max_interactions, int) or max_interactions < 0:
        raise ValueError(f"max_interactions must be an integer >= 0, got {max_interactions!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    k_max = max_interactions
    if schedule == "paper":
        return [(k_max + 1 - k) / (k_max + 1) for k in range(1, k_max + 1)]
    return [1.0 - (k - 1) / k_max for k in range(1, k_max + 1)]


def binarize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary mask ``(B, 1, *spatial)`` from 1-channel (``> 0``, i.e. sigmoid > 0.5) or 2-channel (argmax) logits."""
    if logits.shape[1] == 1:
        return logits > 0
    if logits.shape[1] == 2:
        return (logits[:, 1:2] > logits[:, 0:1]).contiguous()
    raise ValueError(f"expected 1- or 2-channel logits, got shape {list(logits.shape)}")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass
class _Guidance:
    """The clicks of a batch during simulation: click maps, unnormalised guidance and click counts (one device).

    ``smoothed`` is updated by one kernel stamp per new click (:func:`add_guidance_stamps`), so
    ``normalise_guidance(smoothed)`` equals ``render_guidance(maps)`` without a convolution of the batch per round.
    Updates are out of place: a round whose erosion guess was short is redone from the state before it.
    """

    maps: torch.Tensor  # bool (B, 2, *spatial): channel 0 foreground, 1 background clicks
    smoothed: torch.Tensor  # float32 (B, 2, *spatial)
    clicks: torch.Tensor  # int64 (B,)

    @classmethod
    def empty(cls, batch: int, spatial: tuple[int, ...], device: torch.device) -> _Guidance:
        maps = torch.zeros((batch, 2, *spatial), dtype=torch.bool, device=device)
        smoothed = torch.zeros(maps.shape, dtype=torch.float32, device=device)
        return cls(maps, smoothed, torch.zeros(batch, dtype=torch.int64, device=device))

    def with_clicks(self, clicks: ClickBatch, active: torch.Tensor | None, sigma: float | Sequence[float]) -> _Guidance:
        """A new state with ``clicks`` added where ``active`` (all samples when ``None``) and the click is valid."""
        maps, fresh = add_new_clicks(self.maps, clicks, active)
        smoothed = add_guidance_stamps(
            self.smoothed.clone(), clicks.index, (~clicks.positive).to(torch.int64), fresh, sigma
        )
        added = clicks.valid if active is None else clicks.valid & active
        return _Guidance(maps, smoothed, self.clicks + added.to(torch.int64))

    def network_input(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C_img + 2, *spatial)``: the image and the normalised guidance."""
        return torch.cat([image, normalise_guidance(self.smoothed).to(image.dtype)], dim=1)

    def predict(self, image: torch.Tensor, network: torch.nn.Module, autocast: Any) -> torch.Tensor:
        """The network's binary prediction ``(B, 1, *spatial)`` on this guidance (no gradients)."""
        with torch.no_grad(), autocast:
            logits = network(self.network_input(image))
        return binarize_logits(logits.float())


class BatchedClickInteraction:
    """``iteration_update`` that simulates DeepGrow clicks on whole batches on the engine's device.

    Use it in a bundle config as the ``iteration_update`` of a ``SupervisedTrainer`` (``train=True``) or a
    ``SupervisedEvaluator`` (``train=False``: every round clicks every sample that still has an error, so the
    evaluator scores the prediction after ``1 + max_interactions`` clicks).

    Args:
        max_interactions: ``K``, the number of no-grad prediction rounds after the first click (the paper trains
            with 1, 2, 5, 10 or 15).
        sigma: guidance Gaussian standard deviation in voxels (the paper: 2).
        train: training schedule (random, falling probabilities) or evaluation (always click).
        schedule: ``"paper"`` or ``"monai"``, see :func:`click_probabilities`.
        image_key: batch key of the image without guidance ``(B, C_img, *spatial)``.
        label_key: batch key of the binary label ``(B, 1, *spatial)``.
        seed: seed of the CPU generator for the random decisions (each distributed rank adds its rank).
        depth_backend: distance backend of the click sampler, see :func:`common.transforms.clicks.chamfer_depth`.
        erosion_guess: erosion backend only: erosions a round runs before it checks whether the depth is complete,
            until real depths have been seen (then the largest of the recent batches is used). Speed only: a short
            guess costs one redone round, never a different click.

    Attributes:
        last_clicks: after each call, ``(B,)`` int64 total clicks per sample of the last batch (on the device).
        last_rounds: number of prediction rounds run for the last batch.

    Example (``train.json``)::

        "iteration_update": {"_target_": "common.clicks.BatchedClickInteraction", "max_interactions": 5}
    """

    def __init__(
        self,
        max_interactions: int,
        sigma: float | Sequence[float] = 2.0,
        train: bool = True,
        schedule: Schedule = "paper",
        image_key: str = "image",
        label_key: str = "label",
        seed: int = 0,
        depth_backend: DepthBackend = "auto",
        erosion_guess: int = 16,
    ) -> None:
        self.probabilities = click_probabilities(max_interactions, schedule)
        self.max_interactions = max_interactions
        self.sigma = sigma
        self.train = bool(train)
        self.schedule = schedule
        self.image_key = image_key
        self.label_key = label_key
        self.seed = int(seed)
        self.depth_backend: DepthBackend = depth_backend
        if isinstance(erosion_guess, bool) or not isinstance(erosion_guess, int) or erosion_guess < 1:
            raise ValueError(f"erosion_guess must be an integer >= 1, got {erosion_guess!r}")
        self.erosion_guess = erosion_guess
        # largest error-region depth of the recent batches, first click (0) and later rounds (1) apart
        self._depths: dict[int, deque[int]] = {0: deque(maxlen=_DEPTH_MEMORY), 1: deque(maxlen=_DEPTH_MEMORY)}
        self._generator: torch.Generator | None = None
        self.last_clicks: torch.Tensor | None = None
        self.last_rounds = 0

    def _rng(self) -> torch.Generator:
        if self._generator is None:  # created lazily so the rank is known under torchrun
            self._generator = torch.Generator().manual_seed(self.seed + _rank())
        return self._generator

    def _decisions(self, batch_size: int) -> torch.Tensor:
        """bool ``(K, B)``: which sample clicks in which round (CPU)."""
        if not self.train:
            return torch.ones((self.max_interactions, batch_size), dtype=torch.bool)
        p = torch.tensor(self.probabilities, dtype=torch.float64).view(-1, 1)
        draws = torch.rand((self.max_interactions, batch_size), generator=self._rng(), dtype=torch.float64)
        return draws < p

    def simulate(
        self, image: torch.Tensor, label: torch.Tensor, network: torch.nn.Module, amp: bool = False
    ) -> torch.Tensor:
        """Run the click rounds and return the final network input ``(B, C_img + 2, *spatial)``.

        Args:
            image: ``(B, C_img, *spatial)`` on the device.
            label: ``(B, 1, *spatial)`` on the device.
            network: the model (put in eval mode for the rounds; the caller restores the mode it needs).
            amp: run the rounds under ``torch.autocast`` on CUDA.
        """
        if label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[2:] or label.shape[1] != 1:
            raise ValueError(
                f"{self.label_key!r} {list(label.shape)} must be (B, 1, *spatial) matching {self.image_key!r} "
                f"{list(image.shape)}"
            )
        b = image.shape[0]
        truth = label > 0.5
        host_decisions = self._decisions(b)
        decisions = host_decisions.to(image.device, non_blocking=True)
        uniform = torch.rand((self.max_interactions + 1, b), generator=self._rng(), dtype=torch.float64)
        uniform = uniform.to(image.device, non_blocking=True)
        # round 0 is the first click (on an empty prediction); round k + 1 follows the k-th prediction, skipped when
        # no sample clicks in it (read on the CPU: no device synchronisation)
        rounds: list[tuple[int, torch.Tensor | None]] = [(0, None)]
        rounds += [(k + 1, decisions[k]) for k in range(self.max_interactions) if bool(host_decisions[k].any())]
        autocast = torch.autocast("cuda") if amp and image.is_cuda else nullcontext()
        guidance = _Guidance.empty(b, tuple(image.shape[2:]), image.device)
        pred = torch.zeros_like(truth)
        was_training = network.training
        network.eval()
        try:
            for position, (k, active) in enumerate(rounds):
                last = position == len(rounds) - 1
                guidance, pred = self._round(
                    guidance, truth, pred, uniform[k], active, k, image, network, autocast, last
                )
        finally:
            network.train(was_training)
        self.last_clicks, self.last_rounds = guidance.clicks, len(rounds) - 1
        return guidance.network_input(image)

    def _round(
        self,
        guidance: _Guidance,
        truth: torch.Tensor,
        pred: torch.Tensor,
        uniform: torch.Tensor,
        active: torch.Tensor | None,
        k: int,
        image: torch.Tensor,
        network: torch.nn.Module,
        autocast: Any,
        last: bool,
    ) -> tuple[_Guidance, torch.Tensor]:
        """One click per sample on ``pred``'s errors, then (unless ``last``) the prediction on the new guidance.

        With the erosion depth (GPU) the round runs a guessed number of erosions (the largest depth of this round in
        recent batches), queues the click, the guidance update and the next forward pass, and only then reads
        whether the guess sufficed (:class:`DeviceReadback`: the device keeps working meanwhile). If it did not,
        the erosion finishes and the click and forward pass are redone: the clicks never depend on the guess.
        """
        regions = error_regions(truth, pred)
        key = min(k, 1)  # the first click (deep: the whole structure) and the error clicks have their own guesses
        depth, job = start_chamfer_depth(regions.region, self._erosion_guess(key), self.depth_backend)

        def advance(depth: torch.Tensor) -> tuple[_Guidance, torch.Tensor]:
            updated = guidance.with_clicks(draw_clicks(regions, depth, uniform), active, self.sigma)
            return updated, (pred if last else updated.predict(image, network, autocast))

        if job is None:  # SciPy: the depth is exact
            return advance(depth)
        # the flag is queued right behind the erosion, before the draw and the next forward pass: waiting for it
        # leaves those queued, so the device works while the host reads it
        check = DeviceReadback(torch.stack([job.pending().to(torch.int32), job.max_depth()]))
        updated, next_pred = advance(depth)
        pending, max_depth = check.value().tolist()
        if pending:  # the guess was short: finish the erosion and redo this round
            max_depth = int(job.finish().max_depth())
            updated, next_pred = advance(job.depth())
        self._depths[key].append(int(max_depth))
        return updated, next_pred

    def _erosion_guess(self, key: int) -> int:
        """Erosion steps to run before checking: the largest depth of the last batches (first guess until seen)."""
        seen = self._depths[key]
        return max(max(seen, default=self.erosion_guess), 1)

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        """Simulate the clicks for ``batchdata`` and run ``engine._iteration`` on the guided batch."""
        if batchdata is None:
            raise ValueError("BatchedClickInteraction needs batch data for the iteration")
        for key in (self.image_key, self.label_key):
            if key not in batchdata:
                raise ValueError(f"batch has no {key!r}; keys: {sorted(batchdata)}")
        device = engine.state.device
        # plain tensors: MetaTensor bookkeeping costs host time on every operation of the rounds and the step
        image = convert_to_tensor(batchdata[self.image_key], track_meta=False).to(device, non_blocking=True)
        label = convert_to_tensor(batchdata[self.label_key], track_meta=False).to(device, non_blocking=True)
        guided = dict(batchdata)
        guided[self.image_key] = self.simulate(image, label, engine.network, amp=bool(getattr(engine, "amp", False)))
        guided[self.label_key] = label
        return engine._iteration(engine, guided)
