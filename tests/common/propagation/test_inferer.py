from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from common.propagation import NearestMerge, SlicePropagationInferer

SHAPE = (19, 13, 11)  # no dimension divisible by 16 (or 8)
GAIN = 10.0


class CopyPriorNet(torch.nn.Module):
    """1x1 conv with fixed weights: background logit 0, foreground logit GAIN * (prior - 0.5).

    Softmax foreground probability = sigmoid(GAIN * (prior - 0.5)), i.e. the prior is copied to the next slice.
    Records the input shapes it sees.
    """

    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, out_channels, kernel_size=1)
        with torch.no_grad():
            weight = torch.zeros_like(self.conv.weight)
            weight[-1, 1] = GAIN
            bias = torch.zeros(out_channels)
            bias[-1] = -GAIN / 2
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)  # type: ignore[union-attr]
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.conv(x)


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _slice_mask(shape: tuple[int, int], offset: int = 0) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    m[1 + offset : shape[0] - 3, 2 : shape[1] - 1 - offset] = True
    m[2, 2] = False  # not symmetric: a transposed or mirrored result would differ
    return m


def _index(axis: int, k: int) -> tuple[slice | int, ...]:
    idx: list[slice | int] = [slice(None)] * 3
    idx[axis] = k
    return tuple(idx)


def _inputs(axis: int, slices: dict[int, torch.Tensor], dtype: torch.dtype = torch.float32) -> MetaTensor:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(SHAPE, generator=generator, dtype=dtype)
    annotation = torch.zeros(SHAPE, dtype=dtype)
    for k, m in slices.items():
        annotation[_index(axis, k)] = m.to(dtype)
    affine = torch.diag(torch.tensor([1.5, 0.8, 3.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.stack([image, annotation])[None], affine=affine, meta={"filename_or_obj": "case.nii.gz"})


def _plane(axis: int) -> tuple[int, int]:
    return tuple(s for i, s in enumerate(SHAPE) if i != axis)  # type: ignore[return-value]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_copy_network_propagates_the_user_mask_along_axis(axis: int) -> None:
    net = CopyPriorNet()
    user = _slice_mask(_plane(axis))
    k = SHAPE[axis] // 2
    inputs = _inputs(axis, {k: user})
    inferer = SlicePropagationInferer(axis=axis, divisible_by=16)
    assert isinstance(inferer, Inferer)
    out = inferer(inputs, net)
    assert isinstance(out, MetaTensor)
    assert out.shape == (1, 1, *SHAPE)
    assert out.dtype == inputs.dtype
    assert torch.equal(out.affine, inputs.affine)
    assert out.meta["filename_or_obj"] == "case.nii.gz"
    assert not out.requires_grad
    for i in range(SHAPE[axis]):
        assert torch.equal(_plain(out[0, 0][_index(axis, i)]), user.float()), i
    # every network input was padded to a multiple of 16, and the crop put the copy back at the right place
    assert net.shapes
    assert all(s[2] % 16 == 0 and s[3] % 16 == 0 for s in net.shapes)
    assert {s[2:] for s in net.shapes} == {tuple(16 * math.ceil(n / 16) for n in _plane(axis))}
    assert sum(s[0] for s in net.shapes) == SHAPE[axis] - 1
    assert inferer.last_results[0].n_calls == len(net.shapes)


def test_two_user_slices_nearest_and_probabilities() -> None:
    plane = _plane(2)
    ma, mb = _slice_mask(plane), _slice_mask(plane, offset=2)
    inputs = _inputs(2, {2: ma, 8: mb})
    inferer = SlicePropagationInferer(merge=NearestMerge(), return_probabilities=True, divisible_by=(4, 8))
    prob = inferer(inputs, CopyPriorNet())
    p_fg = 1 / (1 + math.exp(-GAIN / 2))  # softmax foreground for a prior of 1 (and 1 - p_fg for 0)
    for k in range(SHAPE[2]):
        if k in (2, 8):
            expected = (ma if k == 2 else mb).float()  # user slices exactly 0/1
        else:
            m = ma if k <= 5 else mb
            expected = torch.where(m, p_fg, 1 - p_fg)
        assert torch.allclose(_plain(prob[0, 0, ..., k]), expected, atol=1e-6), k
    assert inferer.last_results[0].source == (2, 2, 2, 2, 2, 2, 8, 8, 8, 8, 8)


def test_annotation_given_separately_as_volume_or_mapping() -> None:
    user = _slice_mask(_plane(1))
    inputs = _inputs(1, {4: user})
    expected = SlicePropagationInferer(axis=1)(inputs, CopyPriorNet())
    image_only = inputs[:, :1]
    inferer = SlicePropagationInferer(axis=1)
    for annotation in (inputs[0, 1], inputs[:, 1], inputs[:, 1:], inputs[0, 1].numpy()):
        out = inferer(image_only, CopyPriorNet(), annotation=annotation)
        assert torch.equal(_plain(out), _plain(expected))
    out = inferer(image_only, CopyPriorNet(), annotation={4: user.numpy()})
    assert torch.equal(_plain(out), _plain(expected))


def test_plain_tensor_float64_and_batch_of_two() -> None:
    plane = _plane(2)
    a = _inputs(2, {3: _slice_mask(plane)}, dtype=torch.float64).as_tensor()
    b = _inputs(2, {7: _slice_mask(plane, offset=1)}, dtype=torch.float64).as_tensor()
    out = SlicePropagationInferer()(torch.cat([a, b]), CopyPriorNet().double())
    assert type(out) is torch.Tensor
    assert out.dtype == torch.float64
    assert out.shape == (2, 1, *SHAPE)
    for i, (x, k) in enumerate(((a, 3), (b, 7))):
        assert torch.equal(out[i, 0], x[0, 1, ..., k : k + 1].expand(SHAPE))


def test_one_channel_network_uses_sigmoid_and_extra_network_arguments() -> None:
    class WithFlag(CopyPriorNet):
        def forward(self, x: torch.Tensor, flag: bool = False) -> torch.Tensor:
            assert flag
            return super().forward(x)

    user = _slice_mask(_plane(2))
    inputs = _inputs(2, {5: user})
    out = SlicePropagationInferer(return_probabilities=True)(inputs, WithFlag(out_channels=1), flag=True)
    p_fg = 1 / (1 + math.exp(-GAIN / 2))
    assert torch.allclose(_plain(out[0, 0, ..., 0]), torch.where(user, p_fg, 1 - p_fg), atol=1e-6)


def test_softmax_false_takes_probabilities_as_given() -> None:
    inputs = _inputs(2, {5: _slice_mask(_plane(2))})

    def probability_net(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([1 - 0.7 * x[:, 1], 0.7 * x[:, 1]], dim=1)

    out = SlicePropagationInferer(softmax=False, return_probabilities=True)(inputs, probability_net)
    assert torch.unique(out[0, 0, ..., 4]).tolist() == pytest.approx([0.0, 0.7])


def test_network_is_run_without_gradients() -> None:
    net = CopyPriorNet()
    grad_enabled: list[bool] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        grad_enabled.append(torch.is_grad_enabled())
        return net(x)

    out = SlicePropagationInferer()(_inputs(2, {5: _slice_mask(_plane(2))}), spy)
    assert grad_enabled
    assert not any(grad_enabled)
    assert not out.requires_grad


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x: x[0], r"inputs must be a batch of channel-first volumes"),
        (lambda x: x[..., 0], r"inputs must be a batch of channel-first volumes"),
        (lambda x: torch.cat([x, x[:, :1]], dim=1), r"inputs must have 2 channels"),
        (lambda x: torch.stack([x[:, 0], torch.zeros_like(x[:, 1])], dim=1), "no annotated slice"),
        (lambda x: torch.stack([x[:, 0], x[:, 1] * 2], dim=1), r"must be binary"),
        (lambda x: torch.stack([x[:, 0].index_fill(1, torch.tensor([3]), float("nan")), x[:, 1]], 1), "NaN"),
        (lambda x: torch.stack([x[:, 0].index_fill(1, torch.tensor([3]), float("inf")), x[:, 1]], 1), "infinite"),
    ],
)
def test_bad_inputs(make: object, match: str) -> None:
    inputs = _inputs(2, {5: _slice_mask(_plane(2))}).as_tensor()
    with pytest.raises(ValueError, match=match):
        SlicePropagationInferer()(make(inputs), CopyPriorNet())  # type: ignore[operator]


