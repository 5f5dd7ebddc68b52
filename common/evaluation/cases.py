"""Evaluation cases: one image and one binary structure, loaded from the expanded per-structure sample dicts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.spatialimages import SpatialImage

__all__ = ["CaseInfo", "EvalCase", "load_eval_cases"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("image", "label", "case_id", "structure", "structure_name", "group")


@dataclass(frozen=True)
class CaseInfo:
    """What a model adapter may know about a case besides the image: everything except the ground truth.

    Args:
        case_id: case identifier, e.g. ``"phantom_000"``.
        spacing: voxel size in mm along each array axis.
        structure: label value of the structure in the multi-label map.
        structure_name: its name from ``dataset.json`` ``"labels"``.
        group: ``"seen"`` or ``"unseen"`` (structure held out of training).
        affine: ``(4, 4)`` voxel-to-world affine of the image.
        meta: remaining keys of the sample dict (e.g. ``"axis"``, ``"slice"``), untouched.
        image_path: the image file (what a viewer's request names), ``""`` if the image was not read from a file.
    """

    case_id: str
    spacing: tuple[float, ...]
    structure: int
    structure_name: str
    group: str
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    image_path: str = ""


@dataclass
class EvalCase:
    """One image and one binary structure to segment interactively.

    Arrays are indexed ``[i, j, k]`` as stored in the NIfTI file (no reorientation), spacing in mm along those
    axes. ``image`` and ``label`` are read-only (the image array is shared between the structures of one
    case): copy them before modifying.

    Args:
        case_id: case identifier, e.g. ``"phantom_000"``.
        image: ``(H, W, D)`` float32 image (e.g. CT in HU).
        label: ``(H, W, D)`` uint8 binary mask of ``structure`` (1 inside, 0 elsewhere), never empty.
        spacing: voxel size in mm along each array axis.
        structure: label value of the structure in the multi-label map.
        structure_name: its name.
        group: ``"seen"`` or ``"unseen"``.
        affine: ``(4, 4)`` voxel-to-world affine of the image.
        meta: remaining keys of the sample dict (e.g. ``"axis"``, ``"slice"``).
        image_path: the image file, ``""`` if the image was not read from a file.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]
    structure: int
    structure_name: str
    group: str
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    image_path: str = ""

    @property
    def info(self) -> CaseInfo:
        """The label-free description handed to model adapters."""
        return CaseInfo(
            case_id=self.case_id,
            spacing=self.spacing,
            structure=self.structure,
            structure_name=self.structure_name,
            group=self.group,
            affine=self.affine,
            meta=dict(self.meta),
            image_path=self.image_path,
        )


def _load_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Load ``path`` -> (data array as stored, affine, shape); clear errors for missing/unreadable files."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        img = nib.load(str(path))
        if not isinstance(img, SpatialImage):
            raise TypeError(f"not a spatial image ({type(img).__name__})")
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib errors, ...)
        raise ValueError(f"cannot read {what} file {path}: {err}") from err
    return data, affine, tuple(int(s) for s in data.shape)


def _read_only(x: np.ndarray) -> np.ndarray:
    x.flags.writeable = False
    return x


def load_eval_cases(samples: Iterable[Mapping[str, Any]]) -> Iterator[EvalCase]:
    """Turn expanded per-structure sample dicts into :class:`EvalCase` objects, lazily.

    Each sample is ``{"image": path, "label": path, "case_id": str, "structure": int, "structure_name": str,
    "group": "seen" | "unseen", ...}`` (the loader's expanded format; extra keys go to ``EvalCase.meta``). The
    image and the multi-label map are read with nibabel once per file and reused while consecutive samples name
    the same files (keep a case's structures together for speed). The label is binarised to ``== structure``.

    Args:
        samples: iterable of sample dicts.

    Yields:
        One :class:`EvalCase` per sample, in order.

    Raises:
        ValueError: missing keys, unreadable file, image not 3D, image/label shape or affine mismatch, a
            non-integer label map, or a structure absent from the label map of that case.
        FileNotFoundError: a file that does not exist.
    """
    cached_image: tuple[Path, np.ndarray, np.ndarray] | None = None
    cached_label: tuple[Path, np.ndarray, np.ndarray] | None = None
    for index, sample in enumerate(samples):
        missing = [k for k in _REQUIRED_KEYS if k not in sample]
        if missing:
            raise ValueError(f"sample #{index} is missing keys {missing}; got keys {sorted(sample)}.")
        case_id = str(sample["case_id"])
        structure = int(sample["structure"])
        image_path = Path(sample["image"])
        label_path = Path(sample["label"])

        if cached_image is None or cached_image[0] != image_path:
            data, affine, shape = _load_nifti(image_path, "image")
            if len(shape) != 3:
                raise ValueError(f"image {image_path} must be a single-channel 3D volume (H, W, D), got {shape}.")
            cached_image = (image_path, _read_only(np.asarray(data, dtype=np.float32)), affine)
            logger.debug("loaded image %s %s", image_path, shape)
        if cached_label is None or cached_label[0] != label_path:
            data, affine, shape = _load_nifti(label_path, "label")
            if not np.issubdtype(data.dtype, np.integer):
                rounded = np.rint(data)
                if not np.array_equal(rounded, data):
                    raise ValueError(f"label file {label_path} holds non-integer values; expected a label map.")
                data = rounded
            cached_label = (label_path, np.asarray(data).astype(np.int64), affine)
        _, image, image_affine = cached_image
        _, labelmap, label_affine = cached_label

        if labelmap.shape != image.shape:
            raise ValueError(
                f"case {case_id}: label {label_path} has shape {labelmap.shape} but image {image_path} has "
                f"shape {image.shape}."
            )
        if not np.allclose(label_affine, image_affine, atol=1e-3):
            raise ValueError(f"case {case_id}: label {label_path} and image {image_path} have different affines.")
        label = (labelmap == structure).astype(np.uint8)
        if not label.any():
            raise ValueError(
                f"case {case_id}: structure {structure} ({sample['structure_name']}) is empty in {label_path}."
            )
        meta = {k: v for k, v in sample.items() if k not in _REQUIRED_KEYS}
        yield EvalCase(
            case_id=case_id,
            image=image,
            label=_read_only(label),
            spacing=tuple(float(s) for s in voxel_sizes(image_affine)),
            structure=structure,
            structure_name=str(sample["structure_name"]),
            group=str(sample["group"]),
            affine=image_affine.copy(),
            meta=meta,
            image_path=str(image_path),
        )
