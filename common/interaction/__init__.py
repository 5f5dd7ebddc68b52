"""User interaction: the interaction state and robot users that simulate annotators.

Re-exports only (numpy/scipy-level imports; no torch or MONAI).
"""

from __future__ import annotations

from common.interaction.click_robot import CentreOfErrorClickRobot, deepest_voxel
from common.interaction.robot import RobotUser, error_masks
from common.interaction.state import InteractionState

__all__ = ["CentreOfErrorClickRobot", "InteractionState", "RobotUser", "deepest_voxel", "error_masks"]