def test_bad_separate_annotations() -> None:
    inputs = _inputs(2, {5: _slice_mask(_plane(2))})
    inferer = SlicePropagationInferer()
    with pytest.raises(ValueError, match=r"1 channel \(image only\) when `annotation` is given"):
        inferer(inputs, CopyPriorNet(), annotation=inputs[0, 1])
    with pytest.raises(ValueError, match=r"annotation\[0\] shape \(18, 13, 11\) does not match the image shape"):
        inferer(inputs[:, :1], CopyPriorNet(), annotation=inputs[0, 1, :-1])
    with pytest.raises(ValueError, match="annotation must have shape"):
        inferer(inputs[:, :1], CopyPriorNet(), annotation=inputs[0, 1, 0])
    with pytest.raises(ValueError, match=r"annotation\[3\] is empty"):
        inferer(inputs[:, :1], CopyPriorNet(), annotation={3: np.zeros(SHAPE[:2])})
    with pytest.raises(ValueError, match="slice index 11 is outside the volume"):
        inferer(inputs[:, :1], CopyPriorNet(), annotation={11: np.ones(SHAPE[:2])})
    with pytest.raises(ValueError, match="needs a batch of 1"):
        inferer(torch.cat([inputs, inputs])[:, :1], CopyPriorNet(), annotation={3: np.ones(SHAPE[:2])})


def test_bad_network_outputs_and_options() -> None:
    inputs = _inputs(2, {5: _slice_mask(_plane(2))})
    with pytest.raises(ValueError, match=r"2 channels \(background, foreground\) or 1, got 3"):
        SlicePropagationInferer()(inputs, CopyPriorNet(out_channels=3))
    with pytest.raises(ValueError, match=r"the network must return \(B, C, H, W\)"):
        SlicePropagationInferer()(inputs, lambda x: x[:, :, 1:])
    with pytest.raises(ValueError, match="the network must return a tensor"):
        SlicePropagationInferer()(inputs, lambda x: [x])
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        SlicePropagationInferer(axis=3)
    with pytest.raises(ValueError, match="divisible_by must be"):
        SlicePropagationInferer(divisible_by=0)
    with pytest.raises(ValueError, match="pad_mode must be"):
        SlicePropagationInferer(pad_mode="edge")  # type: ignore[arg-type]
