"""Several methods through one robot-user protocol, side by side: tables, curves and paired t-tests.

Every method (a model adapter, see :class:`common.evaluation.loop.ModelAdapter`) is evaluated on the same cases with a
fresh robot built by the same factory (same seed), so the first interaction (e.g. the box) is identical for every
method and later ones (scribbles) answer each method's own errors. The comparison reports, per method and structure
group, the Dice after the first interaction and after each later round, the mean machine time per step, and a paired
Student's t-test of the per-case Dice against a reference method (BIFSeg's protocol: paired t-test, p < 0.05).

Files written to ``out_dir``: one sub-folder per method (the usual result files), ``comparison.json``,
``comparison.md`` (markdown tables) and ``comparison.png`` (mean Dice per round, one line per method and group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from common.evaluation.cases import EvalCase
from common.evaluation.loop import ModelAdapter, run_interactive_evaluation
from common.evaluation.records import RoundRecord, write_json
from common.interaction.robot import RobotUser

__all__ = [
    "budget_markdown",
    "compare_methods",
    "comparison_tables",
    "dice_after_strokes",
    "paired_t_test",
    "plot_comparison",
    "tables_markdown",
]

logger = logging.getLogger(__name__)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """Paired Student's t-test of ``a`` against ``b`` (same cases, same order): mean difference, t, p, n.

    ``p`` is ``None`` with fewer than 2 pairs or when every difference is equal (the test is undefined).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.shape} and {y.shape}")
    diff = x - y
    out: dict[str, float | int | None] = {"n": int(diff.size), "mean_difference": None, "t": None, "p": None}
    if diff.size:
        out["mean_difference"] = float(diff.mean())
    if diff.size >= 2 and float(np.ptp(diff)) > 0:
        result = stats.ttest_rel(x, y)
        out["t"] = float(result.statistic)
        out["p"] = float(result.pvalue)
    return out


def _dice_by_case(records: Sequence[RoundRecord], round_index: int, group: str) -> dict[tuple[str, int], float]:
    return {
        (r.case_id, r.structure): r.dice
        for r in records
        if r.round == round_index and (group == "all" or r.group == group)
    }


def comparison_tables(
    results: Mapping[str, Sequence[RoundRecord]], reference: str | None, rounds: Sequence[int]
) -> dict[str, Any]:
    """Per method, group and round: Dice mean/std, mean seconds per step, and the t-test against ``reference``.

    Args:
        results: method -> its round records (same cases for every method).
        reference: the method the t-tests compare with (``None``: no test).
        rounds: rounds to report (1 = after the first interaction).

    Returns:
        ``{"rounds": [...], "methods": {method: {group: {str(round): {"dice_mean", "dice_std", "n", "seconds",
        "t_test"}}}}}``.
    """
    groups = ["all", *sorted({r.group for recs in results.values() for r in recs})]
    out: dict[str, Any] = {"rounds": list(rounds), "reference": reference, "methods": {}}
    for method, records in results.items():
        per_group: dict[str, Any] = {}
        for group in groups:
            per_round: dict[str, Any] = {}
            for rnd in rounds:
                dice_map = _dice_by_case(records, rnd, group)
                if not dice_map:
                    continue
                values = np.array(list(dice_map.values()), dtype=np.float64)
                seconds = [r.seconds for r in records if r.round == rnd and not r.carried and group in ("all", r.group)]
                entry: dict[str, Any] = {
                    "dice_mean": float(values.mean()),
                    "dice_std": float(values.std(ddof=1)) if values.size > 1 else None,
                    "n": int(values.size),
                    "seconds": float(np.mean(seconds)) if seconds else None,
                    "t_test": None,
                }
                if reference is not None and method != reference and reference in results:
                    ref = _dice_by_case(results[reference], rnd, group)
                    keys = sorted(set(ref) & set(dice_map))
                    entry["t_test"] = paired_t_test([dice_map[k] for k in keys], [ref[k] for k in keys])
                per_round[str(rnd)] = entry
            per_group[group] = per_round
        out["methods"][method] = per_group
    return out


