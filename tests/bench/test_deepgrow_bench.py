"""Smoke test of ``bench/deepgrow.py`` at tiny sizes, and of the helpers its figures rely on.

No timing assertions: only that both benchmarks run end to end, print the three training loops and the latency
columns side by side, do equal click work in both training loops, and write a consistent JSON report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy import ndimage


@pytest.fixture(scope="module")
def bench(load_bench_script: Callable[[str], ContextManager[ModuleType]]) -> Iterator[ModuleType]:
    """The benchmark script loaded as a module (``bench/`` is not an installed package)."""
    with load_bench_script("deepgrow") as module:
        yield module


def test_main_runs_both_benchmarks_and_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "deepgrow.json"
    threads = torch.get_num_threads()
    k = 2
    report = bench.main(
        [
            *("--sizes", "32x32", "--batch", "3", "--k", str(k), "--iters", "2", "--warmup", "1"),
            *("--profile-iters", "1", "--distinct-batches", "2", "--channels", "2,2,4,4,4"),
            *("--light-channels", "1,1,2,2,2", "--latency-sizes", "32x48", "--repeats", "2", "--latency-warmup", "1"),
            *("--threads", "1", "--note", "unit test", "--out", str(out)),
        ]
    )
    assert torch.get_num_threads() == threads  # the process's thread setting is restored

    printed = capsys.readouterr().out
    table = [line.split() for line in printed.splitlines() if line.split()[:2] == ["32x32", "cpu"]]
    assert [line[5] for line in table] == ["ours", "monai", "limit"]
    assert {line[2] for line in table} == {"2,2,4,4,4"}
    assert "ours / limit" in printed
    assert "ours / MONAI" in printed
    assert "ours [2, 2, 4, 4, 4] breakdown" in printed
    assert "monai [2, 2, 4, 4, 4] breakdown" in printed
    latency_lines = [line.split() for line in printed.splitlines() if line.split()[:2] == ["32x48", "cpu"]]
    assert [line[2] for line in latency_lines] == ["2,2,4,4,4", "1,1,2,2,2"]
    assert "CPU: networks answering a click in < 300 ms" in printed

    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(report))
    assert written["device"] == "cpu"
    assert written["threads"] == 1
    assert written["note"] == "unit test"
    assert written["torch"] == torch.__version__
    assert written["config"]["channels"] == [[2, 2, 4, 4, 4]]

    rows = {row["variant"]: row for row in written["train"]}
    assert set(rows) == {"ours", "monai", "limit"}
    for row in rows.values():
        assert row["size"] == [32, 32]
        assert row["channels"] == [2, 2, 4, 4, 4]
        assert row["batch"] == 3
        assert row["iters"] == 2
        assert len(row["iteration_s"]) == 2
        assert row["seconds"] == pytest.approx(sum(row["iteration_s"]))
        assert row["it_per_s"] == pytest.approx(2 / row["seconds"])
        assert row["median_ms_per_it"] == pytest.approx(1000 * float(np.median(row["iteration_s"])))
        assert row["ratio_to_limit"] == pytest.approx(row["it_per_s"] / rows["limit"]["it_per_s"])
    assert rows["limit"]["ratio_to_limit"] == pytest.approx(1.0)
    assert rows["limit"]["clicks_per_sample"] is None
    # equal work: same click schedule (round 1 always clicks), so 2 .. 1 + K clicks per sample; MONAI always runs K
    # rounds, ours skips a round only when no sample of the batch clicks in it
    assert rows["monai"]["rounds_per_iter"] == k
    assert 1 <= rows["ours"]["rounds_per_iter"] <= k
    for variant in ("ours", "monai"):
        assert 2 <= rows[variant]["clicks_per_sample"] <= 1 + k
    for variant in ("ours", "monai", "limit"):
        parts = rows[variant]["breakdown_ms"]
        assert parts["forward (no grad)"] > 0
        assert parts["train step"] > 0
        assert parts["total"] == pytest.approx(sum(v for name, v in parts.items() if name != "total"), abs=0.01)
    assert set(rows["limit"]["breakdown_ms"]) == {"forward (no grad)", "train step", "other", "total"}
    assert rows["limit"]["breakdown_ms"]["other"] == pytest.approx(0, abs=0.01)
    assert set(bench.CLICK_PARTS) <= set(rows["ours"]["breakdown_ms"])
    assert {"decollate_batch", "list_data_collate", "AddRandomGuidanced"} <= set(rows["monai"]["breakdown_ms"])
    assert rows["monai"]["data_pipeline_ms_per_batch"] > 0
    assert rows["ours"]["data_pipeline_ms_per_batch"] is None
    ops = rows["ours"]["click_ops"]
    assert set(ops) == {"ops", "kernels"}  # no "syncs" on the CPU
    assert 0 < ops["kernels"] < ops["ops"]
    assert rows["monai"]["click_ops"] is None
    assert "ours [2, 2, 4, 4, 4] click rounds, one batch, outside the network: ops" in printed

    (summary,) = written["train_summary"]
    assert summary["channels"] == [2, 2, 4, 4, 4]
    assert summary["ours_over_monai"] == pytest.approx(rows["ours"]["it_per_s"] / rows["monai"]["it_per_s"])
    assert summary["passed"] is None  # the 85 % target applies on a GPU only

    assert [row["channels"] for row in written["latency"]] == [[2, 2, 4, 4, 4], [1, 1, 2, 2, 2]]
    for row in written["latency"]:
        assert row["size"] == [32, 48]
        assert len(row["forward_times_ms"]) == len(row["transforms_times_ms"]) == 2
        assert row["forward_ms"] == pytest.approx(float(np.median(row["forward_times_ms"])))
        assert row["transforms_ratio"] == pytest.approx(row["transforms_ms"] / row["forward_ms"])
        assert row["functional_ratio"] == pytest.approx(row["functional_ms"] / row["forward_ms"])
        assert row["ratio_passed"] == (max(row["transforms_ratio"], row["functional_ratio"]) <= 1.15)
        assert row["within_cpu_target"] == (row["transforms_ms"] < 300)
        assert row["upload_ms"] >= 0
    assert written["latency"][0]["parameters"] > written["latency"][1]["parameters"]


def test_synthetic_sample_is_one_smooth_component_and_seeded(bench: ModuleType) -> None:
    image, label = bench.synthetic_sample((64, 48), np.random.default_rng(3))
    assert image.shape == label.shape == (1, 64, 48)
    assert image.dtype == label.dtype == np.float32
    assert set(np.unique(label)) == {0.0, 1.0}
    _, n_components = ndimage.label(label[0])
    assert n_components == 1  # MONAI's AddInitialSeedPointd then places exactly one seed, as ours does
    assert 0.01 < label.mean() < 0.5
    assert image[label > 0].mean() > image[label == 0].mean() + 0.5
    again, label_again = bench.synthetic_sample((64, 48), np.random.default_rng(3))
    np.testing.assert_array_equal(again, image)
    np.testing.assert_array_equal(label_again, label)
    _, other = bench.synthetic_sample((64, 48), np.random.default_rng(4))
    assert not np.array_equal(other, label)


def test_count_monai_clicks_ignores_padding(bench: ModuleType) -> None:
    guidance = json.dumps([[[3, 10, 12], [-1, -1, -1], [2, 5, 6]], [[-1, -1, -1], [-1, -1, -1], [0, 7, 0]]])
    assert bench.count_monai_clicks(guidance) == 3
    assert bench.count_monai_clicks([[[-1, -1, -1]], [[-1, -1, -1]]]) == 0


def test_monai_click_transforms_add_a_click_in_the_error_region(bench: ModuleType) -> None:
    """The reference loop's transforms, as built by the benchmark, do what MONAI's tutorial relies on."""
    label = np.zeros((1, 32, 32), dtype=np.float32)
    label[0, 8:24, 8:24] = 1
    image = np.zeros((1, 32, 32), dtype=np.float32)
    seeded = bench.monai_seed_transforms(0)({"image": image, "label": label})
    assert tuple(seeded["image"].shape) == (3, 32, 32)
    assert bench.count_monai_clicks(seeded["guidance"]) == 1
    pred = torch.full((1, 32, 32), -10.0)  # predicts nothing: the next click is positive, inside the label
    data = {**seeded, "pred": pred, "probability": 1.0}
    out = bench.monai_click_transforms(0)(data)
    positive = [p for p in json.loads(out["guidance"])[0] if min(p) >= 0]
    assert len(positive) == 2
    assert all(label[0, p[1], p[2]] == 1 for p in positive)
    assert tuple(out["image"].shape) == (3, 32, 32)


@pytest.mark.parametrize("text", ["256", "0x16", "axb", "16x16x16", "20x32", ""])
def test_parse_size_rejects_bad_sizes(bench: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        bench.parse_size(text)


@pytest.mark.parametrize("text", ["16,32,64,128", "16,32,64,128,0", "a,b,c,d,e", ""])
def test_parse_channels_rejects_bad_widths(bench: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="five comma-separated"):
        bench.parse_channels(text)


def test_parsers_accept_good_input(bench: ModuleType) -> None:
    assert bench.parse_size("512X256") == (512, 256)
    assert bench.parse_channels("8,16,32,64,128") == (8, 16, 32, 64, 128)


def test_bad_arguments_exit_with_a_message(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "30x30"])
    assert "multiples of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--iters", "0"])
    assert "--iters must be >= 1" in capsys.readouterr().err
