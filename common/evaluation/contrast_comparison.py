"""Arms x test sets: the tables and curves of a comparison fixed before training (e.g. CT-only vs randomised).

Each *arm* is a model (or baseline) evaluated with the same robot-user protocol on several *test sets* (the same cases
stored in other contrasts or geometries, :mod:`common.data.variants`). An arm's run folders are given by a pattern
with a ``{set}`` placeholder, e.g. ``bundles/deepgrow_clicks/runs/cmp_ct/{set}/interactive``, each an ``out_dir``
of :func:`common.evaluation.run_interactive_evaluation` (holding ``rounds.json``). A run that does not exist is shown
as "not run" (a baseline evaluated on some sets only), never silently dropped; an arm with no run at all is an error.

Figures are means over the structure curves (one curve per case and structure), per group (``seen`` / ``unseen``)
and over all structures; the *primary* figure of an arm is the mean Dice over all structures at one round,
averaged over the contrast sets named for it.

Usage::

    python -m common.evaluation.contrast_comparison \\
        --arm "CT-only" "runs/cmp_ct/{set}/interactive" --arm "randomised" "runs/cmp_synth/{set}/interactive" \\
        --set Phantoms CT --set Phantoms_mri "T1-like" --set Phantoms_mri_t2 "T2-like" \\
        --contrasts Phantoms Phantoms_mri Phantoms_mri_t2 --rounds 1 5 --primary-round 5 \\
        --out docs/results/randomisation.md --png docs/results/randomisation_curves.png
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from common.evaluation.records import RoundRecord, read_records

__all__ = ["Grid", "grid_figure", "grid_table", "load_grid", "main", "mean_metric", "plot_grid", "primary_table"]

#: ``{(arm label, set key): records}``; a pair without a run is absent.
Grid = dict[tuple[str, str], list[RoundRecord]]

_COLOURS = ("tab:blue", "tab:red", "tab:gray", "tab:green", "tab:purple", "tab:brown")


def load_grid(arms: Mapping[str, str], sets: Sequence[str]) -> Grid:
    """Read every ``rounds.json`` of ``arms`` (label -> folder pattern with ``{set}``) over ``sets``.

    Raises:
        ValueError: a pattern without ``{set}``, or no sets.
        FileNotFoundError: an arm without any run.
    """
    if not sets:
        raise ValueError("no test sets given")
    grid: Grid = {}
    for arm, pattern in arms.items():
        if "{set}" not in pattern:
            raise ValueError(f"the folder pattern of arm {arm!r} has no '{{set}}' placeholder: {pattern!r}")
        for key in sets:
            path = Path(pattern.format(set=key)) / "rounds.json"
            if path.is_file():
                grid[(arm, key)] = read_records(path)
        if not any((arm, key) in grid for key in sets):
            raise FileNotFoundError(f"arm {arm!r} has no run: no {pattern.format(set='<set>')}/rounds.json")
    return grid


def mean_metric(records: Sequence[RoundRecord], round_index: int, group: str | None, metric: str = "dice") -> float:
    """Mean of ``metric`` over the structure curves of ``group`` (``None`` = all) at ``round_index``; NaN if none.

    Non-finite values (HD95 of an empty prediction) are left out of the mean.
    """
    values = [
        float(getattr(r, metric))
        for r in records
        if r.round == round_index and (group is None or r.group == group) and math.isfinite(float(getattr(r, metric)))
    ]
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _undefined(records: Sequence[RoundRecord], round_index: int, group: str, metric: str) -> str:
    """`` (k undefined)`` when ``k`` curves of ``group`` have a non-finite value at ``round_index``, else ``""``."""
    k = sum(
        1
        for r in records
        if r.round == round_index and r.group == group and not math.isfinite(float(getattr(r, metric)))
    )
    return f" ({k} undefined)" if k else ""


def grid_table(
    grid: Grid, arms: Sequence[str], sets: Mapping[str, str], rounds: Sequence[int], metric: str = "dice"
) -> str:
    """Markdown: one row per (test set, round), one column per arm, cells ``seen / unseen`` means (with the number of
    curves whose value is undefined, e.g. the HD95 of an empty prediction, which the mean leaves out)."""
    digits = 3 if metric == "dice" else 1
    lines = [
        "| test set | round | " + " | ".join(f"{a} (seen / unseen)" for a in arms) + " |",
        "| --- | --- |" + " --- |" * len(arms),
    ]
    for key, label in sets.items():
        for k in rounds:
            cells = []
            for arm in arms:
                records = grid.get((arm, key))
                if records is None:
                    cells.append("not run")
                    continue
                seen, unseen = (
                    _fmt(mean_metric(records, k, g, metric), digits) + _undefined(records, k, g, metric)
                    for g in ("seen", "unseen")
                )
                cells.append(f"{seen} / {unseen}")
            lines.append(f"| {label} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def primary_table(
    grid: Grid, arms: Sequence[str], sets: Mapping[str, str], contrasts: Sequence[str], round_index: int
) -> str:
    """Markdown: per arm, the all-structure mean Dice at ``round_index`` on each contrast set, their average (the
    primary figure) and the largest drop from the first contrast (the reference, e.g. CT) to another."""
    header = [sets[c] for c in contrasts]
    lines = [
        f"| arm | {' | '.join(header)} | mean (primary) | largest drop from {header[0]} |",
        "| --- |" + " --- |" * (len(contrasts) + 2),
    ]
    for arm in arms:
        values = [mean_metric(grid[(arm, c)], round_index, None) if (arm, c) in grid else math.nan for c in contrasts]
        finite = [v for v in values if not math.isnan(v)]
        mean = sum(finite) / len(finite) if len(finite) == len(values) else math.nan
        drop = max((values[0] - v for v in values[1:]), default=math.nan)
        lines.append(
            f"| {arm} | " + " | ".join(_fmt(v, 3) for v in values) + f" | **{_fmt(mean, 3)}** | {_fmt(drop, 3)} |"
        )
    return "\n".join(lines)


def grid_figure(grid: Grid, arms: Sequence[str], sets: Mapping[str, str], metric: str = "dice") -> Figure:
    """The comparison as a figure: curves over rounds, or grouped bars where every run has a single round.

    Curves: one panel per test set, ``metric`` per round, one colour per arm, seen solid, unseen dashed. Bars (a
    one-round protocol, e.g. a network alone from a box, where a "curve" would be one dot per arm): one panel, a group
    per test set, one colour per arm, seen plain and unseen hatched; a missing run leaves its slot empty.
    """
    rounds_seen = {r.round for records in grid.values() for r in records}
    if len(rounds_seen) == 1:
        return _bar_figure(grid, arms, sets, rounds_seen.pop(), metric)
    fig = Figure(figsize=(3.6 * len(sets), 3.4), constrained_layout=True)
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (key, label) in zip(axes, sets.items(), strict=True):
        for index, arm in enumerate(arms):
            records = grid.get((arm, key))
            if records is None:
                continue
            rounds = sorted({r.round for r in records})
            for group, style in (("seen", "-"), ("unseen", "--")):
                ax.plot(
                    rounds,
                    [mean_metric(records, k, group, metric) for k in rounds],
                    style,
                    marker="o",
                    markersize=3,
                    color=_COLOURS[index % len(_COLOURS)],
                    label=f"{arm} ({group})",
                )
        ax.set_title(label)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        if metric == "dice":
            ax.set_ylim(0.0, 1.0)
    axes[0].set_ylabel(_metric_label(metric))
    legend: dict[str, object] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(text, handle)
    axes[-1].legend(list(legend.values()), list(legend), fontsize=7, loc="lower right")
    return fig


def _bar_figure(grid: Grid, arms: Sequence[str], sets: Mapping[str, str], round_index: int, metric: str) -> Figure:
    """One panel of grouped bars: test sets along x, arm x (seen, unseen) bars in each group."""
    groups = ("seen", "unseen")
    width = 0.8 / (len(arms) * len(groups))
    fig = Figure(figsize=(max(6.0, 1.1 * len(sets) * len(arms) + 1.5), 3.6), constrained_layout=True)
    ax = fig.subplots()
    for slot, (index, group) in enumerate(itertools.product(range(len(arms)), groups)):
        arm = arms[index]
        xs, heights = [], []
        for position, key in enumerate(sets):
            records = grid.get((arm, key))
            if records is not None:
                xs.append(position - 0.4 + width * (slot + 0.5))
                heights.append(mean_metric(records, round_index, group, metric))
        ax.bar(
            xs,
            heights,
            width,
            color=_COLOURS[index % len(_COLOURS)],
            alpha=1.0 if group == "seen" else 0.55,
            hatch=None if group == "seen" else "//",
            edgecolor="white",
            label=f"{arm} ({group})",
        )
    ax.set_xticks(range(len(sets)), list(sets.values()))
    ax.set_ylabel(f"{_metric_label(metric)} at round {round_index}")
    ax.grid(axis="y", alpha=0.3)
    if metric == "dice":
        ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2 * len(arms), frameon=False)
    return fig


def _metric_label(metric: str) -> str:
    return "Dice" if metric == "dice" else metric


def plot_grid(grid: Grid, arms: Sequence[str], sets: Mapping[str, str], png: str | Path, metric: str = "dice") -> Path:
    """Write :func:`grid_figure` to ``png``; returns the path."""
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_figure(grid, arms, sets, metric).savefig(path, dpi=110)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the markdown tables (and a PNG) of a comparison; returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluation.contrast_comparison", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arm", nargs=2, action="append", required=True, metavar=("LABEL", "PATTERN"))
    parser.add_argument("--set", nargs=2, action="append", required=True, metavar=("KEY", "LABEL"))
    parser.add_argument("--contrasts", nargs="+", required=True, help="set keys of the primary figure, CT first")
    parser.add_argument("--rounds", nargs="+", type=int, required=True, help="rounds shown in the tables")
    parser.add_argument("--primary-round", type=int, required=True, help="round of the primary figure")
    parser.add_argument("--out", type=Path, required=True, help="markdown file to write")
    parser.add_argument("--png", type=Path, help="Dice curves (bars for a one-round protocol) to write")
    args = parser.parse_args(argv)
    arms = dict(args.arm)
    sets = dict(args.set)
    unknown = [c for c in args.contrasts if c not in sets]
    if unknown:
        parser.error(f"--contrasts {unknown} are not among the --set keys {list(sets)}")
    grid = load_grid(arms, list(sets))
    parts = [
        f"#### Primary figure: mean Dice over all structures at round {args.primary_round}\n\n"
        + primary_table(grid, list(arms), sets, args.contrasts, args.primary_round),
        "#### Dice (seen / unseen)\n\n" + grid_table(grid, list(arms), sets, args.rounds, "dice"),
        "#### HD95 in mm (seen / unseen)\n\n" + grid_table(grid, list(arms), sets, args.rounds, "hd95"),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    if args.png is not None:
        plot_grid(grid, list(arms), sets, args.png)
    print(f"wrote {args.out}" + (f" and {args.png}" if args.png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
