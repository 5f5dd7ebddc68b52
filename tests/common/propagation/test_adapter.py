"""Tests of :class:`common.propagation.PropagationAdapter` with tiny deterministic 1x1-conv networks.

``copy_net`` copies the prior mask to the slice it predicts, so a propagation carries the user's mask unchanged
to every slice it reaches. ``bright_net`` keeps the prior only where the pre-processed image is bright, so its
output depends on the HU clipping and scaling the adapter applies.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from common.interaction import InteractionState, SliceCorrectionRobot
from common.propagation import PropagationAdapter, SlicePropagationInferer

H, W, D = 16, 14, 12
CASE = SimpleNamespace(case_id="phantom_003")


def _net(image_weight: float, prior_weight: float, bias: float) -> torch.nn.Module:
    """``(B, 2, H, W) -> (B, 2, H, W)``: background logit 0, foreground logit ``a * image + b * prior + c``."""
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, kernel_size=1), torch.nn.Dropout(p=0.9))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[1, 0, 0, 0] = image_weight
        net[0].weight[1, 1, 0, 0] = prior_weight
        net[0].bias[1] = bias
    return net.train()  # the adapter must switch it to eval (dropout would scramble the output)


def copy_net() -> torch.nn.Module:
    return _net(0.0, 20.0, -10.0)


def bright_net() -> torch.nn.Module:
    """Foreground iff prior and image > 1.25: ``10 * image + 20 * prior - 25 > 0`` with |image| <= 2.048."""
    return _net(10.0, 20.0, -25.0)


def _inferer(axis: int = 2, merge: str = "nearest", max_empty_slices: int | None = 2) -> SlicePropagationInferer:
    return SlicePropagationInferer(axis=axis, merge=merge, max_empty_slices=max_empty_slices, divisible_by=1)


def _state(slices: dict[int, np.ndarray], axis: int = 2) -> InteractionState:
    """A state holding ``slices`` in the given order (the order of corrections)."""
    return InteractionState(slices=dict(slices), axis=axis)


def _box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[rows, cols] = 1
    return m


def test_copy_net_propagates_the_user_mask_to_every_slice() -> None:
    mask = _box((H, W), slice(3, 9), slice(2, 7))
    mask[4, 4] = 0  # a hole: copied as is
    state = InteractionState(slices={5: mask}, axis=2)
    image = np.random.default_rng(0).normal(0, 500, (H, W, D)).astype(np.float32)
    out = PropagationAdapter(copy_net(), _inferer())(image, state, CASE)
    assert out.dtype == np.bool_
    assert out.shape == (H, W, D)
    np.testing.assert_array_equal(out, np.repeat(mask[..., None].astype(bool), D, axis=2))


def test_hu_clipping_and_scaling_are_applied_and_user_slices_stay_exact() -> None:
    image = np.full((H, W, D), 3000.0, dtype=np.float32)  # clipped to 1024 -> 2.048: bright
    image[4:6] = -3000.0  # a dark stripe on every slice
    mask = _box((H, W), slice(4, 12), slice(4, 12))  # the user's mask covers part of the stripe
    image_before = image.copy()
    out = PropagationAdapter(bright_net(), _inferer())(image, _state({5: mask}), CASE)
    expected = np.repeat(_box((H, W), slice(6, 12), slice(4, 12))[..., None], D, axis=2).astype(bool)
    expected[..., 5] = mask.astype(bool)  # the user's slice is exact, although the network would cut the stripe
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(image, image_before)  # the caller's image is not modified


def test_without_clipping_the_network_would_see_other_inputs() -> None:
    """Guards the test above: unclipped HU / 500 makes the bright background foreground everywhere."""
    image = np.full((H, W, D), 3000.0, dtype=np.float32)
    mask = _box((H, W), slice(4, 12), slice(4, 12))
    out = PropagationAdapter(bright_net(), _inferer(), hu_clip=1e9)(image, _state({5: mask}), CASE)
    assert out[..., 6].all()


@pytest.mark.parametrize(("hu_clip", "hu_scale"), [(1024.0, 500.0), (200.0, 100.0)])
def test_network_receives_clipped_and_scaled_image_slices(hu_clip: float, hu_scale: float) -> None:
    image = np.random.default_rng(1).uniform(-3000, 3000, (H, W, D)).astype(np.float32)
    expected = np.clip(image, -hu_clip, hu_clip) / hu_scale
    net = copy_net()
    seen: list[torch.Tensor] = []
    net.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    mask = _box((H, W), slice(2, 8), slice(3, 9))
    adapter = PropagationAdapter(net, _inferer(), hu_clip=hu_clip, hu_scale=hu_scale)
    adapter(image, _state({3: mask}), CASE)
    samples = torch.cat(seen).numpy()
    assert samples.shape[1:] == (2, H, W)
    matched = []
    for x in samples:
        hits = [k for k in range(D) if np.allclose(x[0], expected[..., k], rtol=0, atol=1e-6)]
        assert len(hits) == 1
        matched.append(hits[0])
        assert set(np.unique(x[1])) <= {0.0, 1.0}
    assert sorted(matched) == [k for k in range(D) if k != 3]
    assert np.abs(samples[:, 0]).max() <= hu_clip / hu_scale + 1e-6


def test_network_is_switched_to_eval_mode() -> None:
    net = copy_net()
    adapter = PropagationAdapter(net, _inferer(), device="cpu")
    assert adapter.network is net
    assert not net.training
    assert adapter.device == torch.device("cpu")


def test_empty_state_raises_naming_the_case() -> None:
    adapter = PropagationAdapter(copy_net(), _inferer(), name="prop")
    with pytest.raises(ValueError, match=r"prop: case phantom_003 has no annotated slice"):
        adapter(np.zeros((H, W, D), dtype=np.float32), InteractionState(), CASE)


def test_axis_mismatch_raises() -> None:
    adapter = PropagationAdapter(copy_net(), _inferer(axis=2))
    state = InteractionState(slices={3: np.ones((W, D), dtype=np.uint8)}, axis=0)
    with pytest.raises(ValueError, match="along axis 0, the inferer propagates along axis 2"):
        adapter(np.zeros((H, W, D), dtype=np.float32), state, CASE)


@pytest.mark.parametrize("axis", [0, 1])
def test_other_propagation_axes(axis: int) -> None:
    plane_shape = tuple(s for i, s in enumerate((H, W, D)) if i != axis)
    mask = _box(plane_shape, slice(1, 6), slice(2, 9))  # type: ignore[arg-type]
    k = 4
    state = InteractionState(slices={k: mask}, axis=axis)
    out = PropagationAdapter(copy_net(), _inferer(axis=axis))(np.zeros((H, W, D), np.float32), state, CASE)
    assert out.shape == (H, W, D)
    for j in range(out.shape[axis]):
        np.testing.assert_array_equal(np.take(out, j, axis=axis), mask.astype(bool))


def test_overwrite_merge_honours_the_order_of_the_user_slices() -> None:
    a, b = 4, 10
    mask_a = _box((H, W), slice(1, 5), slice(1, 5))
    mask_b = _box((H, W), slice(8, 14), slice(6, 12))
    adapter = PropagationAdapter(copy_net(), _inferer(merge="overwrite"))
    image = np.zeros((H, W, D), dtype=np.float32)
    a_first = adapter(image, _state({a: mask_a, b: mask_b}), CASE)
    b_first = adapter(image, _state({b: mask_b, a: mask_a}), CASE)
    for k in range(D):
        if k <= a:
            expected_a_first = expected_b_first = mask_a
        elif k >= b:
            expected_a_first = expected_b_first = mask_b
        else:  # the gap: the slice given later wins
            expected_a_first, expected_b_first = mask_b, mask_a
        np.testing.assert_array_equal(a_first[..., k], expected_a_first.astype(bool), err_msg=f"slice {k}")
        np.testing.assert_array_equal(b_first[..., k], expected_b_first.astype(bool), err_msg=f"slice {k}")


def test_robot_and_adapter_rounds() -> None:
    """The slice robot's states feed the adapter: the prediction always holds the robot's slices exactly."""
    label = np.zeros((H, W, D), dtype=np.uint8)
    for k in range(2, 11):
        label[2 + k % 3 : 10, 3 : 6 + k % 4, k] = 1
    robot = SliceCorrectionRobot(step_fraction=0.3)
    robot.reset(label.astype(np.float32), label, (1.0, 1.0, 2.0))
    adapter = PropagationAdapter(copy_net(), _inferer(merge="overwrite"))
    state, prediction = InteractionState(), np.zeros_like(label)
    for _ in range(3):
        new = robot.next_interaction(label, prediction, state)
        assert new is not None
        state = new
        prediction = adapter(np.zeros(label.shape, np.float32), state, CASE).astype(np.uint8)
        for k in state.slices:
            np.testing.assert_array_equal(prediction[..., k], label[..., k])
    assert state.n_interactions == 3


def test_instantiable_from_bundle_config() -> None:
    parser = ConfigParser(
        {
            "network": {"_target_": "torch.nn.Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 1},
            "inferer": {"_target_": "common.propagation.SlicePropagationInferer", "axis": 2},
            "adapter": {
                "_target_": "common.propagation.PropagationAdapter",
                "network": "@network",
                "inferer": "@inferer",
                "device": "cpu",
                "hu_clip": 1000.0,
                "hu_scale": 250.0,
                "name": "slice_propagation_nearest",
            },
        }
    )
    adapter = parser.get_parsed_content("adapter")
    assert isinstance(adapter, PropagationAdapter)
    assert (adapter.hu_clip, adapter.hu_scale, adapter.name) == (1000.0, 250.0, "slice_propagation_nearest")
