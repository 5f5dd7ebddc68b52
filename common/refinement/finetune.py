"""Image-specific fine-tuning (BIFSeg): alternate a graph-cut label update and SGD on the classifier head.

Wang et al., "Interactive Medical Image Segmentation using Deep Learning with Image-specific Fine-tuning", IEEE TMI
2018, Section II-C/D. Given the cached features of blocks 1-5 of one image crop and a copy of the network's block 6:

1. ``p`` = softmax of the head on the features (foreground probability);
2. label update: ``y`` = graph cut of ``p`` with the contrast-sensitive pairwise term, scribbles as hard constraints
   (:func:`common.refinement.graphcut.graph_cut`);
3. network update: ``iterations`` SGD steps on the head copy minimising the weighted cross-entropy of ``p`` against
   ``y`` (weights: :func:`common.refinement.uncertainty.uncertainty_weights`, Eq. 12 of the paper; all ones for the
   BIFSeg(-w) ablation);
4. repeat 1-3 ``alternations`` times, then one last label update.

Only the copy changes: the network passed in is never modified, so fine-tuned weights cannot leak into the bundle or
into another request. Without scribbles this is the paper's unsupervised mode, with scribbles the supervised one.
``mode="cnn"`` (the network alone, threshold 0.5) and ``mode="crf"`` (one graph cut: P-Net + CRF) are the paper's
baselines, run by the same function.

Arrays: ``features`` ``(1, F, *spatial)`` (torch), ``image`` and ``scribbles`` ``spatial`` (numpy) with the same
spatial shape, ``spatial`` = ``(H, W)`` or ``(H, W, D)``; scribble codes 0 (none), 1 (foreground), 2 (background) as
made by :class:`common.boxes.ScribbleMapd`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from common.boxes.transforms import SCRIBBLE_BG, SCRIBBLE_FG
from common.refinement.graphcut import graph_cut
from common.refinement.uncertainty import WeightMapParams, uncertainty_weights

__all__ = [
    "MODES",
    "PRESETS",
    "RefinementParams",
    "RefinementResult",
    "params_from",
    "refine",
    "weighted_cross_entropy",
]

logger = logging.getLogger(__name__)

#: ``cnn``: the network alone; ``crf``: network + one graph cut; ``bifseg``: image-specific fine-tuning.
MODES: tuple[str, ...] = ("cnn", "crf", "bifseg")


@dataclass(frozen=True)
class RefinementParams:
    """Parameters of the CRF and of image-specific fine-tuning (defaults: the paper's 2D preset).

    Args:
        lam: weight of the pairwise term (2D 3.0, 3D 10.0 in the paper).
        sigma: intensity scale of the pairwise term, on the crop's z-scored intensities (0.1).
        t0, t1: network-uncertainty band of the weight map, ``t0 < p < t1`` gets weight 0 (2D 0.2/0.7, 3D 0.2/0.6).
        epsilon: geodesic distance below which a voxel near a scribble of the other label gets weight 0 (0.2).
        omega: weight of scribble voxels (5.0).
        alternations: label/network update alternations (4).
        iterations: SGD iterations per network update (20).
        learning_rate: SGD learning rate of the network update (1e-2).
        momentum: SGD momentum (0.9, as in training; the paper does not state it for fine-tuning).
        weighted: use the uncertainty weight map (``False``: the BIFSeg(-w) ablation, all weights 1).
        connectivity: graph-cut neighbourhood, ``"full"`` (8 / 26) or ``"face"`` (4 / 6).
        geodesic_gamma: weight of intensity changes in the geodesic distance.
        max_graph_cut_seconds: time guard of each graph cut.
        voxels_per_step: voxels drawn (uniformly, without replacement, among those of non-zero weight) for each SGD
            step; ``None`` uses every voxel (the paper's full-image gradient). The head is pointwise, so a step on a
            random subset is an unbiased stochastic step on the same weighted loss, at a fraction of the cost
            (``bench/bifseg.py`` measures time and Dice of both).
        seed: seed of the voxel draws and of the head's dropout (the same request gives the same result).
        max_shrink: stop the alternations, keeping the previous label, when a label update removes more than this
            fraction of the foreground (``None``: never). Not in the paper: on the phantoms, rounds with only a
            background scribble let the self-training shrink small objects to nothing over the 4 alternations
            (``docs``: the 2D comparison); a box always holds an object.
    """

    lam: float = 3.0
    sigma: float = 0.1
    t0: float = 0.2
    t1: float = 0.7
    epsilon: float = 0.2
    omega: float = 5.0
    alternations: int = 4
    iterations: int = 20
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weighted: bool = True
    connectivity: str = "full"
    geodesic_gamma: float = 1.0
    max_graph_cut_seconds: float = 30.0
    voxels_per_step: int | None = 4096
    seed: int = 0
    max_shrink: float | None = 0.5

    def __post_init__(self) -> None:
        if self.alternations < 0 or self.iterations < 0:
            raise ValueError(f"alternations and iterations must be >= 0, got {self.alternations}, {self.iterations}")
        if self.max_shrink is not None and not 0.0 < self.max_shrink <= 1.0:
            raise ValueError(f"max_shrink must be in (0, 1] or None, got {self.max_shrink}")
        if self.voxels_per_step is not None and self.voxels_per_step < 1:
            raise ValueError(f"voxels_per_step must be >= 1 or None, got {self.voxels_per_step}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        WeightMapParams(t0=self.t0, t1=self.t1, epsilon=self.epsilon, omega=self.omega, gamma=self.geodesic_gamma)

    def weight_map(self) -> WeightMapParams:
        """The weight-map part of the parameters."""
        return WeightMapParams(
            t0=self.t0, t1=self.t1, epsilon=self.epsilon, omega=self.omega, gamma=self.geodesic_gamma
        )


#: The paper's presets (Section II-E): 2D fetal MRI and 3D BraTS.
PRESETS: dict[str, RefinementParams] = {"2d": RefinementParams(), "3d": RefinementParams(lam=10.0, t1=0.6)}


@dataclass
class RefinementResult:
    """Output of :func:`refine`.

    Attributes:
        label: bool ``spatial`` mask (the final segmentation of the crop).
        prob: float32 ``spatial`` foreground probability of the (fine-tuned) head.
        history: per step ``{"step", "loss", "changed", "seconds"}`` (network updates and label updates).
        seconds: total wall time.
    """

    label: np.ndarray
    prob: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """BIFSeg's Eq. 11: ``sum_i w_i * CE_i / sum_i w_i`` (0 when every weight is 0).

    Args:
        logits: ``(1, 2, *spatial)`` background/foreground logits.
        target: ``(1, *spatial)`` int64 labels in {0, 1}.
        weights: ``(1, *spatial)`` float weights >= 0.
    """
    ce = nn.functional.cross_entropy(logits, target, reduction="none")
    total = weights.sum()
    if float(total) <= 0:
        return (ce * 0.0).sum()
    return (ce * weights).sum() / total


def _probability(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return torch.softmax(head(features), dim=1)[0, 1]


def _check(features: torch.Tensor, image: np.ndarray, scribbles: np.ndarray | None, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    spatial = tuple(features.shape[2:])
    if features.ndim not in (4, 5) or features.shape[0] != 1:
        raise ValueError(f"features must be (1, F, H, W[, D]), got {tuple(features.shape)}")
    if tuple(image.shape) != spatial:
        raise ValueError(f"image shape {tuple(image.shape)} differs from the features' spatial shape {spatial}")
    if not np.isfinite(image).all():
        raise ValueError("the image crop holds NaN or infinite values")
    if scribbles is not None and tuple(scribbles.shape) != spatial:
        raise ValueError(f"scribbles shape {tuple(scribbles.shape)} differs from the features' spatial shape {spatial}")


def refine(
    features: torch.Tensor,
    head: nn.Module,
    image: np.ndarray,
    scribbles: np.ndarray | None = None,
    params: RefinementParams | None = None,
    mode: str = "bifseg",
    spacing: Sequence[float] | None = None,
) -> RefinementResult:
    """Segment one crop from its cached features: the network alone, + CRF, or BIFSeg fine-tuning.

    Args:
        features: cached block 1-5 features ``(1, F, *spatial)`` (no gradient needed).
        head: the network's block 6 (not modified: a copy is fine-tuned).
        image: the crop's intensities as given to the network (z-scored in the box), ``spatial``.
        scribbles: scribble codes ``spatial`` (0 none, 1 foreground, 2 background), or ``None``.
        params: CRF and fine-tuning parameters (default: the 2D preset).
        mode: one of :data:`MODES`.
        spacing: voxel size per spatial axis for the pairwise distances and geodesic distances (``None``: 1).

    Raises:
        ValueError: bad mode, shapes, NaN image.
    """
    params = params or PRESETS["2d"]
    _check(features, image, scribbles, mode)
    start = time.perf_counter()
    fg = None if scribbles is None else np.asarray(scribbles) == SCRIBBLE_FG
    bg = None if scribbles is None else np.asarray(scribbles) == SCRIBBLE_BG
    features = features.detach()
    with torch.no_grad():
        was_training = head.training
        head.eval()
        prob_t = _probability(head, features)
        head.train(was_training)
    prob = prob_t.float().cpu().numpy()
    history: list[dict[str, Any]] = []
    if mode == "cnn":
        label = prob > 0.5
        if fg is not None and bg is not None:
            label = (label | fg) & ~bg
        return RefinementResult(label, prob, history, time.perf_counter() - start)

    def label_update(p: np.ndarray, step: int) -> np.ndarray:
        t = time.perf_counter()
        out = graph_cut(
            p,
            image,
            lam=params.lam,
            sigma=params.sigma,
            spacing=spacing,
            connectivity=params.connectivity,
            fg_seeds=fg if fg is not None and fg.any() else None,
            bg_seeds=bg if bg is not None and bg.any() else None,
            max_seconds=params.max_graph_cut_seconds,
        )
        history.append({"step": f"label_{step}", "foreground": int(out.sum()), "seconds": time.perf_counter() - t})
        return np.asarray(out, dtype=bool)

    label = label_update(prob, 0)
    if mode == "crf" or params.alternations == 0 or params.iterations == 0:
        return RefinementResult(label, prob, history, time.perf_counter() - start)

    # callers run inferers under torch.no_grad() (MONAI's evaluators, MONAI Label) or inference mode: fine-tuning
    # needs autograd, on a normal (cloned) copy of the features and a copy of the head
    with torch.inference_mode(False):
        features = features.clone()
        with torch.no_grad():  # copies of the parameters as leaf tensors (TorchScript heads copy them as tensors)
            tuned = copy.deepcopy(head)
        for p in tuned.parameters():
            p.requires_grad_(True)
    # dropout in the head draws from torch's generator: a private, seeded one per request (same request, same result)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(params.seed)
        label, prob = _fine_tune(features, tuned, image, fg, bg, label, prob, params, spacing, history, label_update)
    return RefinementResult(label, prob, history, time.perf_counter() - start)


def _fine_tune(
    features: torch.Tensor,
    tuned: nn.Module,
    image: np.ndarray,
    fg: np.ndarray | None,
    bg: np.ndarray | None,
    label: np.ndarray,
    prob: np.ndarray,
    params: RefinementParams,
    spacing: Sequence[float] | None,
    history: list[dict[str, Any]],
    label_update: Callable[[np.ndarray, int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The alternations of :func:`refine` (autograd enabled by the caller); returns the final label and p."""
    optimizer = torch.optim.SGD(tuned.parameters(), lr=params.learning_rate, momentum=params.momentum)
    previous_prob = prob
    ndim = features.ndim - 2
    # the head is pointwise (1x1 convolutions): its loss over any set of voxels can be computed on those voxels'
    # feature vectors laid out as a (1, F, N, 1[, 1]) "image"
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    for step in range(1, params.alternations + 1):
        t = time.perf_counter()
        weights = uncertainty_weights(
            prob, label, image, fg, bg, params.weight_map(), spacing=spacing, use_uncertainty=params.weighted
        )
        target_all = torch.as_tensor(label.reshape(-1), dtype=torch.long, device=features.device)
        weight_all = torch.as_tensor(weights.reshape(-1), dtype=features.dtype, device=features.device)
        useful = torch.nonzero(weight_all > 0).flatten().cpu()  # zero-weight voxels add nothing to the loss
        tuned.train()
        losses: list[float] = []
        for _ in range(params.iterations if len(useful) else 0):  # no voxel of non-zero weight: nothing to learn
            index = useful
            if params.voxels_per_step is not None and len(useful) > params.voxels_per_step:
                pick = torch.randperm(len(useful), generator=generator)[: params.voxels_per_step]
                index = useful[pick]
            index = index.to(features.device)
            batch = flat[:, :, index].reshape(1, flat.shape[1], -1, *([1] * (ndim - 1)))
            target = target_all[index].reshape(1, -1, *([1] * (ndim - 1)))
            w = weight_all[index].reshape(1, -1, *([1] * (ndim - 1)))
            optimizer.zero_grad(set_to_none=True)
            loss = weighted_cross_entropy(tuned(batch), target, w)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        tuned.eval()
        with torch.no_grad():
            prob = _probability(tuned, features).float().cpu().numpy()
        history.append(
            {
                "step": f"network_{step}",
                "loss_first": losses[0] if losses else 0.0,
                "loss_last": losses[-1] if losses else 0.0,
                "zero_weight_voxels": int((weights == 0).sum()),
                "seconds": time.perf_counter() - t,
            }
        )
        new_label = label_update(prob, step)
        before, after = int(label.sum()), int(new_label.sum())
        if params.max_shrink is not None and before > 0 and after < (1.0 - params.max_shrink) * before:
            # self-training runaway: with only background scribbles each alternation can teach the head the previous
            # cut's shrinkage, until nothing is left of an object the user boxed; keep the last stable result
            history.append({"step": f"stopped_{step}", "foreground_before": before, "foreground_after": after})
            return label, previous_prob
        label = new_label
        previous_prob = prob
    return label, prob


def params_from(preset: str | RefinementParams | None = None, **overrides: Any) -> RefinementParams:
    """A preset (``"2d"``/``"3d"``) or given parameters with ``overrides`` (``None`` values are ignored)."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}")
    base = PRESETS[preset] if isinstance(preset, str) else (preset or PRESETS["2d"])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
