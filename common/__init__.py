"""Shared library of the interactive-seg-bundles MONAI bundles.

Light on import: sub-packages (``common.data``, ``common.evaluation``, ...) are imported on first attribute access
(PEP 562), so ``import common`` stays cheap and a bundle config needs only ``"$import common"`` to use
``"$common.data.load_msd_dataset(@dataset_dir)"``.
"""

from __future__ import annotations

from common._lazy import lazy_exports

__all__ = ["SUBPACKAGES", "__version__"]

__version__ = "0.6.0"

#: Sub-packages and modules reachable as attributes of ``common``.
SUBPACKAGES = (
    "benchmarking",
    "boxes",
    "bundle",
    "clicks",
    "data",
    "demo",
    "distributed",
    "evaluation",
    "interaction",
    "networks",
    "propagation",
    "refinement",
    "training",
    "transforms",
    "visualization",
)


__getattr__, __dir__ = lazy_exports(__name__, {name: name for name in SUBPACKAGES}, __all__)
