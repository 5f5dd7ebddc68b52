"""Smoke tests of ``bench/label_server.py`` on the tiny phantoms with a few requests (needs ``monailabel``).

No timing assertions: the benchmark starts this repository's app and MONAI Label's sample app as real servers, sends
3D Slicer's request bodies with 2 clients, probes ``/info/`` while requests are queued, prints the tables side
by side and writes a JSON report with consistent figures. The training part (one epoch through ``POST /train``) is
a ``slow`` test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("monailabel")

BenchLoader = Callable[[str], ContextManager[ModuleType]]


def _check_latency_row(row: dict[str, Any], requests: int) -> None:
    assert row["n"] == max(requests, row["clients"])
    assert 0 < row["min_s"] <= row["p50_s"] <= row["p95_s"] <= row["max_s"]
    assert row["min_s"] <= row["mean_s"] <= row["max_s"]
    assert row["requests_per_s"] == pytest.approx(row["n"] / row["wall_s"])
    assert row["answer"].startswith("multipart/form-data")  # Slicer's answer: result JSON and file
    assert row["cold_s"] > 0


def test_label_server_bench_measures_our_app_and_the_sample_app(
    load_bench_script: BenchLoader, tiny_phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "label_server.json"
    argv = ["--data", str(tiny_phantoms), "--requests", "1", "--clients", "2", "--info-queued", "2"]
    with load_bench_script("label_server") as bench:
        bench.main([*argv, "--threads", "default", "--skip", "train", "--out", str(out)])
    printed = capsys.readouterr().out
    for header in ("POST /infer latency, Slicer's bodies", "GET /info/ while inference requests are queued"):
        assert header in printed
    report = json.loads(out.read_text())
    assert report["case"] == "phantom_004"  # the last case: left unlabelled in the studies folder
    assert report["shape"] == "64x64x40"
    ours = report["app"]
    assert [(r["model"], r["clients"]) for r in ours["rows"]] == [("slice_propagation", 2), ("deepgrow_clicks", 2)]
    for row in ours["rows"]:
        _check_latency_row(row, 1)
        assert row["server"] == "ours"
    assert [e["settings"] for e in ours["threads"]] == [["default"]]
    assert ours["threads"][0]["threads"] == max(1, ours["cores"] // 2)
    assert "train" not in ours
    info = ours["info"]
    assert info["model"] == "slice_propagation"
    assert info["queued"] == info["inference"]["n"] == 2
    assert info["idle"]["n"] == 5
    # Slicer's bodies: the uploaded label map for slice propagation, 2D clicks on one slice for DeepGrow
    bodies = report["requests"]
    assert bodies["slice_propagation"]["upload"].endswith(".nii.gz")
    assert bodies["slice_propagation"]["params"]["selected_label_name"] == "kidney_right"
    clicks = bodies["deepgrow_clicks"]["params"]
    assert {p[2] for p in clicks["foreground"]} == {clicks["slice"]}
    assert bodies["deepgrow_2d"]["params"] == clicks
    base = report["baseline"]
    assert "skipped" not in base, base.get("skipped")
    assert [(r["model"], r["clients"]) for r in base["rows"]] == [("deepgrow_2d", 2)]
    for row in base["rows"]:
        _check_latency_row(row, 1)
    assert base["info"]["inference"]["n"] == 2
    assert set(base["image_load_s"]) == {"phantom_004.nii.gz", "phantom_004.nrrd"}
    assert any(".nrrd" in note for note in base["workarounds"])


def test_thread_settings_and_slicer_train_params(load_bench_script: BenchLoader) -> None:
    from common.monailabel.application import usable_cores

    with load_bench_script("label_server") as bench:
        groups = bench.resolve_threads(["default", "1", "all", "1"])
        info = {"trainers": {"m": {"config": {"device": ["cpu", "cuda"], "max_epochs": 30, "tracking": ["None"]}}}}
        params = bench.slicer_train_params(info, "m")
    cores = usable_cores()
    assert groups[max(1, cores // 2)][0] == "default"
    assert "all" in groups[cores]
    assert groups[1].count("1") == 2  # repeated settings are measured once
    assert sum(len(v) for v in groups.values()) == 4
    assert params == {"device": "cpu", "max_epochs": 30, "tracking": "None", "client_id": "user-xyz"}


@pytest.mark.slow
def test_label_server_bench_compares_threads_and_times_one_training_epoch(
    load_bench_script: BenchLoader, tiny_phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.json"
    quick_epoch = json.dumps({"slices_per_volume": 1, "num_workers": 0})
    argv = ["--data", str(tiny_phantoms), "--requests", "2", "--clients", "1", "--threads", "1", "2"]
    with load_bench_script("label_server") as bench:
        bench.main([*argv, "--skip", "info", "baseline", "--train-overrides", quick_epoch, "--out", str(out)])
    assert "1-client latency by --conf threads, interleaved" in capsys.readouterr().out
    report = json.loads(out.read_text())
    ours = report["app"]
    assert ours["threads_interleaved"]
    assert [(e["settings"], e["threads"]) for e in ours["threads"]] == [(["1"], 1), (["2"], 2)]
    for entry in ours["threads"]:
        assert set(entry["latency"]) == {"slice_propagation", "deepgrow_clicks"}
        assert all(v["n"] == 2 and v["first_s"] > 0 for v in entry["latency"].values())
        assert entry["start_s"] > 0
    train = ours["train"]
    assert train["status"] == "DONE"
    assert train["params"]["max_epochs"] == 1
    assert train["params"]["slices_per_volume"] == 1
    assert train["params"]["client_id"] == "user-xyz"
    assert train["params"]["val_split"] == 0.2  # the first value of each /info option, as Slicer sends them
    assert train["train_stats"]["epoch"] == train["train_stats"]["total_epochs"] == 1
    assert 0 < train["train_stats_total_time_s"] <= train["seconds"]
