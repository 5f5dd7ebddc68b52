"""Shared by the benchmark smoke tests: load a script of ``bench/`` as a module (``bench/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@contextmanager
def loaded_bench_script(name: str) -> Iterator[ModuleType]:
    """``bench/<name>.py`` imported as module ``bench_<name>`` for the duration of the block."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="session")
def load_bench_script() -> object:
    """The :func:`loaded_bench_script` context manager, for the test modules' ``bench`` fixtures."""
    return loaded_bench_script
