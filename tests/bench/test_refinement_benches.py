"""Smoke tests of ``bench/graphcut.py``, ``bench/geodesic.py`` and ``bench/bifseg.py`` on tiny inputs.

No timing assertions: the benchmarks run end to end, print their side-by-side tables and write their JSON reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType

import pytest


def test_graphcut_bench_compares_backends_and_writes_json(
    load_bench_script: Callable[[str], ContextManager[ModuleType]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "graphcut.json"
    with load_bench_script("graphcut") as bench:
        bench.main(
            ["--sizes", "24x32", "12x12x12", "--noise-sizes", "16x16", "--grabcut-sizes", "24x32", "--repeats", "1",
             "--json", str(out)]
        )  # fmt: skip
    printed = capsys.readouterr().out
    assert "24x32" in printed
    assert "12x12x12" in printed
    report = json.loads(out.read_text())
    assert report


def test_geodesic_bench_reports_errors_against_dijkstra(
    load_bench_script: Callable[[str], ContextManager[ModuleType]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "geodesic.json"
    with load_bench_script("geodesic") as bench:
        bench.main(["--sizes", "16x20", "8x8x6", "--repeats", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "dijkstra" in printed
    assert "raster" in printed
    assert json.loads(out.read_text())


def test_bifseg_bench_times_every_mode_through_the_bundle(
    load_bench_script: Callable[[str], ContextManager[ModuleType]],
    tiny_phantoms: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bifseg.json"
    with load_bench_script("bifseg") as bench:
        bench.main(["--data", str(tiny_phantoms), "--cases", "1", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "x forward" in printed
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"cnn", "crf", "bifseg_box"} <= set(rows)
    assert rows["cnn"]["x_forward"] == 1.0
