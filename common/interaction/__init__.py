"""User interaction: the interaction state and robot users that simulate annotators.

Re-exports only; the robots import torch-level code lazily.
"""

from __future__ import annotations

from common.interaction.click_robot import CentreOfErrorClickRobot, deepest_click_per_slice, deepest_voxel
from common.interaction.error_click_robot import ErrorClickRobot
from common.interaction.robot import RobotUser, error_masks
from common.interaction.scribble_robot import BoxScribbleRobot
from common.interaction.slice_robot import SliceCorrectionRobot, correction_schedule
from common.interaction.state import InteractionState

__all__ = [
    "BoxScribbleRobot",
    "CentreOfErrorClickRobot",
    "ErrorClickRobot",
    "InteractionState",
    "RobotUser",
    "SliceCorrectionRobot",
    "correction_schedule",
    "deepest_click_per_slice",
    "deepest_voxel",
    "error_masks",
]
