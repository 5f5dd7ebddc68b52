"""Interactive-segmentation benchmark: metrics, evaluation cases, the robot-user loop, records, plots.

Re-exports only, resolved lazily (PEP 562) so ``import common.evaluation`` does not import torch/MONAI until a
name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from common.evaluation.baselines import IntensityRegionGrowAdapter
    from common.evaluation.box_baselines import GrabCutAdapter
    from common.evaluation.bundle_adapter import BundleAdapter
    from common.evaluation.cases import CaseInfo, EvalCase, load_eval_cases
    from common.evaluation.comparison import compare_methods, paired_t_test
    from common.evaluation.loop import RESULT_FILES, EvaluationResult, ModelAdapter, run_interactive_evaluation
    from common.evaluation.metrics import METRIC_NAMES, dice, evaluate_all, hd95, mean_surface_distance
    from common.evaluation.plots import make_metric_figure, plot_metric_curves
    from common.evaluation.records import RoundRecord, read_records, summarise
    from common.evaluation.scribble_baselines import RandomWalkerAdapter
    from common.evaluation.slice_cases import single_slice_cases

__all__ = [
    "METRIC_NAMES",
    "RESULT_FILES",
    "BundleAdapter",
    "CaseInfo",
    "EvalCase",
    "EvaluationResult",
    "GrabCutAdapter",
    "IntensityRegionGrowAdapter",
    "ModelAdapter",
    "RandomWalkerAdapter",
    "RoundRecord",
    "compare_methods",
    "dice",
    "evaluate_all",
    "hd95",
    "load_eval_cases",
    "make_metric_figure",
    "mean_surface_distance",
    "paired_t_test",
    "plot_metric_curves",
    "read_records",
    "run_interactive_evaluation",
    "single_slice_cases",
    "summarise",
]

_SOURCES = {
    "IntensityRegionGrowAdapter": "baselines",
    "BundleAdapter": "bundle_adapter",
    "CaseInfo": "cases",
    "EvalCase": "cases",
    "load_eval_cases": "cases",
    "RESULT_FILES": "loop",
    "EvaluationResult": "loop",
    "ModelAdapter": "loop",
    "run_interactive_evaluation": "loop",
    "METRIC_NAMES": "metrics",
    "dice": "metrics",
    "evaluate_all": "metrics",
    "hd95": "metrics",
    "mean_surface_distance": "metrics",
    "make_metric_figure": "plots",
    "plot_metric_curves": "plots",
    "RoundRecord": "records",
    "read_records": "records",
    "summarise": "records",
    "GrabCutAdapter": "box_baselines",
    "compare_methods": "comparison",
    "paired_t_test": "comparison",
    "RandomWalkerAdapter": "scribble_baselines",
    "single_slice_cases": "slice_cases",
}


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
