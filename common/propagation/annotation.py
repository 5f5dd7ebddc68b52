"""Dictionary transforms around the user's annotation in the slice-propagation inference pipeline.

``CheckAnnotationd`` rejects bad input before anything is resampled (clear errors naming the files);
``RestoreUserSlicesd`` guarantees, after the prediction was mapped back into the input image's space, that every
slice the user annotated is returned exactly as the user drew it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
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

__all__ = ["CheckAnnotationd", "RestoreUserSlicesd", "slice_axis_in_array"]


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
