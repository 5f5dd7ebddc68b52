"""Tests of common.transforms.guidance: click maps and Gaussian guidance channels (DeepGrow)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd

from common.transforms import (
    AddGuidanced,
    ClickMapsd,
    click_map_from_points,
    render_guidance,
    render_slice_guidance,
    validate_points,
)

TYPES: list[Callable[[Any], Any]] = [np.asarray, torch.as_tensor, MetaTensor]
SIGMA = 2.0
#: Kernel radius of MONAI's GaussianFilter for sigma 2, truncated at 4 sigma.
RADIUS = 8


def _maps(shape: tuple[int, ...], fg: Sequence[tuple[int, ...]], bg: Sequence[tuple[int, ...]] = ()) -> torch.Tensor:
    m = torch.zeros((1, 2, *shape))
    for p in fg:
        m[(0, 0, *p)] = 1
    for p in bg:
        m[(0, 1, *p)] = 1
    return m


def _gauss(r2: float, sigma: float = SIGMA) -> float:
    return math.exp(-r2 / (2 * sigma**2))


# --- render_guidance ------------------------------------------------------------------------------------------------


def test_peak_and_gaussian_profile_2d() -> None:
    g = render_guidance(_maps((41, 41), [(20, 20)]), SIGMA)
    assert g.dtype == torch.float32
    assert g.shape == (1, 2, 41, 41)
    assert float(g[0, 0, 20, 20]) == pytest.approx(1.0)
    assert int(g[0, 0].argmax()) == 20 * 41 + 20
    for dy, dx in [(0, 1), (1, 0), (0, 2), (2, 2), (3, 0), (0, -4), (-3, 4), (5, 0)]:
        expected = _gauss(dy * dy + dx * dx)
        assert float(g[0, 0, 20 + dy, 20 + dx]) == pytest.approx(expected, abs=0.01), (dy, dx)
    # symmetric around the click
    torch.testing.assert_close(g[0, 0], torch.flip(g[0, 0], dims=(0, 1)))
    # zero beyond the truncated kernel, and the background channel holds no click at all
    assert float(g[0, 0, 20, 20 + RADIUS + 1]) == 0.0
    assert float(g[0, 0, 0, 0]) == 0.0
    assert float(g[0, 1].abs().max()) == 0.0


def test_peak_and_gaussian_profile_3d() -> None:
    g = render_guidance(_maps((25, 25, 25), [], [(12, 12, 12)]), SIGMA)
    assert float(g[0, 0].abs().max()) == 0.0  # no foreground click
    bg = g[0, 1]
    assert float(bg[12, 12, 12]) == pytest.approx(1.0)
    for d in [(1, 0, 0), (0, 2, 0), (0, 0, 3), (1, 1, 1), (2, -2, 1)]:
        r2 = sum(v * v for v in d)
        assert float(bg[12 + d[0], 12 + d[1], 12 + d[2]]) == pytest.approx(_gauss(r2), abs=0.01), d
    assert float(bg[0, 0, 0]) == 0.0
    assert float(bg[12, 12, 12 + RADIUS + 1]) == 0.0


def test_foreground_and_background_go_to_their_own_channels() -> None:
    g = render_guidance(_maps((40, 40), [(5, 5)], [(34, 30)]), SIGMA)
    assert float(g[0, 0, 5, 5]) == pytest.approx(1.0)
    assert float(g[0, 1, 34, 30]) == pytest.approx(1.0)
    assert float(g[0, 0, 34, 30]) == 0.0  # far apart: no cross talk
    assert float(g[0, 1, 5, 5]) == 0.0


def test_several_clicks_each_peak_at_one_and_range_is_unit_interval() -> None:
    clicks = [(6, 6), (6, 30), (30, 18)]
    g = render_guidance(_maps((40, 40), clicks), SIGMA)
    for p in clicks:
        assert float(g[(0, 0, *p)]) == pytest.approx(1.0)
    assert float(g.min()) >= 0.0
    assert float(g.max()) == pytest.approx(1.0)


def test_close_clicks_are_normalised_to_one() -> None:
    """Overlapping Gaussians sum above one click's peak; the channel is still scaled to max 1."""
    g = render_guidance(_maps((30, 30), [(15, 14), (15, 16)]), SIGMA)
    assert float(g.max()) == pytest.approx(1.0)
    assert float(g.min()) >= 0.0
    assert float(g[0, 0, 15, 15]) == pytest.approx(1.0)  # the midpoint is the summed maximum
    assert float(g[0, 0, 15, 14]) < 1.0


