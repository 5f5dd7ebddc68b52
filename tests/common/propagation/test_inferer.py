from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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


@pytest.mark.parametrize("out_channels", [2, 1])
def test_mask_thresholds_the_probability_not_the_logits(out_channels: int) -> None:
    """Foreground is ``probability > threshold`` exactly. A foreground logit 1e-8 above the background one gives a
    softmax (or sigmoid) of exactly 0.5 in float32, so the pixel is background although ``logit1 > logit0``: a
    logit-comparison shortcut for the mask would not be equivalent, and the engine must not take it."""

    def barely(x: torch.Tensor) -> torch.Tensor:
        fg = torch.where(x[:, 1:] > 0.5, 1e-8, -5.0)  # barely positive inside the prior
        return torch.cat((torch.zeros_like(fg), fg), dim=1) if out_channels == 2 else fg

    user = _slice_mask(_plane(2))
    inputs = _inputs(2, {5: user})
    prob = SlicePropagationInferer(return_probabilities=True, max_empty_slices=None)(inputs, barely)
    assert torch.equal(_plain(prob[0, 0, ..., 4])[user], torch.full((int(user.sum()),), 0.5))
    mask = SlicePropagationInferer(max_empty_slices=None)(inputs, barely)
    assert torch.equal(_plain(mask[0, 0, ..., 5]), user.float())
    assert not mask[0, 0, ..., [4, 6]].any()  # 0.5 is not > 0.5: both neighbours of the user slice are empty


def test_image_and_annotation_are_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inferer checks its inputs itself; the engine does not repeat the whole-volume checks."""
    import common.propagation.engine as engine_module
    import common.propagation.inferer as inferer_module

    counts = {"inferer": 0, "engine": 0}

    def counting(where: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[where] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(inferer_module, "validate_image", counting("inferer", inferer_module.validate_image))
    monkeypatch.setattr(engine_module, "validate_image", counting("engine", engine_module.validate_image))
    monkeypatch.setattr(
        engine_module, "validate_slice_annotation", counting("engine", engine_module.validate_slice_annotation)
    )
    plane = _plane(2)
    inputs = torch.cat([_inputs(2, {3: _slice_mask(plane)}), _inputs(2, {7: _slice_mask(plane, offset=1)})])
    out = SlicePropagationInferer()(inputs, CopyPriorNet())
    assert out.shape == (2, 1, *SHAPE)
    assert counts == {"inferer": 2, "engine": 0}


@pytest.mark.parametrize("pad_mode", ["constant", "reflect", "replicate"])
def test_padding_of_image_and_prior_channels(pad_mode: str) -> None:
    """The image channel is padded with ``pad_mode``, the prior channel always with zeros."""
    plane = _plane(2)
    inputs = _inputs(2, {5: _slice_mask(plane)}).as_tensor()
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return CopyPriorNet()(x)

    SlicePropagationInferer(divisible_by=16, pad_mode=pad_mode)(inputs, spy)  # type: ignore[arg-type]
    (top, left), (h, w) = (((16 - n % 16) % 16) // 2 for n in plane), plane
    for x in seen:
        assert x.shape[2:] == (16 * math.ceil(h / 16), 16 * math.ceil(w / 16))
        image, prior = x[:, :1, top : top + h, left : left + w], x[:, 1:, top : top + h, left : left + w]
        pad = (left, x.shape[3] - w - left, top, x.shape[2] - h - top)
        padded = F.pad(image, pad) if pad_mode == "constant" else F.pad(image, pad, mode=pad_mode)
        assert torch.equal(x[:, :1], padded)
        assert torch.equal(x[:, 1:], F.pad(prior, pad))
        assert set(torch.unique(prior).tolist()) <= {0.0, 1.0}


def test_batch_fronts_default_is_sequential_on_cpu() -> None:
    """``batch_fronts=None`` picks one slice per network call on the CPU (measured faster there)."""
    image = torch.zeros(1, 2, 16, 16, 12)
    image[0, 1, 4:12, 4:12, 3] = 1
    image[0, 1, 4:12, 4:12, 8] = 1
    calls: list[int] = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.stack([torch.zeros_like(x[:, 1]), x[:, 1] * 10 - 5], dim=1)

    auto = SlicePropagationInferer(divisible_by=1, max_empty_slices=None)
    auto(image, net)
    assert set(calls) == {1}
    calls.clear()
    SlicePropagationInferer(divisible_by=1, max_empty_slices=None, batch_fronts=True)(image, net)
    assert max(calls) > 1


class IslandNet(CopyPriorNet):
    """Copies the prior and adds a 1-pixel island in the last row's first pixel of every slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x).clone()
        out[:, 1, -1, 0] = GAIN
        return out


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_islands_are_removed_by_default_and_kept_without_the_filter(axis: int) -> None:
    plane = _plane(axis)
    user = _slice_mask(plane)  # rows 1 .. h-4: the island (row h-1, column 0) is 4 pixels away
    k = SHAPE[axis] // 2
    inputs = _inputs(axis, {k: user})
    inferer = SlicePropagationInferer(axis=axis, divisible_by=1)
    out = inferer(inputs, IslandNet())
    for i in range(SHAPE[axis]):
        assert torch.equal(_plain(out[0, 0][_index(axis, i)]), user.float()), i
    assert {f.stop for f in inferer.last_results[0].fronts} <= {"edge"}
    with_island = user.clone()
    with_island[-1, 0] = True
    for tolerance in (None, 4):
        out = SlicePropagationInferer(axis=axis, divisible_by=1, connect_tolerance=tolerance)(inputs, IslandNet())
        for i in range(SHAPE[axis]):
            assert torch.equal(_plain(out[0, 0][_index(axis, i)]), (user if i == k else with_island).float()), i


