"""Tests of common.boxes.transforms: the box pipeline's crop/resize round trip in any orientation, and its checks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CopyItemsd,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
)

from common.boxes import (
    SCRIBBLE_BG,
    SCRIBBLE_FG,
    BoxMaskd,
    EnforceUserInputd,
    RandBoxMaskFromLabeld,
    RandSliceOfLabeld,
    ResizeToNetworkd,
    ScribbleMapd,
    box_from_mask,
    network_shape,
)

SHAPE = (40, 36, 12)


def _ellipsoid(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


@pytest.fixture(params=["ras", "permuted_flipped"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """An ellipsoid image/label stored RAS with anisotropic voxels, or with axes permuted and flipped."""
    label = _ellipsoid(SHAPE, (20, 17, 6), (9, 7, 4)).astype(np.uint8)
    image = (label * 100.0 + np.random.default_rng(0).normal(0, 5, SHAPE)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    if request.param == "permuted_flipped":  # stored as (D, W, H) with the first axis flipped
        label = np.ascontiguousarray(np.transpose(label, (2, 1, 0))[::-1])
        image = np.ascontiguousarray(np.transpose(image, (2, 1, 0))[::-1])
        affine = np.array([[0, 0, 0.8, 0], [0, 0.8, 0, 0], [-3.0, 0, 0, 33.0], [0, 0, 0, 1]], dtype=float)
    return {
        "image": _write(tmp_path / "img.nii.gz", image, affine),
        "label": _write(tmp_path / "lab.nii.gz", label, affine),
        "mask": label.astype(bool),
        "affine": affine,
    }


def _one_by_one(pre: Compose, data: dict[str, object]) -> dict[str, object]:
    """Run the transforms one by one, as the bundle pipeline does (MONAI's Compose wraps errors in RuntimeError)."""
    d = dict(data)
    for transform in pre.transforms:
        d = transform(d)
    return d


def _pipeline(spatial_dims: int, rule: str, size: int, axes: int) -> Compose:
    return Compose(
        [
            LoadImaged(keys=["image", "label", "scribbles"], image_only=False, allow_missing_keys=True),
            EnsureChannelFirstd(keys=["image", "label", "scribbles"], allow_missing_keys=True),
            BoxMaskd(keys="image", spatial_dims=spatial_dims),
            ScribbleMapd(keys="scribbles"),
            CopyItemsd(keys=["box_mask", "scribbles"], names=["user_box", "user_scribbles"]),
            Orientationd(
                keys=["image", "label", "scribbles", "box_mask"], axcodes="RAS", labels=None, allow_missing_keys=True
            ),
            CropForegroundd(
                keys=["image", "label", "scribbles"], source_key="box_mask", allow_smaller=True, allow_missing_keys=True
            ),
            NormalizeIntensityd(keys="image"),
            ResizeToNetworkd(
                keys=["image", "label", "scribbles"],
                rule=rule,
                size=size,
                axes=axes,
                mode=["bilinear", "nearest", "nearest"],
                allow_missing_keys=True,
            ),
        ]
    )


def test_3d_crop_resize_and_back_is_exact_in_the_stored_grid(case: dict[str, object]) -> None:
    mask = case["mask"]
    assert isinstance(mask, np.ndarray)
    box = box_from_mask(mask, margin=2)
    pre = _pipeline(3, "longest_side", 32, 3)
    d = pre({"image": case["image"], "label": case["label"], "box": [list(box[0]), list(box[1])]})
    assert max(d["image"].shape[1:]) == 32
    # the crop is resized to isotropic voxels in mm: extents proportional to the box's extents in mm
    assert d["image"].shape[-1] < d["image"].shape[1] * 3.0 / 0.8 + 2
    assert abs(float(d["image"].mean())) < 0.05  # z-scored in the box (before resampling)
    d["pred"] = MetaTensor(
        d["label"].float(), meta=dict(d["image"].meta), applied_operations=list(d["image"].applied_operations)
    )
    post = Compose(
        [Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False), EnforceUserInputd(keys="pred")]
    )
    out = post(d)["pred"]
    assert tuple(out.shape[1:]) == mask.shape
    back = out[0].numpy() > 0.5
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.97


def test_2d_box_on_one_slice_keeps_the_slice(case: dict[str, object]) -> None:
    mask = case["mask"]
    affine = case["affine"]
    assert isinstance(mask, np.ndarray)
    assert isinstance(affine, np.ndarray)
    axis = int(np.argmax(np.abs(affine[2, :3])))
    index = mask.shape[axis] // 2
    one = np.zeros_like(mask)
    where = [slice(None)] * 3
    where[axis] = index
    one[tuple(where)] = mask[tuple(where)]
    margins = [3, 3, 3]
    margins[axis] = 0
    box = box_from_mask(one, margin=margins)
    pre = _pipeline(2, "shorter_side", 48, 2)
    d = pre({"image": case["image"], "label": case["label"], "box": [list(box[0]), list(box[1])]})
    assert d["image"].shape[-1] == 1
    assert min(d["image"].shape[1:3]) == 48
    d["pred"] = MetaTensor(
        d["label"].float(), meta=dict(d["image"].meta), applied_operations=list(d["image"].applied_operations)
    )
    out = Compose([Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)])(d)["pred"][0].numpy()
    back = out > 0.5
    assert not back[~one].any()
    assert 2 * (back & one).sum() / (back.sum() + one.sum()) > 0.95
    full = box_from_mask(mask)
    with pytest.raises(ValueError, match="this is a 2D model"):
        _one_by_one(pre, {"image": case["image"], "box": [list(full[0]), list(full[1])]})
    with pytest.raises(ValueError, match="this is a 3D model"):
        _one_by_one(_pipeline(3, "longest_side", 32, 3), {"image": case["image"], "box": [list(box[0]), list(box[1])]})


