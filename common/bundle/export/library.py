"""The library copy: which modules of ``common`` a bundle's configs reach, and the package name of their copy.

The modules the bundle's configs reach: every ``common.*`` name in a config (``_target_`` or ``$`` expression), then
every import of those modules (module level and function level, not ``if TYPE_CHECKING:``), transitively, with the
packages' lazy re-exports (:mod:`common._lazy`) followed to the module defining the name, and each package's data
files (``*.json``). ``common/`` stays the one source: the copy is made at export time.

In the copy the package ``common`` is renamed ``common_<hash>`` (:mod:`common.bundle.export.rename`); ``<hash>`` is 8
hex digits of a SHA-256 of the copied sources. The configs name the same package. The copy therefore never collides
with an installed ``common`` nor with the library of another exported bundle: bundles exported from the same sources
share one package (same code), any difference gives another name.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.bundle.export.sources import (
    IDENTIFIER,
    LIBRARY,
    LIBRARY_ROOT,
    import_statements,
    module_file,
    parse_module,
)

__all__ = ["EXPORT_FORMAT", "config_references", "data_files", "library_closure", "library_package_name"]

#: Bumped when the layout or the adaptations change (part of the library hash).
EXPORT_FORMAT = 1

_DOTTED_REF = re.compile(rf"(?<![\w.]){LIBRARY}(?:\.{IDENTIFIER})+")
_MODULE_STRING = re.compile(rf"^{LIBRARY}(?:\.{IDENTIFIER})*$")


def _lazy_sources(package: str, root: Path) -> dict[str, str]:
    """``{attribute: sub-module}`` of a package's ``lazy_exports(__name__, SOURCES, ...)`` call (empty if none).

    ``SOURCES`` may be a dict literal, a module-level name bound to one, or a comprehension over module-level
    literals (``{name: name for name in SUBPACKAGES}``); it is evaluated over the package's literal assignments.
    """
    path = module_file(package, root)
    if path is None or path.name != "__init__.py":
        return {}
    tree = parse_module(path)
    literals: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                value = ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:
                continue
            literals.update({t.id: value for t in targets if isinstance(t, ast.Name)})
    for call in ast.walk(tree):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "lazy_exports"
            and len(call.args) >= 2
        ):
            expression = ast.Expression(call.args[1])
            # our own library's source, evaluated over its literals only (no builtins)
            sources = eval(compile(expression, str(path), "eval"), {"__builtins__": {}}, literals)
            if not isinstance(sources, Mapping):
                raise ValueError(f"{path}: lazy_exports sources must be a mapping, got {type(sources).__name__}")
            return {str(k): str(v) for k, v in sources.items()}
    return {}


def _module_level_names(module: str, root: Path) -> set[str]:
    """Names bound at module level of a library module (imports, ``def``, ``class``, assignments; inside ``if``
    and ``try`` blocks too)."""
    path = module_file(module, root)
    if path is None:
        return set()
    names: set[str] = set()

    def visit(body: Sequence[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    visit(node.finalbody)
                    for handler in node.handlers:
                        visit(handler.body)

    visit(parse_module(path).body)
    return names


def _resolve(dotted: str, root: Path) -> list[str]:
    """Library modules that importing / looking up ``dotted`` (``common.data.SelectStructured``) executes.

    Raises:
        ValueError: ``dotted`` names a sub-package or attribute the library does not have.
    """
    parts = dotted.split(".")
    if parts[0] != LIBRARY:
        return []
    current = LIBRARY
    modules = [current]
    for part in parts[1:]:
        candidate = f"{current}.{part}"
        if module_file(candidate, root) is not None:
            current = candidate
            modules.append(current)
            continue
        source = _lazy_sources(current, root).get(part)
        if source is not None:
            modules.append(f"{current}.{source}")
            if module_file(modules[-1], root) is None:
                raise ValueError(f"{dotted}: {current} re-exports {part!r} from {modules[-1]}, which does not exist")
        elif part not in _module_level_names(current, root):
            raise ValueError(f"{dotted}: the library has no {candidate} (no sub-module, re-export or name {part!r})")
        break
    return modules


def config_references(config: Any) -> set[str]:
    """Dotted ``common.*`` names in a raw config (``_target_`` strings and ``$`` expressions), any nesting."""
    found: set[str] = set()
    if isinstance(config, Mapping):
        for value in config.values():
            found |= config_references(value)
    elif isinstance(config, list):
        for value in config:
            found |= config_references(value)
    elif isinstance(config, str):
        found.update(_DOTTED_REF.findall(config))
        if re.fullmatch(rf"\$import {LIBRARY}", config.strip()):
            found.add(LIBRARY)
    return found


def library_closure(references: Iterable[str], root: Path = LIBRARY_ROOT) -> list[str]:
    """The library modules needed by ``references`` (dotted names), following imports transitively.

    Args:
        references: names such as ``common.networks.DeepGrowUNet`` or ``common.data``.
        root: the library's folder.

    Returns:
        Sorted module names (``common``, ``common._lazy``, ``common.data``, ``common.data.structures``, ...); every
        parent package of a module is included (importing a module runs its packages' ``__init__``).

    Raises:
        ValueError: a reference or an import names something the library does not have.
    """
    pending: list[str] = []
    for reference in references:
        resolved = _resolve(reference, root)
        if not resolved:
            raise ValueError(f"{reference!r} is not a name in the {LIBRARY} library")
        pending.extend(resolved)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise ValueError(f"library module {name} does not exist under {root}")
        seen.add(name)
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        tree = parse_module(path)
        for node, _ in import_statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    pending.extend(_resolve(alias.name, root))
            elif node.level == 0 and node.module is not None:
                top = node.module.split(".")[0]
                if top != LIBRARY:
                    continue
                pending.extend(_resolve(node.module, root))
                for alias in node.names:
                    if alias.name != "*":
                        pending.extend(_resolve(f"{node.module}.{alias.name}", root))
            elif node.level > 0:
                raise ValueError(f"{path}: relative imports are not supported by the export")
        for constant in ast.walk(tree):
            if (
                isinstance(constant, ast.Constant)
                and isinstance(constant.value, str)
                and constant.value != LIBRARY
                and _MODULE_STRING.match(constant.value)
            ):
                pending.extend(_resolve(constant.value, root))
    return sorted(seen)


def data_files(modules: Sequence[str], root: Path) -> list[Path]:
    """Package data (``*.json``) of the copied packages (e.g. ``common/bundle/metadata_schema.json``)."""
    files: list[Path] = []
    for name in modules:
        path = module_file(name, root)
        if path is not None and path.name == "__init__.py":
            files.extend(sorted(path.parent.glob("*.json")))
    return files


def library_package_name(modules: Sequence[str], root: Path = LIBRARY_ROOT) -> str:
    """``common_<8 hex digits>``: a SHA-256 of the copied files (relative paths and bytes) and the export format."""
    digest = hashlib.sha256(f"export-format-{EXPORT_FORMAT}".encode())
    paths = [p for p in (module_file(m, root) for m in modules) if p is not None] + data_files(modules, root)
    for path in sorted(set(paths)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{LIBRARY}_{digest.hexdigest()[:8]}"
