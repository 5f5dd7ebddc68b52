"""Tests of common.networks.PropagationUNet (and its blocks)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle.scripts import verify_net_in_out
from torch import nn

from common.networks import MAX_DEPTH, MIN_DEPTH, PropagationUNet
from common.networks.blocks import ResidualBlock

VARIANTS = ("unet", "residual")
DEPTHS = tuple(range(MIN_DEPTH, MAX_DEPTH + 1))
CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _blobs(gen: torch.Generator, n: int, size: int) -> torch.Tensor:
    """``(n, size, size)`` float masks, each the union of two random discs."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size)
    for b in range(n):
        for _ in range(2):
            centre = torch.rand(2, generator=gen) * (size - 8) + 4
            radius = float(torch.rand(1, generator=gen)) * 5 + 3
            disc = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) < radius**2
            masks[b] = torch.maximum(masks[b], disc.float())
    return masks


# --- shapes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_output_shape_2d(variant: str, depth: int) -> None:
    net = PropagationUNet(depth=depth, base_channels=4, variant=variant)
    out = net(torch.rand(2, 2, 32, 48))
    assert out.shape == (2, 2, 32, 48)
    assert net.depth == depth
    assert net.required_divisor == 2 ** (depth - 1)
    assert len(net.encoders) == depth
    assert len(net.decoders) == depth - 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_3d(variant: str) -> None:
    net = PropagationUNet(spatial_dims=3, in_channels=2, out_channels=3, depth=3, base_channels=4, variant=variant)
    assert any(isinstance(m, nn.Conv3d) for m in net.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in net.modules())
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(1, 2, 16, 8, 12))
    assert out.shape == (1, 3, 16, 8, 12)


def test_output_is_logits_not_probabilities() -> None:
    net = PropagationUNet(depth=2, base_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(4, 2, 16, 16) * 5)
    # a softmax output would sum to 1 over channels everywhere
    assert not torch.allclose(out.sum(dim=1), torch.ones(4, 16, 16), atol=1e-3)


def test_channel_widths() -> None:
    net = PropagationUNet()
    assert net.depth == 4
    assert net.channels == (32, 64, 128, 256)
    assert PropagationUNet(depth=3, base_channels=16).channels == (16, 32, 64)
    explicit = PropagationUNet(channels=(8, 12, 20))
    assert explicit.depth == 3
    assert explicit.channels == (8, 12, 20)
    assert explicit.required_divisor == 4
    # the widths actually used by the layers
    first_convs = [
        next(m for m in enc.get_submodule("block").modules() if isinstance(m, nn.Conv2d)) for enc in explicit.encoders
    ]
    assert [c.out_channels for c in first_convs] == [8, 12, 20]
    assert explicit.head.in_channels == 8
    assert explicit(torch.rand(1, 2, 16, 16)).shape == (1, 2, 16, 16)


def test_residual_variant_uses_strided_conv_and_residual_blocks() -> None:
    net = PropagationUNet(depth=3, base_channels=4, variant="residual")
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    strided = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2
    assert all(m.kernel_size == (3, 3) for m in strided)
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 3 + 2
    unet = PropagationUNet(depth=3, base_channels=4, variant="unet")
    assert sum(isinstance(m, nn.MaxPool2d) for m in unet.modules()) == 2
    assert not any(isinstance(m, ResidualBlock) for m in unet.modules())


def test_residual_block_adds_projected_input() -> None:
    block = ResidualBlock(2, 3, 5, norm="none").eval()
    x = torch.randn(1, 3, 8, 8)
    expected = torch.relu(block.body(x) + block.proj(x))
    torch.testing.assert_close(block(x), expected)
    # zeroing the body leaves ReLU(projection of x): the skip path carries the input
    for p in block.body.parameters():
        nn.init.zeros_(p)
    torch.testing.assert_close(block(x), torch.relu(block.proj(x)))
    assert block(x).abs().sum() > 0


