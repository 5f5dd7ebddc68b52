"""Tests of common.clicks.adapter.ClickAdapter: clicks in an InteractionState -> binary volume prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from common.clicks import ClickAdapter, ClickInferer
from common.evaluation.cases import CaseInfo
from common.interaction import InteractionState
from common.networks import DeepGrowUNet

TINY = (2, 4, 8, 16, 32)
SHAPE = (24, 20, 6)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def _info() -> CaseInfo:
    return CaseInfo(
        case_id="phantom_000",
        spacing=(1.0, 1.0, 2.0),
        structure=2,
        structure_name="spleen",
        group="seen",
        affine=np.eye(4),
    )


def _state(foreground: Sequence[tuple[int, ...]], background: Sequence[tuple[int, ...]] = ()) -> InteractionState:
    return InteractionState(foreground=list(foreground), background=list(background))


class _Channel(nn.Module):
    """Returns one input channel, shifted: logits ``x[:, c] - offset``."""

    def __init__(self, channel: int, offset: float) -> None:
        super().__init__()
        self.channel = channel
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.channel : self.channel + 1] - self.offset


def _image() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1500, 1500, SHAPE).astype(np.float32)


def test_tiny_2d_unet_predicts_only_clicked_slices() -> None:
    adapter = ClickAdapter(DeepGrowUNet(2, channels=TINY), ClickInferer(network_dims=2, axis=2))
    out = adapter(_image(), _state([(10, 8, 1), (5, 5, 4)], [(20, 15, 4)]), _info())
    assert isinstance(out, np.ndarray)
    assert out.dtype == bool
    assert out.shape == SHAPE
    assert not out[..., [0, 2, 3, 5]].any()  # only the clicked slices are segmented
    assert not adapter.network.training


def test_guidance_reaches_the_network_at_the_clicks() -> None:
    """A 'network' returning foreground guidance - 0.5: the mask is a disc around each foreground click."""
    adapter = ClickAdapter(_Channel(1, 0.5), ClickInferer(network_dims=2, axis=2), sigma=2.0)
    out = adapter(_image(), _state([(10, 8, 1), (4, 15, 3)]), _info())
    assert out[10, 8, 1]
    assert out[4, 15, 3]
    assert out[11, 9, 1]
    assert not out[16, 8, 1]
    assert out.sum() == 2 * out[..., 1].sum()  # both slices alike, per-slice 2D guidance
    assert not out[..., [0, 2, 4, 5]].any()
    # a background click alone on a slice makes it a clicked slice, but gives no foreground
    out_bg = adapter(_image(), _state([(10, 8, 1)], [(5, 5, 4)]), _info())
    assert out_bg[..., 1].any()
    assert not out_bg[..., 4].any()


def test_intensity_scaling_as_in_the_bundle() -> None:
    """A 'network' returning the scaled image: clip to +-hu_clip, divide by hu_scale, threshold at 0."""
    image = _image()
    adapter = ClickAdapter(_Channel(0, 0.4), ClickInferer(network_dims=2), hu_clip=1000.0, hu_scale=500.0)
    out = adapter(image, _state([(3, 3, 2)]), _info())
    np.testing.assert_array_equal(out[..., 2], np.clip(image[..., 2], -1000, 1000) / 500.0 > 0.4)
    high = ClickAdapter(_Channel(0, 2.5), ClickInferer(network_dims=2), hu_clip=1000.0, hu_scale=500.0)
    assert not high(image, _state([(3, 3, 2)]), _info()).any()  # clipped at 1000 HU -> at most 2.0


def test_3d_path() -> None:
    adapter = ClickAdapter(DeepGrowUNet(3, channels=TINY), ClickInferer(network_dims=3, divisible_by=16))
    image = np.random.default_rng(1).normal(0, 300, (12, 10, 9)).astype(np.float32)
    out = adapter(image, _state([(6, 5, 4)]), _info())
    assert out.dtype == bool
    assert out.shape == (12, 10, 9)
    guided = ClickAdapter(_Channel(1, 0.5), ClickInferer(network_dims=3, divisible_by=16))
    mask = guided(image, _state([(6, 5, 4)]), _info())
    assert mask[6, 5, 4]
    assert mask[6, 5, 5]
    assert not mask[0, 0, 0]


def test_deterministic() -> None:
    adapter = ClickAdapter(DeepGrowUNet(2, channels=TINY), ClickInferer(network_dims=2))
    state = _state([(10, 8, 1)], [(2, 2, 1)])
    np.testing.assert_array_equal(adapter(_image(), state, _info()), adapter(_image(), state, _info()))


def test_bad_clicks_raise() -> None:
    adapter = ClickAdapter(_Channel(1, 0.5), ClickInferer(network_dims=2))
    with pytest.raises(ValueError, match="no clicks"):
        adapter(_image(), _state([]), _info())
    with pytest.raises(ValueError, match="outside the image"):
        adapter(_image(), _state([(24, 0, 0)]), _info())
