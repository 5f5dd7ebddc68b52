"""The server's memory of the last result it sent, per model, image (or session) and structure.

A viewer such as 3D Slicer sends back the whole current segment: the result the server sent plus the user's edits. To
tell the edits apart, the server remembers what it sent: slices where the upload differs from the remembered result
are the user's corrections; the others are still the model's and are predicted again (:func:`correction_slices`).

Conventions: masks are bool arrays ``(H, W, D)`` indexed as stored; slice indices count along the stored array axis
``axis`` (the axis that runs along the propagation direction, found from the affine).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RememberedResult", "ResultMemory", "correction_slices", "memory_key"]


@dataclass(frozen=True)
class RememberedResult:
    """A result the server sent.

    Attributes:
        mask: bool ``(H, W, D)``, the result as sent (stored grid).
        affine: ``(4, 4)`` affine of that grid.
        axis: the stored slice axis of the propagation.
        user_slices: the slices the user drew so far (including slices marked empty), ascending.
    """

    mask: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    axis: int
    user_slices: tuple[int, ...] = field(default=())

    def matches(self, shape: Sequence[int], affine: np.ndarray, axis: int, atol: float = 1e-3) -> bool:
        """Whether an upload of ``shape`` / ``affine`` (slice axis ``axis``) lies on the remembered grid."""
        return (
            tuple(shape) == self.mask.shape
            and axis == self.axis
            and np.allclose(np.asarray(affine, dtype=np.float64), self.affine, atol=atol)
        )


def memory_key(model: str, request: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(model, image, structure)``: whose result it is.

    ``image`` is the image file the request resolved to (a datastore image, or a session's own copy: MONAI Label's
    ``session_id`` gives each session its file). ``structure`` is the viewer's segment name (3D Slicer's
    ``selected_label_name`` or ``label``) or the ``label_value``.
    """
    structure = request.get("selected_label_name") or request.get("label_name") or request.get("label_value") or ""
    return model, str(request.get("image", "")), str(structure)


class ResultMemory:
    """A bounded, thread-safe map ``key -> RememberedResult`` (least recently used entries go first).

    Args:
        capacity: most results kept (each costs one bit per voxel of its image, packed).

    Raises:
        ValueError: ``capacity < 1``.
    """

    def __init__(self, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Any, tuple[bytes, tuple[int, ...], np.ndarray, int, tuple[int, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Any, result: RememberedResult) -> None:
        """Remember ``result`` under ``key`` (replacing what was there)."""
        packed = np.packbits(np.asarray(result.mask, dtype=bool).ravel()).tobytes()
        affine = np.array(result.affine, dtype=np.float64)
        entry = (packed, tuple(result.mask.shape), affine, result.axis, result.user_slices)
        with self._lock:
            self._items[key] = entry
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: Any) -> RememberedResult | None:
        """The result remembered under ``key``, or ``None``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
        packed, shape, affine, axis, user_slices = entry
        count = int(np.prod(shape))
        mask = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count).astype(bool).reshape(shape)
        return RememberedResult(mask, affine, axis, user_slices)

    def forget(self, key: Any) -> None:
        """Drop what is remembered under ``key`` (nothing if there is none)."""
        with self._lock:
            self._items.pop(key, None)


def correction_slices(upload: np.ndarray, previous: RememberedResult | None, axis: int) -> tuple[list[int], list[int]]:
    """The user's slices in an upload: ``(drawn, empty)``, slice indices along ``axis``, ascending.

    Without ``previous`` every non-empty slice of ``upload`` is the user's (a first request). With it, the user's
    slices are those drawn before (``previous.user_slices``) and those where ``upload`` differs from the result sent;
    among them, ``drawn`` hold the structure and ``empty`` hold none (the user erased it there).

    An upload that is not built on the result sent (none of the slices the model predicted is in it unchanged, e.g. a
    client that sends only its annotated slices each time) is a first request again: ``previous`` is ignored.

    Args:
        upload: bool ``(H, W, D)``, the viewer's current segment.
        previous: the result sent last for this image and structure (on the same grid), or ``None``.
        axis: the stored slice axis.

    Raises:
        ValueError: ``upload`` is not 3D or ``previous`` has another shape.
    """
    if upload.ndim != 3:
        raise ValueError(f"the upload must be a 3D label volume, got shape {upload.shape}")
    per_slice = np.moveaxis(upload, axis, 0).reshape(upload.shape[axis], -1)
    filled = np.asarray(per_slice.any(axis=1), dtype=bool)
    if previous is None:
        return np.flatnonzero(filled).tolist(), []
    if previous.mask.shape != upload.shape:
        raise ValueError(f"the remembered result has shape {previous.mask.shape}, the upload {upload.shape}")
    sent = np.moveaxis(previous.mask, axis, 0).reshape(upload.shape[axis], -1)
    differs = np.asarray((per_slice != sent).any(axis=1), dtype=bool)
    predicted = np.asarray(sent.any(axis=1), dtype=bool)
    predicted[list(previous.user_slices)] = False
    if predicted.any() and differs[predicted].all():
        return np.flatnonzero(filled).tolist(), []
    changed = set(np.flatnonzero(differs).tolist())
    user = sorted(changed | {int(s) for s in previous.user_slices})
    return [s for s in user if filled[s]], [s for s in user if not filled[s]]
