"""Per-structure views of multi-label volumes.

A multi-label volume (0 = background, one integer per structure) is turned into binary segmentation samples, one per
structure present (``level="volume"``) or one per slice containing the structure (``level="slice"``)::

    {"image": "/abs/img.nii.gz", "label": "/abs/lab.nii.gz", "case_id": "phantom_000",
     "structure": 4, "structure_name": "kidney_right", "group": "unseen"}          # + {"axis": 2, "slice": 37}

The dictionary transforms :class:`SelectStructured` and :class:`SelectSliced` then turn the loaded multi-label
``"label"`` into the binary mask of ``d["structure"]`` and pick slice ``d["slice"]`` along ``d["axis"]``. Typical
bundle pipeline: ``LoadImaged -> EnsureChannelFirstd -> SelectStructured -> SelectSliced (2D models) -> ...``.

Training lists must be built with ``group="seen"`` so that unseen structures never reach training.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

from common.data.msd import GROUPS, MSDDataset, case_id_from_path, load_label_array
from common.transforms.provenance import source_name

__all__ = [
    "LEVELS",
    "SelectSliced",
    "SelectStructured",
    "binary_label",
    "expand_structures",
    "resolve_structures",
]

logger = logging.getLogger(__name__)

#: Expansion levels of :func:`expand_structures`.
LEVELS: tuple[str, ...] = ("volume", "slice")


def _structure_table(dataset_or_labels: MSDDataset | Mapping[Any, str]) -> tuple[dict[int, str], dict[int, str]]:
    """Return ``(value -> name, value -> group)`` for the non-background structures."""
    if isinstance(dataset_or_labels, MSDDataset):
        names = dataset_or_labels.structures()
        return names, {v: dataset_or_labels.group_of(v) for v in names}
    if not isinstance(dataset_or_labels, Mapping):
        raise ValueError(
            f"dataset_or_labels must be an MSDDataset or a {{value: name}} mapping, got {type(dataset_or_labels)}"
        )
    names = {}
    for key, name in dataset_or_labels.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"label table key {key!r} is not an integer label value") from None
        if value != 0:
            names[value] = str(name)
    if not names:
        raise ValueError(f"label table {dict(dataset_or_labels)!r} has no structure besides background")
    names = dict(sorted(names.items()))
    return names, dict.fromkeys(names, "seen")


def resolve_structures(
    dataset_or_labels: MSDDataset | Mapping[Any, str],
    structures: Sequence[str | int] | str | int | None = None,
    group: str | None = None,
) -> dict[int, str]:
    """Select structures by name or label value and/or by group.

    Args:
        dataset_or_labels: an :class:`MSDDataset` or a ``{value: name}`` table (then every structure is seen).
        structures: names or label values; ``None`` for all (of ``group``).
        group: ``None``, ``"seen"`` or ``"unseen"``.

    Returns:
        Selected ``{label value: name}``, sorted by value.

    Raises:
        ValueError: unknown group or structure (the message lists the valid names), background requested, or a
            requested structure that is not in ``group``.
    """
    names, groups = _structure_table(dataset_or_labels)
    if group is not None and group not in GROUPS:
        raise ValueError(f"group must be None, 'seen' or 'unseen', got {group!r}")
    valid = ", ".join(f"{v} {n!r}" for v, n in names.items())
    if structures is None:
        selected = list(names)
    else:
        requested = [structures] if isinstance(structures, (str, int, np.integer)) else list(structures)
        by_name = {n: v for v, n in names.items()}
        selected = []
        for s in requested:
            if isinstance(s, str) and s in by_name:
                value = by_name[s]
            elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and int(s) in names:
                value = int(s)
            else:
                raise ValueError(f"unknown structure {s!r}; valid structures: {valid}")
            if group is not None and groups[value] != group:
                raise ValueError(f"structure {names[value]!r} is {groups[value]}, not in the requested group {group!r}")
            if value not in selected:
                selected.append(value)
        selected.sort()
    return {v: names[v] for v in selected if group is None or groups[v] == group}


def _voxel_counts(label: np.ndarray, values: Sequence[int], level: str, axis: int) -> dict[int, np.ndarray]:
    """Per structure: total voxel count (``level="volume"``, shape ``()``) or per-slice counts along ``axis``."""
    counts: dict[int, np.ndarray] = {}
    if level == "volume":
        present, n = np.unique(label, return_counts=True)
        table = dict(zip(present.tolist(), n.tolist(), strict=True))
        return {v: np.asarray(table.get(v, 0)) for v in values}
    moved = np.moveaxis(label, axis, 0).reshape(label.shape[axis], -1)
    for v in values:
        counts[v] = np.count_nonzero(moved == v, axis=1)
    return counts


def expand_structures(
    items: Sequence[Mapping[str, Any]],
    dataset_or_labels: MSDDataset | Mapping[Any, str],
    level: str = "volume",
    axis: int = 2,
    structures: Sequence[str | int] | None = None,
    group: str | None = None,
    min_voxels: int = 1,
) -> list[dict[str, Any]]:
    """Expand multi-label cases into per-structure binary samples.

    Each label file is loaded once per call (``np.asanyarray(img.dataobj)``); only voxel counts are kept.

    Args:
        items: dicts with a ``"label"`` path (and ``"image"``, ``"case_id"``, ... which are copied through), e.g.
            ``MSDDataset.training``.
        dataset_or_labels: an :class:`MSDDataset` (gives names and seen/unseen groups) or a ``{value: name}`` table
            (every structure seen).
        level: ``"volume"``: one sample per (case, structure) with at least ``min_voxels`` voxels of the structure;
            ``"slice"``: one sample per (case, structure, slice index along ``axis``) whose slice holds at least
            ``min_voxels`` voxels of the structure.
        axis: slice axis as a NIfTI voxel axis of the ``(X, Y, Z)`` array (2 = axial); only used for ``"slice"``.
        structures: restrict to these names or label values (``None``: all).
        group: restrict to ``"seen"`` or ``"unseen"`` structures; training lists must use ``"seen"``.
        min_voxels: minimum number of voxels of the structure in the volume / slice.

    Returns:
        Sample dicts ordered by item, then structure value, then slice: the item's keys plus ``"case_id"``,
        ``"structure"`` (int label value), ``"structure_name"``, ``"group"`` and, for ``"slice"``, ``"axis"`` and
        ``"slice"`` (ints).

    Raises:
        ValueError: bad ``level``/``axis``/``min_voxels``/``group``, unknown structure, an item without ``"label"`` or
            already expanded, or no sample at all. A single case without any selected structure only logs a warning.
        FileNotFoundError: a label file is missing.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise ValueError(f"axis must be a voxel axis 0, 1 or 2 of the (X, Y, Z) label array, got {axis!r}")
    axis = int(axis) % 3
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 1:
        raise ValueError(f"min_voxels must be an integer >= 1, got {min_voxels!r}")
    selected = resolve_structures(dataset_or_labels, structures, group)
    _, groups = _structure_table(dataset_or_labels)
    values = list(selected)

    cache: dict[str, dict[int, np.ndarray]] = {}
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or "label" not in item:
            raise ValueError(f"item {index} must be a dict with a 'label' path, got {item!r}")
        if "structure" in item:
            raise ValueError(f"item {index} is already expanded (has 'structure'): {dict(item)!r}")
        path = str(item["label"])
        if path not in cache:
            cache[path] = _voxel_counts(load_label_array(path), values, level, axis)
        counts = cache[path]
        base = dict(item)
        base.setdefault("case_id", case_id_from_path(str(item.get("image", path))))
        n_before = len(out)
        for value in values:
            sample = {**base, "structure": value, "structure_name": selected[value], "group": groups[value]}
            if level == "volume":
                if int(counts[value]) >= min_voxels:
                    out.append(sample)
            else:
                for k in np.flatnonzero(counts[value] >= min_voxels).tolist():
                    out.append({**sample, "axis": axis, "slice": int(k)})
        if len(out) == n_before:
            logger.warning(
                "case %s (%s) has no %s with >= %d voxels of structures %s",
                base["case_id"],
                path,
                level,
                min_voxels,
                list(selected.values()),
            )
    if not out:
        raise ValueError(
            f"no samples of structures {list(selected.values())} in {len(items)} volumes "
            f"(level={level!r}, min_voxels={min_voxels})"
        )
    logger.debug("expanded %d volumes into %d %s samples", len(items), len(out), level)
    return out