def test_batch_samples_are_normalised_independently() -> None:
    maps = torch.cat([_maps((20, 20), [(10, 10)]), 5 * _maps((20, 20), [(3, 3), (15, 15)])])
    g = render_guidance(maps, SIGMA)
    assert float(g[0, 0, 10, 10]) == pytest.approx(1.0)
    assert float(g[1, 0, 3, 3]) == pytest.approx(1.0)
    assert float(g[1, 0, 15, 15]) == pytest.approx(1.0)


def test_bool_maps_and_anisotropic_sigma() -> None:
    maps = _maps((41, 41), [(20, 20)]).bool()
    g = render_guidance(maps, (1.0, 3.0))
    assert float(g[0, 0, 22, 20]) == pytest.approx(_gauss(4, 1.0), abs=0.03)  # erf kernel, small sigma
    assert float(g[0, 0, 20, 22]) == pytest.approx(_gauss(4, 3.0), abs=0.02)
    assert float(g[0, 0, 22, 20]) < float(g[0, 0, 20, 22])


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), (1.0, 2.0, 3.0)])
def test_bad_sigma_raises(sigma: Any) -> None:
    with pytest.raises(ValueError, match="sigma"):
        render_guidance(_maps((10, 10), [(2, 2)]), sigma)


def test_bad_rank_raises() -> None:
    with pytest.raises(ValueError, match="click_maps"):
        render_guidance(torch.zeros(2, 10, 10))


# --- render_slice_guidance ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_guidance_does_not_bleed_across_slices(axis: int) -> None:
    shape = [24, 24, 24]
    shape[axis] = 7
    click = [12, 12, 12]
    click[axis] = 3
    maps = _maps(tuple(shape), [tuple(click)])
    g = render_slice_guidance(maps, axis, SIGMA)
    assert g.shape == maps.shape
    per_slice = torch.movedim(g[0, 0], axis, 0)
    assert float(per_slice[3].max()) == pytest.approx(1.0)
    others = [k for k in range(7) if k != 3]
    assert float(per_slice[others].abs().max()) == 0.0
    # the clicked slice is exactly the 2D guidance of that slice
    plane = torch.movedim(maps[0], axis + 1, 1)[:, 3][None]
    torch.testing.assert_close(per_slice[3], render_guidance(plane, SIGMA)[0, 0])
    # 3D guidance of the same map does reach the neighbouring slices
    volume = torch.movedim(render_guidance(maps, SIGMA)[0, 0], axis, 0)
    assert float(volume[2].max()) > 0.5


def test_slice_guidance_normalises_each_slice() -> None:
    maps = _maps((20, 20, 5), [(5, 5, 1), (5, 6, 1), (14, 14, 3)])
    g = render_slice_guidance(maps, 2, SIGMA)
    assert float(g[0, 0, ..., 1].max()) == pytest.approx(1.0)
    assert float(g[0, 0, 14, 14, 3]) == pytest.approx(1.0)


def test_slice_guidance_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W, D\)"):
        render_slice_guidance(torch.zeros(1, 2, 8, 8), 2)
    with pytest.raises(ValueError, match="axis"):
        render_slice_guidance(torch.zeros(1, 2, 8, 8, 4), 3)


# --- validate_points / click_map_from_points ------------------------------------------------------------------------