def test_area_ratio_stop_is_recorded_and_the_slice_dropped() -> None:
    """A network that doubles the mask's height each slice stops at once with ``max_area_ratio=1.5``."""

    def growing(x: torch.Tensor) -> torch.Tensor:
        prior = x[:, 1]
        grown = prior.clone()
        grown[:, : prior.shape[1] // 2] = torch.maximum(grown[:, : prior.shape[1] // 2], prior[:, 1:].amax(1, True))
        fg = grown * 20 - 10
        return torch.stack((torch.zeros_like(fg), fg), dim=1)

    user = torch.zeros(_plane(2), dtype=torch.bool)
    user[2:4, 3:6] = True
    inputs = _inputs(2, {5: user})
    inferer = SlicePropagationInferer(divisible_by=1, max_area_ratio=1.5)
    out = inferer(inputs, growing)
    fronts = inferer.last_results[0].fronts
    assert {(f.direction, f.n_predicted, f.n_dropped, f.stop) for f in fronts} == {
        (-1, 0, 1, "area_explosion"),
        (1, 0, 1, "area_explosion"),
    }
    assert torch.equal(_plain(out[0, 0, ..., 5]), user.float())
    assert not out[0, 0, ..., [k for k in range(SHAPE[2]) if k != 5]].any()
    legacy = SlicePropagationInferer(divisible_by=1, max_area_ratio=None)(inputs, growing)
    assert legacy[0, 0, ..., 4].sum() > 2 * user.sum()


def test_defaults_and_legacy_settings() -> None:
    from common.propagation.engine import DEFAULT_CONNECT_TOLERANCE, DEFAULT_MAX_AREA_RATIO, DEFAULT_MIN_AREA_RATIO

    inferer = SlicePropagationInferer()
    assert inferer.connect_tolerance == DEFAULT_CONNECT_TOLERANCE
    assert inferer.min_area_ratio == DEFAULT_MIN_AREA_RATIO
    assert inferer.max_area_ratio == DEFAULT_MAX_AREA_RATIO
    legacy = SlicePropagationInferer(divisible_by=1, connect_tolerance=None, min_area_ratio=None, max_area_ratio=None)
    inputs = _inputs(2, {5: _slice_mask(_plane(2))})
    out = legacy(inputs, IslandNet())
    assert out[0, 0, -1, 0, 4:7].tolist() == [1.0, 0.0, 1.0]  # islands kept next to the user slice
    with pytest.raises(TypeError):
        SlicePropagationInferer(2, 2, "nearest", 0.5, 16, True, False, None, None, "constant", 3)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connect_tolerance": -1}, "connect_tolerance must be an integer >= 0"),
        ({"connect_tolerance": 2.0}, "connect_tolerance must be an integer >= 0"),
        ({"min_area_ratio": 1.5}, r"min_area_ratio must be a number in \(0, 1\)"),
        ({"max_area_ratio": 0.5}, "max_area_ratio must be a finite number > 1"),
        ({"threshold": 1.5}, "threshold must be a number in"),
        ({"max_empty_slices": 0}, "max_empty_slices must be an integer >= 1"),
    ],
)
def test_bad_propagation_options_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SlicePropagationInferer(**kwargs)


def test_options_changed_after_construction_are_checked_per_call() -> None:
    inferer = SlicePropagationInferer()
    inferer.max_area_ratio = 1.0
    with pytest.raises(ValueError, match="max_area_ratio must be a finite number > 1"):
        inferer(_inputs(2, {5: _slice_mask(_plane(2))}), CopyPriorNet())