# --- initialisation / size ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_xavier_init_zero_bias(variant: str) -> None:
    net = PropagationUNet(depth=4, base_channels=32, variant=variant, norm="batch")
    convs = [m for m in net.modules() if isinstance(m, CONV_TYPES)]
    assert convs
    for conv in convs:
        if conv.bias is not None:
            assert torch.count_nonzero(conv.bias) == 0
        fan_in = conv.weight.shape[1] * conv.weight[0, 0].numel()
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert conv.weight.abs().max() <= bound + 1e-7
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(norm.weight == 1)
        assert torch.all(norm.bias == 0)
    head = net.head
    assert isinstance(head, nn.Conv2d)
    assert head.bias is not None
    assert torch.count_nonzero(head.bias) == 0

    # one large layer: the empirical std matches Xavier's sqrt(2 / (fan_in + fan_out))
    conv = next(
        m for m in net.get_submodule("encoders.2.block").modules() if isinstance(m, nn.Conv2d) and m.in_channels == 64
    )
    assert conv.weight.shape == (128, 64, 3, 3)
    fan_in, fan_out = 64 * 9, 128 * 9
    xavier_std = math.sqrt(2.0 / (fan_in + fan_out))
    assert float(conv.weight.detach().std()) == pytest.approx(xavier_std, rel=0.03)
    # PyTorch's default init (kaiming_uniform, a=sqrt(5): std = 1 / sqrt(3 fan_in)) would fail this check
    assert 1 / math.sqrt(3 * fan_in) != pytest.approx(xavier_std, rel=0.03)


def test_transposed_conv_xavier() -> None:
    net = PropagationUNet(depth=3, base_channels=32)
    up = net.decoders[0].up
    assert isinstance(up, nn.ConvTranspose2d)
    assert up.weight.shape == (128, 64, 2, 2)
    assert float(up.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / (128 * 4 + 64 * 4)), rel=0.05)
    assert up.bias is not None
    assert torch.count_nonzero(up.bias) == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_grows_with_depth(variant: str) -> None:
    counts = [_n_params(PropagationUNet(depth=d, base_channels=8, variant=variant)) for d in DEPTHS]
    assert all(a < b for a, b in itertools.pairwise(counts))
    assert _n_params(PropagationUNet(depth=3, base_channels=16, variant=variant)) > _n_params(
        PropagationUNet(depth=3, base_channels=8, variant=variant)
    )


def test_unet_parameter_count_formula() -> None:
    # depth 2, widths (4, 8), batch norm (convs without bias), 2 -> 2 channels
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    expected = (
        conv(2, 4, 3) + bn(4) + conv(4, 4, 3) + bn(4)  # encoder level 0
        + conv(4, 8, 3) + bn(8) + conv(8, 8, 3) + bn(8)  # bottleneck
        + conv(8, 4, 2) + 4  # transposed conv with bias
        + conv(8, 4, 3) + bn(4) + conv(4, 4, 3) + bn(4)  # decoder block
        + conv(4, 2, 1) + 2  # head
    )  # fmt: skip
    assert _n_params(PropagationUNet(depth=2, base_channels=4)) == expected


@pytest.mark.parametrize("norm", ["instance", "none", None])
def test_other_norms(norm: str | None) -> None:
    net = PropagationUNet(depth=2, base_channels=4, norm=norm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == (norm == "instance")
    if norm != "instance":  # without normalisation, convs carry (zero) biases
        assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert net(torch.rand(2, 2, 16, 16)).shape == (2, 2, 16, 16)


def test_dropout() -> None:
    net = PropagationUNet(depth=2, base_channels=4, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3
    x = torch.rand(2, 2, 16, 16)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    assert not any(isinstance(m, nn.Dropout) for m in PropagationUNet(depth=2, base_channels=4).modules())


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 6, 2.5, True, "4"])
def test_invalid_depth(depth: object) -> None:
    with pytest.raises(ValueError, match=rf"depth must be an integer in \[2, 5\], got {depth!r}"):
        PropagationUNet(depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "fusion"}, "variant must be one of .*'fusion'"),
        ({"norm": "group"}, "norm must be one of .*'group'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0.1"),
        ({"dropout": "0.2"}, r"dropout must be in \[0, 1\), got '0.2'"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3, got 1"),
        ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
        ({"out_channels": 1.5}, "out_channels must be a positive integer, got 1.5"),
        ({"base_channels": 0}, "base_channels must be a positive integer, got 0"),
        ({"channels": (8,)}, r"channels must have 2 to 5 entries .*\[8\]"),
        ({"channels": (8, 16, 32, 64, 128, 256)}, "channels must have 2 to 5 entries"),
        ({"channels": (8, 0)}, r"channels must be positive integers, got \[8, 0\]"),
        ({"channels": (8, 16), "depth": 3}, r"depth=3 does not match channels=\[8, 16\]"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PropagationUNet(**kwargs)  # type: ignore[arg-type]


def test_non_divisible_input() -> None:
    net = PropagationUNet(depth=4, base_channels=4)
    with pytest.raises(ValueError, match=r"input shape \[1, 2, 36, 32\] must be divisible by 8"):
        net(torch.rand(1, 2, 36, 32))
    with pytest.raises(ValueError, match=r"\[1, 2, 32, 20\] must be divisible by 8"):
        net(torch.rand(1, 2, 32, 20))
    net3d = PropagationUNet(spatial_dims=3, depth=2, base_channels=2)
    with pytest.raises(ValueError, match="must be divisible by 2"):
        net3d(torch.rand(1, 2, 4, 4, 3))


def test_wrong_channels_and_rank() -> None:
    net = PropagationUNet(depth=2, base_channels=4)
    with pytest.raises(ValueError, match=r"expects 2 input channels .*got 1 in input of shape \[1, 1, 16, 16\]"):
        net(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"expects input \(B, C, 2 spatial sizes\), got shape \[2, 16, 16\]"):
        net(torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match=r"got shape \[1, 2, 16, 16, 16\]"):
        net(torch.rand(1, 2, 16, 16, 16))


# --- TorchScript / bundle -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_torchscript_matches_eager(variant: str, tmp_path: Path) -> None:
    net = PropagationUNet(depth=3, base_channels=4, variant=variant, dropout=0.1)
    # non-trivial BN statistics, so eval mode really uses running stats
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 2, 16, 16) * 3 + 1)
    net.eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 2, 16, 24)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected)
        path = tmp_path / "net.ts"
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        torch.testing.assert_close(loaded(x), expected)
    assert loaded.required_divisor == 4
    with pytest.raises(torch.jit.Error, match="must be divisible by 4"):
        loaded(torch.rand(1, 2, 18, 16))
    with pytest.raises(torch.jit.Error, match="expects 2 input channels"):
        loaded(torch.rand(1, 3, 16, 16))