def test_validate_points_accepts_lists_arrays_tensors_and_whole_floats() -> None:
    expected = np.array([[1, 2, 3], [0, 0, 0]], dtype=np.int64)
    for points in ([[1, 2, 3], [0, 0, 0]], expected, torch.as_tensor(expected), [[1.0, 2.0, 3.0], [0, 0, 0]]):
        out = validate_points(points, (4, 4, 4), "foreground")
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, expected)
    assert validate_points(None, (4, 4), "x").shape == (0, 2)
    assert validate_points([], (4, 4, 4), "x").shape == (0, 3)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([[4, 0, 0]], r"foreground click \[4, 0, 0\] lies outside the image of spatial shape \(4, 5, 6\)"),
        ([[0, -1, 0]], r"outside the image.*valid: 0\.\.3, 0\.\.4, 0\.\.5"),
        ([[0, 0, 6]], "outside the image"),
        ([[1, 2]], "must each have 3 coordinates"),
        ([[1, 2, 3, 0]], "must each have 3 coordinates"),
        ([1, 2, 3], "one flat point"),
        ([[1.5, 2, 3]], "integer voxel indices"),
        ([[float("nan"), 2, 3]], "integer voxel indices"),
        ("1,2,3", "got the string"),
        ([[1, 2, 3], [1, 2]], "foreground clicks must be a list of points of 3 numbers"),
    ],
)
def test_validate_points_errors(points: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_points(points, (4, 5, 6), "foreground")


def test_click_map_from_points() -> None:
    maps = click_map_from_points([[1, 2], [3, 3]], [[0, 4]], (5, 6))
    assert maps.dtype == torch.uint8
    assert maps.shape == (2, 5, 6)
    assert sorted(map(tuple, maps[0].nonzero().tolist())) == [(1, 2), (3, 3)]
    assert maps[1].nonzero().tolist() == [[0, 4]]
    assert int(maps.sum()) == 3
    only_bg = click_map_from_points([], [[0, 0]], (5, 6))
    assert int(only_bg[0].sum()) == 0
    assert int(only_bg[1].sum()) == 1


def test_click_map_errors() -> None:
    with pytest.raises(ValueError, match="no clicks"):
        click_map_from_points([], None, (5, 6))
    with pytest.raises(ValueError, match="no foreground click"):
        click_map_from_points([], [[0, 0]], (5, 6), require_foreground=True)
    with pytest.raises(ValueError, match="background click"):
        click_map_from_points([[0, 0]], [[9, 0]], (5, 6))


# --- ClickMapsd -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to_type", TYPES)
def test_click_maps_places_clicks_for_any_input_type(to_type: Callable[[Any], Any]) -> None:
    image = to_type(np.random.default_rng(0).random((1, 8, 9, 5), dtype=np.float32))
    data = {"image": image, "foreground": [[1, 2, 3], [7, 8, 4]], "background": [[0, 0, 0]]}
    out = ClickMapsd()(data)
    maps = out["clicks"]
    assert isinstance(maps, torch.Tensor)
    assert maps.shape == (2, 8, 9, 5)
    assert maps.dtype == torch.uint8
    assert sorted(map(tuple, maps[0].nonzero().tolist())) == [(1, 2, 3), (7, 8, 4)]
    assert maps[1].nonzero().tolist() == [[0, 0, 0]]
    assert out["image"] is image  # the image itself is untouched
    assert "clicks" not in data  # the input dict is not modified


def test_click_maps_2d_image() -> None:
    out = ClickMapsd()({"image": torch.zeros(1, 6, 7), "foreground": [[5, 6]]})
    assert out["clicks"].shape == (2, 6, 7)
    assert out["clicks"][0, 5, 6] == 1


def test_click_maps_keeps_meta_tensor_meta_and_follows_orientation() -> None:
    affine = torch.diag(torch.tensor([-1.5, 1.0, 2.0, 1.0], dtype=torch.float64))
    values = torch.arange(8 * 6 * 4, dtype=torch.float32).reshape(1, 8, 6, 4)
    image = MetaTensor(values, affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    out = ClickMapsd()({"image": image, "foreground": [[1, 2, 3]], "background": []})
    maps = out["clicks"]
    assert isinstance(maps, MetaTensor)
    torch.testing.assert_close(maps.affine, affine)
    assert maps.meta["filename_or_obj"] == "ct.nii.gz"
    # image and click map reoriented together: the click still marks the same image voxel
    moved = Orientationd(keys=["image", "clicks"], axcodes="RAS", labels=None)(out)
    (click,) = moved["clicks"][0].nonzero().tolist()
    assert click == [6, 2, 3]
    assert float(moved["image"][(0, *click)]) == float(values[0, 1, 2, 3])


def test_click_maps_deterministic() -> None:
    data = {"image": np.zeros((1, 8, 8, 4), np.float32), "foreground": [[1, 2, 3]], "background": [[4, 4, 0]]}
    t = ClickMapsd()
    torch.testing.assert_close(t(data)["clicks"], t(data)["clicks"])


def test_in_plane_clicks_need_a_slice() -> None:
    data = {"image": torch.zeros(1, 8, 9, 5), "foreground": [[1, 2]], "background": [[3, 4]]}
    with pytest.raises(ValueError, match=r"2 coordinates but the image is a volume .*'slice'"):
        ClickMapsd()(data)
    out = ClickMapsd()({**data, "slice": 4})
    assert out["clicks"][0].nonzero().tolist() == [[1, 2, 4]]
    assert out["clicks"][1].nonzero().tolist() == [[3, 4, 4]]
    # another slice axis: the slice index goes into that axis
    out0 = ClickMapsd(axis=0)({**data, "slice": 6})
    assert out0["clicks"][0].nonzero().tolist() == [[6, 1, 2]]
    with pytest.raises(ValueError, match="slice 5 lies outside the volume"):
        ClickMapsd()({**data, "slice": 5})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"image": np.full((1, 8, 8, 4), np.nan, np.float32), "foreground": [[1, 1, 1]]}, "NaN or infinite"),
        ({"image": np.zeros((8, 8), np.float32), "foreground": [[1, 1]]}, "channel-first"),
        ({"image": np.zeros((1, 1, 8, 8, 4), np.float32), "foreground": [[1, 1, 1]]}, "channel-first"),
        ({"image": np.zeros((1, 8, 8, 4), np.float32), "foreground": [[1, 1, 4]]}, "outside the image"),
        ({"image": np.zeros((1, 8, 8, 4), np.float32), "foreground": [[1, 1, 1, 1]]}, "3 coordinates"),
        ({"image": np.zeros((1, 8, 8), np.float32), "foreground": [[1, 1, 1]]}, "2 coordinates"),
        ({"image": np.zeros((1, 8, 8, 4), np.float32), "foreground": [], "background": []}, "no clicks"),
        ({"image": np.zeros((1, 8, 8, 4), np.float32)}, "no clicks"),
        ({"foreground": [[1, 1, 1]]}, "missing key 'image'"),
    ],
)
def test_click_maps_bad_input(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClickMapsd()(data)


def test_click_maps_nan_check_can_be_disabled_and_foreground_required() -> None:
    image = np.full((1, 4, 4), np.nan, np.float32)
    assert ClickMapsd(check_image=False)({"image": image, "foreground": [[0, 0]]})["clicks"].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="no foreground click"):
        ClickMapsd(require_foreground=True)({"image": np.zeros((1, 4, 4)), "background": [[0, 0]]})
    with pytest.raises(ValueError, match="missing key 'background'"):
        ClickMapsd(allow_missing_keys=False)({"image": np.zeros((1, 4, 4)), "foreground": [[0, 0]]})


