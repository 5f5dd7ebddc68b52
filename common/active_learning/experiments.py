"""Grids of active-learning loops for the bundle's docs: strategies against random, transfer against scratch.

Every loop of a grid runs in its own state folder (``<out_dir>/<name>/seed_<s>``), so an interrupted grid resumes
where it stopped (finished loops are read back, not rerun). The comparison is written as ``<out_dir>/curves.md``
(held-out Dice mean ± sd and min-max over seeds, per number of corrected cases), ``curves.json`` and
``curves.png`` (mean line, min-max band; against corrected cases and against interactions).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.active_learning.loop import ActiveLearningLoop, LoopSettings
from common.active_learning.report import curve_points, curves_table, plot_curves
from common.active_learning.state import write_json_atomic

__all__ = ["run_grid"]

logger = logging.getLogger(__name__)


def run_grid(
    bundle_root: str | Path,
    pool: Sequence[Mapping[str, Any]],
    heldout: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    methods: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    general_weights: str | Path | None = None,
    inference_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    device: Any = None,
    title: str = "Held-out Dice",
    progress: bool = True,
) -> dict[str, Any]:
    """Run one loop per method and seed (resuming finished or interrupted ones) and write the comparison.

    Args:
        bundle_root: the active-learning bundle.
        pool / heldout: the cases (per-structure sample dicts), the same for every loop.
        out_dir: the grid's folder.
        methods: ``{name: LoopSettings fields}`` (the seed is set per run), e.g. ``{"random": {"strategy":
            "random"}, "entropy": {"strategy": "entropy"}}``.
        seeds: one loop per seed and method.
        general_weights, inference_overrides, train_overrides, device: as :class:`ActiveLearningLoop`.
        title: the figure's title.
        progress: progress bar over the loops.

    Returns:
        ``{"runs": {name: [curve points per seed]}, "table": markdown}`` (also in ``curves.json``).

    Raises:
        ValueError: no method or no seed (and whatever :class:`ActiveLearningLoop` refuses).
    """
    if not methods or not seeds:
        raise ValueError("run_grid needs at least one method and one seed")
    out = Path(out_dir)
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    jobs = [(name, seed) for name in methods for seed in seeds]
    for name, seed in tqdm(jobs, desc="active-learning grid", unit="loop", disable=not progress):
        settings = LoopSettings(**{**dict(methods[name]), "seed": int(seed)})
        loop = ActiveLearningLoop(
            bundle_root,
            pool,
            heldout,
            out / name / f"seed_{seed}",
            settings,
            general_weights=general_weights,
            inference_overrides=inference_overrides,
            train_overrides=train_overrides,
            device=device,
            progress=False,
        )
        state = loop.run()
        runs.setdefault(name, []).append(curve_points(state))
        logger.info("%s seed %d: held-out Dice %s", name, seed, [round(p["dice"], 3) for p in runs[name][-1]])
    table = curves_table(runs)
    (out / "curves.md").write_text(table)
    write_json_atomic(
        {"methods": {k: dict(v) for k, v in methods.items()}, "seeds": list(seeds), "runs": runs}, out / "curves.json"
    )
    plot_curves(runs, out / "curves.png", title=title)
    return {"runs": runs, "table": table}
