"""Tests for common.transforms.checks.CheckSpatialDimsd (clear errors for 4-D, multi-channel and 2-D inputs)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from common.transforms import CheckSpatialDimsd

NEEDED = "the bundle needs a single-channel 3D volume (1, H, W, D)"


def _save(path: Path, shape: tuple[int, ...]) -> Path:
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return path


def _load(path: Path, keys: tuple[str, ...] = ("image",)) -> dict[str, object]:
    data = {k: str(path) for k in keys}
    data = LoadImaged(list(keys), image_only=False)(data)
    return EnsureChannelFirstd(list(keys))(data)


def test_real_4d_nifti_is_reported_with_file_shape_and_fix(tmp_path: Path) -> None:
    """A 4-D NIfTI (H, W, D, T): EnsureChannelFirstd makes its 4th axis the channel axis -> (T, H, W, D)."""
    path = _save(tmp_path / "perfusion.nii.gz", (20, 18, 16, 3))
    data = _load(path)
    assert tuple(data["image"].shape) == (3, 20, 18, 16)  # what EnsureChannelFirstd does with it
    with pytest.raises(ValueError, match=r"perfusion\.nii\.gz") as info:
        CheckSpatialDimsd("image")(data)
    message = str(info.value)
    assert message.startswith(f"image {path} has shape (3, 20, 18, 16) (3 channels): {NEEDED}")
    assert "The file is a 4-D image (20, 18, 16, 3) whose last axis (time points or modalities)" in message
    assert "select one channel/time point first" in message


def test_error_reaches_the_user_through_compose(tmp_path: Path) -> None:
    """In a bundle the check runs inside Compose, which wraps errors in a RuntimeError: the ValueError is the cause."""
    path = _save(tmp_path / "t.nii.gz", (20, 18, 16, 2))
    pipeline = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), CheckSpatialDimsd("image")])
    with pytest.raises(RuntimeError) as info:
        pipeline({"image": str(path)})
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert re.search(rf"image .*t\.nii\.gz has shape \(2, 20, 18, 16\) \(2 channels\): {re.escape(NEEDED)}", str(cause))


def test_5d_msd_style_nifti(tmp_path: Path) -> None:
    """(H, W, D, 1, C), the NIfTI convention for vector images: C channels and a spurious 4th spatial axis."""
    path = _save(tmp_path / "vec.nii.gz", (20, 18, 16, 1, 2))
    data = _load(path)
    with pytest.raises(ValueError, match=r"has shape \(2, 20, 18, 16, 1\) \(2 channels, 4 spatial axes\)"):
        CheckSpatialDimsd("image")(data)


def test_2d_image_file(tmp_path: Path) -> None:
    path = _save(tmp_path / "xray.nii.gz", (20, 18))
    data = _load(path)
    with pytest.raises(ValueError, match=r"xray\.nii\.gz") as info:
        CheckSpatialDimsd("image")(data)
    assert str(info.value) == (
        f"image {path} has shape (1, 20, 18) (2 spatial axes): {NEEDED}; a 2D image cannot be used, provide a 3D volume"
    )


def test_good_volume_passes_unchanged(tmp_path: Path) -> None:
    path = _save(tmp_path / "ct.nii.gz", (20, 18, 16))
    data = _load(path, keys=("image", "label"))
    out = CheckSpatialDimsd(["image", "label"])(data)
    assert out is not data  # a shallow copy ...
    assert out == data
    assert out["image"] is data["image"]  # ... with the same arrays
    assert out["label"] is data["label"]
    # numpy arrays and plain tensors without meta data work too
    CheckSpatialDimsd("image")({"image": np.zeros((1, 4, 4, 4))})
    CheckSpatialDimsd("image", spatial_dims=2, channels=3)({"image": torch.zeros(3, 4, 4)})


def test_without_file_name_and_other_requirements() -> None:
    with pytest.raises(ValueError, match=r"^image has shape \(2, 4, 4, 4\) \(2 channels\): " + re.escape(NEEDED)):
        CheckSpatialDimsd("image")({"image": torch.zeros(2, 4, 4, 4)})
    meta = {"filename_or_obj": "/x/y.nii.gz"}  # the meta dict of LoadImaged(image_only=False) without MetaTensor
    with pytest.raises(ValueError, match=r"^label /x/y.nii.gz has shape \(1, 4, 4\)"):
        CheckSpatialDimsd("label")({"label": np.zeros((1, 4, 4)), "label_meta_dict": meta})
    with pytest.raises(ValueError, match=r"needs a 2-channel 2D image \(2, H, W\); provide 2 channels"):
        CheckSpatialDimsd("image", spatial_dims=2, channels=2)({"image": MetaTensor(torch.zeros(1, 4, 4))})
    with pytest.raises(ValueError, match=r"image must be an array or tensor"):
        CheckSpatialDimsd("image")({"image": [1, 2, 3]})
    with pytest.raises(KeyError):
        CheckSpatialDimsd("image")({"label": np.zeros((1, 4, 4, 4))})
    assert CheckSpatialDimsd("image", allow_missing_keys=True)({"label": 1}) == {"label": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 0}, "spatial_dims must be a positive integer, got 0"),
        ({"spatial_dims": 3.0}, "spatial_dims must be a positive integer, got 3.0"),
        ({"channels": 0}, "channels must be a positive integer, got 0"),
        ({"channels": True}, "channels must be a positive integer, got True"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CheckSpatialDimsd("image", **kwargs)  # type: ignore[arg-type]


def test_config_instantiation(tmp_path: Path) -> None:
    """As a bundle config writes it, right after EnsureChannelFirstd."""
    parser = ConfigParser(
        {
            "imports": ["$import common"],
            "preprocessing": {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "LoadImaged", "keys": ["image", "label"]},
                    {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
                    {"_target_": "common.transforms.CheckSpatialDimsd", "keys": ["image", "label"]},
                ],
            },
        }
    )
    pipeline = parser.get_parsed_content("preprocessing")
    check = pipeline.transforms[2]
    assert isinstance(check, CheckSpatialDimsd)
    assert (check.spatial_dims, check.channels) == (3, 1)
    image, label = _save(tmp_path / "i.nii.gz", (20, 18, 16)), _save(tmp_path / "l.nii.gz", (20, 18, 16))
    assert tuple(pipeline({"image": str(image), "label": str(label)})["image"].shape) == (1, 20, 18, 16)
    four_d = _save(tmp_path / "i4.nii.gz", (20, 18, 16, 2))
    with pytest.raises(RuntimeError) as info:
        pipeline({"image": str(four_d), "label": str(label)})
    assert "i4.nii.gz has shape (2, 20, 18, 16) (2 channels)" in str(info.value.__cause__)