def dice_after_strokes(
    results: Mapping[str, Sequence[RoundRecord]], budgets: Sequence[int], first_interactions: int = 1
) -> dict[str, dict[str, dict[str, dict[str, float | int]]]]:
    """Dice after a budget of strokes (Groff 2018's "after 10 and 15 scribbles"), per method and structure group.

    For each case, the Dice of the last round whose strokes (``n_interactions - first_interactions``: the box is not a
    stroke) are within the budget; a user who stopped earlier keeps the last result. Returns ``{method: {group:
    {str(budget): {"dice_mean", "dice_std", "n"}}}}`` with an ``"all"`` group.

    Raises:
        ValueError: a negative budget.
    """
    if any(int(b) < 0 for b in budgets):
        raise ValueError(f"budgets must be >= 0 strokes, got {list(budgets)}")
    out: dict[str, dict[str, dict[str, dict[str, float | int]]]] = {}
    for method, records in results.items():
        best: dict[tuple[int, str], dict[tuple[str, int], RoundRecord]] = {}
        for budget in budgets:
            for r in records:
                if r.n_interactions - first_interactions > budget:
                    continue
                key = (r.case_id, r.structure)
                for group in (r.group, "all"):
                    chosen = best.setdefault((int(budget), group), {})
                    if key not in chosen or chosen[key].round < r.round:
                        chosen[key] = r
        per_group: dict[str, dict[str, dict[str, float | int]]] = {}
        for (budget, group), chosen in sorted(best.items()):
            values = np.array([r.dice for r in chosen.values()], dtype=float)
            per_group.setdefault(group, {})[str(budget)] = {
                "dice_mean": float(values.mean()),
                "dice_std": float(values.std()),
                "n": len(values),
            }
        out[method] = per_group
    return out


def budget_markdown(budget_tables: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float | int]]]]) -> str:
    """Markdown of :func:`dice_after_strokes`: rows methods, columns ``group, budget`` (Dice %, mean ± std)."""
    columns = sorted(
        {(g, b) for groups in budget_tables.values() for g, per in groups.items() for b in per},
        key=lambda gb: (gb[0] == "all", gb[0], int(gb[1])),
    )
    lines = ["| method | " + " | ".join(f"{g}, {b} strokes" for g, b in columns) + " |"]
    lines.append("| --- |" + " --- |" * len(columns))
    for method, groups in budget_tables.items():
        cells = []
        for g, b in columns:
            e = groups.get(g, {}).get(b)
            cells.append("-" if not e else f"{100 * float(e['dice_mean']):.2f} ± {100 * float(e['dice_std']):.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    std = entry.get("dice_std")
    text = f"{100 * entry['dice_mean']:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
    test = entry.get("t_test") or {}
    p = test.get("p")
    if p is not None and p < 0.05:
        text += " *" if (test.get("mean_difference") or 0) > 0 else " †"
    return text


def tables_markdown(tables: Mapping[str, Any]) -> str:
    """Markdown: one table per round (rows: methods; columns: groups; Dice % mean ± std), then machine times.

    ``*`` / ``†``: significantly better / worse than the reference method (paired t-test, p < 0.05).
    """
    methods = list(tables["methods"])
    groups = [g for g in next(iter(tables["methods"].values()), {}) if g != "all"] + ["all"]
    lines: list[str] = []
    for rnd in tables["rounds"]:
        lines += [f"**Round {rnd}** (Dice %, mean ± std)", "", "| method | " + " | ".join(groups) + " |"]
        lines.append("| --- |" + " --- |" * len(groups))
        for method in methods:
            cells = [_cell(tables["methods"][method].get(g, {}).get(str(rnd))) for g in groups]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Machine time per step** (s, mean over steps of all rounds shown)", "", "| method | seconds |"]
    lines.append("| --- | --- |")
    for method in methods:
        secs = [e["seconds"] for e in tables["methods"][method].get("all", {}).values() if e.get("seconds") is not None]
        lines.append(f"| {method} | {np.mean(secs):.3f} |" if secs else f"| {method} | - |")
    reference = tables.get("reference")
    if reference:
        lines += ["", f"`*` / `†`: significantly higher / lower Dice than `{reference}` (paired t-test, p < 0.05)."]
    return "\n".join(lines) + "\n"


def plot_comparison(tables: Mapping[str, Any], out_png: str | Path, title: str = "Dice per interaction round") -> Path:
    """One panel per structure group (``all`` last), one line per method: mean Dice after each reported round.

    Args:
        tables: the output of :func:`comparison_tables` (or ``comparison.json``).
        out_png: where to write the PNG.
    """
    methods = list(tables["methods"])
    groups = [g for g in next(iter(tables["methods"].values()), {}) if g != "all"] + ["all"]
    figure, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), sharey=True, squeeze=False)
    markers = "os^vD<>pP*"
    for ax, group in zip(axes[0], groups, strict=True):
        for index, method in enumerate(methods):
            per_round = tables["methods"][method].get(group, {})
            rounds = sorted(per_round, key=int)
            ax.plot(
                [int(r) for r in rounds],
                [per_round[r]["dice_mean"] for r in rounds],
                marker=markers[index % len(markers)],
                label=method,
            )
        ax.set_title(group)
        ax.set_xlabel("interaction round (1 = the box)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean Dice")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    out = Path(out_png)
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return out


