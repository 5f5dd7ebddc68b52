"""Interaction kinds: how a viewer's request becomes the datalist item of a bundle's ``inference.json``.

A MONAI Label request is a flat dict: ``image`` (the image path, resolved from the datastore), the uploaded
``label`` file path if the viewer sent one, and the JSON ``params`` (clicks, options). Each bundle's inference config
reads a datalist item with its own keys (``{"image", "annotation"}`` for slice propagation, ``{"image",
"foreground", "background"}`` for clicks). An :class:`InteractionKind` is the small adapter between the two, plus
what MONAI Label reports to viewers (the ``type`` that makes a viewer show its click or segmentation tools).

Kinds live in a registry, so a new interaction (box + scribbles, ...) is one :func:`register_kind` call and one line
of bundle-to-kind configuration; the app and its tasks do not change. Built-in kinds:

``slice_propagation``
    The viewer uploads its current label volume (the user's annotated slices) as the multipart file ``label``;
    see :func:`~common.monailabel.items.slice_propagation_item`.
``box_scribbles``
    The viewer sends a box (MONAI Label's ``roi``) and optionally uploads its scribbles as a label volume, as 3D
    Slicer's scribbles tool does; see :func:`~common.monailabel.items.box_scribbles_item`.
``clicks``
    The viewer sends ``foreground`` / ``background`` clicks (voxel indices ``[i, j, k]`` of the image as stored) in
    ``params``, as MONAI Label's DeepGrow clients do; see :func:`~common.monailabel.items.click_item`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.monailabel.items import box_scribbles_item, click_item, slice_propagation_item

__all__ = ["INFER_TYPES", "InteractionKind", "ItemBuilder", "get_kind", "register_kind", "registered_kinds"]

logger = logging.getLogger(__name__)

#: ``(request, workdir) -> datalist item keys``; ``workdir`` is an empty per-request folder for temporary files.
ItemBuilder = Callable[[Mapping[str, Any], Path], dict[str, Any]]

#: MONAI Label ``InferType`` values (``monailabel.interfaces.tasks.infer_v2.InferType``); viewers pick their tools by
#: these (``deepgrow``: click tools; ``scribbles``: uploads the label map; ``segmentation``: image only).
INFER_TYPES: tuple[str, ...] = (
    "segmentation",
    "annotation",
    "classification",
    "deepgrow",
    "deepedit",
    "scribbles",
    "detection",
    "others",
)


@dataclass(frozen=True)
class InteractionKind:
    """One way a user interacts with a model through MONAI Label.

    Args:
        name: registry key, used in the bundle-to-kind configuration (``--conf kinds``).
        infer_type: the MONAI Label ``InferType`` value reported in ``/info`` (one of :data:`INFER_TYPES`).
        build_item: turns the request into the datalist item keys the bundle's ``inference.json`` reads (besides
            ``image``, which the request already holds as a path). It raises ``ValueError`` /
            ``FileNotFoundError`` with a message for the user when the request lacks what the kind needs.
        description: one line for ``/info``.
        dimension: the ``dimension`` reported to viewers; ``None`` takes the length of the bundle's
            ``network_data_format.inputs.image.spatial_shape``. Viewers act on it: 3D Slicer sends a 2D DeepGrow
            model (``2``) only the clicks of the current slice and updates only that slice.
        remembers_result: the server remembers the last result it sent per image and segment and passes it to
            ``build_item`` as ``request["previous_result"]``, so that the upload's edits can be told from the result
            (:mod:`common.monailabel.memory`).

    Raises:
        ValueError: empty name or unknown ``infer_type``.
    """

    name: str
    infer_type: str
    build_item: ItemBuilder
    description: str
    dimension: int | None = None
    remembers_result: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"kind name must be a non-empty identifier (letters, digits, _), got {self.name!r}")
        if self.infer_type not in INFER_TYPES:
            raise ValueError(f"kind {self.name!r}: infer_type must be one of {INFER_TYPES}, got {self.infer_type!r}")
        if self.dimension is not None and self.dimension not in (2, 3):
            raise ValueError(f"kind {self.name!r}: dimension must be 2, 3 or None, got {self.dimension!r}")


_REGISTRY: dict[str, InteractionKind] = {}


def register_kind(kind: InteractionKind, replace: bool = False) -> InteractionKind:
    """Add ``kind`` to the registry and return it.

    Args:
        kind: the kind to register under ``kind.name``.
        replace: allow replacing a registered kind of the same name.

    Raises:
        ValueError: a kind of that name is registered and ``replace`` is false.
    """
    if kind.name in _REGISTRY and not replace:
        raise ValueError(f"interaction kind {kind.name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[kind.name] = kind
    logger.debug("registered interaction kind %s (%s)", kind.name, kind.infer_type)
    return kind


def get_kind(name: str) -> InteractionKind:
    """The registered kind called ``name``.

    Raises:
        ValueError: no such kind (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown interaction kind {name!r}; registered kinds: {sorted(_REGISTRY)}") from None


def registered_kinds() -> dict[str, InteractionKind]:
    """A copy of the registry, name -> kind."""
    return dict(_REGISTRY)


register_kind(
    InteractionKind(
        name="slice_propagation",
        infer_type="scribbles",
        build_item=slice_propagation_item,
        description="propagates the user's annotated slices (uploaded label volume) through the volume",
        dimension=3,
        remembers_result=True,
    )
)
register_kind(
    InteractionKind(
        name="clicks",
        infer_type="deepgrow",
        build_item=click_item,
        description="segments a structure from foreground/background clicks",
    )
)
register_kind(
    InteractionKind(
        name="box_scribbles",
        infer_type="scribbles",
        build_item=box_scribbles_item,
        description="segments what a box holds; scribbles (uploaded label volume) correct it by fine-tuning",
    )
)
