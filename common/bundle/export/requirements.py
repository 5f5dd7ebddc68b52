"""``metadata.json`` requirements of an exported bundle: the third-party packages the library copy imports.

``required_packages_version`` / ``optional_packages_version`` as model-zoo's CI reads them
(``ci/get_bundle_requirements.py`` installs ``name==version`` of both): this repository's own distribution
(``interactive-seg-bundles``, not on PyPI) is dropped; the third-party packages the library copy imports are added,
module-level imports as required and function-level-only imports as optional, pinned at the versions installed where
the export runs (pins already in the bundle's metadata are kept). ``torch``, ``numpy`` and ``monai`` keep their own
``*_version`` fields.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.bundle.export.sources import LIBRARY, LIBRARY_ROOT, import_statements, module_file, parse_module

__all__ = ["OWN_DISTRIBUTIONS", "VERSIONED_ELSEWHERE", "pinned_requirements", "third_party_imports"]

#: Distributions that are not PyPI requirements of an exported bundle.
OWN_DISTRIBUTIONS = ("interactive-seg-bundles",)

#: Packages with their own metadata field (``pytorch_version``, ``numpy_version``, ``monai_version``).
VERSIONED_ELSEWHERE = ("torch", "numpy", "monai")


def third_party_imports(modules: Sequence[str], root: Path = LIBRARY_ROOT) -> tuple[set[str], set[str]]:
    """Top-level names of the non-standard-library modules the given library modules import.

    Returns:
        ``(module_level, function_level_only)``: names imported at module level, and names imported only inside
        functions (optional for the code paths that do not run them).
    """
    module_level: set[str] = set()
    nested: set[str] = set()
    for name in modules:
        path = module_file(name, root)
        if path is None:
            continue
        for node, at_module_level in import_statements(parse_module(path)):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or node.module is None):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for dotted in names:
                top = dotted.split(".")[0]
                if top in (LIBRARY, "__future__") or top in sys.stdlib_module_names:
                    continue
                (module_level if at_module_level else nested).add(top)
    return module_level, nested - module_level


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _distribution(module: str) -> str:
    """The installed distribution providing top-level module ``module`` (``skimage`` -> ``scikit-image``).

    Raises:
        ValueError: no installed distribution provides it.
    """
    candidates = _packages_distributions().get(module, [])
    if not candidates:
        raise ValueError(
            f"cannot pin the package providing {module!r}: it is not installed where the export runs "
            "(install the bundle's dependencies first)"
        )
    normalised = {c.lower().replace("_", "-"): c for c in candidates}
    return normalised.get(module.lower().replace("_", "-"), sorted(candidates)[0])


def pinned_requirements(
    metadata: Mapping[str, Any], module_level: set[str], nested: set[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(required, optional)`` package pins for an exported bundle's ``metadata.json``."""

    def clean(pins: Mapping[str, str]) -> dict[str, str]:
        return {k: str(v) for k, v in pins.items() if k not in OWN_DISTRIBUTIONS and k not in VERSIONED_ELSEWHERE}

    required = clean(metadata.get("required_packages_version") or {})
    optional = clean(metadata.get("optional_packages_version") or {})
    known = {k.lower().replace("_", "-") for k in (*required, *optional)}
    for modules, target in ((module_level, required), (nested, optional)):
        for module in sorted(modules):
            dist = _distribution(module)
            key = dist.lower().replace("_", "-")
            if key in known or key in VERSIONED_ELSEWHERE:
                continue
            target[dist] = importlib.metadata.version(dist)
            known.add(key)
    return dict(sorted(required.items())), dict(sorted(optional.items()))