def test_box_errors_name_the_problem(case: dict[str, object]) -> None:
    pre = _pipeline(3, "longest_side", 32, 3)
    with pytest.raises(ValueError, match="no box"):
        _one_by_one(pre, {"image": case["image"]})
    with pytest.raises(ValueError, match="outside the image"):
        _one_by_one(pre, {"image": case["image"], "box": [[100, 100, 100], [110, 110, 110]]})
    with pytest.raises(ValueError, match="zero width"):
        _one_by_one(pre, {"image": case["image"], "box": [[1, 1, 1], [1, 5, 5]]})


def test_scribble_map_codes_and_checks(tmp_path: Path) -> None:
    image = MetaTensor(torch.zeros(1, 4, 4, 3), affine=torch.eye(4))
    upload = torch.zeros(1, 4, 4, 3)
    upload[0, 0, 0, 0] = 3
    upload[0, 1, 1, 1] = 2
    upload[0, 2, 2, 2] = 1  # another segment: ignored
    out = ScribbleMapd()({"image": image, "scribbles": MetaTensor(upload, affine=torch.eye(4))})["scribbles"]
    assert out[0, 0, 0, 0] == SCRIBBLE_FG
    assert out[0, 1, 1, 1] == SCRIBBLE_BG
    assert int((out > 0).sum()) == 2
    swapped = ScribbleMapd()(
        {
            "image": image,
            "scribbles": MetaTensor(upload, affine=torch.eye(4)),
            "scribbles_fg_value": 2,
            "scribbles_bg_value": 3,
        }
    )["scribbles"]
    assert swapped[0, 0, 0, 0] == SCRIBBLE_BG
    assert int(ScribbleMapd()({"image": image})["scribbles"].sum()) == 0
    with pytest.raises(ValueError, match="shape"):
        ScribbleMapd()({"image": image, "scribbles": MetaTensor(torch.zeros(1, 4, 4, 2), affine=torch.eye(4))})
    shifted = torch.eye(4)
    shifted[0, 3] = 5.0
    with pytest.raises(ValueError, match="affines"):
        ScribbleMapd()({"image": image, "scribbles": MetaTensor(upload, affine=shifted)})
    with pytest.raises(ValueError, match="different label values"):
        ScribbleMapd()({"image": image, "scribbles_fg_value": 2, "scribbles_bg_value": 2})


def test_enforce_user_input_keeps_scribbles_and_box() -> None:
    pred = torch.ones(1, 4, 4, 1)
    box = torch.zeros(1, 4, 4, 1)
    box[0, 1:3, 1:3] = 1
    codes = torch.zeros(1, 4, 4, 1)
    codes[0, 1, 1] = SCRIBBLE_BG
    codes[0, 0, 0] = SCRIBBLE_FG  # outside the box: the user's scribble still wins
    out = EnforceUserInputd()({"pred": pred, "user_box": box, "user_scribbles": codes})["pred"]
    assert out[0, 1, 1, 0] == 0
    assert out[0, 0, 0, 0] == 1
    assert out[0, 2, 2, 0] == 1
    assert out[0, 3, 3, 0] == 0
    with pytest.raises(ValueError, match="invert the pre-processing"):
        EnforceUserInputd()({"pred": torch.ones(1, 2, 2, 1), "user_box": box, "user_scribbles": codes})


def test_network_shape_rules() -> None:
    assert network_shape((50, 100, 3), (1.0, 1.0, 3.0), "shorter_side", 96, 2) == (
        (96, 192, 3),
        (50 / 96, 100 / 192, 1.0),
    )
    shape, _ = network_shape((40, 40, 10), (1.0, 1.0, 4.0), "longest_side", 80, 3)
    assert shape == (80, 80, 80)
    with pytest.raises(ValueError, match="rule"):
        network_shape((4, 4), (1.0, 1.0), "middle", 8, 2)


def test_training_slice_and_box_draws() -> None:
    label = torch.zeros(1, 20, 20, 6)
    label[0, 5:15, 5:15, 1:5] = 1
    label[0, 5:7, 5:7, 0] = 1  # a small slice, below min_voxels
    draw = RandSliceOfLabeld(keys="label", min_voxels=10)
    draw.set_random_state(0)
    picked = {draw({"label": label})["label_slice"] for _ in range(30)}
    assert picked <= {1, 2, 3, 4}
    assert len(picked) > 1
    largest = RandSliceOfLabeld(keys="label", pick="largest")({"label": label})
    assert largest["label_slice"] == 1
    assert int(largest["label"][..., [0, 2, 3, 4, 5]].sum()) == 0
    boxes = RandBoxMaskFromLabeld(keys="label", margin_range=[(0, 3), (0, 3), (0, 0)])
    boxes.set_random_state(0)
    masks = [boxes({"label": label})["box_mask"][0].numpy() > 0 for _ in range(10)]
    assert all(m[5:15, 5:15, 0:5].all() and not m[..., 5].any() for m in masks)
    assert len({m.sum() for m in masks}) > 1
    with pytest.raises(ValueError, match="empty"):
        RandBoxMaskFromLabeld(keys="label")({"label": torch.zeros(1, 4, 4, 4)})


def test_thin_boxes_are_refused_before_they_blow_up() -> None:
    with pytest.raises(ValueError, match="too thin"):
        network_shape((1, 64, 1), (2.5, 2.5, 3.5), "shorter_side", 96, 2)
    shape, _ = network_shape((4, 40, 90), (2.5, 2.5, 3.5), "longest_side", 80, 3)  # a long tube in 3D: bounded
    assert max(shape) == 80
