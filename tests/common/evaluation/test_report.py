"""Markdown tables of evaluation runs: values, grouping, undefined distances and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from common.evaluation.records import RoundRecord, write_records_json
from common.evaluation.report import load_runs, main, rounds_table, structure_table


def _rec(method: str, case: str, name: str, group: str, rnd: int, dice: float, hd95: float = 1.0) -> RoundRecord:
    structure = {"liver": 1, "aorta": 5}[name]
    return RoundRecord(method, case, structure, name, group, rnd, rnd, dice, hd95, 0.5, 0.01, False)


RECORDS = [
    _rec("a", "c1", "liver", "seen", 1, 0.8),
    _rec("a", "c2", "liver", "seen", 1, 0.6),
    _rec("a", "c1", "aorta", "unseen", 1, 0.5, math.inf),
    _rec("a", "c1", "liver", "seen", 2, 0.9),
    _rec("b", "c1", "liver", "seen", 1, 0.4),
]


def test_structure_table_means_and_groups() -> None:
    table = structure_table(RECORDS, "dice", 1).splitlines()
    assert table[0] == "| structure | group | a | b |"
    assert "| liver | seen | 0.700 ± 0.141 | 0.400 |" in table
    assert "| aorta | unseen | 0.500 | n/a |" in table
    assert table.index("| liver | seen | 0.700 ± 0.141 | 0.400 |") < table.index("| aorta | unseen | 0.500 | n/a |")
    assert "| **mean of seen structures** | seen | **0.700** | **0.400** |" in table


def test_undefined_distances_are_counted_not_averaged() -> None:
    rows = [*RECORDS, _rec("a", "c2", "aorta", "unseen", 1, 0.0, 3.0)]
    table = structure_table(rows, "hd95", 1, digits=1)
    assert "| aorta | unseen | 3.0 |" in table  # the inf of c1 is left out of the mean
    table = structure_table([*rows, _rec("a", "c3", "aorta", "unseen", 1, 0.0, 5.0)], "hd95", 1, digits=1)
    assert "4.0 ± 1.4 (1 undef.)" in table


def test_rounds_table() -> None:
    table = rounds_table(RECORDS, "dice").splitlines()
    assert table[0] == "| round | a (seen) | a (unseen) | b (seen) | b (unseen) |"
    assert table[3] == "| 2 | 0.900 | n/a | n/a | n/a |"


def test_rounds_table_shows_only_the_requested_rounds() -> None:
    table = rounds_table(RECORDS, "dice", rounds=[2]).splitlines()
    assert len(table) == 3
    assert table[2].startswith("| 2 |")
    with pytest.raises(ValueError, match=r"rounds \[5\] are not in the records"):
        rounds_table(RECORDS, "dice", rounds=[1, 5])


def test_cli_writes_markdown_and_plot(tmp_path: Path) -> None:
    complete = [r for r in RECORDS if r.round == 1]  # every curve covers the same rounds, as the loop writes them
    for method in ("a", "b"):
        (tmp_path / method).mkdir()
        write_records_json([r for r in complete if r.method == method], tmp_path / method / "rounds.json")
    assert len(load_runs([tmp_path / "a", tmp_path / "b"])) == len(complete)
    out, png = tmp_path / "r.md", tmp_path / "r.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--png", str(png)]) == 0
    text = out.read_text()
    assert "#### dice: first round per structure" in text
    assert "#### hd95: mean per round" in text
    assert png.stat().st_size > 0


def test_labels_rename_methods(tmp_path: Path) -> None:
    for run in ("x", "y"):
        (tmp_path / run).mkdir()
        write_records_json([r for r in RECORDS if r.method == "a" and r.round == 1], tmp_path / run / "rounds.json")
    records = load_runs([tmp_path / "x", tmp_path / "y"], labels=["first", "second"])
    assert structure_table(records).splitlines()[0] == "| structure | group | first | second |"
    with pytest.raises(ValueError, match="1 labels for 2 run folders"):
        load_runs([tmp_path / "x", tmp_path / "y"], labels=["first"])


def test_missing_run_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_runs([tmp_path / "nowhere"])
