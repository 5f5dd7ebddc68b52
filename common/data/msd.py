"""Reading and validating a dataset folder in Medical Segmentation Decathlon (MSD) layout.

The folder holds ``dataset.json`` next to ``imagesTr/``, ``labelsTr/`` (and optionally ``imagesTs/``)::

    DIR/dataset.json
    DIR/imagesTr/<case>.nii.gz      image, (X, Y, Z) or multi-modal (X, Y, Z, M)
    DIR/labelsTr/<case>.nii.gz      integer multi-label map, (X, Y, Z), 0 = background

``dataset.json`` uses the standard MSD keys (``"name"``, ``"labels"`` with string keys, ``"training"`` as a list of
``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``, ``"test"`` as a list of image paths; at least
one of ``"training"`` and ``"test"``, so a folder of unlabelled images with only a ``"test"`` list loads too, for
inference) plus our optional extension ``"structure_split": {"seen": [...], "unseen": [...]}`` naming structures
from ``"labels"``. Without ``"structure_split"`` (real MSD tasks) every structure counts as *seen*.

The same code reads our embedded phantom set and an unpacked MSD task such as ``Task09_Spleen``. Files present in
the folder but not listed in ``dataset.json`` (e.g. macOS ``._spleen_2.nii.gz`` junk) are ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "AFFINE_ATOL_MM",
    "CASE_LISTS",
    "GROUPS",
    "REQUIRED_KEYS",
    "MSDDataset",
    "case_id_from_path",
    "load_label_array",
    "load_msd_dataset",
    "parse_labels",
    "validate_case",
]

logger = logging.getLogger(__name__)

#: Keys that ``dataset.json`` must contain for :func:`load_msd_dataset`.
REQUIRED_KEYS: tuple[str, ...] = ("name", "labels")
#: Case lists of ``dataset.json``: at least one must be present (labelled ``"training"``, unlabelled ``"test"``).
CASE_LISTS: tuple[str, ...] = ("training", "test")
#: The two structure groups of the seen/unseen protocol.
GROUPS: tuple[str, ...] = ("seen", "unseen")
#: Default tolerance (mm, absolute) when comparing image and label affines.
AFFINE_ATOL_MM = 1e-3

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class MSDDataset:
    """A parsed MSD-layout dataset.

    Attributes:
        root: absolute dataset folder (the one holding ``dataset.json``).
        name: the ``"name"`` entry of ``dataset.json``.
        labels: label value -> structure name, including ``0`` (background), sorted by value.
        seen: names of the structures that may be used for training, sorted by label value.
        unseen: names of the held-out structures (empty for real MSD tasks), sorted by label value.
        training: ``{"image", "label", "case_id"}`` dicts with absolute paths, in ``dataset.json`` order; empty for a
            dataset with only a ``"test"`` list (usable for inference, not for training).
        validation: same format as ``training``, from the optional ``"validation"`` list (else empty).
        test: ``{"image", "case_id"}`` dicts with absolute paths.
        properties: the remaining top-level entries of ``dataset.json`` (``"modality"``, ``"description"``, ...).
    """

    root: Path
    name: str
    labels: dict[int, str]
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    training: list[dict[str, str]]
    validation: list[dict[str, str]] = field(default_factory=list)
    test: list[dict[str, str]] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dataset_json(self) -> Path:
        """Path of the ``dataset.json`` file."""
        return self.root / "dataset.json"

    def label_value(self, structure: str | int) -> int:
        """Label value of a non-background structure given by name or value.

        Raises:
            ValueError: unknown structure, or background.
        """
        names = self.structures()
        if isinstance(structure, (int, np.integer)) and not isinstance(structure, bool):
            if int(structure) in names:
                return int(structure)
        elif isinstance(structure, str):
            for value, name in names.items():
                if name == structure:
                    return value
        raise ValueError(
            f"unknown structure {structure!r} in {self.dataset_json}; valid structures: "
            + ", ".join(f"{v} {n!r}" for v, n in names.items())
        )

    def group_of(self, structure: str | int) -> str:
        """Group (``"seen"`` or ``"unseen"``) of a structure given by name or label value.

        Raises:
            ValueError: unknown structure, or background.
        """
        name = self.labels[self.label_value(structure)]
        return "unseen" if name in self.unseen else "seen"

    def structures(self, group: str | None = None) -> dict[int, str]:
        """Non-background structures, label value -> name, optionally only those of one group.

        Args:
            group: ``None`` (all), ``"seen"`` or ``"unseen"``.

        Raises:
            ValueError: ``group`` is not one of the above.
        """
        if group is not None and group not in GROUPS:
            raise ValueError(f"group must be None, 'seen' or 'unseen', got {group!r}")
        out = {v: n for v, n in self.labels.items() if v != 0}
        if group is None:
            return out
        members = self.seen if group == "seen" else self.unseen
        return {v: n for v, n in out.items() if n in members}


def case_id_from_path(path: str | Path) -> str:
    """Case id of a NIfTI path: its file name without ``.nii.gz`` / ``.nii``.

    Example: ``./imagesTr/spleen_2.nii.gz`` -> ``spleen_2``.
    """
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def parse_labels(raw: Any, source: str | Path = "labels") -> dict[int, str]:
    """Parse an MSD ``"labels"`` table (``{"0": "background", "1": "spleen"}``) into ``{0: "background", 1: "spleen"}``.

    Args:
        raw: the table; keys are integer label values written as strings (ints are accepted too).
        source: what to name in error messages (usually the ``dataset.json`` path).

    Raises:
        ValueError: not a mapping, a key that is not a non-negative integer, a non-string or duplicate name,
            no background (``0``) or no structure besides background.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{source}: 'labels' must be a non-empty mapping like {{'0': 'background', ...}}, got {raw!r}")
    labels: dict[int, str] = {}
    for key, name in raw.items():
        try:
            value = int(str(key).strip())
        except ValueError:
            raise ValueError(f"{source}: label key {key!r} is not an integer label value") from None
        if value < 0:
            raise ValueError(f"{source}: label value {value} is negative")
        if value in labels:
            raise ValueError(f"{source}: label value {value} is listed twice")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{source}: label {key!r} must have a non-empty string name, got {name!r}")
        labels[value] = name
    if 0 not in labels:
        raise ValueError(f"{source}: 'labels' has no background entry '0' (got keys {sorted(labels)})")
    names = [n for v, n in labels.items()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source}: structure names must be unique, duplicated: {duplicates}")
    if len(labels) < 2:
        raise ValueError(f"{source}: 'labels' lists no structure besides background")
    return dict(sorted(labels.items()))


