"""Query strategies of the active-learning loop: which unlabelled case the user should annotate next.

Every strategy is a pure function of a network and the cases' network inputs: it scores each case (higher = annotate
first) and never changes the network: the train/eval mode of every module is restored afterwards, no gradient is
computed and no weight or buffer changes (the network runs in eval mode; MC dropout switches on the dropout layers
only, normalisation layers stay in eval mode). Seeded strategies draw from private generators (a ``numpy`` generator,
or torch's generators forked for the call): the same seed gives the same scores and the caller's global random state
is untouched.

Inputs ``x``: one case's network input ``(1, C, *spatial)`` float tensor, 2D ``(1, C, H, W)`` or 3D
``(1, C, H, W, D)`` (the bundle's pre-processed box crop; the caller gets it from the bundle's own pre-processing),
on any device: it is moved to the network's device (and floating-point dtype). The network maps ``(B, C, *spatial)``
to logits ``(B, 2, *spatial)`` in eval mode (channel 1 = foreground).

Strategies (:data:`STRATEGIES`):

- ``random``: a uniform draw per case from ``numpy.random.default_rng(seed)``;
- ``first`` / ``last``: the first / last case in the given order (MONAI Label's ``first``, and its mirror);
- ``entropy``: the mean over voxels of the binary predictive entropy (nats) of the foreground probability;
- ``mc_dropout``: the mean over voxels of the variance of the foreground probability across ``samples`` forward
  passes with dropout on (Gal and Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016);
- ``tta``: the same variance across ``samples`` test-time augmentations (random flips along spatial axes, undone
  on the output) (Wang et al., "Aleatoric uncertainty estimation with test-time augmentation for medical image
  segmentation with convolutional neural networks", Neurocomputing 2019).

Variances are population variances (divided by ``samples``), per voxel, then averaged over the voxels. The ``tta``
flips are drawn without replacement: the ``2^d`` flip combinations of the ``d`` spatial axes (the identity included)
in a random order, then in a new random order, and so on; ``samples = 2^d`` (8 in 3D) thus covers every combination
once and gives the exact variance under uniformly random flips. ``mc_dropout`` draws its dropout masks from torch's
generator of the network's device, forked and seeded with ``seed`` for the call; every case of one
:func:`score_cases` call gets the same seed (common random numbers: cases of one shape see the same masks).

The samples run through the network in chunks of at most ``batch`` inputs (one forward per chunk). ``batch=None``
picks :data:`DEFAULT_BATCH` for the network's device type: on the CPU one sample per forward was faster than batches
(``bench/al_strategies.py``), on GPUs batches fill the device. The ``mc_dropout`` scores depend on ``batch`` (the
masks are drawn in another order), the ``tta`` scores do not (up to rounding).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from common.networks.isensee_unet import spatial_dropout_layers

__all__ = [
    "DEFAULT_BATCH",
    "STRATEGIES",
    "foreground_probability",
    "mc_dropout_variance",
    "mean_entropy",
    "rank_cases",
    "score_cases",
    "select_case",
    "tta_variance",
]

#: Strategy names accepted by :func:`score_cases`.
STRATEGIES: tuple[str, ...] = ("random", "first", "last", "entropy", "mc_dropout", "tta")

#: Strategies that run the network.
_NETWORK_STRATEGIES = frozenset({"entropy", "mc_dropout", "tta"})

#: Samples per forward pass for ``batch=None``, by device type (any other type: ``"cuda"``'s).
DEFAULT_BATCH: dict[str, int] = {"cpu": 1, "cuda": 10}


# --------------------------------------------------------------------------------------------------------- checks
def _check_input(x: object, name: str = "x", batched: bool = False) -> torch.Tensor:
    """``x`` as a checked ``(1, C, *spatial)`` (``(B, C, *spatial)`` if ``batched``) finite floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    lead = "B" if batched else "1"
    if x.ndim not in (4, 5) or (not batched and x.shape[0] != 1):
        raise ValueError(
            f"{name} must be a ({lead}, C, H, W) or ({lead}, C, H, W, D) tensor (one case, 2 or 3 spatial axes), "
            f"got shape {tuple(x.shape)}."
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}).")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf).")
    return x