def binary_label(label: np.ndarray, structure: int) -> np.ndarray:
    """Binary mask of one structure of a multi-label array (any shape).

    Args:
        label: integer (or integral float) label array.
        structure: label value of the structure.

    Returns:
        ``uint8`` array of the same shape, 1 where ``label == structure`` and 0 elsewhere.
    """
    return (np.asarray(label) == structure).astype(np.uint8)


def _as_int(value: Any, what: str) -> int:
    """An integer from a Python/numpy/torch scalar (or a 1-element array, e.g. after collation), else a ValueError."""
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        scalar = array.reshape(()).item() if array.size == 1 else None
    except (TypeError, ValueError):
        scalar = None
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if isinstance(scalar, float) and not scalar.is_integer():
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(scalar)


class SelectStructured(MapTransform):
    """Turn multi-label arrays into the binary mask of structure ``d[structure_key]``.

    Works on numpy arrays, torch tensors and MetaTensors of any shape (typically channel-first ``(1, H, W, D)``);
    the output has the input's type, dtype, device and (for MetaTensor) meta data, with values 0/1.

    Args:
        keys: keys of the label arrays to binarise (usually ``"label"``).
        structure_key: key of the structure label value (int) in the data dict.
        allow_empty: if ``False`` (default), raise when the structure is absent from the label.
        allow_missing_keys: don't raise if a key in ``keys`` is missing.

    Raises:
        KeyError: ``structure_key`` is missing from the data dict.
        ValueError: the structure is absent from the label and ``allow_empty`` is ``False``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        structure_key: str = "structure",
        allow_empty: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.structure_key = structure_key
        self.allow_empty = allow_empty

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` arrays replaced by their binary masks."""
        d = dict(data)
        if self.structure_key not in d:
            raise KeyError(f"SelectStructured: data has no {self.structure_key!r} key (keys: {list(d)})")
        structure = _as_int(d[self.structure_key], f"SelectStructured: d[{self.structure_key!r}]")
        for key in self.key_iterator(d):
            img = d[key]
            mask = convert_to_tensor(img, track_meta=False) == structure
            if not self.allow_empty and not bool(mask.any()):
                raise ValueError(
                    f"SelectStructured: structure {structure} is absent from {key!r} of "
                    f"{source_name(d, img)} (pass allow_empty=True to allow empty masks)"
                )
            d[key], *_ = convert_to_dst_type(mask, dst=img)
        return d


