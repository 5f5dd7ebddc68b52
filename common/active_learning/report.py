"""Reports of the active-learning loop: per-round tables and learning curves (PNG), for one loop or several.

A loop's learning curve is the held-out Dice of each model against the number of corrected cases it was trained on,
and against the interactions the user spent so far (box + scribble strokes of every corrected case). Several loops
(strategies, seeds, transfer vs scratch) are compared as mean and spread (min-max) over seeds per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.active_learning.state import LoopState, write_json_atomic

__all__ = ["curve_points", "curves_table", "plot_curves", "write_report"]


def curve_points(state: LoopState) -> list[dict[str, Any]]:
    """One point per model: ``round``, ``cases``, ``interactions`` (cumulative, of the cases it was trained on),
    ``scribbled_voxels`` (cumulative), ``dice`` (held-out mean), ``std``."""
    points = []
    for model in state.models:
        n = int(model["cases"])
        used = state.annotated[:n]
        points.append(
            {
                "round": int(model["round"]),
                "cases": n,
                "interactions": int(sum(r.get("interactions", 0) for r in used)),
                "scribbled_voxels": int(sum(r.get("scribbled_voxels", 0) for r in used)),
                "dice": float(model["heldout"]["mean_dice"]),
                "std": float(model["heldout"]["std_dice"]),
            }
        )
    return points


def _markdown(state: LoopState) -> str:
    lines = [
        f"# Active-learning loop ({state.settings['strategy']}, "
        f"{'transfer' if state.settings['transfer'] else 'from scratch'}, seed {state.settings['seed']})",
        "",
        "| round | corrected cases | interactions | held-out Dice | retraining (s) |",
        "|---|---|---|---|---|",
    ]
    for point, model in zip(curve_points(state), state.models, strict=True):
        seconds = model["retrain"]["seconds"] if model.get("retrain") else None
        lines.append(
            f"| {point['round']} | {point['cases']} | {point['interactions']} | "
            f"{point['dice']:.3f} ± {point['std']:.3f} | {'-' if seconds is None else f'{seconds:.0f}'} |"
        )
    lines += [
        "",
        "| order | case | score | Dice per round | interactions | scribbled voxels |",
        "|---|---|---|---|---|---|",
    ]
    for r in state.annotated:
        dice = " → ".join(f"{d:.3f}" for d in r["dice_per_round"])
        lines.append(
            f"| {r['order']} | {r['key']} | {r['score']:.4g} | {dice} | {r['interactions']} | {r['scribbled_voxels']} |"
        )
    for s in state.skipped:
        lines.append(f"\nSkipped {s['key']}: {s['reason']}")
    return "\n".join(lines) + "\n"


def plot_curves(
    runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    out_png: str | Path,
    title: str = "Held-out Dice",
    x_keys: Sequence[str] = ("cases", "interactions"),
) -> Path:
    """Learning curves of several methods, each the mean (line) and min-max (band) over its runs.

    Args:
        runs: ``{method: [points of run 1, points of run 2, ...]}`` (:func:`curve_points`); runs of one method must
            have models at the same numbers of cases (the x positions of the ``interactions`` panel are averaged).
        out_png: the PNG to write.
        title: figure title.
        x_keys: one panel per x quantity (a quantity equal at every point, such as the interactions of a
            ground-truth annotator, gets no panel).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for method_runs in runs.values() for r in method_runs for p in r]
    # a panel with no spread (e.g. interactions of ground-truth annotators, all 0) says nothing: left out
    x_keys = [k for k in x_keys if len({p.get(k) for p in points}) > 1] or list(x_keys[:1])
    fig, axes = plt.subplots(1, len(x_keys), figsize=(5.5 * len(x_keys), 4.2), squeeze=False)
    labels = {"cases": "corrected cases in the training set", "interactions": "interactions (box + strokes)"}
    for ax, x_key in zip(axes[0], x_keys, strict=True):
        for method, method_runs in runs.items():
            length = min(len(r) for r in method_runs)
            x = np.array([[p[x_key] for p in r[:length]] for r in method_runs], dtype=float).mean(axis=0)
            y = np.array([[p["dice"] for p in r[:length]] for r in method_runs], dtype=float)
            line = ax.plot(x, y.mean(axis=0), marker="o", label=f"{method} (n={len(method_runs)})")[0]
            if len(method_runs) > 1:
                ax.fill_between(x, y.min(axis=0), y.max(axis=0), alpha=0.15, color=line.get_color())
        ax.set_xlabel(labels.get(x_key, x_key))
        ax.set_ylabel("held-out Dice")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def curves_table(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> str:
    """Markdown table: held-out Dice mean ± sd (min-max) over runs, per method and number of corrected cases."""
    cases = sorted({p["cases"] for method_runs in runs.values() for r in method_runs for p in r})
    lines = ["| method | " + " | ".join(f"{c} cases" for c in cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for method, method_runs in runs.items():
        cells = []
        for c in cases:
            values = [p["dice"] for r in method_runs for p in r if p["cases"] == c]
            if not values:
                cells.append("-")
                continue
            v = np.asarray(values)
            spread = f" ({v.min():.3f}-{v.max():.3f})" if len(v) > 1 else ""
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}{spread}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(state: LoopState, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` (curve points, annotated cases, skipped), ``report.md`` and ``learning_curves.png``."""
    out = Path(out_dir)
    points = curve_points(state)
    paths = {
        "json": write_json_atomic(
            {"settings": state.settings, "curve": points, "annotated": state.annotated, "skipped": state.skipped},
            out / "report.json",
        ),
        "markdown": out / "report.md",
        "plot": out / "learning_curves.png",
    }
    paths["markdown"].write_text(_markdown(state))
    name = f"{state.settings['strategy']}, {'transfer' if state.settings['transfer'] else 'scratch'}"
    plot_curves({name: [points]}, paths["plot"], title="Active-learning loop: held-out Dice per model")
    return paths
