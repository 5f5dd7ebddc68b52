"""Tests of common.clicks.inferer.ClickInferer: padding, per-slice 2D inference on volumes, chunking, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from torch import nn

from common.clicks import ClickInferer
from common.networks import DeepGrowUNet

TINY = (2, 4, 8, 16, 32)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


class _Pointwise(nn.Module):
    """A 1x1 convolution that insists on inputs divisible by ``divisor`` and counts its calls."""

    def __init__(self, spatial_dims: int, divisor: int = 16, out_channels: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(3, out_channels, kernel_size=1)
        self.divisor = divisor
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert all(s % self.divisor == 0 for s in x.shape[2:]), x.shape
        self.batch_sizes.append(x.shape[0])
        return self.conv(x)


def _volume(b: int, shape: tuple[int, int, int], axis: int, clicked: list[list[int]]) -> torch.Tensor:
    """``(b, 3, *shape)`` random input whose guidance channels hold a click on the given slices of each sample."""
    x = torch.rand(b, 3, *shape)
    x[:, 1:] = 0
    for bi, slices in enumerate(clicked):
        for s in slices:
            index: list[Any] = [bi, 1 + (s % 2), shape[0] // 2, shape[1] // 2, shape[2] // 2]
            index[2 + axis] = s
            x[tuple(index)] = 1.0
    return x


# --- same dimensionality --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20, 27), (16, 32), (5, 33)])
def test_same_dims_2d_pads_and_crops_back(shape: tuple[int, int]) -> None:
    net = _Pointwise(2)
    x = torch.rand(2, 3, *shape)
    out = ClickInferer(network_dims=2, divisible_by=16)(x, net)
    assert out.shape == (2, 1, *shape)
    # a pointwise network: cropping the padded output back gives exactly the unpadded prediction
    torch.testing.assert_close(out, net.conv(x))


def test_same_dims_3d_pads_and_crops_back() -> None:
    net = _Pointwise(3, divisor=8)
    x = torch.rand(1, 3, 9, 12, 7)
    out = ClickInferer(network_dims=3, divisible_by=8)(x, net)
    assert out.shape == (1, 1, 9, 12, 7)
    torch.testing.assert_close(out, net.conv(x))


def test_same_dims_with_a_real_unet() -> None:
    net = DeepGrowUNet(2, channels=TINY).eval()
    x = torch.rand(1, 3, 23, 41)
    with torch.no_grad():
        out = ClickInferer(network_dims=2, divisible_by=16)(x, net)
    assert out.shape == (1, 1, 23, 41)
    assert torch.isfinite(out).all()


# --- 2D network on a volume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_2d_net_on_volume_predicts_only_clicked_slices(axis: int) -> None:
    shape = [18, 20, 22]
    shape[axis] = 6
    clicked = [[1, 4], [0]]
    x = _volume(2, tuple(shape), axis, clicked)  # type: ignore[arg-type]
    net = _Pointwise(2)
    inferer = ClickInferer(network_dims=2, axis=axis, divisible_by=16, fill_logit=-7.0)
    out = inferer(x, net)
    assert out.shape == (2, 1, *shape)
    assert net.batch_sizes == [3]  # all clicked slices of the batch in one forward pass
    for bi, slices in enumerate(clicked):
        for s in range(6):
            got = torch.select(out[bi], axis + 1, s)
            if s in slices:
                plane = torch.select(x[bi : bi + 1], axis + 2, s)
                torch.testing.assert_close(got, net.conv(plane)[0])
            else:
                assert (got == -7.0).all(), (bi, s)


def test_max_batch_chunking_gives_the_same_result() -> None:
    x = _volume(2, (16, 16, 7), 2, [[0, 2, 3, 6], [1, 5]])
    net = _Pointwise(2)
    whole = ClickInferer(network_dims=2, max_batch=32)(x, net)
    assert net.batch_sizes == [6]
    net.batch_sizes.clear()
    chunked = ClickInferer(network_dims=2, max_batch=4)(x, net)
    assert net.batch_sizes == [4, 2]
    torch.testing.assert_close(chunked, whole)
    net.batch_sizes.clear()
    single = ClickInferer(network_dims=2, max_batch=1)(x, net)
    assert net.batch_sizes == [1] * 6
    torch.testing.assert_close(single, whole)


def test_2d_unet_on_volume_with_two_output_channels() -> None:
    net = DeepGrowUNet(2, out_channels=2, channels=TINY).eval()
    x = _volume(1, (20, 20, 5), 2, [[2]])
    with torch.no_grad():
        out = ClickInferer(network_dims=2, fill_logit=-3.0)(x, net)
    assert out.shape == (1, 2, 20, 20, 5)
    assert (out[..., [0, 1, 3, 4]] == -3.0).all()
    assert not (out[..., 2] == -3.0).all()


# --- errors ---------------------------------------------------------------------------------------------------------


def test_no_clicked_slice_raises() -> None:
    x = torch.rand(1, 3, 16, 16, 4)
    x[:, 1:] = 0
    with pytest.raises(ValueError, match="no slice carries a click"):
        ClickInferer(network_dims=2)(x, _Pointwise(2))


@pytest.mark.parametrize("shape", [(1, 3, 16), (1, 3, 8, 8, 8, 8), (1, 2, 16, 16)])
def test_wrong_rank_or_no_guidance_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"inputs must be \(B, C_img \+ 2 guidance"):
        ClickInferer(network_dims=2)(torch.rand(*shape), _Pointwise(2))


def test_3d_net_on_2d_input_raises() -> None:
    with pytest.raises(ValueError, match="a 3D network needs a volume"):
        ClickInferer(network_dims=3)(torch.rand(1, 3, 16, 16), _Pointwise(3))


def test_network_with_wrong_output_raises() -> None:
    with pytest.raises(ValueError, match="the network must return"):
        ClickInferer(network_dims=2)(torch.rand(1, 3, 16, 16), lambda x: x[:, :, :8])
    with pytest.raises(ValueError, match="the network must return"):
        ClickInferer(network_dims=2)(torch.rand(1, 3, 16, 16), lambda x: {"pred": x})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"network_dims": 1}, "network_dims"),
        ({"axis": 3}, "axis"),
        ({"guidance_channels": 0}, "guidance_channels"),
        ({"max_batch": 0}, "max_batch"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClickInferer(**kwargs)


def test_instantiable_from_bundle_config() -> None:
    parser = ConfigParser({"inferer": {"_target_": "common.clicks.ClickInferer", "network_dims": 2, "max_batch": 8}})
    inferer = parser.get_parsed_content("inferer")
    assert isinstance(inferer, ClickInferer)
    assert inferer.max_batch == 8
