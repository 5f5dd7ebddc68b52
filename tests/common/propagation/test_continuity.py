from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.propagation.continuity import components_touching, connected_to_prior, dilate

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _masks(*rows: str) -> torch.Tensor:
    """A bool ``(1, H, W)`` mask from rows of ``.`` (background) and ``#`` (foreground)."""
    return torch.tensor([[c == "#" for c in row] for row in rows]).unsqueeze(0)


def _reference(mask: np.ndarray, seed: np.ndarray, connectivity: int) -> np.ndarray:
    """Per sample: the components of ``mask`` (scipy labels, 2D) containing a pixel of ``seed``."""
    out = np.zeros_like(mask)
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    for b in range(mask.shape[0]):
        labels, _ = ndimage.label(mask[b], structure=structure)
        hit = set(np.unique(labels[seed[b] & mask[b]]).tolist()) - {0}
        out[b] = np.isin(labels, list(hit))
    return out


def test_dilate_is_a_square_of_the_radius_and_stops_at_the_border() -> None:
    m = torch.zeros(2, 7, 9, dtype=torch.bool)
    m[0, 3, 4] = True
    m[1, 0, 0] = True
    assert dilate(m, 0) is m
    d = dilate(m, 2)
    expected = torch.zeros_like(m)
    expected[0, 1:6, 2:7] = True
    expected[1, 0:3, 0:3] = True
    assert torch.equal(d, expected)
    assert not m[0, 1, 2]  # input untouched


@pytest.mark.parametrize("radius", [-1, 1.0, True, None])
def test_dilate_rejects_bad_radius(radius: Any) -> None:
    with pytest.raises(ValueError, match="radius must be an integer >= 0"):
        dilate(torch.zeros(1, 3, 3, dtype=torch.bool), radius)


def test_islands_are_removed_and_touching_components_kept_whole() -> None:
    pred = _masks(
        "##......##",
        "##..###...",
        "....####..",
        "....#.....",
        "#.........",
    )
    prior = _masks(
        "..........",
        "..........",
        ".....#....",
        "..........",
        "..........",
    )
    expected = _masks(
        "..........",
        "....###...",
        "....####..",
        "....#.....",
        "..........",
    )
    for method in ("scipy", "flood", "auto"):
        out = connected_to_prior(pred, prior, 0, method=method)
        assert torch.equal(out, expected), method
    assert torch.equal(pred[0, 0, :2], torch.tensor([True, True]))  # input untouched


def test_tolerance_is_the_gap_in_pixels_a_component_may_leave() -> None:
    """A component 2 empty pixels away from the prior (3 columns apart) is kept from tolerance 3 on."""
    prior = _masks("#.......", "#.......", "#.......")
    pred = _masks("...#####", "...#####", "...#####")
    for method in ("scipy", "flood"):
        for tolerance, kept in ((0, False), (1, False), (2, False), (3, True), (5, True)):
            out = connected_to_prior(pred, prior, tolerance, method=method)
            assert torch.equal(out, pred if kept else torch.zeros_like(pred)), (method, tolerance)


def test_diagonal_contact_counts_for_8_connectivity_only() -> None:
    pred = _masks("##..", "##..", "..##", "..##")
    seed = _masks("#...", "....", "....", "....")
    upper = _masks("##..", "##..", "....", "....")
    for method in ("scipy", "flood"):
        assert torch.equal(components_touching(pred, seed, 8, method), pred)
        assert torch.equal(components_touching(pred, seed, 4, method), upper)


def test_components_never_connect_across_the_batch() -> None:
    pred = torch.ones(3, 6, 6, dtype=torch.bool)
    seed = torch.zeros_like(pred)
    seed[1, 2, 2] = True
    for method in ("scipy", "flood"):
        out = components_touching(pred, seed, method=method)
        assert out[1].all()
        assert not out[0].any()
        assert not out[2].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.3, 0.45, 0.6])
