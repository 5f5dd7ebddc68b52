"""Smoke test of ``bench/propagation.py`` on a tiny volume, and of the batch reconstruction it relies on.

No timing assertions: only that the benchmark runs end to end, reports both columns (forward alone, propagation) for
both modes, counts the right slices and calls, and writes a consistent JSON report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType

import pytest
import torch

from common.propagation import SlicePropagationInferer


@pytest.fixture(scope="module")
def bench(load_bench_script: Callable[[str], ContextManager[ModuleType]]) -> Iterator[ModuleType]:
    """The benchmark script loaded as a module (``bench/`` is not an installed package)."""
    with load_bench_script("propagation") as module:
        yield module


def test_main_prints_both_columns_and_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "bench.json"
    threads = torch.get_num_threads()
    args = ["--sizes", "32x32x8", "--depth", "2", "--base-channels", "4", "--user-slices", "3", "--threads", "1"]
    report = bench.main([*args, "--repeats", "1", "--warmup", "1", "--json", str(out)])
    assert torch.get_num_threads() == threads  # the process's thread setting is restored

    printed = capsys.readouterr().out
    assert "forward ms/slice" in printed
    assert "propagation ms/slice" in printed
    table_rows = [line.split() for line in printed.splitlines() if line.strip().startswith("32x32x8 ")]
    assert [row[2] for row in table_rows] == ["batched", "sequential"]
    assert table_rows[0][-1] in ("PASS", "FAIL")
    assert table_rows[1][-1] == "-"

    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["results"] == json.loads(json.dumps(report["results"]))
    assert written["torch"] == torch.__version__
    assert written["threads"] == 1
    assert written["device"] == "cpu"
    assert written["device_name"]
    batched, sequential = written["results"]
    for row in (batched, sequential):
        assert row["size"] == [32, 32, 8]
        assert row["user_slices"] == [2, 4, 6]
        # nearest merge, no early stop: every non-user slice predicted exactly once
        assert row["n_slices"] == 8 - 3
        assert row["forward_s"] > 0
        assert row["propagation_s"] > 0
        assert row["ratio"] == pytest.approx(row["propagation_s"] / row["forward_s"])
        assert row["propagation_ms_per_slice"] == pytest.approx(1000 * row["propagation_s"] / row["n_slices"])
        assert len(row["propagation_times_s"]) == len(row["forward_times_s"]) == 1
    # fronts from 2, 4, 6 (nearest): down 2 -> 1, 0; up 2 -> 3; up 4 -> 5; up 6 -> 7 (4 and 6 own no lower slice)
    assert batched["batch_sizes"] == {"4": 1, "1": 1}
    assert batched["n_calls"] == 2
    assert sequential["batch_sizes"] == {"1": 5}
    assert sequential["n_calls"] == 5
    assert batched["target"] == "<=1.2x"
    assert batched["passed"] == (batched["ratio"] <= 1.2)
    assert sequential["passed"] is None


def test_network_batch_sizes_match_the_engine_with_early_stops(bench: ModuleType) -> None:
    """The reconstruction from the front records equals the batches the network really received, also when fronts
    stop early on empty predictions and batches are capped."""
    height, width, depth = 16, 16, 30
    annotation = torch.zeros(1, 1, height, width, depth)
    annotation[0, 0, 4:12, 4:12, [5, 15, 24]] = 1
    image = torch.ones(1, 1, height, width, depth)
    image[..., [3, 10, 20, 27]] = -1  # the network predicts these slices empty
    inputs = torch.cat([image, annotation], dim=1)
    calls: list[int] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        # foreground for slice images with a positive mean, else empty: the fronts stop after 2 to 5 steps
        fg = (x[:, :1].mean(dim=(2, 3), keepdim=True) > 0).float().expand_as(x[:, :1])
        return torch.cat((1 - fg, fg), dim=1) * 20 - 10

    for batch_fronts, max_batch_size in ((True, None), (True, 4), (False, None)):
        calls.clear()
        inferer = SlicePropagationInferer(
            max_empty_slices=1,
            merge="fusion",
            divisible_by=1,
            batch_fronts=batch_fronts,
            max_batch_size=max_batch_size,
            connect_tolerance=None,
            min_area_ratio=None,
            max_area_ratio=None,
            max_intensity_shift=None,
        )
        inferer(inputs, network)
        fronts = inferer.last_results[0].fronts
        assert sorted(f.n_predicted for f in fronts) == [2, 3, 4, 5, 5, 5]
        assert all(f.stop == "empty" for f in fronts)
        assert bench.network_batch_sizes(fronts, batch_fronts, max_batch_size) == calls


@pytest.mark.parametrize("text", ["128x128", "0x4x4", "axbxc", "4x4x4x4", ""])
def test_parse_size_rejects_bad_sizes(bench: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="HxWxD"):
        bench.parse_size(text)


def test_parse_size_and_user_slices(bench: ModuleType) -> None:
    assert bench.parse_size("512X512x200") == (512, 512, 200)
    assert bench.user_slice_indices(200, 1) == [100]
    assert bench.user_slice_indices(200, 3) == [50, 100, 150]
    with pytest.raises(ValueError, match="too thin"):
        bench.user_slice_indices(4, 3)