def _check_network(network: object, strategy: str) -> nn.Module:
    if network is None:
        raise ValueError(f"strategy {strategy!r} runs the network, but network is None.")
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    return network


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_batch(batch: int | None, device: torch.device) -> int:
    if batch is None:
        return DEFAULT_BATCH.get(device.type, DEFAULT_BATCH["cuda"])
    return _check_count(batch, "batch", 1)


# ------------------------------------------------------------------------------------------------ network helpers
def _placement(network: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating-point dtype of the network (its first floating parameter or buffer), else ``x``'s."""
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return x.device, x.dtype


@contextmanager
def _inference(network: nn.Module, dropout: bool = False) -> Iterator[None]:
    """Eval mode (dropout layers in train mode if ``dropout``) and no gradient; every module's mode restored after."""
    modes = [(module, module.training) for module in network.modules()]
    try:
        network.eval()
        if dropout:
            for layer in spatial_dropout_layers(network):
                layer.train()
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Torch's CPU generator (and the generator of ``device``) seeded with ``seed`` inside, restored after."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
        return
    backend = torch.get_device_module(device.type)
    index = device.index if device.index is not None else int(backend.current_device())
    with torch.random.fork_rng(devices=[index], device_type=device.type):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        else:
            backend.manual_seed(seed)
        yield


def _probabilities(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Foreground softmax probabilities ``(B, *spatial)`` float32 of ``x`` ``(B, C, *spatial)`` (mode already set)."""
    logits = _logits(network, x)
    return torch.softmax(logits.float(), dim=1)[:, 1]


def _logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = network(x)
    if not isinstance(out, torch.Tensor) or out.ndim != x.ndim or out.shape[0] != x.shape[0] or out.shape[1] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the network must map (B, C, *spatial) to 2-channel logits (B, 2, *spatial) in eval mode; input "
            f"{tuple(x.shape)} gave {shape}."
        )
    if out.shape[2:] != x.shape[2:]:
        raise ValueError(f"the network's output {tuple(out.shape)} does not match its input's size {tuple(x.shape)}.")
    return out


def _prepared(network: nn.Module, x: object) -> torch.Tensor:
    checked = _check_input(x)
    device, dtype = _placement(network, checked)
    return checked.to(device=device, dtype=dtype)


def _finite_score(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"the network's output gave a non-finite {what} ({value}).")
    return value


class _Moments:
    """Per-voxel mean and variance of probability maps, accumulated chunk by chunk (float64, shifted data)."""

    def __init__(self) -> None:
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(())
        self.sum_sq = torch.zeros(())
        self.count = 0

    def add(self, prob: torch.Tensor) -> None:
        """Add ``k`` maps ``(k, *spatial)``."""
        if self.shift is None:
            self.shift = prob[0].double()
        d = prob.double() - self.shift
        self.sum = self.sum + d.sum(0)
        self.sum_sq = self.sum_sq + (d * d).sum(0)
        self.count += prob.shape[0]

    def mean_variance(self) -> float:
        """Mean over the voxels of the population variance of the added maps."""
        mean = self.sum / self.count
        return float((self.sum_sq / self.count - mean * mean).clamp_min(0.0).mean())


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _flip_sets(spatial_dims: int, samples: int, seed: int) -> list[tuple[int, ...]]:
    """``samples`` flip combinations (tensor dims of ``(B, C, *spatial)`` to flip): random orders of all ``2^d``."""
    combos = [tuple(2 + axis for axis in range(spatial_dims) if code >> axis & 1) for code in range(2**spatial_dims)]
    rng = np.random.default_rng(seed)
    out: list[tuple[int, ...]] = []
    while len(out) < samples:
        out.extend(combos[i] for i in rng.permutation(len(combos)))
    return out[:samples]


# ------------------------------------------------------------------------------------------------------ public API
def foreground_probability(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax foreground probability ``(B, *spatial)`` of ``network`` on ``x`` ``(B, C, *spatial)`` (eval mode).

    Args:
        network: maps ``(B, C, *spatial)`` to logits ``(B, 2, *spatial)`` (channel 1 = foreground).
        x: float tensor ``(B, C, H, W)`` or ``(B, C, H, W, D)``, finite; moved to the network's device and dtype.

    Returns:
        float32 ``(B, *spatial)`` on the network's device, in [0, 1]; no gradient; the network's modes restored.

    Raises:
        ValueError: ``x`` is not a finite floating-point ``(B, C, *spatial)`` tensor with 2 or 3 spatial axes, or the
            network's output is not ``(B, 2, *spatial)``.
    """
    network = _check_network(network, "foreground_probability")
    checked = _check_input(x, batched=True)
    device, dtype = _placement(network, checked)
    with _inference(network):
        return _probabilities(network, checked.to(device=device, dtype=dtype))


def mean_entropy(network: nn.Module, x: torch.Tensor) -> float:
    """Mean binary predictive entropy (nats, in [0, ln 2]) over the voxels of ``x`` ``(1, C, *spatial)``.

    ``H(p) = -p ln p - (1 - p) ln(1 - p)`` of the foreground probability ``p``, from the log-softmax of the logits in
    float64 (exact at saturated voxels: ``H = 0`` for ``p`` in {0, 1}, ``ln 2`` for ``p = 0.5``). One forward pass.

    Raises:
        ValueError: bad ``x`` (see :func:`foreground_probability`; here one case) or network output.
    """
    network = _check_network(network, "entropy")
    prepared = _prepared(network, x)
    with _inference(network):
        log_p = torch.log_softmax(_logits(network, prepared).double(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        value = float(entropy.clamp(0.0, math.log(2.0)).mean())
    return _finite_score(value, "entropy")


def mc_dropout_variance(
    network: nn.Module, x: torch.Tensor, samples: int = 10, seed: int = 0, *, batch: int | None = None
) -> float:
    """Mean voxel variance of the foreground probability over ``samples`` dropout draws (dropout layers only on).

    The network runs in eval mode with only its ``nn.Dropout``/``Dropout2d``/``Dropout3d`` layers in train mode
    (:func:`common.networks.spatial_dropout_layers`), ``samples`` times, in chunks of at most ``batch`` copies of
    ``x`` per forward pass; the dropout masks come from torch's generator of the network's device seeded with
    ``seed`` (forked: the caller's random state is untouched).

    Args:
        network: maps ``(B, C, *spatial)`` to logits ``(B, 2, *spatial)``, with at least one dropout layer of rate
            ``p > 0``.
        x: one case, ``(1, C, *spatial)`` float, finite.
        samples: number of dropout draws, >= 2.
        seed: seed of the dropout masks, >= 0.
        batch: samples per forward pass, >= 1 (``None``: :data:`DEFAULT_BATCH` of the network's device).

    Returns:
        The mean over the voxels of the per-voxel variance (population, over the draws), in [0, 0.25].

    Raises:
        ValueError: the network has no dropout layer (nothing to sample), ``samples < 2``, bad ``x``, ``seed`` or
            ``batch``, or a bad network output.
    """
    network = _check_network(network, "mc_dropout")
    samples = _check_count(samples, "samples", 2)
    seed = _check_count(seed, "seed", 0)
    prepared = _prepared(network, x)
    size = _check_batch(batch, prepared.device)
    layers = spatial_dropout_layers(network)
    if not any(float(getattr(layer, "p", 0.0)) > 0.0 for layer in layers):
        raise ValueError(
            "mc_dropout needs a network with a dropout layer (nn.Dropout/Dropout2d/Dropout3d) of rate p > 0; "
            f"this one has {len(layers)} dropout layer(s), none with p > 0: nothing to sample."
        )
    moments = _Moments()
    with _inference(network, dropout=True), _seeded(prepared.device, seed):
        for chunk in _chunks(samples, size):
            moments.add(_probabilities(network, prepared.expand(len(chunk), *prepared.shape[1:]).contiguous()))
    return _finite_score(moments.mean_variance(), "MC-dropout variance")


def tta_variance(
    network: nn.Module, x: torch.Tensor, samples: int = 8, seed: int = 0, *, batch: int | None = None
) -> float:
    """Mean voxel variance of the foreground probability over ``samples`` random-flip augmentations (undone).

    Each augmentation flips ``x`` along a subset of its spatial axes; the flip is undone on the probability map.
    The subsets are random orders of all ``2^d`` subsets of the ``d`` spatial axes (identity included) drawn from
    ``numpy.random.default_rng(seed)`` (see the module docstring); the network runs in eval mode, in chunks of at
    most ``batch`` augmented inputs per forward pass. A network exactly equivariant to flips scores 0.

    Args:
        network: maps ``(B, C, *spatial)`` to logits ``(B, 2, *spatial)``.
        x: one case, ``(1, C, *spatial)`` float, finite.
        samples: number of augmentations, >= 2.
        seed: seed of the flip draws, >= 0.
        batch: augmentations per forward pass, >= 1 (``None``: :data:`DEFAULT_BATCH` of the network's device).

    Returns:
        The mean over the voxels of the per-voxel variance (population, over the augmentations), in [0, 0.25].

    Raises:
        ValueError: ``samples < 2``, bad ``x``, ``seed`` or ``batch``, or a bad network output.
    """
    network = _check_network(network, "tta")
    samples = _check_count(samples, "samples", 2)
    seed = _check_count(seed, "seed", 0)
    prepared = _prepared(network, x)
    size = _check_batch(batch, prepared.device)
    flips = _flip_sets(prepared.ndim - 2, samples, seed)
    moments = _Moments()
    with _inference(network):
        for chunk in _chunks(samples, size):
            dims = [flips[i] for i in chunk]
            views = torch.cat([prepared.flip(d) if d else prepared for d in dims])
            prob = _probabilities(network, views)
            moments.add(torch.stack([p.flip([a - 2 for a in d]) if d else p for p, d in zip(prob, dims, strict=True)]))
    return _finite_score(moments.mean_variance(), "TTA variance")


def score_cases(
    strategy: str,
    network: nn.Module | None,
    inputs: Sequence[torch.Tensor],
    seed: int = 0,
    samples: int = 10,
    *,
    batch: int | None = None,
) -> np.ndarray:
    """One score per case (float64 ``(N,)``; higher = annotate first).

    ``random``: uniform in [0, 1) from ``numpy.random.default_rng(seed)``; ``first``: ``-i`` for case ``i``;
    ``last``: ``i``; ``entropy``: :func:`mean_entropy`; ``mc_dropout``: :func:`mc_dropout_variance` and ``tta``:
    :func:`tta_variance`, each case with ``samples``, ``seed`` and ``batch``. Every input is checked, whatever the
    strategy (``network`` is not needed by ``random``, ``first`` and ``last``).

    Raises:
        ValueError: unknown strategy (the message lists :data:`STRATEGIES`), no case, a network-based strategy with
            ``network=None``, an input that is not ``(1, C, *spatial)``, or a non-finite input; for ``mc_dropout``
            and ``tta`` also ``samples < 2`` and, for ``mc_dropout``, a network without dropout.
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}.")
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
        raise ValueError(f"inputs must be a sequence of (1, C, *spatial) tensors, got {type(inputs).__name__}.")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: no case to score.")
    seed = _check_count(seed, "seed", 0)
    for i, x in enumerate(inputs):
        _check_input(x, f"inputs[{i}]")
    n = len(inputs)
    if strategy == "random":
        return np.random.default_rng(seed).random(n)
    if strategy == "first":
        return -np.arange(n, dtype=np.float64)
    if strategy == "last":
        return np.arange(n, dtype=np.float64)
    net = _check_network(network, strategy)
    if strategy == "entropy":
        return np.array([mean_entropy(net, x) for x in inputs], dtype=np.float64)
    samples = _check_count(samples, "samples", 2)
    if strategy == "mc_dropout":
        return np.array([mc_dropout_variance(net, x, samples, seed, batch=batch) for x in inputs], dtype=np.float64)
    return np.array([tta_variance(net, x, samples, seed, batch=batch) for x in inputs], dtype=np.float64)


def rank_cases(
    strategy: str,
    network: nn.Module | None,
    inputs: Sequence[torch.Tensor],
    seed: int = 0,
    samples: int = 10,
    *,
    batch: int | None = None,
) -> list[int]:
    """Case indices, best first (ties keep the given order); arguments and errors as :func:`score_cases`."""
    scores = score_cases(strategy, network, inputs, seed, samples, batch=batch)
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def select_case(
    strategy: str,
    network: nn.Module | None,
    inputs: Sequence[torch.Tensor],
    seed: int = 0,
    samples: int = 10,
    *,
    batch: int | None = None,
) -> int:
    """Index of the case to annotate next (``rank_cases(...)[0]``); arguments and errors as :func:`score_cases`."""
    return rank_cases(strategy, network, inputs, seed, samples, batch=batch)[0]
