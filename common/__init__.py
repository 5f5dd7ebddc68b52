"""Shared library of the interactive-seg-bundles MONAI bundles.

Light on import: sub-packages (``common.data``, ``common.evaluation``, ...) are imported on demand, so
``import common`` stays cheap for MONAI bundle configs and MONAI Label apps.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
