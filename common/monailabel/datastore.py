"""A MONAI Label local datastore that checks what it is asked to store before storing it.

MONAI Label's ``LocalDatastore`` joins label tags and image ids into paths unchecked (``PUT /datastore/label?tag=
../../..`` writes outside the studies folder, ``DELETE`` deletes there) and stores any upload as a label (a ``.txt``,
a truncated NIfTI, a mask on another grid), after which every training fails. :class:`CheckedDatastore` refuses:

- tags and image ids that are not plain names (:func:`~common.monailabel.params.check_label_tag`,
  :func:`check_image_id`);
- images that cannot be read as 3D images;
- labels that cannot be read as images, are not integer-valued and non-negative, or do not lie on the image's grid
  (same shape, affine within ``affine_atol`` mm).

Every refusal is a :class:`RejectedError` (an ``HTTPException`` with status 400 and a ``ValueError``), so MONAI
Label's own endpoints answer it with 400 and the reason, and the app's code catches it as a ``ValueError``.

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from common.monailabel.items import read_volume
from common.monailabel.params import check_label_tag

__all__ = ["CheckedDatastore", "RejectedError", "check_image_id", "read_grid"]

logger = logging.getLogger(__name__)

# a file name without directory parts: no separator, no control character, no leading dot or dash, at most 200
_IMAGE_ID = re.compile(r"^[^./\\\x00-\x1f\x7f-][^/\\\x00-\x1f\x7f]{0,199}$")


class RejectedError(HTTPException, ValueError):
    """A request the datastore refuses: HTTP ``status`` (400) with ``detail`` in FastAPI, a ``ValueError``
    elsewhere."""

    def __init__(self, detail: str, status: int = 400) -> None:
        HTTPException.__init__(self, status_code=status, detail=detail)

    def __str__(self) -> str:
        return str(self.detail)


def check_image_id(image_id: Any) -> str:
    """``image_id`` if it can name a file of the studies folder: at most 200 characters, no path separator, no
    control character, no ``..``, not starting with ``.`` or ``-``, not blank. (3D Slicer sends its volume names,
    e.g. ``"3: AX T1 POST"``.)

    Raises:
        RejectedError: anything else (e.g. a file path).
    """
    if (
        not isinstance(image_id, str)
        or not _IMAGE_ID.fullmatch(image_id)
        or ".." in image_id
        or not image_id.strip()
        or image_id != image_id.strip()
    ):
        raise RejectedError(
            f"image id {image_id!r} is not allowed: use 1 to 200 characters without path separators, control "
            "characters, '..', leading dot or dash, or surrounding spaces"
        )
    return image_id


def _tag(tag: Any) -> str:
    try:
        return check_label_tag(tag)
    except ValueError as err:
        raise RejectedError(str(err)) from None


def read_grid(path: str | Path, with_data: bool = False) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    """Spatial shape, ``(4, 4)`` RAS affine and (optionally) the voxels of an image file
    (:func:`common.monailabel.items.read_volume`).

    Raises:
        RejectedError: the file cannot be read as an image.
    """
    try:
        shape, affine, data, _ = read_volume(path, with_data)
    except ValueError as err:
        raise RejectedError(str(err)) from None
    return shape, affine, data


class CheckedDatastore(LocalDatastore):
    """``LocalDatastore`` with the checks of the module docstring (same constructor arguments, plus ``affine_atol``).

    Args:
        affine_atol: largest difference (mm) between a label's affine and its image's.
    """

    def __init__(self, *args: Any, affine_atol: float = 1e-3, **kwargs: Any) -> None:
        self.affine_atol = affine_atol
        super().__init__(*args, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Store a new image after checking its id and that it is a readable 3D image.

        Raises:
            RejectedError: bad id, an id already taken, or an unreadable / not 3D image.
        """
        check_image_id(image_id)
        if self.get_image_uri(image_id):
            raise RejectedError(
                f"image id {image_id!r} is taken: the stored image (and its labels) is not replaced; remove it first "
                "or choose another id",
                status=409,
            )
        shape, _, _ = read_grid(image_filename)
        if len(shape) != 3:
            raise RejectedError(f"the uploaded image must be a 3D volume, got shape {shape}")
        added: str = super().add_image(image_id, image_filename, image_info)
        return added

    def check_label(self, image_id: str, label_filename: str) -> tuple[int, ...]:
        """Check that ``label_filename`` is a label for image ``image_id``; returns its label values (no 0).

        Raises:
            RejectedError: unknown image, unreadable label, non-integer or negative values, another shape or affine.
        """
        image = self.get_image_uri(image_id) if isinstance(image_id, str) else ""
        if not image:
            raise RejectedError(f"unknown image id {image_id!r}: see GET /datastore/?output=all for the ids")
        shape, affine, _ = read_grid(image)
        label_shape, label_affine, data = read_grid(label_filename, with_data=True)
        assert data is not None
        if label_shape != shape:
            raise RejectedError(f"the label's shape {label_shape} differs from image {image_id!r}'s shape {shape}")
        if not np.allclose(label_affine, affine, atol=self.affine_atol):
            raise RejectedError(
                f"the label does not lie on image {image_id!r}'s grid: affine\n{np.round(label_affine, 4)}\n"
                f"differs from the image's\n{np.round(affine, 4)}"
            )
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)) or np.any(data < 0):
            raise RejectedError("a label must hold non-negative integer label values (0 = background)")
        return tuple(int(v) for v in np.unique(data) if v != 0)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Store a label after :meth:`check_label` and checking the tag (nothing is written when a check fails)."""
        _tag(label_tag)
        values = self.check_label(image_id, label_filename)
        logger.info("label %s for %s accepted (values %s)", label_tag, image_id, list(values))
        saved: str = super().save_label(image_id, label_filename, label_tag, label_info)
        return saved

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """MONAI Label's ``remove_label`` with the tag checked."""
        super().remove_label(label_id, _tag(label_tag))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        """MONAI Label's ``get_label_uri`` with the tag checked."""
        uri: str = super().get_label_uri(label_id, _tag(label_tag))
        return uri

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        """MONAI Label's ``get_label_info`` with the tag checked."""
        info: dict[str, Any] = super().get_label_info(label_id, _tag(label_tag))
        return info

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        """MONAI Label's ``update_label_info`` with the tag checked."""
        super().update_label_info(label_id, _tag(label_tag), info)
