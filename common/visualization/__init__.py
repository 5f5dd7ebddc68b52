"""Plots for checking data and predictions by eye (matplotlib, Agg canvas; no pyplot state)."""

from __future__ import annotations

from common.visualization.montage import LABEL_COLOURS, label_colour, montage_slices, save_label_montage

__all__ = ["LABEL_COLOURS", "label_colour", "montage_slices", "save_label_montage"]