def _parse_split(raw: Any, labels: dict[int, str], source: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Parse ``"structure_split"``; without it every structure is seen."""
    structures = {v: n for v, n in labels.items() if v != 0}
    if raw is None:
        return tuple(structures.values()), ()
    if not isinstance(raw, Mapping) or set(raw) != {"seen", "unseen"}:
        raise ValueError(f"{source}: 'structure_split' must be {{'seen': [names], 'unseen': [names]}}, got {raw!r}")
    groups: dict[str, list[str]] = {}
    valid = set(structures.values())
    for group in GROUPS:
        names = raw[group]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{source}: 'structure_split'['{group}'] must be a list of structure names, got {names!r}")
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(
                f"{source}: 'structure_split'['{group}'] names {unknown} which are not structures of 'labels' "
                f"(valid: {sorted(valid)})"
            )
        groups[group] = names
    overlap = sorted(set(groups["seen"]) & set(groups["unseen"]))
    if overlap:
        raise ValueError(f"{source}: structures {overlap} are both seen and unseen in 'structure_split'")
    missing = [n for n in structures.values() if n not in groups["seen"] and n not in groups["unseen"]]
    if missing:
        raise ValueError(f"{source}: structures {missing} are neither seen nor unseen in 'structure_split'")
    seen = tuple(n for n in structures.values() if n in groups["seen"])
    unseen = tuple(n for n in structures.values() if n in groups["unseen"])
    return seen, unseen


def _resolve(root: Path, value: Any, what: str, source: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{source}: {what} must be a file path string, got {value!r}")
    path = Path(value)
    return os.path.normpath(path if path.is_absolute() else root / path)


def _parse_items(raw: Any, key: str, root: Path, source: Path, with_label: bool) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise ValueError(f"{source}: '{key}' must be a list, got {type(raw).__name__}")
    items: list[dict[str, str]] = []
    seen_ids: dict[str, int] = {}
    for i, entry in enumerate(raw):
        if not with_label and isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, Mapping):
            raise ValueError(f"{source}: '{key}'[{i}] must be an object with 'image'/'label', got {entry!r}")
        needed = ("image", "label") if with_label else ("image",)
        absent = [k for k in needed if k not in entry]
        if absent:
            raise ValueError(f"{source}: '{key}'[{i}] lacks {absent}")
        item = {"image": _resolve(root, entry["image"], f"'{key}'[{i}]['image']", source)}
        if with_label:
            item["label"] = _resolve(root, entry["label"], f"'{key}'[{i}]['label']", source)
        case_id = case_id_from_path(item["image"])
        if case_id in seen_ids:
            raise ValueError(
                f"{source}: case id {case_id!r} appears twice in '{key}' (entries {seen_ids[case_id]} and {i})"
            )
        seen_ids[case_id] = i
        item["case_id"] = case_id
        items.append(item)
    return items


def _load_header(path: str | Path) -> Any:
    """``nibabel.load`` (header only, data stays on disk) with errors turned into a ValueError naming the file."""
    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except Exception as exc:
        raise ValueError(f"cannot read NIfTI file {path}: {type(exc).__name__}: {exc}") from exc


def load_label_array(path: str | Path) -> np.ndarray:
    """Load a label volume as an integer array with the NIfTI voxel axes as stored, ``(X, Y, Z)``.

    A trailing singleton axis (``(X, Y, Z, 1)``) is dropped. Uses ``np.asanyarray(img.dataobj)`` (no float cast).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, not 3D, or non-integer label values.
    """
    img = _load_header(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ValueError(f"cannot read label data of {path}: {type(exc).__name__}: {exc}") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"label volume {path} must be 3D (X, Y, Z), got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            bad = np.unique(data[~np.isfinite(data) | (data != np.round(data))])[:5]
            raise ValueError(f"label volume {path} has non-integer values, e.g. {bad.tolist()}")
        data = data.astype(np.int64)
    return data


def _spatial_label_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def validate_case(
    image_path: str | Path,
    label_path: str | Path,
    labels: Mapping[int, str] | Iterable[int],
    affine_atol: float = AFFINE_ATOL_MM,
) -> None:
    """Check that an image/label pair is consistent.

    Shapes and affines come from the NIfTI headers (no image data is loaded); only the label data is loaded, to
    check its values. The image may be 3D ``(X, Y, Z)`` or multi-modal 4D ``(X, Y, Z, M)``: its spatial shape
    ``(X, Y, Z)`` must equal the label shape.

    Args:
        image_path: image NIfTI file.
        label_path: label NIfTI file (integer map, 0 = background).
        labels: the allowed label values (a ``{value: name}`` table or an iterable of values).
        affine_atol: absolute tolerance in mm for the voxel-to-world affines to agree.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: unreadable file, shape or affine mismatch, or label values not in ``labels``.
    """
    allowed = {int(v) for v in labels}
    image = _load_header(image_path)
    label = _load_header(label_path)
    image_shape = tuple(int(s) for s in image.shape)
    label_shape = _spatial_label_shape(tuple(int(s) for s in label.shape))
    if len(image_shape) not in (3, 4):
        raise ValueError(f"image {image_path} must be 3D (X, Y, Z) or 4D (X, Y, Z, M), got shape {image_shape}")
    if len(label_shape) != 3:
        raise ValueError(f"label {label_path} must be 3D (X, Y, Z), got shape {label_shape}")
    if image_shape[:3] != label_shape:
        raise ValueError(
            f"shape mismatch: image {image_path} has spatial shape {image_shape[:3]} but label {label_path} has "
            f"{label_shape}"
        )
    if not np.allclose(image.affine, label.affine, rtol=0.0, atol=affine_atol):
        diff = float(np.max(np.abs(np.asarray(image.affine) - np.asarray(label.affine))))
        raise ValueError(
            f"affine mismatch (max difference {diff:.4g} mm > {affine_atol} mm): image {image_path} vs label "
            f"{label_path}"
        )
    values = np.unique(load_label_array(label_path))
    unknown = sorted(int(v) for v in values if int(v) not in allowed)
    if unknown:
        raise ValueError(
            f"label {label_path} contains values {unknown} that are not in the labels table {sorted(allowed)}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON in {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must contain a JSON object, got {type(data).__name__}")
    return data


def load_msd_dataset(root: str | Path, check_files: bool = True, check_content: bool = False) -> MSDDataset:
    """Read and validate an MSD-layout dataset folder.

    Args:
        root: the dataset folder (holding ``dataset.json``) or the ``dataset.json`` file itself.
        check_files: check that every listed image/label file exists.
        check_content: additionally run :func:`validate_case` on every training/validation case (header reads for
            shape/affine, label data for its values) and check that test images are readable. Slower.

    Returns:
        The parsed :class:`MSDDataset` with absolute paths.

    Raises:
        FileNotFoundError: missing folder, ``dataset.json`` or listed file.
        ValueError: invalid JSON, missing keys (``"name"``, ``"labels"``, and ``"training"`` or ``"test"``), no case
            listed at all, bad labels table or ``structure_split``, inconsistent case content.
    """
    root = Path(root).expanduser()
    if root.is_file() and root.name == "dataset.json":
        root = root.parent
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    root = Path(os.path.normpath(root.absolute()))
    source = root / "dataset.json"
    if not source.is_file():
        raise FileNotFoundError(f"no dataset.json in dataset folder {root}")
    data = _read_json(source)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{source}: missing required keys {missing}")
    if not any(k in data for k in CASE_LISTS):
        raise ValueError(
            f"{source}: no case list: an MSD dataset.json needs a 'training' list (labelled image/label pairs) "
            f"and/or a 'test' list (unlabelled images), found neither (top-level keys: {sorted(data)})"
        )
    if not isinstance(data["name"], str):
        raise ValueError(f"{source}: 'name' must be a string, got {data['name']!r}")
    labels = parse_labels(data["labels"], source)
    seen, unseen = _parse_split(data.get("structure_split"), labels, source)
    training = _parse_items(data.get("training", []), "training", root, source, with_label=True)
    validation = _parse_items(data.get("validation", []), "validation", root, source, with_label=True)
    test = _parse_items(data.get("test", []), "test", root, source, with_label=False)
    for key, items in (("numTraining", training), ("numTest", test)):
        if key in data and data[key] != len(items):
            logger.warning("%s: %s=%r but %d items are listed", source, key, data[key], len(items))
    overlap = sorted({i["case_id"] for i in training} & {i["case_id"] for i in validation})
    if overlap:
        raise ValueError(f"{source}: cases {overlap} are in both 'training' and 'validation'")
    if not (training or validation or test):
        present = [repr(k) for k in (*CASE_LISTS, "validation") if k in data]
        verb = "is" if len(present) == 1 else "are all"
        raise ValueError(
            f"{source}: lists no case: {', '.join(present)} {verb} empty; list labelled cases under 'training' "
            "and/or unlabelled images under 'test'"
        )

    if check_files or check_content:
        for key, items in (("training", training), ("validation", validation), ("test", test)):
            for item in items:
                for file_key in ("image", "label"):
                    if file_key in item and not Path(item[file_key]).is_file():
                        raise FileNotFoundError(
                            f"{source}: '{key}' case {item['case_id']!r} lists {file_key} {item[file_key]} "
                            "which does not exist"
                        )
    if check_content:
        for item in [*training, *validation]:
            validate_case(item["image"], item["label"], labels)
        for item in test:
            image = _load_header(item["image"])
            if len(image.shape) not in (3, 4):
                raise ValueError(f"test image {item['image']} must be 3D or 4D, got shape {image.shape}")

    listed = {*REQUIRED_KEYS, *CASE_LISTS, "validation", "structure_split"}
    properties = {k: v for k, v in data.items() if k not in listed}
    dataset = MSDDataset(
        root=root,
        name=data["name"],
        labels=labels,
        seen=seen,
        unseen=unseen,
        training=training,
        validation=validation,
        test=test,
        properties=properties,
    )
    logger.debug(
        "loaded %s: %d training, %d validation, %d test cases; seen=%s unseen=%s",
        source,
        len(training),
        len(validation),
        len(test),
        seen,
        unseen,
    )
    return dataset
