"""Isensee-style 3D U-Net: residual blocks, spatial dropout and deep supervision, on MONAI's ``DynUNet``.

The active-learning bundle's general model (Groff 2018, "Deep Active Learning for Interactive 3D Segmentation of
Medical Images", after Isensee et al., "Brain Tumor Segmentation and Radiomics Survival Prediction: Contribution to
the BRATS 2017 Challenge"). MONAI's ``DynUNet`` has the residual blocks and the deep-supervision heads; this class
adds what the refinement engine and the query strategies need:

- **spatial dropout**: ``DynUNet`` puts element-wise ``nn.Dropout`` in its convolutions; here each is replaced by
  ``nn.Dropout2d``/``nn.Dropout3d`` with the same rate (whole feature maps are dropped, as in Isensee et al.). The
  dropout layers are what MC-dropout sampling (:mod:`common.active_learning.strategies`) switches on.
- **any input size**: inputs are zero-padded to a multiple of the total stride and outputs cropped back, so box crops
  of any shape go through (``(B, C, *spatial)`` in, ``(B, out_channels, *spatial)`` out).
- **the BIFSeg split** used by :func:`common.refinement.finetune.refine`: :meth:`features` (everything up to the last
  decoder block, ``(B, filters[0], *spatial)``), :attr:`head` (the 1x1x1 output convolution, the part fine-tuned per
  image) and :meth:`classify` (``head`` on features, logits).

In training mode with ``deep_supervision`` the forward returns ``(B, 1 + deep_supr_num, out_channels, *spatial)``
(the full-resolution output first, the deeper heads upsampled), as ``DynUNet`` does; :class:`StackedDeepSupervisionLoss`
takes that stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from monai.networks.nets import DynUNet
from torch import nn

__all__ = [
    "InferenceWeights",
    "IsenseeUNet",
    "StackedDeepSupervisionLoss",
    "full_resolution_output",
    "spatial_dropout_layers",
]


def spatial_dropout_layers(module: nn.Module) -> list[nn.Module]:
    """The ``nn.Dropout``/``Dropout2d``/``Dropout3d`` layers of ``module`` (what MC dropout switches on)."""
    return [m for m in module.modules() if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout3d)]


def _symmetric_padding(x: torch.Tensor, divisor: int) -> list[int]:
    """``F.pad`` amounts (last spatial dim first) making every spatial dim of ``x`` a multiple of ``divisor``
    (TorchScript-compatible, as MONAI's ``DivisiblePad``: the extra voxel after)."""
    pad: list[int] = []
    for d in range(x.dim() - 1, 1, -1):
        total = (divisor - x.shape[d] % divisor) % divisor
        pad.append(total // 2)
        pad.append(total - total // 2)
    return pad


def _unpad(out: torch.Tensor, pad: list[int], like: torch.Tensor) -> torch.Tensor:
    """Crop the spatial dims of ``out`` (padded by ``pad``) back to those of ``like``; works on a deep-supervision
    stack too (its spatial dims are the last ones)."""
    n = like.dim() - 2
    offset = out.dim() - n
    for i in range(n):
        d = like.dim() - 1 - i
        out = out.narrow(offset + n - 1 - i, pad[2 * i], like.shape[d])
    return out.contiguous()


def _is_deep_supervision_key(name: str) -> bool:
    """A state-dict key of ``DynUNet``'s deep-supervision heads (registered twice: as a list and in the skip layers)."""
    return name.startswith("deep_supervision_heads.") or ".super_head." in name


def full_resolution_output(pred: torch.Tensor, spatial_dims: int = 3) -> torch.Tensor:
    """One item's prediction without its deep-supervision heads: ``(S, C, *spatial)`` -> ``(C, *spatial)``.

    Post-processing of a training step (MONAI decollates the batch first); a ``(C, *spatial)`` prediction is returned
    as is.
    """
    return pred[0] if pred.ndim == spatial_dims + 2 else pred


class IsenseeUNet(DynUNet):
    """3D (or 2D) U-Net with residual blocks, spatial dropout, deep supervision and a features/head split.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1: the box crop).
        out_channels: output channels (2: background and foreground logits).
        filters: channels per level, finest first (its length is the number of levels; each level halves the size).
        dropout: spatial dropout rate in every residual block (0 disables it; MC dropout then has nothing to sample).
        deep_supr_num: number of deeper decoder levels with a segmentation head (``0``: no deep supervision).
        norm: normalisation (``"instance"`` as in Isensee et al., or ``"batch"``).

    Raises:
        ValueError: fewer than 3 levels, a non-positive filter count, a dropout outside [0, 1), or more deep
            supervision heads than decoder levels below the top.
    """

    __jit_unused_properties__ = ["head"]  # noqa: RUF012 - TorchScript reads this class attribute

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        filters: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.1,
        deep_supr_num: int = 2,
        norm: str = "instance",
    ) -> None:
        filters = [int(f) for f in filters]
        if len(filters) < 3 or any(f < 1 for f in filters):  # DynUNet needs an input, a bottleneck and a level between
            raise ValueError(f"filters must list >= 3 positive channel counts (one per level), got {filters}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= int(deep_supr_num) <= len(filters) - 2:
            raise ValueError(f"deep_supr_num must be in 0..{len(filters) - 2} for {len(filters)} levels")
        levels = len(filters)
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=filters,
            dropout=float(dropout) if dropout else None,
            norm_name=(norm, {"affine": True}),
            deep_supervision=deep_supr_num > 0,
            deep_supr_num=max(1, int(deep_supr_num)),
            res_block=True,
        )
        self.divisor = 2 ** (levels - 1)
        self.dropout_rate = float(dropout)
        spatial = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Dropout:
                    setattr(parent, name, spatial(p=child.p))
        self._register_load_state_dict_pre_hook(self._match_deep_supervision)

    @property
    def head(self) -> nn.Module:
        """The 1x1(x1) output convolution: what image-specific fine-tuning adapts."""
        return self.output_block

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> last decoder features ``(B, filters[0], *spatial)``."""
        pad = _symmetric_padding(x, self.divisor)
        return _unpad(self.skip_layers(F.pad(x, pad)), pad, x)

    @torch.jit.export
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` from :meth:`features`."""
        out: torch.Tensor = self.output_block(features)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``; see the module doc in training."""
        pad = _symmetric_padding(x, self.divisor)
        out = self.output_block(self.skip_layers(F.pad(x, pad)))
        if self.training and self.deep_supervision:
            outputs = [_unpad(out, pad, x)]
            for feature_map in self.heads:
                outputs.append(_unpad(F.interpolate(feature_map, out.shape[2:]), pad, x))
            return torch.stack(outputs, dim=1)
        return _unpad(out, pad, x)

    @torch.jit.unused
    def _match_deep_supervision(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load-state-dict pre-hook: the deep-supervision heads are training-only layers. Weights saved with heads load
        into a network without them (the heads are dropped) and the other way round (the heads keep their fresh
        initialisation), so one checkpoint serves training (heads) and inference or TorchScript export (none)."""
        own = {k: v for k, v in self.state_dict().items() if _is_deep_supervision_key(k)}
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix) :]
            if _is_deep_supervision_key(name) and name not in own:
                del state_dict[key]
        for name, value in own.items():
            state_dict.setdefault(prefix + name, value)


class InferenceWeights:
    """A network's weights without its training-only deep-supervision heads, for checkpoint savers.

    ``train.json`` saves the best model through this view (``CheckpointSaver(save_dict={"model":
    InferenceWeights(network)})``): the file holds exactly the state of the inference network (``deep_supr_num=0``),
    so it loads strictly into the network of ``inference.json`` and into a TorchScript export of it (model-zoo's
    ``network_def`` swap). The resume checkpoint keeps the full network.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def state_dict(self) -> dict[str, torch.Tensor]:
        module = getattr(self.network, "module", self.network)  # DistributedDataParallel
        return {k: v for k, v in module.state_dict().items() if not _is_deep_supervision_key(k)}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        module = getattr(self.network, "module", self.network)
        return module.load_state_dict(state_dict, strict=strict)


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` for a stacked output ``(B, S, C, *spatial)`` (``DynUNet`` in training).

    A plain ``(B, C, *spatial)`` prediction (evaluation mode) gets the wrapped loss alone. ``weight_mode="exp"`` halves
    the weight at each deeper head, as nnU-Net does.
    """

    def forward(self, input: Any, target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
