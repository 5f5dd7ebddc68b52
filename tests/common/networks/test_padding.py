"""Tests of common.networks.padding: pad inputs to U-Net-friendly sizes and crop outputs back."""

from __future__ import annotations

import pytest
import torch

from common.networks import crop_to, pad_amounts, pad_to_divisible


@pytest.mark.parametrize(
    ("size", "divisor", "expected"),
    [(16, 16, (0, 0)), (17, 16, (7, 8)), (20, 16, (6, 6)), (1, 16, (7, 8)), (5, 1, (0, 0)), (31, 2, (0, 1))],
)
def test_pad_amounts(size: int, divisor: int, expected: tuple[int, int]) -> None:
    before, after = pad_amounts(size, divisor)
    assert (before, after) == expected
    assert (size + before + after) % divisor == 0
    assert after - before in (0, 1)  # symmetric, the extra voxel at the end (as MONAI's DivisiblePad)


def test_pad_to_divisible_2d_and_crop_back() -> None:
    x = torch.rand(2, 3, 20, 27)
    padded, crop = pad_to_divisible(x, 16)
    assert padded.shape == (2, 3, 32, 32)
    torch.testing.assert_close(padded[crop], x)
    assert float(padded[:, :, :6].abs().max()) == 0.0  # zero padding before ...
    assert float(padded[:, :, 26:].abs().max()) == 0.0  # ... and after
    torch.testing.assert_close(crop_to(padded, crop), x)
    assert crop_to(padded, crop).is_contiguous()


def test_pad_to_divisible_3d_per_axis_divisors() -> None:
    x = torch.rand(1, 1, 9, 16, 5)
    padded, crop = pad_to_divisible(x, (4, 16, 1))
    assert padded.shape == (1, 1, 12, 16, 5)
    torch.testing.assert_close(padded[crop], x)


def test_no_padding_needed_returns_the_input() -> None:
    x = torch.rand(1, 2, 16, 32)
    padded, crop = pad_to_divisible(x, 16)
    assert padded is x
    torch.testing.assert_close(padded[crop], x)


def test_other_pad_mode() -> None:
    x = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 1, 3, 6).contiguous()
    padded, crop = pad_to_divisible(x, (1, 8), mode="replicate")
    assert padded.shape == (1, 1, 3, 8)
    assert padded[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0]
    torch.testing.assert_close(padded[crop], x)


@pytest.mark.parametrize("divisor", [0, -2, (16,), (16, 16, 16)])
def test_bad_divisor_raises(divisor: int | tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisor must be"):
        pad_to_divisible(torch.rand(1, 1, 8, 8), divisor)
