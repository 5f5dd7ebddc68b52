"""Active learning (Groff 2018): a general model, corrected cases, retraining from the general weights.

- :mod:`~common.active_learning.strategies`: query strategies (which unlabelled case to annotate next);
- :mod:`~common.active_learning.loop`: the loop (select, correct, retrain from the general weights, resume);
- :mod:`~common.active_learning.retrain`: retraining with the bundle's ``train.json`` recipe;
- :mod:`~common.active_learning.state`: the loop's on-disk state;
- :mod:`~common.active_learning.report`: tables and learning curves;
- :mod:`~common.active_learning.experiments`: grids of loops (strategies x seeds, transfer vs scratch).

Re-exports resolved lazily (PEP 562): ``import common.active_learning`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from common.active_learning.experiments import run_grid
    from common.active_learning.loop import ANNOTATORS, ActiveLearningLoop, LoopSettings, case_key, split_pool
    from common.active_learning.report import curve_points, curves_table, plot_curves, write_report
    from common.active_learning.retrain import retrain_model
    from common.active_learning.state import LoopState
    from common.active_learning.strategies import (
        DEFAULT_BATCH,
        STRATEGIES,
        foreground_probability,
        mc_dropout_variance,
        mean_entropy,
        rank_cases,
        score_cases,
        select_case,
        tta_variance,
    )

_SOURCES = {
    "ANNOTATORS": "loop",
    "ActiveLearningLoop": "loop",
    "LoopSettings": "loop",
    "case_key": "loop",
    "split_pool": "loop",
    "curve_points": "report",
    "curves_table": "report",
    "plot_curves": "report",
    "write_report": "report",
    "retrain_model": "retrain",
    "run_grid": "experiments",
    "LoopState": "state",
    "DEFAULT_BATCH": "strategies",
    "STRATEGIES": "strategies",
    "foreground_probability": "strategies",
    "mc_dropout_variance": "strategies",
    "mean_entropy": "strategies",
    "rank_cases": "strategies",
    "score_cases": "strategies",
    "select_case": "strategies",
    "tta_variance": "strategies",
}

__all__ = [
    "ANNOTATORS",
    "DEFAULT_BATCH",
    "STRATEGIES",
    "ActiveLearningLoop",
    "LoopSettings",
    "LoopState",
    "case_key",
    "curve_points",
    "curves_table",
    "foreground_probability",
    "mc_dropout_variance",
    "mean_entropy",
    "plot_curves",
    "rank_cases",
    "retrain_model",
    "run_grid",
    "score_cases",
    "select_case",
    "split_pool",
    "tta_variance",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
