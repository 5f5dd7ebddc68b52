"""Metric-versus-interactions curves (matplotlib, Agg, no pyplot global state)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.evaluation.metrics import METRIC_NAMES
from common.evaluation.records import RoundRecord, summarise

__all__ = ["make_metric_figure", "plot_metric_curves"]

_GROUP_COLOURS = {"seen": "tab:blue", "unseen": "tab:orange", "all": "black"}
_OTHER_COLOURS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_LINESTYLES = ("-", "--", ":", "-.")
_METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)", "msd": "mean surface distance (mm)"}
_SPREAD_LABELS = {"iqr": "band: interquartile range", "std": "band: ±1 std"}


def _merge_summaries(data: Any) -> dict[str, Any]:
    """Accept a summary dict, a sequence of summary dicts, or records; return ``{method: method_summary}``."""
    if isinstance(data, Mapping):
        if "methods" not in data:
            raise ValueError("summary dict must have a 'methods' key (output of records.summarise).")
        return dict(data["methods"])
    items = list(data)
    if not items:
        raise ValueError("nothing to plot: no records or summaries given.")
    if all(isinstance(x, RoundRecord) for x in items):
        return dict(summarise(items)["methods"])
    if all(isinstance(x, Mapping) for x in items):
        merged: dict[str, Any] = {}
        for s in items:
            for name, block in _merge_summaries(s).items():
                if name in merged:
                    raise ValueError(f"method {name!r} appears in more than one summary.")
                merged[name] = block
        return merged
    raise ValueError("data must be a summary dict, a sequence of summary dicts, or a sequence of RoundRecord.")


def _colour(group: str, others: dict[str, str]) -> str:
    if group in _GROUP_COLOURS:
        return _GROUP_COLOURS[group]
    if group not in others:
        others[group] = _OTHER_COLOURS[len(others) % len(_OTHER_COLOURS)]
    return others[group]


def make_metric_figure(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Iterable[RoundRecord],
    metrics: str | Sequence[str] = METRIC_NAMES,
    title: str | None = None,
    spread: str = "iqr",
    groups: Sequence[str] | None = None,
) -> Figure:
    """Build (without saving) the figure of :func:`plot_metric_curves`; same arguments except ``out_png``.

    Returns:
        A :class:`matplotlib.figure.Figure` with one axes per metric; each line is labelled ``group`` (one
        method) or ``"method · group"`` and its y data are the per-round means.

    Raises:
        ValueError: as :func:`plot_metric_curves`.
    """
    metric_list = [metrics] if isinstance(metrics, str) else list(metrics)
    bad = [m for m in metric_list if m not in METRIC_NAMES]
    if bad or not metric_list:
        raise ValueError(f"unknown metrics {bad or metric_list}; choose from {list(METRIC_NAMES)}.")
    if spread not in _SPREAD_LABELS:
        raise ValueError(f"spread must be one of {list(_SPREAD_LABELS)}, got {spread!r}.")
    methods = _merge_summaries(data)
    available = sorted({g for m in methods.values() for g in m["per_group"]})
    if groups is None:
        chosen = [g for g in available if g != "all"] or ["all"]
    else:
        chosen = list(groups)
        missing = [g for g in chosen if g not in available]
        if missing:
            raise ValueError(f"groups {missing} not in the data; available: {available}.")

    fig = Figure(figsize=(4.8 * len(metric_list), 4.0), layout="constrained")
    axes = fig.subplots(1, len(metric_list), squeeze=False)[0]
    others: dict[str, str] = {}
    styles = dict(zip(methods, itertools.cycle(_LINESTYLES), strict=False))
    for ax, metric in zip(axes, metric_list, strict=True):
        n_undefined = 0
        for method, block in methods.items():
            for group in chosen:
                per_round = block["per_group"].get(group)
                if not per_round:
                    continue
                rounds = sorted(per_round, key=int)
                xs, mean, low, high = [], [], [], []
                for r in rounds:
                    st = per_round[r][metric]
                    n_undefined += int(st["n_undefined"])
                    if st["mean"] is None:
                        continue
                    xs.append(int(r))
                    mean.append(st["mean"])
                    if spread == "iqr":
                        low.append(st["q25"])
                        high.append(st["q75"])
                    else:
                        sd = st["std"] if st["std"] is not None else 0.0
                        low.append(st["mean"] - sd)
                        high.append(st["mean"] + sd)
                if not xs:
                    continue
                colour = _colour(group, others)
                label = group if len(methods) == 1 else f"{method} · {group}"
                ax.plot(xs, mean, color=colour, linestyle=styles[method], marker="o", markersize=3, label=label)
                ax.fill_between(xs, low, high, color=colour, alpha=0.18, linewidth=0)
        ax.set_xlabel("interaction round (number of interactions)")
        ax.set_ylabel(_METRIC_LABELS[metric])
        if metric == "dice":
            ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if n_undefined and metric != "dice":
            ax.text(
                0.02,
                0.98,
                f"mean of finite values; {n_undefined} undefined (empty mask) excluded",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, title=f"mean line, {_SPREAD_LABELS[spread]}", fontsize=7, title_fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_metric_curves(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Iterable[RoundRecord],
    out_png: Path,
    metrics: str | Sequence[str] = METRIC_NAMES,
    title: str | None = None,
    spread: str = "iqr",
    groups: Sequence[str] | None = None,
) -> Path:
    """Plot mean metric vs interaction round to a PNG, one subplot per metric, one line per method x group.

    Colour encodes the group (seen = blue, unseen = orange, all = black), line style the method, and a shaded
    band the spread over cases (interquartile range or ±1 sample std; the legend title says which). Distance
    means are over finite values only; if some distances were undefined (an empty mask) the subplot says how many.

    Args:
        data: a summary from :func:`common.evaluation.records.summarise` (or the parsed ``summary.json``), a list
            of such summaries (e.g. a method and its baselines), or the records themselves.
        out_png: output PNG path (its folder must exist).
        metrics: one metric name or several (one subplot each), from ``("dice", "hd95", "msd")``.
        title: figure title.
        spread: ``"iqr"`` (q25-q75) or ``"std"`` (mean ± std).
        groups: groups to draw; default every group except ``"all"`` (or ``"all"`` if it is the only one).

    Returns:
        ``out_png``.

    Raises:
        ValueError: unknown metric/spread, a group absent from every method, or nothing to plot.
    """
    fig = make_metric_figure(data, metrics=metrics, title=title, spread=spread, groups=groups)
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    return out
