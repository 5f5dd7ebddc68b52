"""Static checks every bundle of this repository must pass (used by ``tests/bundles``).

Each check returns a list of human-readable problems (empty = the bundle passes), so a test failure names every
problem at once instead of stopping at the first. The checks encode what ``monai.bundle`` and MONAI Label rely on:
the config ids they read, ``network_def`` identical in the train and inference configs (MONAI Label reads exactly
one file of each), offline metadata validation, and configs that stay portable (no cross-file ``%`` macros, no
absolute paths).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "INFERENCE_IDS",
    "REQUIRED_FILES",
    "TRAIN_IDS",
    "common_references",
    "config_portability_problems",
    "find_bundles",
    "load_metadata_schema",
    "metadata_problems",
    "missing_config_ids",
    "missing_files",
    "network_def_problems",
    "read_config",
]

#: Files every bundle ships (model-zoo layout).
REQUIRED_FILES: tuple[str, ...] = (
    "LICENSE",
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
)

#: Ids MONAI Label's bundle infer task and ``monai.bundle`` read from ``inference.json``.
INFERENCE_IDS: tuple[str, ...] = (
    "bundle_root",
    "device",
    "network_def",
    "network",
    "preprocessing",
    "postprocessing",
    "inferer",
)

#: Ids MONAI Label's bundle train task and ``monai.bundle`` read (or override) in ``train.json``.
TRAIN_IDS: tuple[str, ...] = (
    "bundle_root",
    "device",
    "dataset_dir",
    "ckpt_dir",
    "output_dir",
    "val_interval",
    "network_def",
    "network",
    "train#trainer#max_epochs",
    "train#dataset#data",
    "train#handlers",
    "validate#dataset#data",
)

_FILE_MACRO = re.compile(r"%[^#\s]*\.(json|yaml|yml)")
_ABSOLUTE_PATH = re.compile(r"^(/[A-Za-z0-9_.-]+){2,}")


def find_bundles(bundles_dir: str | Path) -> list[Path]:
    """Bundle folders below ``bundles_dir``: every sub-folder holding ``configs/metadata.json``, sorted by name."""
    root = Path(bundles_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def read_config(path: str | Path) -> dict[str, Any]:
    """Read one JSON config file into a dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not valid JSON or not a JSON object; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object at the top level, got {type(content).__name__}")
    return content


def missing_files(bundle: str | Path) -> list[str]:
    """Required bundle files (:data:`REQUIRED_FILES`) that ``bundle`` lacks."""
    bundle = Path(bundle)
    return [f"missing file {name}" for name in REQUIRED_FILES if not (bundle / name).is_file()]


def missing_config_ids(config: dict[str, Any], ids: tuple[str, ...] | list[str]) -> list[str]:
    """Ids (``#``-separated paths, e.g. ``train#trainer#max_epochs``) absent from the raw ``config`` dict."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    return [f"missing config id {i!r}" for i in ids if i not in parser]


def network_def_problems(train: dict[str, Any], inference: dict[str, Any]) -> list[str]:
    """``network_def`` must exist in both configs and be identical (MONAI Label reads one file of each)."""
    if "network_def" not in train or "network_def" not in inference:
        return ["network_def missing from train.json or inference.json"]
    if train["network_def"] != inference["network_def"]:
        train_net = json.dumps(train["network_def"], sort_keys=True)
        infer_net = json.dumps(inference["network_def"], sort_keys=True)
        return [f"network_def differs between train.json and inference.json: {train_net} != {infer_net}"]
    return []


def load_metadata_schema() -> dict[str, Any]:
    """The offline copy of the bundle metadata JSON schema shipped in ``common/bundle/metadata_schema.json``."""
    text = resources.files("common.bundle").joinpath("metadata_schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def metadata_problems(metadata: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Validate ``metadata.json`` content offline: the JSON schema, a changelog entry for the current version,
    and a ``channel_def`` whose size matches ``num_channels`` for every input and output."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema if schema is not None else load_metadata_schema())
    problems = [
        f"metadata schema: {'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(metadata), key=lambda e: list(e.absolute_path))
    ]
    version = metadata.get("version")
    if version not in (metadata.get("changelog") or {}):
        problems.append(f"metadata version {version!r} has no changelog entry")
    for side in ("inputs", "outputs"):
        tensors = (metadata.get("network_data_format") or {}).get(side) or {}
        for name, spec in tensors.items():
            channels, channel_def = spec.get("num_channels"), spec.get("channel_def") or {}
            if isinstance(channels, int) and len(channel_def) != channels:
                problems.append(
                    f"{side}.{name}: channel_def has {len(channel_def)} entries, num_channels is {channels}"
                )
    return problems


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(id, value)`` for every leaf of a raw config (ids joined with ``#``, list items by index)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}#{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}#{index}" if path else str(index))
    else:
        yield path, node


def config_portability_problems(config: dict[str, Any]) -> list[str]:
    """Cross-file ``%file.json#id`` macros (they resolve against the working directory and break inside MONAI
    Label) and absolute paths (they break on every other machine)."""
    problems = []
    for key, value in _walk(config):
        if not isinstance(value, str):
            continue
        if _FILE_MACRO.search(value):
            problems.append(f"{key}: cross-file macro {value!r}")
        if _ABSOLUTE_PATH.match(value):
            problems.append(f"{key}: absolute path {value!r}")
    return problems


def common_references(config: dict[str, Any]) -> list[str]:
    """Ids of the config parts that name the ``common`` package, deepest first.

    A component whose ``_target_`` is in ``common`` is returned by its own id (``train#preprocessing#transforms#2``),
    a ``$`` expression using ``common.`` by the id of that expression. A failed ``$import`` in a config is silent
    until first use, so tests instantiate each of these parts.
    """
    referencing = set()
    for key, value in _walk(config):
        if isinstance(value, str) and re.search(r"(^|[^\w.])common\.", value):
            referencing.add(key.rsplit("#", 1)[0] if key.endswith("#_target_") else key)
    return sorted(referencing, key=lambda k: (-k.count("#"), k))
