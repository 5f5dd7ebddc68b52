"""Synthetic volumes and oracle ``predict_fn``s for the propagation tests.

Every image slice ``k`` is filled with the constant ``k``, so an oracle can read which slice it is asked to predict
from ``x[b, 0, 0, 0]``; the oracles record every call so tests can count predictions exactly.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

H, W, D = 24, 20, 48
FIRST, LAST = 10, 40  # the structure occupies slices FIRST..LAST


def slice_index_image(shape: tuple[int, int, int] = (H, W, D), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(H, W, D)`` image whose slice ``k`` is the constant ``k``."""
    return torch.arange(shape[2], dtype=dtype).expand(*shape).clone()


def ellipsoid(shape: tuple[int, int, int] = (H, W, D), first: int = FIRST, last: int = LAST) -> torch.Tensor:
    """Bool ``(H, W, D)`` ellipsoid-like blob present exactly on slices ``first..last`` (its disk shrinks to the
    ends, every slice of that range non-empty)."""
    h, w, d = shape
    i = torch.arange(h, dtype=torch.float32).view(-1, 1, 1)
    j = torch.arange(w, dtype=torch.float32).view(1, -1, 1)
    k = torch.arange(d, dtype=torch.float32).view(1, 1, -1)
    mid, half = (first + last) / 2, (last - first) / 2 + 0.5
    radius = 1.5 + 0.4 * min(h, w) * torch.sqrt((1 - ((k - mid) / half) ** 2).clamp(min=0))
    inside = (i - h / 2) ** 2 + (j - w / 2) ** 2 <= radius**2
    return inside & (k >= first) & (k <= last)


class Recorder:
    """Base oracle: records the batch size of every call and the slice index of every sample."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.slices: list[int] = []

    @property
    def n_calls(self) -> int:
        return len(self.batch_sizes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4
        assert x.shape[1] == 2
        self.batch_sizes.append(int(x.shape[0]))
        ks = [round(float(x[b, 0, 0, 0])) for b in range(x.shape[0])]
        self.slices.extend(ks)
        return torch.stack([self.predict(ks[b], x[b, 1] > 0.5) for b in range(x.shape[0])])

    def predict(self, k: int, prior: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GroundTruthOracle(Recorder):
    """Returns ``gt[..., k]`` if the prior overlaps the ground truth of slices ``k - 1..k + 1``, else empty."""

    def __init__(self, gt: torch.Tensor) -> None:
        super().__init__()
        self.gt = gt

    def predict(self, k: int, prior: torch.Tensor) -> torch.Tensor:
        near = self.gt[..., max(k - 1, 0) : k + 2].any(-1)
        if bool((prior & near).any()):
            return self.gt[..., k].float()
        return torch.zeros(prior.shape)


class CopyPrior(Recorder):
    """Returns the prior (optionally rolled by ``shift`` rows per slice: drift), times ``scale``."""

    def __init__(self, shift: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        self.shift, self.scale = shift, scale

    def predict(self, k: int, prior: torch.Tensor) -> torch.Tensor:
        return torch.roll(prior.float(), self.shift, dims=0) * self.scale


class Constant(Recorder):
    """Ignores its input: the full slice, except empty on the slices listed in ``empty``."""

    def __init__(self, shape: tuple[int, int] = (H, W), empty: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.shape, self.empty = shape, set(empty)

    def predict(self, k: int, prior: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.shape) if k in self.empty else torch.ones(self.shape)


@pytest.fixture
def prop() -> SimpleNamespace:
    """The helpers of this module: ``prop.CopyPrior()``, ``prop.ellipsoid()``, ``prop.D``, ..."""
    return SimpleNamespace(
        H=H,
        W=W,
        D=D,
        FIRST=FIRST,
        LAST=LAST,
        slice_index_image=slice_index_image,
        ellipsoid=ellipsoid,
        Recorder=Recorder,
        GroundTruthOracle=GroundTruthOracle,
        CopyPrior=CopyPrior,
        Constant=Constant,
    )
