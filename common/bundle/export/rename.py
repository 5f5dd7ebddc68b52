"""The package ``common`` renamed in the library copy (Python sources) and in the exported configs.

In the copy the package ``common`` is renamed ``common_<hash>`` (:func:`common.bundle.export.library_package_name`):
imports, ``common.`` attribute chains of a module that imports ``common``, and string literals naming a ``common``
module such as ``resources.files("common.bundle")``. The configs name the same package (``_target_`` strings and
``$`` expressions).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from common.bundle.export.sources import IDENTIFIER, LIBRARY, import_statements

__all__ = ["rename_in_config", "rename_package"]

_LIBRARY_REF = re.compile(rf"(?<![\w.]){LIBRARY}(?=\.{IDENTIFIER})")


def rename_package(source: str, old: str, new: str) -> str:
    """Python ``source`` with the package ``old`` renamed ``new``.

    Renamed: the module in ``import``/``from`` statements (``from common.data import x``, ``import common``), a
    ``common.`` attribute chain in a module that imports ``common`` itself, and string literals that are a dotted
    module name of the package (``"common.bundle"``). Names merely starting with ``old`` (``common_references``),
    attributes (``x.common``) and text inside longer strings (docstrings) are left alone.

    Raises:
        ValueError: ``source`` does not parse, or the result still imports ``old``.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"cannot parse the source to rename {old!r}: {err}") from err
    lines = source.splitlines(keepends=True)

    def column(row: int, byte_offset: int) -> int:
        """AST column (UTF-8 bytes) -> index in the line's text."""
        return len(lines[row - 1].encode("utf-8")[:byte_offset].decode("utf-8"))

    edits: list[tuple[int, int, int, str]] = []  # (row, start, end, text), start/end as text indices

    def rename_at(row: int, start: int) -> None:
        if lines[row - 1][start : start + len(old)] != old:
            raise ValueError(f"line {row}: expected {old!r} at column {start}: {lines[row - 1].rstrip()}")
        edits.append((row, start, start + len(old), new))

    literal = re.compile(rf"^{re.escape(old)}(?:\.{IDENTIFIER})*$")
    binds_old = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == old:
                    binds_old = binds_old or alias.asname is None
                    rename_at(alias.lineno, column(alias.lineno, alias.col_offset))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == old:
            start = column(node.lineno, node.col_offset)
            keyword = re.compile(r"from\s+").match(lines[node.lineno - 1], start)
            if keyword is None:
                raise ValueError(f"line {node.lineno}: cannot find the module of {ast.unparse(node)!r}")
            rename_at(node.lineno, keyword.end())
    for node in ast.walk(tree):
        if binds_old and isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == old:
                rename_at(node.value.lineno, column(node.value.lineno, node.value.col_offset))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and literal.match(node.value)
            and node.end_lineno == node.lineno
            and node.end_col_offset is not None
        ):
            start, stop = column(node.lineno, node.col_offset), column(node.lineno, node.end_col_offset)
            at = lines[node.lineno - 1].find(old, start, stop)
            if at >= 0:
                rename_at(node.lineno, at)
    for row, start, end, text in sorted(set(edits), reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[end:]
    result = "".join(lines)
    for node, _ in import_statements(ast.parse(result)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(n.split(".")[0] == old for n in names):
            raise ValueError(f"renaming {old!r} left an import of it at line {node.lineno}: {ast.unparse(node)}")
    return result


def rename_in_config(config: Any, package: str) -> Any:
    """A raw config with ``common`` renamed ``package`` in every string (``_target_``, ``$`` expressions)."""
    if isinstance(config, dict):
        return {k: rename_in_config(v, package) for k, v in config.items()}
    if isinstance(config, list):
        return [rename_in_config(v, package) for v in config]
    if isinstance(config, str):
        if re.fullmatch(rf"\$import {LIBRARY}", config.strip()):
            return f"$import {package}"
        return _LIBRARY_REF.sub(package, config)
    return config
