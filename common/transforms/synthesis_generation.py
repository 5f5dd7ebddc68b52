"""Generation label maps for domain-randomised training on CT data: the structures plus HU tissue classes.

SynthSeg (Billot et al., "SynthSeg: segmentation of brain MRI scans of any contrast and resolution without
retraining", Medical Image Analysis 86, 2023) generates its images from *generation* labels that are richer than the
segmentation targets (extra-cerebral tissues, split classes), so that the synthetic images hold the tissue boundaries a
real scan holds. The bundles' training data (the phantoms, MSD CT tasks) label only some organs: air, fat, muscle and
bone are all label 0. :class:`HUTissueClassesd` splits those unlabelled voxels into tissue classes by Hounsfield
thresholds on the (lightly smoothed) CT image, so that the body outline, the fat planes around organs and the spine
appear in every synthetic image, with random intensities like any other region. The segmentation label is untouched.

:func:`synthetic_training_transforms` is the chain the training configs use: tissue classes, the synthesis of
:func:`common.transforms.synthesis.synthetic_image_transforms` from them, and removal of the generation label.

Shapes: channel-first ``(1, H, W)`` or ``(1, H, W, D)`` indexed ``[c, i, j(, k)]`` as stored; the image and label on
one grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import DeleteItemsd, MapTransform
from monai.utils import convert_to_tensor
from scipy import ndimage

from common.transforms.provenance import source_name
from common.transforms.synthesis import synthetic_image_transforms
from common.transforms.synthesis_intensities import _check_channel_first, _like

__all__ = [
    "DEFAULT_HU_THRESHOLDS",
    "GENERATION_LABEL_KEY",
    "TISSUE_CLASS_OFFSET",
    "HUTissueClassesd",
    "hu_tissue_classes",
    "synthetic_training_transforms",
    "with_synthesis",
]

#: Class edges (HU) of the unlabelled voxels: air/lung below -400, fat -400..-30, soft tissue and muscle -30..200,
#: bone from 200 (cancellous and cortical bone, contrast-filled vessels).
DEFAULT_HU_THRESHOLDS: tuple[float, float, float] = (-400.0, -30.0, 200.0)
#: Tissue class ``c`` (1 = fat, 2 = soft tissue, 3 = bone) gets the generation label ``TISSUE_CLASS_OFFSET + c``, above
#: any uint8 structure label; air stays the background (0), which the synthesis splits into random sub-regions.
TISSUE_CLASS_OFFSET = 256
#: Key of the generation label map inside the training chain (removed at its end).
GENERATION_LABEL_KEY = "generation_label"


def _check_thresholds(thresholds: Any) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds_hu must be increasing finite numbers, got {thresholds!r}") from None
    if not values or not all(math.isfinite(v) for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"thresholds_hu must be increasing finite numbers, got {thresholds!r}")
    return values


def hu_tissue_classes(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    thresholds_hu: Sequence[float] = DEFAULT_HU_THRESHOLDS,
    smooth_sigma: float = 1.0,
    offset: int = TISSUE_CLASS_OFFSET,
) -> np.ndarray:
    """Generation label map: ``label`` where it is non-zero, tissue classes by HU elsewhere.

    Args:
        image: spatial ``(H, W[, D])`` CT image in HU.
        label: integer label map of the same shape (0 = unlabelled).
        thresholds_hu: increasing class edges; an unlabelled voxel below the first stays 0, one in
            ``[thresholds_hu[c - 1], thresholds_hu[c])`` (or above the last) gets ``offset + c``.
        smooth_sigma: Gaussian smoothing (voxels) of the image before thresholding, so that noise does not speckle
            the classes; 0 = none.
        offset: generation label of class 0; must exceed every structure label.

    Returns:
        int32 array of the label's shape.

    Raises:
        ValueError: shapes differ, non-finite image values, a structure label ``>= offset + 1``, or bad options.
    """
    edges = _check_thresholds(thresholds_hu)
    if isinstance(smooth_sigma, bool) or not isinstance(smooth_sigma, (int, float)) or not smooth_sigma >= 0:
        raise ValueError(f"smooth_sigma must be a non-negative number of voxels, got {smooth_sigma!r}")
    img = np.asarray(convert_to_tensor(image, track_meta=False).cpu(), dtype=np.float32)
    lab = np.asarray(convert_to_tensor(label, track_meta=False).cpu())
    if img.shape != lab.shape:
        raise ValueError(f"image and label must have the same shape, got {img.shape} and {lab.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("the image has NaN or infinite values")
    lab = lab.astype(np.int64)
    if lab.size and int(lab.max()) > offset:
        raise ValueError(f"structure label {int(lab.max())} collides with the tissue classes (offset {offset})")
    if smooth_sigma > 0:
        img = ndimage.gaussian_filter(img, float(smooth_sigma), mode="nearest")
    classes = np.digitize(img, np.asarray(edges, dtype=np.float32)).astype(np.int32)  # 0 .. len(edges)
    out = np.where(classes > 0, classes + offset, 0).astype(np.int32)
    return np.where(lab != 0, lab, out).astype(np.int32)


class HUTissueClassesd(MapTransform):
    """Add a generation label map (structures + HU tissue classes, :func:`hu_tissue_classes`) to the data.

    Deterministic, so a ``CacheDataset`` caches it with the loading; put it after the spatial pre-processing (the
    image still in HU) and before :func:`~common.transforms.synthesis.synthetic_image_transforms`, which then reads
    ``output_key`` as its label.

    Args:
        label_key: key of the ``(1, H, W[, D])`` segmentation label (left unchanged).
        image_key: key of the ``(1, H, W[, D])`` CT image in HU on the same grid (left unchanged).
        output_key: key of the generation label (int32, the label's container type and meta data).
        thresholds_hu: class edges, see :func:`hu_tissue_classes`.
        smooth_sigma: smoothing before thresholding (voxels).
        offset: generation label of tissue class 0.

    Raises:
        KeyError: a key is missing. ValueError: shapes, channels or values as in :func:`hu_tissue_classes`, the
            message naming the case.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        output_key: str = GENERATION_LABEL_KEY,
        thresholds_hu: Sequence[float] = DEFAULT_HU_THRESHOLDS,
        smooth_sigma: float = 1.0,
        offset: int = TISSUE_CLASS_OFFSET,
    ) -> None:
        super().__init__([label_key, image_key])
        self.label_key, self.image_key, self.output_key = label_key, image_key, output_key
        self.thresholds_hu = _check_thresholds(thresholds_hu)
        self.smooth_sigma = smooth_sigma
        self.offset = int(offset)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with ``output_key`` set."""
        d = dict(data)
        for key in (self.label_key, self.image_key):
            if key not in d:
                raise KeyError(f"HUTissueClassesd: data has no {key!r} key (keys: {list(d)})")
        label = _check_channel_first(d[self.label_key], self.label_key, d, "HUTissueClassesd", channels=1)
        image = _check_channel_first(d[self.image_key], self.image_key, d, "HUTissueClassesd", channels=1)
        try:
            out = hu_tissue_classes(image[0], label[0], self.thresholds_hu, self.smooth_sigma, self.offset)
        except ValueError as err:
            raise ValueError(f"HUTissueClassesd: {source_name(d, image)}: {err}") from None
        d[self.output_key] = _like(torch.from_numpy(out[None]), label)  # the label's container, meta and grid
        return d


def synthetic_training_transforms(
    label_key: str = "label",
    image_key: str = "image",
    *,
    tissue_classes_from_hu: bool = True,
    thresholds_hu: Sequence[float] = DEFAULT_HU_THRESHOLDS,
    smooth_sigma: float = 1.0,
    **synthesis_options: Any,
) -> list[MapTransform]:
    """The domain-randomisation chain of the training configs: replace ``image_key`` by a synthetic image.

    With ``tissue_classes_from_hu`` (CT training data, image in HU): :class:`HUTissueClassesd`, the synthesis from the
    generation label, and removal of the generation label. Without (any other data): the synthesis from ``label_key``
    alone, the background split into random sub-regions. Put it after the spatial pre-processing and before the
    per-image intensity normalisation; ``label_key`` is never changed.

    Args:
        label_key: segmentation label key.
        image_key: image key (HU in, synthetic out).
        tissue_classes_from_hu: derive tissue classes of the unlabelled voxels from the CT image.
        thresholds_hu: class edges (:func:`hu_tissue_classes`).
        smooth_sigma: smoothing before thresholding (voxels).
        synthesis_options: keyword options of :func:`~common.transforms.synthesis.synthetic_image_transforms`.

    Raises:
        ValueError: a bad option.
    """
    if not tissue_classes_from_hu:
        return synthetic_image_transforms(label_key, image_key, **synthesis_options)
    return [
        HUTissueClassesd(label_key, image_key, GENERATION_LABEL_KEY, thresholds_hu, smooth_sigma),
        *synthetic_image_transforms(GENERATION_LABEL_KEY, image_key, **synthesis_options),
        DeleteItemsd(GENERATION_LABEL_KEY),
    ]


#: Transforms before which :func:`with_synthesis` puts the synthesis: the first intensity step or structure selection.
SYNTHESIS_BEFORE: tuple[str, ...] = ("NormalizeIntensityByModalityd", "NormalizeIntensityd", "SelectStructured")


def with_synthesis(volume_transforms: Sequence[Any], synthesis: Sequence[Any]) -> list[Any]:
    """``volume_transforms`` with ``synthesis`` inserted before the first of :data:`SYNTHESIS_BEFORE`.

    The bundles' ``synthetic.json`` use it, so the synthesis always follows the loading and spatial pre-processing (the
    image still in HU, the label map whole) and precedes normalisation, whatever the list's length.

    Raises:
        ValueError: none of :data:`SYNTHESIS_BEFORE` is in the list.
    """
    names = [type(t).__name__ for t in volume_transforms]
    index = next((i for i, name in enumerate(names) if name in SYNTHESIS_BEFORE), None)
    if index is None:
        raise ValueError(f"with_synthesis: none of {SYNTHESIS_BEFORE} in the volume transforms {names}")
    return [*volume_transforms[:index], *synthesis, *volume_transforms[index:]]
