"""Where the click models' training and validation samples come from: 2D slices or 3D patches of a structure."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    DivisiblePadd,
    MapTransform,
    RandCropByPosNegLabeld,
    ResizeWithPadOrCropd,
    SqueezeDimd,
)

from common.transforms.slices import StructureSlicesd

__all__ = ["training_samplers", "validation_samplers"]


def _check(spatial_dims: int, patch_size: Sequence[int], count: int) -> tuple[int, ...]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != spatial_dims or any(p < 1 for p in patch):
        raise ValueError(f"patch_size must hold {spatial_dims} positive sizes, got {list(patch_size)}")
    if count < 1:
        raise ValueError(f"the number of samples per volume must be >= 1, got {count}")
    return patch


def training_samplers(
    spatial_dims: int,
    patch_size: Sequence[int],
    num_samples: int,
    keys: Sequence[str] = ("image", "label"),
    label_key: str = "label",
) -> list[MapTransform]:
    """Random samples that hold the structure, from a channel-first volume ``(C, H, W, D)``.

    - 2D: ``num_samples`` axial slices (along the last axis), each chosen by a random foreground voxel (so slices
      with more of the structure are drawn more often), squeezed to ``(C, H, W)`` and padded/cropped to
      ``patch_size``.
    - 3D: ``num_samples`` patches of ``patch_size`` centred on random foreground voxels.

    Args:
        spatial_dims: 2 or 3 (the network's).
        patch_size: output spatial size, ``spatial_dims`` entries.
        num_samples: samples per volume.
        keys: keys cut together.
        label_key: the binary label of the structure.

    Returns:
        MONAI dictionary transforms to append to the volume pre-processing.
    """
    patch = _check(spatial_dims, patch_size, num_samples)
    crop_size = [-1, -1, 1] if spatial_dims == 2 else list(patch)
    samplers: list[MapTransform] = [
        RandCropByPosNegLabeld(
            keys=list(keys),
            label_key=label_key,
            spatial_size=crop_size,
            pos=1.0,
            neg=0.0,
            num_samples=num_samples,
            allow_smaller=True,
        )
    ]
    if spatial_dims == 2:
        samplers.append(SqueezeDimd(keys=list(keys), dim=-1))
    samplers.append(ResizeWithPadOrCropd(keys=list(keys), spatial_size=patch))
    return samplers


def validation_samplers(
    spatial_dims: int,
    patch_size: Sequence[int],
    num_slices: int,
    keys: Sequence[str] = ("image", "label"),
    label_key: str = "label",
    divisible_by: int = 16,
) -> list[MapTransform]:
    """Deterministic validation samples: the same every epoch.

    - 2D: ``num_slices`` evenly spaced axial slices of the structure (:class:`StructureSlicesd`), padded/cropped
      to ``patch_size``.
    - 3D: the whole volume, padded to a multiple of ``divisible_by``.
    """
    patch = _check(spatial_dims, patch_size, num_slices)
    if spatial_dims == 2:
        return [
            StructureSlicesd(keys=list(keys), label_key=label_key, axis=2, num_slices=num_slices),
            ResizeWithPadOrCropd(keys=list(keys), spatial_size=patch),
        ]
    return [DivisiblePadd(keys=list(keys), k=divisible_by)]