# --- AddGuidanced ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("to_type", TYPES)
def test_add_guidance_appends_two_channels(to_type: Callable[[Any], Any]) -> None:
    raw = np.random.default_rng(1).random((1, 24, 20), dtype=np.float32)
    data = ClickMapsd()({"image": to_type(raw), "foreground": [[5, 5]], "background": [[18, 14]]})
    out = AddGuidanced(sigma=SIGMA)(data)
    image = out["image"]
    assert isinstance(image, torch.Tensor)
    assert image.shape == (3, 24, 20)
    assert image.dtype == torch.float32
    np.testing.assert_allclose(np.asarray(image[0]), raw[0])
    expected = render_guidance(data["clicks"][None], SIGMA)[0]
    torch.testing.assert_close(torch.as_tensor(image[1:]), expected)
    assert float(image[1, 5, 5]) == pytest.approx(1.0)
    assert float(image[2, 18, 14]) == pytest.approx(1.0)
    assert "clicks" not in out


def test_add_guidance_keeps_meta_and_map_when_asked() -> None:
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.zeros(1, 10, 10, 4), affine=affine)
    data = ClickMapsd()({"image": image, "foreground": [[2, 2, 1]]})
    out = AddGuidanced(delete_map=False)(data)
    assert isinstance(out["image"], MetaTensor)
    torch.testing.assert_close(out["image"].affine, affine)
    assert out["image"].shape == (3, 10, 10, 4)
    assert "clicks" in out


def test_add_guidance_slice_axis_gives_per_slice_guidance() -> None:
    data = ClickMapsd()({"image": torch.zeros(1, 20, 20, 5), "foreground": [[10, 10]], "slice": 2})
    flat = AddGuidanced(slice_axis=2)(dict(data))["image"]
    assert float(flat[1, ..., 2].max()) == pytest.approx(1.0)
    assert float(flat[1:, ..., [0, 1, 3, 4]].abs().max()) == 0.0
    volumetric = AddGuidanced()(dict(data))["image"]
    assert float(volumetric[1, ..., 1].max()) > 0.5  # 3D guidance reaches the next slice


def test_add_guidance_deterministic() -> None:
    data = ClickMapsd()({"image": torch.zeros(1, 12, 12, 3), "foreground": [[3, 3, 1]], "background": [[9, 9, 2]]})
    t = AddGuidanced()
    torch.testing.assert_close(t(dict(data))["image"], t(dict(data))["image"])


