"""DeepGrow click method: batched click-simulation ``iteration_update``, click inferer and evaluation adapter.

Config-facing names, e.g. ``"_target_": "common.clicks.BatchedClickInteraction"``. The click transforms themselves
(guidance, simulation) live in :mod:`common.transforms`.
"""

from __future__ import annotations

from common.clicks.inferer import ClickInferer
from common.clicks.sampling import training_samplers, validation_samplers
from common.clicks.training import SCHEDULES, BatchedClickInteraction, binarize_logits, click_probabilities

__all__ = [
    "SCHEDULES",
    "BatchedClickInteraction",
    "ClickInferer",
    "binarize_logits",
    "click_probabilities",
    "training_samplers",
    "validation_samplers",
]
