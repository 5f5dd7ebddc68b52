"""Dictionary transforms around the user's annotation in the slice-propagation inference pipeline.

``CheckAnnotationd`` rejects bad input before anything is resampled (clear errors naming the files);
``RestoreUserSlicesd`` guarantees, after the prediction was mapped back into the input image's space, that every
slice the user annotated is returned exactly as the user drew it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_numpy

from common.data.geometry import affine_of, slice_axis_in_array
from common.propagation.validation import validate_image, validate_volume_annotation
from common.transforms.provenance import UNKNOWN_SOURCE, source_name

__all__ = [
    "CheckAnnotationd",
    "RestoreUserSlicesd",
    "StopAtEmptyUserSlicesd",
    "reachable_slices",
    "slice_axis_in_array",
]


def _source(x: Any) -> str:
    """`` (file)`` an array was loaded from, for error messages ("" when unknown)."""
    name = source_name({}, x)
    return "" if name == UNKNOWN_SOURCE else f" ({name})"


class CheckAnnotationd(MapTransform):
    """Validate a channel-first image ``(1, H, W, D)`` and its annotation volume before inference.

    The annotation holds the user's mask (values in ``{0, 1}``) on the annotated slices and 0 elsewhere.

    Args:
        image_key: key of the image.
        annotation_key: key of the annotation volume.
        affine_atol: tolerance (mm) when comparing the two affines.

    Raises:
        ValueError: the image is not a single-channel 3D volume (e.g. a 2D image), holds NaN or infinite values,
            the annotation's shape or affine differs from the image's, the annotation is not binary or has no
            annotated slice. Messages name the files where the inputs were loaded from.
    """

    def __init__(self, image_key: str = "image", annotation_key: str = "annotation", affine_atol: float = 1e-3) -> None:
        super().__init__([image_key, annotation_key])
        self.image_key = image_key
        self.annotation_key = annotation_key
        self.affine_atol = affine_atol

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, annotation = d[self.image_key], d[self.annotation_key]
        for key, x in ((self.image_key, image), (self.annotation_key, annotation)):
            if x.ndim != 4 or x.shape[0] != 1:
                raise ValueError(
                    f"{key}{_source(x)} must be a single-channel 3D volume (1, H, W, D) after EnsureChannelFirst, "
                    f"got shape {tuple(x.shape)}: slice propagation needs a volume, not a 2D image."
                )
        volume = validate_image(image[0], name=f"{self.image_key}{_source(image)}")
        validate_volume_annotation(
            annotation[0], tuple(volume.shape), name=f"{self.annotation_key}{_source(annotation)}"
        )
        a_img, a_ann = affine_of(image), affine_of(annotation)
        if a_img is not None and a_ann is not None and not np.allclose(a_img, a_ann, atol=self.affine_atol):
            raise ValueError(
                f"{self.annotation_key}{_source(annotation)} is not in the image's space{_source(image)}: "
                f"affines differ.\nimage:\n{a_img}\nannotation:\n{a_ann}"
            )
        return d


class RestoreUserSlicesd(MapTransform):
    """Write the user's annotated slices back into the prediction, exactly as the user drew them.

    Runs after the prediction was inverted into the input image's space, so the user's annotation (kept before any
    resampling, e.g. with ``CopyItemsd``) and the prediction share one grid. The slice axis in that grid is found from
    the annotation's affine (the array axis along RAS axis ``axis``). The annotation itself is never modified.

    Args:
        keys: prediction key(s), channel-first ``(1, H, W, D)``.
        annotation_key: key of the user's annotation in the input image's space, ``(1, H, W, D)``.
        axis: the propagation axis in RAS terms (2 = axial), as used by the inferer after ``Orientationd("RAS")``.

    Raises:
        ValueError: if prediction and annotation shapes differ.
    """

    def __init__(self, keys: KeysCollection = "pred", annotation_key: str = "user_annotation", axis: int = 2) -> None:
        super().__init__(keys)
        self.annotation_key = annotation_key
        self.axis = axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        annotation = d[self.annotation_key]
        affine = affine_of(annotation)
        array_axis = self.axis if affine is None else slice_axis_in_array(affine, self.axis)
        user = torch.as_tensor(convert_to_numpy(annotation) > 0)
        if user.ndim != 4:
            raise ValueError(f"{self.annotation_key} must be (1, H, W, D), got {tuple(user.shape)}")
        along_axis = user[0].movedim(array_axis, -1)
        index = torch.nonzero(along_axis.reshape(-1, along_axis.shape[-1]).any(0)).flatten()
        for key in self.key_iterator(d):
            pred = d[key]
            if tuple(pred.shape) != tuple(user.shape):
                raise ValueError(
                    f"{key} shape {tuple(pred.shape)} differs from {self.annotation_key} {tuple(user.shape)}"
                )
            restored = torch.as_tensor(convert_to_numpy(pred) > 0.5)
            src = user.index_select(array_axis + 1, index)
            restored.index_copy_(array_axis + 1, index, src)
            out, *_ = convert_to_dst_type(restored.to(torch.float32), pred, dtype=torch.float32)
            if isinstance(pred, MetaTensor) and isinstance(out, MetaTensor):
                out.meta = dict(pred.meta)
            d[key] = out
        return d


def reachable_slices(depth: int, annotated: Sequence[int], empty: Sequence[int]) -> np.ndarray:
    """Which of ``depth`` slices a propagation from ``annotated`` may reach without crossing an ``empty`` user slice.

    A slice the user marked empty (e.g. erased a leak there) is a barrier: the structure ends before it. Slice ``s``
    is reachable when some annotated slice ``a`` has no empty user slice between ``a`` and ``s`` (inclusive of
    ``s``).

    Args:
        depth: number of slices along the axis.
        annotated: slice indices the user drew the structure on.
        empty: slice indices the user marked as not containing it (disjoint from ``annotated``).

    Returns:
        bool ``(depth,)``.

    Raises:
        ValueError: an index outside ``[0, depth)`` or a slice in both lists.
    """
    for name, indices in (("annotated", annotated), ("empty", empty)):
        bad = [int(s) for s in indices if not 0 <= int(s) < depth]
        if bad:
            raise ValueError(f"{name} slice indices {bad} lie outside the {depth} slices of the volume")
    both = sorted(set(map(int, annotated)) & set(map(int, empty)))
    if both:
        raise ValueError(f"slices {both} are both annotated and marked empty")
    barrier = np.zeros(depth, dtype=bool)
    barrier[list(map(int, empty))] = True
    reach = np.zeros(depth, dtype=bool)
    for a in map(int, annotated):
        for step in (-1, 1):
            s = a
            while 0 <= s < depth and not barrier[s]:
                reach[s] = True
                s += step
    return reach


class StopAtEmptyUserSlicesd(MapTransform):
    """Clear the prediction beyond slices the user marked empty (a correction that erased a leak).

    Slice propagation draws the structure from the user's non-empty slices; a user who erases a leaked slice says
    "the structure ends here". This transform, run after the prediction was mapped back into the input image's space,
    sets those slices to 0 and removes the prediction from every slice that no annotated slice reaches without
    crossing one (:func:`reachable_slices`). Without ``data[slices_key]`` (no empty user slices) it does nothing.

    Args:
        keys: prediction key(s), channel-first ``(1, H, W, D)`` in the input image's grid.
        slices_key: key of the empty user slices: stored slice indices along the array axis that runs along RAS axis
            ``axis`` (the propagation axis).
        annotation_key: key of the user's annotation in the input image's grid, ``(1, H, W, D)`` (its non-empty
            slices are the annotated ones; its affine gives the array axis).
        axis: the propagation axis in RAS terms (2 = axial).

    Raises:
        ValueError: a slice index outside the volume, one that is also annotated, or mismatched shapes.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        slices_key: str = "empty_slices",
        annotation_key: str = "user_annotation",
        axis: int = 2,
    ) -> None:
        super().__init__(keys)
        self.slices_key = slices_key
        self.annotation_key = annotation_key
        self.axis = axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        empty = d.get(self.slices_key)
        if empty is None or len(empty) == 0:
            return d
        if not isinstance(empty, Sequence) or isinstance(empty, str):
            raise ValueError(f"{self.slices_key} must be a list of slice indices, got {empty!r}")
        annotation = d[self.annotation_key]
        affine = affine_of(annotation)
        array_axis = self.axis if affine is None else slice_axis_in_array(affine, self.axis)
        user = convert_to_numpy(annotation)[0] > 0
        annotated = np.flatnonzero(np.moveaxis(user, array_axis, -1).reshape(-1, user.shape[array_axis]).any(0))
        keep = reachable_slices(user.shape[array_axis], annotated.tolist(), [int(s) for s in empty])
        for key in self.key_iterator(d):
            pred = d[key]
            if tuple(pred.shape[1:]) != user.shape:
                raise ValueError(f"{key} shape {tuple(pred.shape)} differs from {self.annotation_key} {user.shape}")
            weights = torch.as_tensor(keep, dtype=torch.float32, device=torch.as_tensor(pred).device)
            view = [1] * pred.ndim
            view[array_axis + 1] = -1
            d[key] = pred * weights.reshape(view).to(pred.dtype)
        return d
