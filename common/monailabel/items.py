"""Datalist items from MONAI Label requests, one builder per built-in interaction kind.

A builder reads the request (``image`` path, optional uploaded ``label`` path, the JSON ``params``) and returns the
keys the bundle's ``inference.json`` datalist item needs. It checks what only the request can tell (a missing upload,
an ambiguous multi-label annotation) and leaves the checks of array contents (click coordinates inside the image,
annotation shape and affine) to the bundle's own transforms, which raise ``ValueError`` with the file names.

Conventions: label volumes are NIfTI arrays indexed ``[i, j, k]`` as stored; clicks are voxel indices in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage

from common.data.geometry import affine_of, axial_axis
from common.interaction.requests import SCRIBBLES_BG_VALUE, SCRIBBLES_FG_VALUE
from common.monailabel.memory import RememberedResult, correction_slices

__all__ = [
    "SCRIBBLES_BG_VALUE",
    "SCRIBBLES_FG_VALUE",
    "binarise_annotation",
    "box_scribbles_item",
    "click_item",
    "read_label_volume",
    "read_volume",
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


def read_volume(path: str | Path, with_data: bool = True) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None, Any]:
    """Spatial shape, ``(4, 4)`` RAS affine, voxels (``None`` unless ``with_data``) and NIfTI header (``None`` for
    other formats) of an image file.

    NIfTI is read with nibabel (only the header unless ``with_data``); other formats (3D Slicer's ``.nrrd`` /
    ``.seg.nrrd``, MetaImage) with MONAI's ``LoadImage`` (ITK, affine converted to RAS). A trailing singleton dimension
    (a 4D file of one volume) is dropped.

    Raises:
        ValueError: the file cannot be read as an image (truncated, not an image, ...), naming the file.
    """
    path = Path(path)
    try:
        if _is_nifti(path):
            image: Any = nib.load(str(path))
            shape = tuple(int(n) for n in image.shape)
            data = np.asanyarray(image.dataobj) if with_data else None
            affine, header = np.asarray(image.affine, dtype=np.float64), image.header
        else:
            loaded = LoadImage(image_only=True)(str(path))
            shape, header = tuple(int(n) for n in loaded.shape), None
            data = np.asarray(loaded) if with_data else None
            found = affine_of(loaded)
            affine = np.eye(4) if found is None else found
    except Exception as err:  # nibabel / ITK raise many kinds for a file that is not an image
        raise ValueError(f"cannot read {path.name} as an image ({type(err).__name__}: {err})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
        data = data[..., 0] if data is not None else None
    return shape, affine, data, header


def read_label_volume(path: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Voxels, ``(4, 4)`` RAS affine and NIfTI header (``None`` for other formats) of an uploaded label volume
    (:func:`read_volume`).

    Raises:
        ValueError: the file cannot be read as an image, or it holds non-integer values.
    """
    try:
        _, affine, data, header = read_volume(path)
    except ValueError as err:
        raise ValueError(
            f"{str(err).replace('cannot read', 'cannot read the uploaded label', 1)}; uploads must be label volumes "
            "(NIfTI .nii.gz, NRRD, ...) on the image's grid"
        ) from None
    assert data is not None
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"the uploaded label {path.name} must hold integer label values, got dtype {data.dtype}")
    return data, affine, header


def _label_info_values(request: Mapping[str, Any]) -> dict[str, Any]:
    """``{segment name: label value as sent}`` from 3D Slicer's ``label_info`` (``[{"name", "id"}]``; ``"idx"`` in
    its save requests); empty without ``label_info``.

    Raises:
        ValueError: ``label_info`` is not a list.
    """
    label_info = request.get("label_info")
    if label_info is None:
        return {}
    if not isinstance(label_info, list | tuple):
        raise ValueError(f"label_info must be a list of {{'name': ..., 'id': ...}}, got {label_info!r}")
    return {
        str(e["name"]): e.get("id", e.get("idx"))
        for e in label_info
        if isinstance(e, Mapping) and e.get("name") and e.get("id", e.get("idx")) is not None
    }


def _named_value(request: Mapping[str, Any], values: Sequence[int]) -> int | None:
    """The label value of the segment the viewer names (3D Slicer: ``selected_label_name`` or ``label`` with
    ``label_info``), ``None`` when the request names none."""
    name = request.get("selected_label_name") or request.get("label_name")
    if not name or request.get("label_info") is None:
        return None
    ids = _label_info_values(request)
    if name not in ids:
        raise ValueError(f"the selected segment {name!r} is not among the uploaded segments {sorted(ids)} (label_info)")
    value = _label_value(ids[name])
    if value not in values:
        raise ValueError(
            f"the selected segment {name!r} (label value {value}) is empty in the upload: draw it on at least one "
            "slice first"
        )
    return value


