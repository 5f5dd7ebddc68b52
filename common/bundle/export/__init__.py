"""Export a bundle self-contained, for MONAI's model zoo and MONAI Label's stock ``monaibundle`` app.

A bundle of this repository runs on the shared library ``common`` (``"_target_": "common.networks.DeepGrowUNet"``,
``"$common.data.load_msd_dataset(@dataset_dir)"``), which a bundle folder alone does not carry. The export writes a
copy of the bundle that needs no ``common`` installed, in the model-zoo layout::

    OUT/deepgrow_clicks/LICENSE, models/, docs/          copied
    OUT/deepgrow_clicks/configs/*.json                   the library renamed, stock-app adaptations (below)
    OUT/deepgrow_clicks/configs/metadata.json            requirements installable from PyPI
    OUT/deepgrow_clicks/scripts/__init__.py              ``import scripts`` registers the library copy
    OUT/deepgrow_clicks/scripts/common_<hash>/...        the modules of ``common`` the configs need

One concept per module:

- :mod:`~common.bundle.export.library`: the library copy, the modules of ``common`` the bundle's configs reach
  (imports followed transitively, lazy re-exports followed to the defining module, packages' data files) and its
  package name ``common_<hash>`` (a hash of the copied sources: it never collides with an installed ``common`` nor
  with the library of another exported bundle).
- :mod:`~common.bundle.export.rename`: ``common`` renamed ``common_<hash>`` in the copied sources and in the configs.
- :mod:`~common.bundle.export.scripts`: the bundle's ``scripts/__init__.py``, which registers the copy under its own
  top-level name (MONAI Label's ``unload_module("scripts")`` leaves it in place; why not ``scripts.common``), and the
  ``"$import scripts"`` every config starts with.
- :mod:`~common.bundle.export.requirements`: ``metadata.json``'s requirements, the third-party packages the library
  copy imports, pinned for PyPI.
- :mod:`~common.bundle.export.stock_app`: the adaptations of ``inference.json`` and ``train.json`` that MONAI Label's
  stock ``monaibundle`` app (``BundleInferTask``, ``BundleTrainTask``) needs.
- :mod:`~common.bundle.export.bundle`: :func:`export_bundle`, which writes the whole layout.
- :mod:`~common.bundle.export.sources` (the library's modules: files, syntax trees, imports) and
  :mod:`~common.bundle.export.cli` (the command line) serve the others.

Command line::

    python -m common.bundle.export --bundle bundles/deepgrow_clicks --out DIR
    python -m common.bundle.export --all --out DIR            # every bundle under bundles/ (``--bundles-dir``)
    python -m common.bundle.export --all --out DIR --force    # replace earlier exports
"""

from __future__ import annotations

from common.bundle.export.bundle import COPIED, ExportedBundle, export_bundle
from common.bundle.export.cli import main
from common.bundle.export.library import EXPORT_FORMAT, config_references, library_closure, library_package_name
from common.bundle.export.rename import rename_package
from common.bundle.export.requirements import OWN_DISTRIBUTIONS, VERSIONED_ELSEWHERE, third_party_imports
from common.bundle.export.sources import LIBRARY, LIBRARY_ROOT
from common.bundle.export.stock_app import ASIDE_PREFIX, adapt_inference_config, adapt_train_configs

__all__ = [
    "ASIDE_PREFIX",
    "COPIED",
    "EXPORT_FORMAT",
    "LIBRARY",
    "LIBRARY_ROOT",
    "OWN_DISTRIBUTIONS",
    "VERSIONED_ELSEWHERE",
    "ExportedBundle",
    "adapt_inference_config",
    "adapt_train_configs",
    "config_references",
    "export_bundle",
    "library_closure",
    "library_package_name",
    "main",
    "rename_package",
    "third_party_imports",
]
