"""The exported bundle's ``scripts/`` package: its ``__init__.py``, which registers the library copy, and the
``"$import scripts"`` every config starts with.

Why not ``scripts.common``: MONAI Label's ``BundleInferTask`` and ``BundleTrainTask``
(``monailabel/tasks/{infer,train}/bundle.py``) put one bundle at a time on ``sys.path`` and call
``unload_module("scripts")`` (every ``scripts`` and ``scripts.*`` module leaves ``sys.modules``) before parsing or
instantiating that bundle's config parts, then take the bundle off ``sys.path`` again. A library under ``scripts``
would be re-imported from whichever bundle is on the path at that moment, or not found at all for a function-level
import run while serving a request. ``scripts/__init__.py`` instead loads the copy by file path and registers it in
``sys.modules`` under its own top-level name, which ``unload_module("scripts")`` never touches; every later import of
the copy (including lazy ones) is resolved through that entry, whatever is on ``sys.path``. Each config's ``imports``
start with ``"$import scripts"``, so parsing a config registers its library first. As for every model-zoo bundle
with ``scripts/``, the bundle folder must be importable when its config is parsed: MONAI Label does that; on the
command line run ``python -m monai.bundle`` from the bundle folder or put the folder on ``PYTHONPATH``.

``scripts/__init__.py`` also defines ``MissingInputError`` and ``missing_input``, which the stock-app adaptations of
``inference.json`` (:mod:`common.bundle.export.stock_app`) call when a request lacks an input.
"""

from __future__ import annotations

from typing import Any

from common.bundle.export.sources import LIBRARY

__all__ = ["SCRIPTS_INIT", "scripts_init", "with_scripts_import"]

#: Template of ``scripts/__init__.py`` (``str.format`` fields ``library`` and ``package``).
SCRIPTS_INIT = '''"""Bundle scripts: the ``{library}`` library this bundle runs on, copied by ``common.bundle.export``.

``import scripts`` registers the copy ``{package}/`` as the top-level package ``{package}`` (once per process), which
the configs name. It is loaded by file path, so it does not depend on the bundle being on ``sys.path`` and MONAI
Label's ``unload_module("scripts")`` (run before each bundle's config is parsed) leaves it in place. This folder is
also appended to ``sys.path`` (it holds no other importable name), so that processes started with ``spawn`` find the
package when they unpickle its objects.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

__all__ = ["PACKAGE", "MissingInputError", "library", "missing_input"]

PACKAGE = "{package}"


def _register() -> ModuleType:
    folder = str(Path(__file__).resolve().parent)
    if folder not in sys.path:  # for processes started with "spawn" (DataLoader workers), which unpickle by name
        sys.path.append(folder)
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    init = Path(folder) / PACKAGE / "__init__.py"
    spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the bundle library {{PACKAGE}} from {{init}}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return module


class MissingInputError(ValueError):
    """A request lacks an input the bundle needs."""


try:  # under MONAI Label (FastAPI) the message then reaches the client as HTTP 400, not a bare 500
    from starlette.exceptions import HTTPException

    class _HTTPMissingInputError(HTTPException, MissingInputError):
        def __init__(self, message: str) -> None:
            HTTPException.__init__(self, status_code=400, detail=message)
            MissingInputError.__init__(self, message)

        def __str__(self) -> str:
            return str(self.detail)

    _ERROR: type[MissingInputError] = _HTTPMissingInputError
except ImportError:
    _ERROR = MissingInputError


def missing_input(message: str) -> NoReturn:
    """Raise :class:`MissingInputError` (a ``ValueError``; a FastAPI/Starlette ``HTTPException`` with status 400
    where Starlette is installed); configs call it when a request lacks an input."""
    raise _ERROR(message)


library = _register()
'''


def with_scripts_import(config: dict[str, Any]) -> dict[str, Any]:
    """``"$import scripts"`` first in the config's ``imports`` (registers the library copy before it is used)."""
    imports = [i for i in config.get("imports", []) if i != "$import scripts"]
    return {**config, "imports": ["$import scripts", *imports]} if "imports" in config else config


def scripts_init(package: str) -> str:
    """The source of ``scripts/__init__.py`` registering the library copy ``package`` (``common_<hash>``)."""
    return SCRIPTS_INIT.format(library=LIBRARY, package=package)