def compare_methods(
    cases: Sequence[EvalCase],
    adapters: Mapping[str, ModelAdapter],
    robot_factory: Callable[[], RobotUser],
    n_rounds: int,
    out_dir: str | Path,
    reference: str | None = None,
    report_rounds: Sequence[int] | None = None,
    progress: bool = True,
    stroke_budgets: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate every adapter with the same protocol and write the comparison (see the module docstring).

    Args:
        cases: the evaluation cases (materialised: every method sees the same ones).
        adapters: method name -> adapter.
        robot_factory: makes a fresh robot per method (same seed -> same first interaction).
        n_rounds: interaction rounds per case.
        out_dir: output folder (created; existing result files are replaced).
        reference: method name for the paired t-tests (e.g. the CNN + CRF baseline).
        report_rounds: rounds in the tables (default: 1 and every later round).
        progress: progress bars.
        stroke_budgets: also tabulate the Dice after these numbers of strokes (:func:`dice_after_strokes`; key
            ``"after_strokes"`` of the tables, a section of ``comparison.md``).

    Returns:
        The tables (as written to ``comparison.json``).

    Raises:
        ValueError: no cases or adapters, an unknown reference, bad ``report_rounds``.
    """
    cases = list(cases)
    if not cases or not adapters:
        raise ValueError("compare_methods needs at least one case and one adapter")
    if reference is not None and reference not in adapters:
        raise ValueError(f"reference {reference!r} is not one of the methods {sorted(adapters)}")
    rounds = list(report_rounds) if report_rounds is not None else list(range(1, n_rounds + 1))
    if any(not 1 <= r <= n_rounds for r in rounds):
        raise ValueError(f"report_rounds must lie in 1..{n_rounds}, got {rounds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[RoundRecord]] = {}
    summaries: dict[str, Any] = {}
    for method, adapter in adapters.items():
        logger.info("comparison: %s on %d cases", method, len(cases))
        result = run_interactive_evaluation(
            cases, adapter, robot_factory(), n_rounds, out / method, method=method, progress=progress, overwrite=True
        )
        results[method] = result.records
        summaries[method] = result.summary
    tables = comparison_tables(results, reference, rounds)
    markdown = tables_markdown(tables)
    if stroke_budgets:
        tables["after_strokes"] = dice_after_strokes(results, stroke_budgets)
        markdown += "\n**Dice after a number of strokes** (%, mean ± std)\n\n" + budget_markdown(
            tables["after_strokes"]
        )
    write_json(tables, out / "comparison.json")
    (out / "comparison.md").write_text(markdown, encoding="utf-8")
    plot_comparison(tables, out / "comparison.png")
    logger.info("comparison written to %s", out)
    return tables
