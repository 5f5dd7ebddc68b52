"""IsenseeUNet: any input size, spatial dropout, deep supervision, the BIFSeg split, weights with or without heads."""

from __future__ import annotations

import pytest
import torch
from monai.losses import GeneralizedDiceLoss
from torch import nn

from common.networks import (
    InferenceWeights,
    IsenseeUNet,
    StackedDeepSupervisionLoss,
    full_resolution_output,
    spatial_dropout_layers,
)


def tiny(deep_supr_num: int = 1, dropout: float = 0.1) -> IsenseeUNet:
    torch.manual_seed(0)
    return IsenseeUNet(filters=(4, 8, 8, 8), dropout=dropout, deep_supr_num=deep_supr_num)


@pytest.mark.parametrize("shape", [(16, 16, 8), (21, 17, 13), (5, 9, 3)])
def test_any_input_size_gives_the_input_size(shape: tuple[int, int, int]) -> None:
    net = tiny().eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, *shape)).shape == (2, 2, *shape)


def test_padding_does_not_shift_the_output() -> None:
    """An odd-sized input equals the same voxels inside a divisible input padded as the network pads (zeros)."""
    net = tiny(deep_supr_num=0).eval()
    x = torch.randn(1, 1, 14, 16, 8)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 1, 1))  # 16 x 16 x 8: what the network does for 14 rows
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[:, :, 1:15], atol=1e-6)


def test_dropout_is_spatial_and_off_in_eval() -> None:
    net = tiny(dropout=0.3)
    layers = spatial_dropout_layers(net)
    assert layers
    assert all(type(m) is nn.Dropout3d and m.p == 0.3 for m in layers)
    assert not any(type(m) is nn.Dropout for m in net.modules())
    net.eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    assert not spatial_dropout_layers(tiny(dropout=0.0))


def test_deep_supervision_stack_in_training_and_its_loss() -> None:
    net = tiny(deep_supr_num=2).train()
    x = torch.randn(1, 1, 13, 11, 9)
    out = net(x)
    assert out.shape == (1, 3, 2, 13, 11, 9)
    assert full_resolution_output(out[0]).shape == (2, 13, 11, 9)
    assert full_resolution_output(out[0][0]).shape == (2, 13, 11, 9)  # already one output: unchanged
    target = torch.randint(0, 2, (1, 1, 13, 11, 9))
    loss = StackedDeepSupervisionLoss(GeneralizedDiceLoss(to_onehot_y=True, softmax=True), weight_mode="exp")
    value = loss(out, target)
    value.backward()
    assert torch.isfinite(value)
    head = net.deep_supervision_heads[0].conv.conv.weight
    assert head.grad is not None and head.grad.abs().sum() > 0  # noqa: PT018 - one fact: the deep head learns
    net.eval()
    with torch.no_grad():
        plain = net(x)
    assert plain.shape == (1, 2, 13, 11, 9)
    assert torch.allclose(loss(plain, target), GeneralizedDiceLoss(to_onehot_y=True, softmax=True)(plain, target))


def test_features_and_head_reproduce_the_forward() -> None:
    net = tiny().eval()
    x = torch.randn(1, 1, 19, 15, 7)
    with torch.no_grad():
        features = net.features(x)
        assert features.shape == (1, 4, 19, 15, 7)
        assert torch.allclose(net.classify(features), net(x), atol=1e-6)
        assert torch.allclose(net.head(features), net(x), atol=1e-6)


def test_one_checkpoint_serves_training_inference_and_torchscript() -> None:
    trained = tiny(deep_supr_num=2)
    inference = IsenseeUNet(filters=(4, 8, 8, 8), deep_supr_num=0)
    inference.load_state_dict(trained.state_dict())  # training heads dropped
    shipped = InferenceWeights(trained).state_dict()
    assert set(shipped) == set(inference.state_dict())
    again = IsenseeUNet(filters=(4, 8, 8, 8), deep_supr_num=2)
    again.load_state_dict(shipped)  # heads keep their initialisation, the rest is loaded
    x = torch.randn(1, 1, 16, 12, 8)
    for net in (trained, inference, again):
        net.eval()
    scripted = torch.jit.script(inference)
    with torch.no_grad():
        assert torch.allclose(inference(x), trained(x))
        assert torch.allclose(again(x), trained(x))
        assert torch.allclose(scripted(x), inference(x), atol=1e-6)
        assert torch.allclose(scripted.features(x), inference.features(x), atol=1e-6)
    with pytest.raises(RuntimeError, match="size mismatch"):
        IsenseeUNet(filters=(4, 8, 16, 8), deep_supr_num=0).load_state_dict(shipped)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": (4, 8)}, ">= 3 positive channel counts"),
        ({"filters": (4, 0, 8)}, ">= 3 positive channel counts"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"filters": (4, 8, 8), "deep_supr_num": 2}, "deep_supr_num must be in 0..1"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IsenseeUNet(**kwargs)  # type: ignore[arg-type]
