from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from common.refinement.grabcut import GaussianMixture1D, fit_gmm_1d, grabcut, run_grabcut


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _ellipse(noise: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse (intensity 1 + noise) on a noisy background (0 + noise), 64 x 80 pixels."""
    ii, jj = np.mgrid[:64, :80]
    truth = ((ii - 30) / 17) ** 2 + ((jj - 42) / 24) ** 2 < 1
    image = truth + np.random.default_rng(seed).normal(0, noise, truth.shape)
    return image, truth


def _ellipsoid(noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    i, j, k = np.mgrid[:32, :30, :28]
    truth = ((i - 15) / 9) ** 2 + ((j - 14) / 7) ** 2 + ((k - 13) / 8) ** 2 < 1
    image = 100.0 + 50.0 * truth + np.random.default_rng(seed).normal(0, 50.0 * noise, truth.shape)
    return image, truth


LOOSE_2D = ((6, 8), (54, 76))  # truth spans rows 14..46, columns 19..65
LOOSE_3D = ((3, 4, 2), (29, 26, 25))  # truth spans 7..23, 8..20, 6..20


def test_2d_ellipse_from_a_loose_box() -> None:
    image, truth = _ellipse()
    out = grabcut(image, LOOSE_2D)
    assert out.dtype == np.bool_
    assert out.shape == image.shape
    assert _dice(out, truth) > 0.9
    inside = np.zeros_like(out)
    inside[6:54, 8:76] = True
    assert not (out & ~inside).any()


def test_3d_ellipsoid_from_a_loose_box_with_anisotropic_spacing() -> None:
    image, truth = _ellipsoid()
    result = run_grabcut(image, LOOSE_3D, spacing=(1.0, 1.0, 2.0))
    assert _dice(result.mask, truth) > 0.9
    assert result.region == (slice(0, 32), slice(0, 30), slice(0, 28))  # box + 10-voxel band, clipped


def test_deterministic_energies_non_increasing_and_component_counts() -> None:
    image, _ = _ellipse(seed=1)
    a = run_grabcut(image, LOOSE_2D, n_fg_components=2, n_bg_components=4, iterations=6)
    b = run_grabcut(image, LOOSE_2D, n_fg_components=2, n_bg_components=4, iterations=6)
    assert np.array_equal(a.mask, b.mask)
    assert a.energies == b.energies
    assert (a.fg_model.n_components, a.bg_model.n_components) == (2, 4)
    assert a.fg_model.means.shape == (2,)
    assert a.fg_model.weights.sum() == pytest.approx(1.0)
    assert 2 <= len(a.energies) <= 6  # at least two iterations: the monotonicity check compares something
    assert all(e2 <= e1 + 1e-6 * abs(e1) for e1, e2 in itertools.pairwise(a.energies))
    c = run_grabcut(image, LOOSE_2D)
    assert (c.fg_model.n_components, c.bg_model.n_components) == (3, 5)  # BIFSeg's 3 and 5
    one = run_grabcut(image, LOOSE_2D, n_fg_components=1, n_bg_components=1)
    assert (one.fg_model.n_components, one.bg_model.n_components) == (1, 1)


def test_seeds_are_hard_constraints() -> None:
    image, truth = _ellipse()
    # a user's scribbles: foreground on the object, background in a corner of the box
    fg = np.zeros(image.shape, bool)
    fg[28:33, 40] = True
    bg = np.zeros(image.shape, bool)
    bg[7:12, 9:14] = True
    out = grabcut(image, LOOSE_2D, fg_seeds=fg, bg_seeds=bg)
    assert out[fg].all()
    assert not out[bg].any()
    assert _dice(out, truth) > 0.9
    # seeds that contradict the image hold too (whatever they do to the models)
    fg = np.zeros(image.shape, bool)
    fg[10, 20] = True  # a background pixel inside the box
    bg = np.zeros(image.shape, bool)
    bg[30, 40:45] = True  # object pixels
    for fg_seeds, bg_seeds in ((fg, None), (None, bg), (fg, bg)):
        out = grabcut(image, LOOSE_2D, fg_seeds=fg_seeds, bg_seeds=bg_seeds)
        assert fg_seeds is None or out[10, 20]
        assert bg_seeds is None or not out[30, 40:45].any()
    outside = np.zeros(image.shape, bool)
    outside[0, 0] = True
    with pytest.raises(ValueError, match="outside the box"):
        grabcut(image, LOOSE_2D, fg_seeds=outside)
    with pytest.raises(ValueError, match="both a foreground and a background seed"):
        grabcut(image, LOOSE_2D, fg_seeds=fg, bg_seeds=fg)
    with pytest.raises(ValueError, match="bool mask"):
        grabcut(image, LOOSE_2D, fg_seeds=fg.astype(int))


def test_intensity_scale_does_not_matter() -> None:
    image, _ = _ellipse()
    assert np.array_equal(grabcut(image, LOOSE_2D), grabcut(1000.0 * image - 7.0, LOOSE_2D))


def test_whole_image_box_needs_background_seeds() -> None:
    image, truth = _ellipse()
    whole = ((0, 0), image.shape)
    with pytest.raises(ValueError, match="no background"):
        grabcut(image, whole)
    with pytest.raises(ValueError, match="no background"):
        grabcut(image, LOOSE_2D, margin=0)
    bg = np.zeros(image.shape, bool)
    bg[:3] = True
    bg[-3:] = True
    assert _dice(grabcut(image, whole, bg_seeds=bg), truth) > 0.9


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (((0, 0), (65, 10)), "leaves the image"),
        (((-1, 0), (10, 10)), "leaves the image"),
        (((5, 5), (5, 10)), "empty"),
        (((9, 5), (5, 10)), "empty"),
        (((0, 0, 0), (5, 5, 5)), "2 entries"),
        (((0,), (5,)), "2 entries"),
        (((0.0, 0), (5, 5)), "ints"),
        (((True, 0), (5, 5)), "ints"),
        ((0, 5), r"\(start, stop\)"),
        (((0, 0), (5, 5), (6, 6)), r"\(start, stop\)"),
    ],
)
def test_bad_boxes(box: Any, message: str) -> None:
    image, _ = _ellipse()
    with pytest.raises(ValueError, match=message):
        grabcut(image, box)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_fg_components": 0}, "n_fg_components"),
        ({"n_bg_components": 2.5}, "n_bg_components"),
        ({"iterations": 0}, "iterations"),
        ({"gamma": -1.0}, "gamma"),
        ({"margin": -2}, "margin"),
        ({"connectivity": "edges"}, "connectivity"),
        ({"spacing": (1.0, -1.0)}, "spacing"),
    ],
)
def test_bad_arguments(change: dict[str, Any], message: str) -> None:
    image, _ = _ellipse()
    with pytest.raises(ValueError, match=message):
        grabcut(image, LOOSE_2D, **change)


def test_bad_images() -> None:
    with pytest.raises(ValueError, match="2D"):
        grabcut(np.zeros(10), ((0,), (5,)))
    bad = np.zeros((8, 8))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        grabcut(bad, ((2, 2), (5, 5)))


def test_fit_gmm_1d_recovers_a_mixture_and_keeps_its_component_count() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2.0, 0.5, 3000), rng.normal(3.0, 1.0, 1000)])
    gmm = fit_gmm_1d(x, 2)
    order = np.argsort(gmm.means)
    assert gmm.means[order] == pytest.approx([-2.0, 3.0], abs=0.1)
    assert np.sqrt(gmm.variances[order]) == pytest.approx([0.5, 1.0], abs=0.1)
    assert gmm.weights[order] == pytest.approx([0.75, 0.25], abs=0.03)
    assert np.array_equal(fit_gmm_1d(x, 2).means, gmm.means)  # deterministic
    # more components than distinct values: still exactly K, finite, weights sum to 1
    few = fit_gmm_1d(np.array([1.0, 1.0, 2.0]), 5)
    assert few.n_components == 5
    assert np.isfinite(few.variances).all()
    assert few.weights.sum() == pytest.approx(1.0)
    assert np.isfinite(few.log_density(np.array([0.0, 1.0, 50.0]))).all()
    # warm start from a fit: the likelihood does not drop
    warm = fit_gmm_1d(x, 2, init=gmm)
    assert warm.log_density(x).mean() >= gmm.log_density(x).mean() - 1e-9
    with pytest.raises(ValueError, match="components"):
        fit_gmm_1d(x, 3, init=gmm)
    with pytest.raises(ValueError, match="n_components"):
        fit_gmm_1d(x, 0)
    with pytest.raises(ValueError, match="no samples"):
        fit_gmm_1d(np.zeros(0), 2)
    with pytest.raises(ValueError, match="NaN"):
        fit_gmm_1d(np.array([1.0, np.nan]), 1)
    single = GaussianMixture1D(np.array([1.0]), np.array([0.0]), np.array([1.0]))
    assert single.log_density(np.array([0.0]))[0] == pytest.approx(-0.5 * np.log(2 * np.pi))
