"""The library's sources as Python modules: a module's file, its syntax tree and the imports that can run.

Shared by the closure (:mod:`common.bundle.export.library`), the renaming (:mod:`common.bundle.export.rename`) and
the requirements (:mod:`common.bundle.export.requirements`). A library module is named as it is imported
(``common.data.structures``) and read from the library's folder ``root`` (``common/``, :data:`LIBRARY_ROOT`).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

__all__ = ["IDENTIFIER", "LIBRARY", "LIBRARY_ROOT", "import_statements", "module_file", "parse_module"]

#: Name of the library the bundles run on.
LIBRARY = "common"

#: Folder of the library's sources (``common/``).
LIBRARY_ROOT = Path(__file__).resolve().parents[2]

#: A Python identifier (one part of a dotted name), as a regular expression.
IDENTIFIER = r"[A-Za-z_]\w*"


def module_file(name: str, root: Path) -> Path | None:
    """Source file of library module ``name`` (``common.data`` -> ``common/data/__init__.py``), ``None`` if absent."""
    parts = name.split(".")
    if parts[0] != LIBRARY:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    module = base.with_suffix(".py")
    return module if len(parts) > 1 and module.is_file() else None


@functools.lru_cache(maxsize=1024)
def _parse_cached(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def parse_module(path: Path) -> ast.Module:
    """The AST of a library file (cached per file version; callers never modify it)."""
    return _parse_cached(path, path.stat().st_mtime_ns)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that can run (``if TYPE_CHECKING:`` blocks skipped), with ``True`` when it runs at
    module level (not inside a function)."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from visit(ast.Module(body=[sub], type_ignores=[]), in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, not in_function
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from visit(child, nested)

    yield from visit(tree, False)