def binarise_annotation(
    path: Path, label_value: int | None, request: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """The user's segment in an uploaded label volume, as a bool volume.

    Args:
        path: the uploaded label volume, ``(H, W, D)`` indexed as stored, non-zero on annotated slices.
        label_value: the label value of the structure; ``None``: the segment the viewer names (see
            :func:`_named_value`), else a binary volume or one with a single non-zero value.
        request: the request, for the segment name and ``label_info``.

    Returns:
        ``(mask, affine, header)``: bool ``(H, W, D)``, the upload's affine and NIfTI header (``None`` otherwise).

    Raises:
        ValueError: unreadable upload; several label values and no way to tell which one; a value absent from the
            volume. Messages name the file and the values found.
    """
    data, affine, header = read_label_volume(path)
    values = sorted(int(v) for v in np.unique(data) if v != 0)
    if label_value is None and request is not None:
        label_value = _named_value(request, values)
    if label_value is None:
        if len(values) > 1:
            raise ValueError(
                f"the uploaded label {path.name} holds several label values {values}: say which structure to "
                'propagate with params {"label_value": <value>} or, as 3D Slicer does, "selected_label_name" and '
                '"label_info"'
            )
        label_value = values[0] if values else 1
    elif label_value not in values:
        raise ValueError(
            f"label_value {label_value} does not occur in the uploaded label {path.name} (values {values})"
        )
    return data == label_value, affine, header


def slice_propagation_item(request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Item ``{"annotation", "empty_slices", "user_slices", "slice_axis"}`` for the slice-propagation bundle.

    The viewer uploads its current label volume as the multipart file ``label`` (MONAI Label stores the upload and
    passes its path as ``request["label"]``). It must lie on the image's grid. Which segment is the structure:
    ``params["label_value"]``, else the segment 3D Slicer names (``selected_label_name`` with ``label_info``), else the
    upload's only non-zero value.

    The user's slices (along the stored axis that runs I-S, the propagation axis): every non-empty slice on a first
    request; with ``request["previous_result"]`` (the result the server sent last for this image and segment,
    :class:`~common.monailabel.memory.RememberedResult`), the slices drawn before plus those where the upload differs
    from that result (:func:`~common.monailabel.memory.correction_slices`). Their non-empty ones become the
    ``annotation`` file (every other slice is predicted again); slices the user emptied become ``empty_slices``,
    where the propagation stops (:class:`~common.propagation.StopAtEmptyUserSlicesd`).

    Args:
        request: the MONAI Label request.
        workdir: per-request folder for the annotation file.

    Raises:
        ValueError: no upload, an unreadable or ambiguous one, or no slice with the structure among the user's.
        FileNotFoundError: the uploaded label path does not exist.
    """
    label = request.get("label")
    if not isinstance(label, str) or not label:
        raise ValueError(
            "slice propagation needs the user's annotated slices: upload the label volume (same grid as the image, "
            "non-zero on the annotated slices) as the multipart file 'label'"
        )
    path = Path(label)
    if not path.is_file():
        raise FileNotFoundError(
            f"the annotation {label!r} does not exist: upload the label volume as the multipart file 'label'"
        )
    mask, affine, header = binarise_annotation(path, _label_value(request.get("label_value")), request)
    if mask.ndim != 3:
        raise ValueError(f"the uploaded label {path.name} must be a 3D volume, got shape {mask.shape}")
    axis = axial_axis(affine)
    previous = request.get("previous_result")
    if not isinstance(previous, RememberedResult) or not previous.matches(mask.shape, affine, axis):
        previous = None
    drawn, empty = correction_slices(mask, previous, axis)
    if not drawn:
        raise ValueError(
            f"nothing to propagate: the uploaded annotation {path.name} is empty (no slice with the structure among "
            f"the user's slices{'; only emptied slices ' + str(empty) if empty else ''})"
        )
    annotation = np.zeros(mask.shape, dtype=np.uint8)
    index = [slice(None)] * 3
    index[axis] = drawn  # type: ignore[call-overload]
    annotation[tuple(index)] = mask[tuple(index)]
    if header is not None:
        header = header.copy()
        header.set_data_dtype(np.uint8)
    out = workdir / "annotation.nii.gz"
    nib.save(nib.Nifti1Image(annotation, affine, header), str(out))
    logger.debug("annotation of %s: drawn slices %s, emptied %s (axis %d)", path.name, drawn, empty, axis)
    return {
        "annotation": str(out),
        "empty_slices": empty,
        "user_slices": sorted(drawn + empty),
        "slice_axis": axis,
    }


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
    for name, value in _label_info_values(request).items():
        if name in _SCRIBBLE_NAMES:
            values[_SCRIBBLE_NAMES[name]] = _label_value(value) or 0
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
