"""Shared library of the interactive-seg-bundles MONAI bundles.

Light on import: sub-packages (``common.data``, ``common.evaluation``, ...) are imported on first attribute access
(PEP 562), so ``import common`` stays cheap and a bundle config needs only ``"$import common"`` to use
``"$common.data.load_msd_dataset(@dataset_dir)"``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SUBPACKAGES", "__version__"]

__version__ = "0.1.0"

#: Sub-packages and modules reachable as attributes of ``common``.
SUBPACKAGES = (
    "bundle",
    "data",
    "demo",
    "distributed",
    "evaluation",
    "interaction",
    "networks",
    "propagation",
    "transforms",
    "visualization",
)


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