def test_add_guidance_shape_mismatch_raises() -> None:
    maps = click_map_from_points([[1, 1]], None, (8, 8))
    with pytest.raises(ValueError, match="differ in spatial shape"):
        AddGuidanced()({"image": torch.zeros(1, 8, 9), "clicks": maps})


def test_monai_label_request_through_a_compose() -> None:
    pipeline = Compose([ClickMapsd(), AddGuidanced(sigma=SIGMA, slice_axis=2)])
    out = pipeline({"image": torch.zeros(1, 16, 16, 6), "foreground": [[4, 5, 3]], "background": [[12, 12, 3]]})
    assert out["image"].shape == (3, 16, 16, 6)
    assert float(out["image"][1, 4, 5, 3]) == pytest.approx(1.0)
    assert float(out["image"][2, 12, 12, 3]) == pytest.approx(1.0)


def test_instantiable_from_bundle_config() -> None:
    parser = ConfigParser(
        {
            "maps": {"_target_": "common.transforms.ClickMapsd", "image_key": "image", "axis": 2},
            "guide": {"_target_": "common.transforms.AddGuidanced", "sigma": 2.0, "slice_axis": 2},
        }
    )
    assert isinstance(parser.get_parsed_content("maps"), ClickMapsd)
    guide = parser.get_parsed_content("guide")
    assert isinstance(guide, AddGuidanced)
    assert guide.slice_axis == 2


@pytest.mark.parametrize("shape", [(3, 2, 40, 36), (2, 2, 20, 24, 16)])
def test_stamp_and_convolution_renderings_agree(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(shape, generator=generator) < 0.01
    maps[0, 0, 0, 0] = True  # a click in a corner: the stamp is cut at the border like the zero-padded convolution
    maps[-1, 1, -1, -1] = True
    maps[1, 1] = False  # a channel without clicks stays zero in both
    conv = render_guidance(maps, 2.0, method="conv")
    stamp = render_guidance(maps, 2.0, method="stamp")
    torch.testing.assert_close(stamp, conv, atol=1e-6, rtol=0)
    assert torch.equal(render_guidance(maps, 2.0), stamp)  # "auto" stamps sparse maps on the CPU
    assert float(stamp[1, 1].abs().max()) == 0.0


def test_convolution_is_monai_gaussian_filter() -> None:
    from monai.networks.layers import GaussianFilter

    maps = torch.rand((2, 2, 30, 26), generator=torch.Generator().manual_seed(1)) < 0.02
    smoothed = GaussianFilter(2, sigma=(2.0, 1.5), truncated=4.0)(maps.float()).clamp_min(0)
    peak = smoothed.flatten(2).amax(2)[..., None, None]
    expected = torch.where(peak > 0, smoothed / peak.clamp_min(1e-30), torch.zeros_like(smoothed))
    torch.testing.assert_close(render_guidance(maps, (2.0, 1.5), method="conv"), expected, atol=1e-6, rtol=0)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["auto", "conv", "stamp"])
