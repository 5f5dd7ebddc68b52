"""Tests of common.networks.DeepGrowUNet: the paper's 5-level U-Net with guidance channels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle.scripts import verify_net_in_out
from torch import nn

from common.clicks import ClickInferer
from common.networks import DEEPGROW_CHANNELS, DeepGrowUNet, PropagationUNet

TINY = (2, 4, 8, 16, 32)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def test_output_shape_2d() -> None:
    net = DeepGrowUNet(spatial_dims=2, channels=TINY)
    out = net(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 1, 32, 48)
    two = DeepGrowUNet(spatial_dims=2, in_channels=4, out_channels=2, channels=TINY)
    assert two(torch.rand(1, 4, 32, 16)).shape == (1, 2, 32, 16)


def test_output_shape_3d() -> None:
    net = DeepGrowUNet(spatial_dims=3, channels=TINY).eval()
    assert any(isinstance(m, nn.Conv3d) for m in net.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in net.modules())
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 32, 16))
    assert out.shape == (1, 1, 16, 32, 16)


def test_architecture_is_the_papers_unet() -> None:
    net = DeepGrowUNet(spatial_dims=2, channels=TINY)
    assert isinstance(net, PropagationUNet)
    assert net.depth == 5
    assert net.required_divisor == 16
    assert net.channels == TINY
    assert len(net.encoders) == 5
    assert len(net.decoders) == 4
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in net.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * 9  # 2 x conv-BN-ReLU per block
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18
    assert all(m.padding == (1, 1) for m in convs)
    assert DeepGrowUNet().channels == DEEPGROW_CHANNELS
    assert DeepGrowUNet().in_channels == 3  # image + foreground + background guidance


@pytest.mark.parametrize("channels", [(2, 4, 8, 16), (2, 4, 8, 16, 32, 64), ()])
def test_five_levels_required(channels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="channels needs 5 widths"):
        DeepGrowUNet(channels=channels)


def test_dropout_is_used() -> None:
    net = DeepGrowUNet(channels=TINY, dropout=0.2)
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in net.modules())
    assert not any(isinstance(m, nn.Dropout | nn.Dropout2d) for m in DeepGrowUNet(channels=TINY).modules())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchscript_matches_eager(spatial_dims: int, tmp_path: Path) -> None:
    net = DeepGrowUNet(spatial_dims=spatial_dims, channels=TINY)
    shape = (16, 32) if spatial_dims == 2 else (16, 16, 16)
    net.train()
    with torch.no_grad():  # non-trivial BN statistics
        net(torch.randn(2, 3, *shape) * 2 + 1)
    net.eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected)
        torch.jit.save(scripted, str(tmp_path / "net.ts"))
        loaded = torch.jit.load(str(tmp_path / "net.ts"))
        torch.testing.assert_close(loaded(x), expected)
        # the click inferer pads for the scripted model too
        odd = torch.randn(1, 3, *(s - 3 for s in shape))
        out = ClickInferer(network_dims=spatial_dims, divisible_by=16)(odd, loaded)
    assert out.shape == (1, 1, *odd.shape[2:])
    with pytest.raises(torch.jit.Error, match="must be divisible by 16"):
        loaded(torch.rand(1, 3, *(s + 2 for s in shape)))


def test_config_parser_instantiation() -> None:
    parser = ConfigParser(
        {"net": {"_target_": "common.networks.DeepGrowUNet", "spatial_dims": 2, "channels": [4, 8, 16, 32, 64]}}
    )
    net = parser.get_parsed_content("net")
    assert isinstance(net, DeepGrowUNet)
    assert net.channels == (4, 8, 16, 32, 64)


def test_verify_net_in_out(tmp_path: Path) -> None:
    config = {"network_def": {"_target_": "common.networks.DeepGrowUNet", "spatial_dims": 2, "channels": list(TINY)}}
    io = {"type": "image", "spatial_shape": ["16*n", "16*n"], "dtype": "float32", "is_patch_data": False}
    meta = {
        "network_data_format": {
            "inputs": {
                "image": {
                    **io,
                    "format": "hounsfield",
                    "num_channels": 3,
                    "value_range": [-2, 2],
                    "channel_def": {"0": "image", "1": "positive guidance", "2": "negative guidance"},
                }
            },
            "outputs": {
                "pred": {
                    **io,
                    "format": "segmentation",
                    "num_channels": 1,
                    "value_range": [],
                    "channel_def": {"0": "foreground logit"},
                }
            },
        }
    }
    (tmp_path / "inference.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "inference.json"),
        device="cpu",
        n=2,
    )