def test_scipy_and_flood_fill_are_identical_on_random_masks(device: str, connectivity: int, density: float) -> None:
    """Random masks around the percolation threshold: many components of every shape, some large and winding."""
    generator = np.random.default_rng(int(density * 100) + connectivity)
    mask = generator.random((6, 40, 33)) < density
    seed = generator.random((6, 40, 33)) < 0.01
    seed[5] = False  # a sample without seeds: empty result
    expected = _reference(mask, seed, connectivity)
    m, s = torch.from_numpy(mask).to(device), torch.from_numpy(seed).to(device)
    flood = components_touching(m, s, connectivity, "flood")  # type: ignore[arg-type]
    scipy_out = components_touching(m, s, connectivity, "scipy")  # type: ignore[arg-type]
    assert flood.device.type == scipy_out.device.type == device
    np.testing.assert_array_equal(flood.cpu().numpy(), expected)
    np.testing.assert_array_equal(scipy_out.cpu().numpy(), expected)
    assert expected.any()
    assert (mask & ~expected).any()  # something was removed, something kept: a real test


@pytest.mark.parametrize("device", DEVICES)
def test_flood_fill_follows_a_long_winding_component(device: str) -> None:
    """A serpentine path of several hundred pixels seeded at one end: many convergence rounds of the flood fill."""
    h, w = 31, 30
    snake = np.zeros((1, h, w), dtype=bool)
    snake[0, ::2, :] = True  # rows 0, 2, ..., 30
    for r in range(1, h, 2):  # connect them alternately at the right and the left end
        snake[0, r, w - 1 if (r // 2) % 2 == 0 else 0] = True
    seed = np.zeros_like(snake)
    seed[0, 0, 0] = True
    cut = snake.copy()
    cut[0, 29, :] = False  # a cut before the last row: the last row is its own component
    m, s = torch.from_numpy(snake).to(device), torch.from_numpy(seed).to(device)
    assert torch.equal(components_touching(m, s, method="flood").cpu(), torch.from_numpy(snake))
    out = components_touching(torch.from_numpy(cut).to(device), s, method="flood").cpu().numpy()
    np.testing.assert_array_equal(out, _reference(cut, seed, 8))
    assert not out[0, 30].any()
    assert out[0, 28].all()


def test_auto_uses_scipy_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import common.propagation.continuity as continuity

    used: list[str] = []

    def spy(name: str) -> Any:
        def implementation(mask: torch.Tensor, seed: torch.Tensor, connectivity: int) -> torch.Tensor:
            used.append(name)
            return seed

        return implementation

    monkeypatch.setattr(continuity, "_flood", spy("flood"))
    monkeypatch.setattr(continuity, "_scipy_components", spy("scipy"))
    m = torch.ones(1, 3, 3, dtype=torch.bool)
    components_touching(m, m)
    components_touching(m, m, method="flood")
    assert used == ["scipy", "flood"]


def test_empty_inputs() -> None:
    empty = torch.zeros(0, 4, 4, dtype=torch.bool)
    assert components_touching(empty, empty).shape == (0, 4, 4)
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    for method in ("scipy", "flood"):
        assert not connected_to_prior(m, torch.ones_like(m), 1, method=method).any()
        full = torch.ones_like(m)
        assert not connected_to_prior(full, m, 3, method=method).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": torch.zeros(1, 3, 3)}, r"mask must be a bool \(B, H, W\) tensor"),
        ({"mask": torch.zeros(3, 3, dtype=torch.bool)}, r"mask must be a bool \(B, H, W\)"),
        ({"seed": torch.zeros(1, 3, 4, dtype=torch.bool)}, r"seed \(1, 3, 4\) on cpu must match mask"),
        ({"connectivity": 6}, "connectivity must be 4 or 8"),
        ({"method": "skimage"}, "method must be 'auto', 'scipy' or 'flood'"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "mask": torch.zeros(1, 3, 3, dtype=torch.bool),
        "seed": torch.zeros(1, 3, 3, dtype=torch.bool),
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        components_touching(**args)
