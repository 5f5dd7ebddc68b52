"""Lazy re-exports for package ``__init__`` modules (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, str], extra: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        sources: exported name -> sub-module (relative to ``package``) that defines it; a name equal to its
            sub-module (``{"data": "data"}``) exports the sub-module itself.
        extra: further names for ``dir()`` (the package's eager attributes).

    Example:
        >>> __getattr__, __dir__ = lazy_exports(__name__, {"load_msd_dataset": "msd"})
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 (the module hook's name)
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{sources[name]}")
        return module if sources[name] == name else getattr(module, name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*sources, *extra})

    return __getattr__, __dir__