def test_config_parser_instantiation() -> None:
    parser = ConfigParser(
        {
            "net": {
                "_target_": "common.networks.PropagationUNet",
                "spatial_dims": 2,
                "in_channels": 2,
                "out_channels": 2,
                "depth": 3,
                "base_channels": 8,
                "variant": "residual",
            }
        }
    )
    net = parser.get_parsed_content("net")
    assert isinstance(net, PropagationUNet)
    assert (net.depth, net.channels, net.variant) == (3, (8, 16, 32), "residual")


def test_verify_net_in_out(tmp_path: Path) -> None:
    config = {
        "network_def": {
            "_target_": "common.networks.PropagationUNet",
            "spatial_dims": 2,
            "in_channels": 2,
            "out_channels": 2,
            "depth": 4,
            "base_channels": 4,
        }
    }
    meta = {
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "num_channels": 2,
                    "spatial_shape": ["8*n", "8*n"],
                    "dtype": "float32",
                    "value_range": [-2, 2],
                    "is_patch_data": False,
                    "channel_def": {"0": "image", "1": "prior mask"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 2,
                    "spatial_shape": ["8*n", "8*n"],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "background", "1": "foreground"},
                }
            },
        }
    }
    (tmp_path / "inference.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    kwargs = {
        "net_id": "network_def",
        "meta_file": str(tmp_path / "metadata.json"),
        "config_file": str(tmp_path / "inference.json"),
        "device": "cpu",
    }
    verify_net_in_out(**kwargs, n=3)  # type: ignore[arg-type]
    # the check can fail: a spatial size the net cannot take is rejected
    with pytest.raises(ValueError, match="divisible by 16"):
        verify_net_in_out(**kwargs, n=1, network_def={**config["network_def"], "depth": 5})  # type: ignore[arg-type]


# --- learning -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant: str) -> None:
    net = PropagationUNet(depth=3, base_channels=4, variant=variant)
    x = torch.rand(2, 2, 16, 16, requires_grad=True)
    net(x)[:, 1].sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) > 0, name
    assert x.grad is not None
    assert torch.count_nonzero(x.grad[:, 1]) > 0  # the prior channel influences the output


@pytest.mark.parametrize("variant", VARIANTS)
def test_learns_to_copy_the_prior(variant: str) -> None:
    """Toy task: the foreground logit must reproduce the prior channel (random discs) from a noisy image."""
    gen = torch.Generator().manual_seed(1)
    net = PropagationUNet(depth=3, base_channels=8, variant=variant)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        masks = _blobs(gen, 4, 32)
        x = torch.stack([torch.randn(4, 32, 32, generator=gen), masks], dim=1)
        loss = nn.functional.cross_entropy(net(x), masks.long())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(2), abs=0.15)  # ~ uniform prediction at the start
    assert sum(losses[-3:]) / 3 < 0.35 * losses[0]
    masks = _blobs(gen, 4, 32)
    x = torch.stack([torch.randn(4, 32, 32, generator=gen), masks], dim=1)
    with torch.no_grad():
        pred = net(x).argmax(dim=1).float()
    dice = 2 * (pred * masks).sum() / (pred.sum() + masks.sum())
    assert dice > 0.85