def test_render_on_another_device(device: str, method: str) -> None:
    maps = _maps((3, 40, 36), [(1, 5, 5), (2, 20, 30)], [(0, 39, 0)]).bool()  # a volume: (1, 2, 3, 40, 36)
    expected = render_guidance(maps, 2.0, method="conv")
    out = render_guidance(maps, 2.0, method=method, device=device)
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, atol=1e-6, rtol=0)
    sliced = render_slice_guidance(maps, 0, 2.0, device=device)
    assert sliced.device.type == device
    torch.testing.assert_close(sliced.cpu(), render_slice_guidance(maps, 0, 2.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_click_maps_and_guidance_made_on_the_image_device(device: str) -> None:
    image = torch.zeros(1, 24, 20, device=device)
    data = ClickMapsd(image_key="image")({"image": image, "foreground": [[3, 4]], "background": [[20, 1]]})
    assert data["clicks"].device == image.device
    assert click_map_from_points([[3, 4]], [[20, 1]], (24, 20), device=device).device == image.device
    guided = AddGuidanced(image_key="image")(data)["image"]
    assert guided.device == image.device
    host = AddGuidanced(image_key="image")(
        ClickMapsd()({"image": image.cpu(), "foreground": [[3, 4]], "background": [[20, 1]]})
    )
    torch.testing.assert_close(guided.cpu(), host["image"], atol=1e-6, rtol=0)


def test_unknown_render_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="method"):
        render_guidance(torch.zeros(1, 2, 8, 8), method="fft")


@pytest.mark.parametrize("spatial", [(24, 20), (12, 10, 8)])
def test_incremental_stamps_equal_rendering_the_click_maps(spatial: tuple[int, ...]) -> None:
    from common.transforms.clicks import ClickBatch, add_new_clicks
    from common.transforms.guidance import add_guidance_stamps, normalise_guidance

    generator = torch.Generator().manual_seed(5)
    b, n = 4, int(np.prod(spatial))
    maps = torch.zeros((b, 2, *spatial), dtype=torch.bool)
    smoothed = torch.zeros(maps.shape)
    previous = torch.zeros(b, dtype=torch.int64)
    previous_positive = torch.ones(b, dtype=torch.bool)
    for step in range(6):
        index = torch.randint(0, n, (b,), generator=generator)
        if step == 3:
            index[0] = 0  # a corner: the stamp is cut at the border
        if step == 4:  # sample 1 clicks the same voxel again: counted once, as in a binary click map
            index[1] = previous[1]
        positive = torch.rand(b, generator=generator) < 0.5
        if step == 4:
            positive[1] = previous_positive[1]
        clicks = ClickBatch(index, positive, torch.ones(b, dtype=torch.bool), torch.zeros(b), torch.zeros(b))
        active = torch.tensor([True, True, step % 2 == 0, True])
        maps, fresh = add_new_clicks(maps, clicks, active)
        add_guidance_stamps(smoothed, index, (~positive).long(), fresh, 2.0)
        previous, previous_positive = index.clone(), positive.clone()
    torch.testing.assert_close(
        normalise_guidance(smoothed), render_guidance(maps, 2.0, method="conv"), atol=1e-6, rtol=0
    )


# ------------------------------------------------------------------------ clicks in stored coordinates (viewers)
def _loaded(tmp_path: Any, affine: np.ndarray, shape: tuple[int, int, int]) -> Any:
    """A volume as LoadImaged + EnsureChannelFirstd give it (meta: original_affine, spatial_shape)."""
    import nibabel as nib
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    path = f"{tmp_path}/image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), affine), path)
    return EnsureChannelFirstd("image")(LoadImaged("image", image_only=False)({"image": path}))["image"]


def test_stored_clicks_land_on_the_resampled_reoriented_grid(tmp_path: Any) -> None:
    from monai.transforms import Orientation, Spacing

    # stored slices first (S, L, P), 1 mm in-plane: resampled to RAS at 2.5 mm in-plane
    affine = np.array([[0.0, -1.0, 0.0, 60.0], [0.0, 0.0, -1.0, 50.0], [3.0, 0.0, 0.0, -20.0], [0.0, 0.0, 0.0, 1.0]])
    image = _loaded(tmp_path, affine, (8, 50, 40))
    moved = Spacing(pixdim=(2.5, 2.5, 0.0))(Orientation(axcodes="RAS")(image))
    clicks = [[2, 0, 0], [5, 49, 39], [3, 25, 10]]  # corners of the field of view included
    out = ClickMapsd(coordinates="stored", axis=None)({"image": moved, "foreground": clicks, "background": []})
    assert out["clicks"].shape == (2, *moved.shape[1:])
    assert int(out["clicks"][0].sum()) == 3  # no click lost on the coarser grid
    world = (affine @ np.array([[*c, 1.0] for c in clicks]).T).T[:, :3]
    placed = np.argwhere(out["clicks"][0].numpy() > 0)
    placed_world = (moved.affine.numpy() @ np.c_[placed, np.ones(len(placed))].T).T[:, :3]
    for w in world:  # each click within half a resampled voxel of where the user put it
        assert np.min(np.abs(placed_world - w).max(axis=1)) <= 1.25 + 1e-6


def test_stored_clicks_are_checked_against_the_stored_shape(tmp_path: Any) -> None:
    from monai.transforms import Spacing

    image = Spacing(pixdim=(2.0, 2.0, 0.0))(_loaded(tmp_path, np.eye(4), (20, 20, 5)))  # now (10, 10, 5)
    ok = ClickMapsd(coordinates="stored")({"image": image, "foreground": [[19, 19, 4]], "background": []})
    assert int(ok["clicks"].sum()) == 1
    with pytest.raises(ValueError, match="outside the image of spatial shape"):
        ClickMapsd(coordinates="stored")({"image": image, "foreground": [[20, 0, 0]], "background": []})


def test_stored_in_plane_clicks_use_the_stored_axial_axis(tmp_path: Any) -> None:
    affine = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    image = _loaded(tmp_path, affine, (6, 8, 10))  # stored axis 0 runs I-S
    out = ClickMapsd(coordinates="stored", axis=None)({"image": image, "foreground": [[3, 4]], "slice": 5})
    assert tuple(np.argwhere(out["clicks"][0].numpy())[0]) == (5, 3, 4)


def test_stored_clicks_need_the_loader_meta() -> None:
    with pytest.raises(ValueError, match="no stored geometry"):
        ClickMapsd(coordinates="stored")({"image": torch.zeros(1, 4, 4, 4), "foreground": [[1, 1, 1]]})
    with pytest.raises(ValueError, match="coordinates"):
        ClickMapsd(coordinates="world")
    with pytest.raises(ValueError, match="slice index"):
        ClickMapsd()({"image": torch.zeros(1, 4, 4, 4), "foreground": [[1, 1]], "slice": "abc"})


# ------------------------------------------------------------------------ the viewer's slice (2D models, any storage)
#: Stored slices first with flips (axcodes S, L, P): stored axis 2 runs P-A, so a viewer's slice k is coronal.
SLP = np.array([[0.0, -2.0, 0.0, 60.0], [0.0, 0.0, -2.0, 50.0], [3.0, 0.0, 0.0, -20.0], [0.0, 0.0, 0.0, 1.0]])


def _viewer_pipeline(stored_axis: int | None = 2) -> Compose:
    from monai.transforms import EnsureChannelFirstd, LoadImaged, Spacingd

    from common.transforms.guidance import SliceAxisLastd

    return Compose(
        [
            LoadImaged("image", image_only=False),
            EnsureChannelFirstd("image"),
            Orientationd("image", axcodes="RAS"),
            SliceAxisLastd("image", stored_axis=stored_axis),
            Spacingd("image", pixdim=(2.5, 2.5, 0.0), mode="bilinear"),  # as the DeepGrow bundle
        ]
    )


def _stored_file(tmp_path: Any, affine: np.ndarray, data: np.ndarray) -> str:
    import nibabel as nib

    path = f"{tmp_path}/stored.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def _axcodes(affine: np.ndarray) -> tuple[str, ...]:
    import nibabel as nib

    return tuple(nib.aff2axcodes(affine))


def test_slice_axis_last_puts_the_viewers_stored_slice_last_and_invertd_brings_it_back(tmp_path: Any) -> None:
    from monai.transforms import Invertd

    data = np.random.default_rng(0).random((8, 12, 10)).astype(np.float32)
    path = _stored_file(tmp_path, SLP, data)
    pipeline = _viewer_pipeline()
    k = 3
    out = pipeline({"image": path, "slice": k})
    image = out["image"]
    assert image.shape[-1] == 10  # last: A, the viewer's 10 stored slices, not resampled; before it R and S
    assert _axcodes(image.affine.numpy()) == ("R", "S", "A")
    spacing = np.linalg.norm(image.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [2.5, 2.5, 2.0], atol=1e-6)
    # the current slices along the last axis are the stored slices along axis 2, one for one
    stored_centre = SLP @ np.array([0.0, 0.0, k, 1.0])
    current = np.linalg.solve(image.affine.numpy(), stored_centre)[:3]
    assert current[2] == pytest.approx(round(current[2]), abs=1e-6)
    slab = torch.zeros_like(image)
    slab[..., round(current[2])] = 1.0
    back = Invertd("pred", pipeline, orig_keys="image", nearest_interp=False)({**out, "pred": slab})["pred"]
    assert back.shape == (1, *data.shape)
    np.testing.assert_allclose(back.affine.numpy(), SLP, atol=1e-5)
    hit = np.argwhere(back[0].numpy() > 0.5)
    assert set(hit[:, 2].tolist()) == {k}  # exactly the viewer's stored slice, all of it
    assert len(hit) == data.shape[0] * data.shape[1]


def test_slice_axis_last_without_a_slice_keeps_the_ras_grid(tmp_path: Any) -> None:
    path = _stored_file(tmp_path, SLP, np.zeros((8, 12, 10)))
    for pipeline, item in (
        (_viewer_pipeline(), {"image": path}),
        (_viewer_pipeline(None), {"image": path, "slice": 2}),
    ):
        image = pipeline(item)["image"]
        assert _axcodes(image.affine.numpy()) == ("R", "A", "S")  # axial slices last, as before
        assert image.shape[-1] == 8  # the stored S axis (axis 0)


@pytest.mark.parametrize(
    ("slice_", "match"), [(10, "outside the volume"), (-1, "outside the volume"), ("k", "integer slice index")]
)
def test_slice_axis_last_rejects_a_bad_slice(tmp_path: Any, slice_: Any, match: str) -> None:
    path = _stored_file(tmp_path, SLP, np.zeros((8, 12, 10)))
    with pytest.raises(RuntimeError) as info:  # Compose wraps the transform's ValueError
        _viewer_pipeline()({"image": path, "slice": slice_})
    assert isinstance(info.value.__cause__, ValueError)
    assert match in str(info.value.__cause__)


def test_slice_axis_last_argument_and_input_errors() -> None:
    from common.transforms.guidance import SliceAxisLastd

    with pytest.raises(ValueError, match="stored_axis"):
        SliceAxisLastd("image", stored_axis=3)
    with pytest.raises(ValueError, match="MetaTensor"):
        SliceAxisLastd("image")({"image": torch.zeros(1, 4, 4, 4), "slice": 1})
    with pytest.raises(ValueError, match="no stored geometry"):
        SliceAxisLastd("image")({"image": MetaTensor(torch.zeros(1, 4, 4, 4)), "slice": 1})
    with pytest.raises(ValueError, match="volume"):
        SliceAxisLastd("image")({"image": MetaTensor(torch.zeros(1, 4, 4)), "slice": 1})


def test_slice_only_keeps_the_clicks_of_the_viewers_slice() -> None:
    image = torch.zeros(1, 10, 10, 6)
    # 3D Slicer at slice index 0 sends the clicks of every slice
    clicks = {"foreground": [[1, 2, 0], [3, 4, 5]], "background": [[6, 7, 0], [8, 8, 2]], "slice": 0}
    out = ClickMapsd(slice_only=True)({"image": image, **clicks})["clicks"].numpy()
    assert np.argwhere(out[0]).tolist() == [[1, 2, 0]]
    assert np.argwhere(out[1]).tolist() == [[6, 7, 0]]
    everything = ClickMapsd()({"image": image, **clicks})["clicks"]  # without slice_only: every click
    assert int(everything.sum()) == 4
    no_slice = ClickMapsd(slice_only=True)({"image": image, "foreground": [[1, 2, 0], [3, 4, 5]]})["clicks"]
    assert int(no_slice.sum()) == 2
    with pytest.raises(ValueError, match=r"no click lies on slice 3 \(axis 2\).*slices \[0, 2, 5\]"):
        ClickMapsd(slice_only=True)({"image": image, **clicks, "slice": 3})
    with pytest.raises(ValueError, match="outside the volume"):
        ClickMapsd(slice_only=True)({"image": image, **clicks, "slice": 6})


def test_stored_clicks_on_the_viewers_slice_land_on_one_slice_of_the_viewer_grid(tmp_path: Any) -> None:
    path = _stored_file(tmp_path, SLP, np.zeros((8, 12, 10)))
    k = 4
    data = _viewer_pipeline()({"image": path, "slice": k})
    clicks = {"foreground": [[1, 2, k], [6, 11, k]], "background": [[3, 3, 9]], "slice": k}
    out = ClickMapsd(coordinates="stored", slice_only=True)({**data, **clicks})["clicks"].numpy()
    placed = np.argwhere(out.any(axis=0))
    assert len(placed) == 2
    assert len(set(placed[:, 2].tolist())) == 1  # both on one slice of the last axis
    assert out[1].sum() == 0  # the background click lies on stored slice 9: dropped
    # the same stored slice given as in-plane clicks (i, j) plus the slice index
    in_plane = ClickMapsd(coordinates="stored", slice_only=True)({**data, "foreground": [[1, 2], [6, 11]], "slice": k})
    np.testing.assert_array_equal(in_plane["clicks"].numpy()[0], out[0])


def test_slice_axis_last_instantiable_from_bundle_config() -> None:
    from common.transforms.guidance import SliceAxisLastd

    parser = ConfigParser(
        {"t": {"_target_": "common.transforms.guidance.SliceAxisLastd", "keys": "image", "stored_axis": None}}
    )
    t = parser.get_parsed_content("t")
    assert isinstance(t, SliceAxisLastd)
    assert t.stored_axis is None
