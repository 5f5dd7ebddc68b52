"""Datalist items from MONAI Label requests, one builder per built-in interaction kind.

A builder reads the request (``image`` path, optional uploaded ``label`` path, the JSON ``params``) and returns the
keys the bundle's ``inference.json`` datalist item needs. It checks what only the request can tell (a missing upload,
an ambiguous multi-label annotation) and leaves the checks of array contents (click coordinates inside the image,
annotation shape and affine) to the bundle's own transforms, which raise ``ValueError`` with the file names.

Conventions: label volumes are NIfTI arrays indexed ``[i, j, k]`` as stored; clicks are voxel indices in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from common.interaction.requests import SCRIBBLES_BG_VALUE, SCRIBBLES_FG_VALUE

__all__ = [
    "SCRIBBLES_BG_VALUE",
    "SCRIBBLES_FG_VALUE",
    "binarise_annotation",
    "box_scribbles_item",
    "click_item",
    "slice_propagation_item",
]

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _label_value(raw: Any) -> int | None:
    """The optional ``label_value`` parameter as an int (``None`` when absent)."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(f"label_value must be a positive integer label value, got {raw!r}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond float range (e.g. 10**400)
        raise ValueError(f"label_value must be a positive integer label value, got {raw!r}") from None
    if not np.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"label_value must be a positive integer label value, got {raw!r}")
    return int(value)


def binarise_annotation(path: Path, label_value: int | None, workdir: Path) -> Path:
    """The user's annotation as a binary ``{0, 1}`` volume: ``path`` itself when already binary, else a new file.

    Args:
        path: the uploaded label volume (NIfTI), ``(H, W, D)`` indexed as stored, non-zero on annotated slices.
        label_value: the label value of the structure to propagate; ``None`` accepts a binary volume or one with a
            single non-zero value (e.g. a viewer's only segment exported with value 3).
        workdir: folder for the binarised copy (``annotation.nii.gz``, same affine and header); ``path`` is never
            modified.

    Returns:
        The path of a binary annotation volume.

    Raises:
        ValueError: several label values and no ``label_value``, ``label_value`` absent from the volume, a
            non-integer volume, or a ``label_value`` for a format other than NIfTI. Messages name the file and the
            values found.
    """
    if not _is_nifti(path):
        if label_value is not None:
            raise ValueError(f"label_value needs a NIfTI label upload (.nii or .nii.gz), got {path.name}")
        return path  # other formats go to the bundle as they are; its checks report a non-binary annotation
    image: Any = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"the uploaded label {path.name} must hold integer label values, got dtype {data.dtype}")
    values = sorted(int(v) for v in np.unique(data) if v != 0)
    if label_value is None:
        if values in ([], [1]):
            return path
        if len(values) > 1:
            raise ValueError(
                f"the uploaded label {path.name} holds several label values {values}: "
                'say which structure to propagate with params {"label_value": <value>}'
            )
        label_value = values[0]
    elif label_value not in values:
        raise ValueError(
            f"label_value {label_value} does not occur in the uploaded label {path.name} (values {values})"
        )
    binary = (data == label_value).astype(np.uint8)
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    out = workdir / "annotation.nii.gz"
    nib.save(nib.Nifti1Image(binary, image.affine, header), str(out))
    logger.debug("binarised label value %d of %s into %s", label_value, path, out)
    return out


