"""Deterministic choice of 2D slices of a structure from a volume (validation of 2D models)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, SpatialCrop, SqueezeDim
from monai.utils import convert_to_numpy

__all__ = ["StructureSlicesd", "evenly_spaced"]


def evenly_spaced(indices: np.ndarray, count: int) -> np.ndarray:
    """``count`` entries of the sorted ``indices`` spread evenly from first to last (all of them if fewer)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(indices) <= count:
        return np.asarray(indices)
    picks = np.round(np.linspace(0, len(indices) - 1, count)).astype(np.int64)
    return np.asarray(indices)[np.unique(picks)]


class StructureSlicesd(MapTransform):
    """Cut ``num_slices`` 2D slices holding the structure out of channel-first volumes, deterministically.

    The slices along ``axis`` where ``data[label_key]`` ``(1, H, W, D)`` has foreground are found, ``num_slices`` of
    them evenly spaced from the first to the last are taken, and for each one a dict is returned with every key of
    ``keys`` cut to ``(C, ...)`` 2D (``SpatialCrop`` + ``SqueezeDim``, so the meta data follow) and the slice index
    under ``slice_key``. Use it where a random slice sampler (``RandCropByPosNegLabeld``) would make validation
    differ from epoch to epoch.

    Args:
        keys: keys of the volumes to cut (e.g. ``["image", "label"]``).
        label_key: the binary label that says which slices hold the structure.
        axis: spatial axis of the slices (2 = k).
        num_slices: slices per volume.
        slice_key: key under which the slice index is stored.

    Raises:
        ValueError: a volume that is not ``(C, H, W, D)`` or a label without foreground.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        axis: int = 2,
        num_slices: int = 4,
        slice_key: str = "slice",
    ) -> None:
        super().__init__(keys)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if num_slices < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        self.label_key = label_key
        self.axis = axis
        self.num_slices = num_slices
        self.slice_key = slice_key

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        label = convert_to_numpy(data[self.label_key])
        if label.ndim != 4:
            raise ValueError(f"{self.label_key!r} must be (C, H, W, D), got shape {label.shape}")
        per_slice = np.moveaxis(label > 0, self.axis + 1, 0).reshape(label.shape[self.axis + 1], -1).any(axis=1)
        holding = np.flatnonzero(per_slice)
        if len(holding) == 0:
            raise ValueError(f"{self.label_key!r} has no foreground: no slice of the structure to take")
        squeeze = SqueezeDim(dim=self.axis + 1)
        out: list[dict[Hashable, Any]] = []
        for k in evenly_spaced(holding, self.num_slices):
            start, end = [0, 0, 0], list(label.shape[1:])
            start[self.axis], end[self.axis] = int(k), int(k) + 1
            crop = SpatialCrop(roi_start=start, roi_end=end)
            d = dict(data)
            for key in self.key_iterator(d):
                d[key] = squeeze(crop(d[key]))
            d[self.slice_key] = int(k)
            out.append(d)
        return out
