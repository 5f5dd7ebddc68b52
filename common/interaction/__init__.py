"""User interaction: the interaction state and robot users that simulate annotators.

Re-exports only (numpy/scipy-level imports; no torch or MONAI).
"""

from __future__ import annotations

from common.interaction.click_robot import CentreOfErrorClickRobot, deepest_voxel
from common.interaction.robot import RobotUser, error_masks
from common.interaction.slice_robot import SliceCorrectionRobot, correction_schedule
from common.interaction.state import InteractionState

__all__ = [
    "CentreOfErrorClickRobot",
    "InteractionState",
    "RobotUser",
    "SliceCorrectionRobot",
    "correction_schedule",
    "deepest_voxel",
    "error_masks",
]