def _slice_affine(affine: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """4x4 affine of slice ``index`` along spatial ``axis``: kept axes first, the slice normal third."""
    kept = [a for a in range(3) if a != axis]
    out = affine.clone()
    out[:, 0] = affine[:, kept[0]]
    out[:, 1] = affine[:, kept[1]]
    out[:, 2] = affine[:, axis]
    out[:, 3] = affine[:, 3] + affine[:, axis] * index
    return out


class SelectSliced(MapTransform):
    """Pick slice ``d[slice_key]`` along spatial axis ``d[axis_key]`` of channel-first 3D arrays.

    ``(C, H, W, D)`` arrays indexed ``[c, i, j, k]`` (spatial axes = NIfTI voxel axes) become ``(C, H, W)`` for
    axis 2 (generally the spatial axis ``axis`` is removed). For MetaTensors the meta data is kept and the affine is
    updated so that 2D voxel ``(i, j)`` maps to the same world point as the 3D voxel it came from (the removed axis
    becomes the third column); ``spatial_shape`` is set to the 2D shape when present.

    Args:
        keys: keys of the arrays to slice (e.g. ``["image", "label"]``).
        slice_key: key of the slice index in the data dict.
        axis_key: key of the spatial axis (0, 1 or 2) in the data dict.
        default_axis: axis used when ``axis_key`` is not in the data dict.
        allow_missing_keys: don't raise if a key in ``keys`` is missing.

    Raises:
        KeyError: ``slice_key`` is missing.
        ValueError: an array is not 4D channel-first, a bad axis, or the slice index is out of range.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        slice_key: str = "slice",
        axis_key: str = "axis",
        default_axis: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self.axis_key = axis_key
        self.default_axis = default_axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` arrays replaced by the selected slice."""
        d = dict(data)
        if self.slice_key not in d:
            raise KeyError(f"SelectSliced: data has no {self.slice_key!r} key (keys: {list(d)})")
        index = _as_int(d[self.slice_key], f"SelectSliced: d[{self.slice_key!r}]")
        axis_value = d.get(self.axis_key, self.default_axis)
        axis = _as_int(axis_value, f"SelectSliced: d[{self.axis_key!r}]")
        if axis not in (0, 1, 2):
            raise ValueError(f"SelectSliced: axis must be a spatial axis 0, 1 or 2, got {axis_value!r}")
        for key in self.key_iterator(d):
            img = d[key]
            shape = tuple(img.shape)
            if len(shape) != 4:
                raise ValueError(
                    f"SelectSliced: {key!r} of {source_name(d, img)} must be channel-first (C, H, W, D), "
                    f"got shape {shape}"
                )
            if not 0 <= index < shape[axis + 1]:
                raise ValueError(
                    f"SelectSliced: slice {index} is out of range for axis {axis} of {key!r} with shape {shape} "
                    f"({source_name(d, img)})"
                )
            out: Any
            if isinstance(img, MetaTensor):
                out = MetaTensor(
                    img.as_tensor().select(axis + 1, index),
                    meta=dict(img.meta),
                    applied_operations=list(img.applied_operations),
                )
                if tuple(img.affine.shape) == (4, 4):
                    out.affine = _slice_affine(img.affine, axis, index)
                if "spatial_shape" in out.meta:
                    out.meta["spatial_shape"] = np.asarray(out.shape[1:])
            elif isinstance(img, torch.Tensor):
                out = img.select(axis + 1, index)
            else:
                out = np.take(np.asarray(img), index, axis=axis + 1)
            d[key] = out
        return d
