"""Training helpers called from the bundles' ``train.json`` (e.g. ``"$common.training.step_milestones(...)"``)."""

from __future__ import annotations

from common.training.checkpoints import CHECKPOINT_PREFIX, latest_checkpoint
from common.training.schedule import step_milestones

__all__ = ["CHECKPOINT_PREFIX", "latest_checkpoint", "step_milestones"]
