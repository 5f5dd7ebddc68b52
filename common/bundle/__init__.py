"""Tools around MONAI bundles: offline checks of configs and metadata, shared by the tests of every bundle."""

from __future__ import annotations

from common.bundle.checks import (
    INFERENCE_IDS,
    REQUIRED_FILES,
    TRAIN_IDS,
    common_references,
    config_portability_problems,
    find_bundles,
    load_metadata_schema,
    metadata_problems,
    missing_config_ids,
    missing_files,
    network_def_problems,
    read_config,
)
from common.bundle.cli import run_monai_bundle

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
    "run_monai_bundle",
]
