"""Markdown tables and a combined plot from several evaluation runs (for bundle docs).

Usage::

    python -m common.evaluation.report RUN_DIR [RUN_DIR ...] --out report.md --png curves.png

Each ``RUN_DIR`` is an ``out_dir`` of :func:`common.evaluation.run_interactive_evaluation` (it holds
``rounds.json``). The report has, per metric asked for, a table of the first round per structure (the one-shot
result, structures grouped seen / unseen) and a table of the group means per round, one column per method.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from common.evaluation.records import RoundRecord, read_records

__all__ = ["load_runs", "main", "rounds_table", "structure_table"]


def load_runs(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[RoundRecord]:
    """All records of the given run folders (``rounds.json`` in each).

    Args:
        run_dirs: evaluation output folders.
        labels: optional method name per folder, replacing the recorded one (e.g. to tell apart two runs of one
            method with different weights).

    Raises:
        FileNotFoundError: a folder without ``rounds.json``.
        ValueError: ``labels`` of another length than ``run_dirs``.
    """
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} run folders")
    records: list[RoundRecord] = []
    for index, run in enumerate(run_dirs):
        path = Path(run) / "rounds.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run} an evaluation output folder?")
        rows = read_records(path)
        if labels is not None:
            rows = [replace(r, method=labels[index]) for r in rows]
        records.extend(rows)
    return records


def _cell(values: list[float], digits: int) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    undefined = len(values) - len(finite)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" + (f" ({undefined} undef.)" if undefined else "")


def _methods(records: Sequence[RoundRecord]) -> list[str]:
    return list(dict.fromkeys(r.method for r in records))


def structure_table(records: Sequence[RoundRecord], metric: str = "dice", round_index: int = 1, digits: int = 3) -> str:
    """Markdown table: one row per structure (seen first, then unseen), one column per method, cells
    ``mean ± std`` over cases of ``metric`` at ``round_index``, then a mean row per group."""
    methods = _methods(records)
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    group_of: dict[str, str] = {}
    for r in records:
        if r.round == round_index:
            values[(r.group, r.structure_name, r.method)].append(float(getattr(r, metric)))
            group_of[r.structure_name] = r.group
    lines = [
        f"| structure | group | {' | '.join(methods)} |",
        "| --- | --- |" + " --- |" * len(methods),
    ]
    for group in sorted(set(group_of.values())):
        names = sorted(n for n, g in group_of.items() if g == group)
        for name in names:
            cells = [_cell(values[(group, name, m)], digits) for m in methods]
            lines.append(f"| {name} | {group} | {' | '.join(cells)} |")
        means = []
        for m in methods:
            per_structure = [
                sum(v) / len(v) for n in names if (v := [x for x in values[(group, n, m)] if math.isfinite(x)])
            ]
            means.append(_cell(per_structure, digits))
        lines.append(f"| **mean of {group} structures** | {group} | {' | '.join(f'**{c}**' for c in means)} |")
    return "\n".join(lines)


def rounds_table(
    records: Sequence[RoundRecord], metric: str = "dice", digits: int = 3, rounds: Sequence[int] | None = None
) -> str:
    """Markdown table: one row per round, one column per (method, group), cells ``mean ± std`` over curves.

    Args:
        records: the runs' records.
        metric: ``"dice"``, ``"hd95"`` or ``"msd"``.
        digits: decimals in the cells.
        rounds: rows to show (e.g. ``[1, 2, 5, 10, 15]``); all recorded rounds when ``None``.

    Raises:
        ValueError: a requested round that no record has.
    """
    methods = _methods(records)
    groups = sorted({r.group for r in records})
    recorded = sorted({r.round for r in records})
    if rounds is not None:
        missing = sorted(set(rounds) - set(recorded))
        if missing:
            raise ValueError(f"rounds {missing} are not in the records (recorded: {recorded[0]}..{recorded[-1]})")
    rounds = recorded if rounds is None else sorted(set(rounds))
    values: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for r in records:
        values[(r.round, r.method, r.group)].append(float(getattr(r, metric)))
    columns = [(m, g) for m in methods for g in groups]
    lines = [
        "| round | " + " | ".join(f"{m} ({g})" for m, g in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for k in rounds:
        lines.append(f"| {k} | " + " | ".join(_cell(values[(k, m, g)], digits) for m, g in columns) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.evaluation.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evaluation output folders (with rounds.json)")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--labels", nargs="+", help="method name per run folder (default: the recorded one)")
    parser.add_argument("--png", type=Path, help="combined metric-vs-interactions plot to write")
    parser.add_argument("--metrics", nargs="+", default=["dice", "hd95"], help="metrics to tabulate")
    parser.add_argument("--title", default=None, help="plot title")
    parser.add_argument("--rounds", nargs="+", type=int, help="rounds shown in the per-round tables (default: all)")
    args = parser.parse_args(argv)
    records = load_runs(args.runs, args.labels)
    parts = []
    for metric in args.metrics:
        digits = 3 if metric == "dice" else 1
        parts.append(f"#### {metric}: first round per structure\n\n{structure_table(records, metric, 1, digits)}")
        parts.append(f"#### {metric}: mean per round\n\n{rounds_table(records, metric, digits, args.rounds)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    if args.png is not None:
        from common.evaluation.plots import plot_metric_curves
        from common.evaluation.records import summarise

        summaries = [summarise([r for r in records if r.method == m]) for m in _methods(records)]
        plot_metric_curves(summaries, args.png, title=args.title)
    print(f"wrote {args.out}" + (f" and {args.png}" if args.png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