def slice_propagation_item(request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Item ``{"annotation": path}`` for the slice-propagation bundle (``inference.json`` keys image, annotation).

    The viewer uploads its current label volume as the multipart file ``label`` (MONAI Label stores the upload and
    passes its path as ``request["label"]``). It must lie on the image's grid; non-zero voxels mark the annotated
    slices. With several label values, ``params`` must name one: ``{"label_value": 4}``.

    Args:
        request: the MONAI Label request.
        workdir: per-request folder for a binarised copy of the annotation.

    Raises:
        ValueError: no uploaded label, or an ambiguous / inconsistent ``label_value`` (see
            :func:`binarise_annotation`).
        FileNotFoundError: the uploaded label path does not exist.
    """
    label = request.get("label")
    if not isinstance(label, str) or not label:
        raise ValueError(
            "slice propagation needs the user's annotated slices: upload the label volume (same grid as the image, "
            "non-zero on the annotated slices) as the multipart file 'label', and do not set 'label' in params"
        )
    path = Path(label)
    if not path.is_file():
        raise FileNotFoundError(
            f"the annotation {label!r} does not exist: upload the label volume as the multipart file 'label' "
            "(a 'label' entry in params replaces the upload)"
        )
    return {"annotation": str(binarise_annotation(path, _label_value(request.get("label_value")), workdir))}


def click_item(request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Item ``{"foreground": [...], "background": [...]}`` for a click bundle, from the request's ``params``.

    Clicks are lists of voxel indices ``[i, j, k]`` of the image as stored (what MONAI Label's DeepGrow clients
    send). Coordinates are checked against the image by the bundle's click transform; here only the presence of at
    least one click is checked, so that an empty request gets a clear answer whatever the bundle.

    Args:
        request: the MONAI Label request.
        workdir: unused (the signature every item builder shares).

    Raises:
        ValueError: ``foreground`` / ``background`` is not a list, or both are empty.
    """
    item: dict[str, Any] = {}
    for key in ("foreground", "background"):
        clicks = request.get(key)
        if clicks is None:
            clicks = []
        if not isinstance(clicks, list | tuple):
            raise ValueError(f"{key} must be a list of clicks [[i, j, k], ...] (voxel indices), got {clicks!r}")
        item[key] = [list(c) if isinstance(c, list | tuple) else c for c in clicks]
    if not item["foreground"] and not item["background"]:
        raise ValueError('no clicks: send params {"foreground": [[i, j, k], ...], "background": [...]}')
    return item


_SCRIBBLE_NAMES = {"foreground_scribbles": "scribbles_fg_value", "background_scribbles": "scribbles_bg_value"}


def _scribble_values(request: Mapping[str, Any]) -> dict[str, int]:
    """Label values of the foreground/background scribbles: ``label_info`` (3D Slicer), else params, else defaults."""
    values = {"scribbles_fg_value": SCRIBBLES_FG_VALUE, "scribbles_bg_value": SCRIBBLES_BG_VALUE}
    for key in values:
        if request.get(key) is not None:
            values[key] = _label_value(request[key]) or values[key]
    label_info = request.get("label_info")
    if label_info is not None:
        if not isinstance(label_info, list | tuple):
            raise ValueError(f"label_info must be a list of {{'name': ..., 'id': ...}}, got {label_info!r}")
        for entry in label_info:
            if isinstance(entry, Mapping) and entry.get("name") in _SCRIBBLE_NAMES and entry.get("id") is not None:
                values[_SCRIBBLE_NAMES[str(entry["name"])]] = _label_value(entry["id"]) or 0
    if values["scribbles_fg_value"] == values["scribbles_bg_value"]:
        raise ValueError(f"foreground and background scribbles share the label value {values['scribbles_fg_value']}")
    return values


def box_scribbles_item(request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Item ``{"box", "scribbles"?, "scribbles_fg_value", "scribbles_bg_value"}`` for the BIFSeg bundle.

    The box comes as ``params["box"]`` (``[[i0, j0, k0], [i1, j1, k1]]``, stop exclusive) or as MONAI Label's
    ``params["roi"]`` (``[i0, i1, j0, j1, k0, k1]``, what 3D Slicer's scribbles tool sends); voxel indices of the image
    as stored, checked against the image by the bundle (:class:`common.boxes.BoxMaskd`). Scribbles are optional: the
    viewer's uploaded label volume (multipart file ``label``), foreground and background scribbles told apart by their
    label values (``label_info`` entries ``foreground_scribbles`` / ``background_scribbles`` as 3D Slicer sends them,
    else ``params`` ``scribbles_fg_value`` / ``scribbles_bg_value``, else MONAI Label's defaults 3 / 2).

    Args:
        request: the MONAI Label request.
        workdir: unused (the signature every item builder shares).

    Raises:
        ValueError: no box, or equal scribble values.
        FileNotFoundError: the uploaded label path does not exist.
    """
    box = request.get("box")
    if box is None:
        box = request.get("roi")
    if box is None or (isinstance(box, list | tuple) and len(box) == 0):
        raise ValueError(
            'no box: send params {"roi": [i0, i1, j0, j1, k0, k1]} (MONAI Label) or {"box": [[i0, j0, k0], '
            "[i1, j1, k1]]} in voxel indices of the image as stored"
        )
    item: dict[str, Any] = {"box": box, **_scribble_values(request)}
    label = request.get("label")
    if isinstance(label, str) and label:
        path = Path(label)
        if not path.is_file():
            raise FileNotFoundError(f"the scribbles {label!r} do not exist: upload them as the multipart file 'label'")
        item["scribbles"] = str(path)
    return item
