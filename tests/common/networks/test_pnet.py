"""Tests of common.networks.pnet: BIFSeg's P-Net / PC-Net, their receptive fields and the separable head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.networks import DilatedSegNet, pcnet, pnet, receptive_field


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def _measured_receptive_field(net: DilatedSegNet, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Extent of the input voxels that change the centre output voxel (non-zero gradient)."""
    net.eval()
    with torch.no_grad():  # positive weights and input: every ReLU passes, so the gradient shows the full field
        for param in net.parameters():
            param.fill_(0.01)
    x = torch.rand(1, 1, *shape).add_(0.5).requires_grad_(True)
    out = net(x)
    centre = tuple(s // 2 for s in shape)
    out[(0, 1, *centre)].backward()
    assert x.grad is not None
    nonzero = torch.nonzero(x.grad[0, 0].abs() > 0)
    return tuple(int(nonzero[:, a].max() - nonzero[:, a].min() + 1) for a in range(len(shape)))


def test_pnet_receptive_field_is_181() -> None:
    net = pnet(features=2, head_channels=2, norm="none", dropout=0.0)
    assert net.receptive_field == (181, 181)
    assert _measured_receptive_field(net, (201, 201)) == (181, 181)


def test_pcnet_receptive_field_is_85_85_9() -> None:
    net = pcnet(features=2, compress_channels=1, head_channels=2, norm="none", dropout=0.0)
    assert net.receptive_field == (85, 85, 9)
    assert _measured_receptive_field(net, (91, 91, 13)) == (85, 85, 9)


def test_receptive_field_formula() -> None:
    assert receptive_field((1, 2, 4, 8, 16)) == 181
    assert receptive_field((1, 2, 3, 4, 5)) == 85


def test_resolution_is_preserved_for_any_size() -> None:
    net = pnet(features=4, head_channels=4).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 37, 96)).shape == (1, 2, 37, 96)
    net3 = pcnet(features=4, compress_channels=2, head_channels=4).eval()
    with torch.no_grad():
        assert net3(torch.rand(2, 1, 21, 17, 5)).shape == (2, 2, 21, 17, 5)


def test_pcnet_kernels_and_compression() -> None:
    net = pcnet(features=4, compress_channels=3, head_channels=4)
    convs = [m for block in net.blocks for m in block.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs[:4]] == [(3, 3, 3)] * 4
    assert all(c.kernel_size == (3, 3, 1) for c in convs[4:])
    assert len(convs) == 13
    assert net.feature_channels == 5 * 3
    assert all(isinstance(c, nn.Conv3d) and c.kernel_size == (1, 1, 1) for c in net.compress)


def test_features_then_classify_equals_forward_and_head_is_block_6() -> None:
    net = pnet(features=4, head_channels=8).eval()
    x = torch.rand(1, 1, 24, 20)
    with torch.no_grad():
        feats = net.features(x)
        assert feats.shape == (1, 20, 24, 20)
        torch.testing.assert_close(net.classify(feats), net(x))
    head = {id(p) for p in net.head_parameters()}
    assert head == {id(p) for p in net.head.parameters()}
    backbone = {id(p) for p in net.blocks.parameters()}
    assert head.isdisjoint(backbone)


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        DilatedSegNet(spatial_dims=1)
    with pytest.raises(ValueError, match="norm"):
        pnet(norm="group")
    with pytest.raises(ValueError, match="features"):
        pnet(features=0)
    with pytest.raises(ValueError, match="dropout"):
        pnet(dropout=1.0)
    with pytest.raises(ValueError, match="compress_channels"):
        pcnet(compress_channels=0)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, H, W\)"):
        pnet(features=2, head_channels=2)(torch.rand(1, 2, 8, 8))


def test_torchscript() -> None:
    net = pnet(features=2, head_channels=2).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 1, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
