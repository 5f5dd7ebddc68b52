"""Bounding-box pipeline (BIFSeg): boxes in voxel indices, box masks, crop resizing, user input enforcement.

- :mod:`~common.boxes.box`: parsing viewers' boxes (``[[start], [stop]]`` or MONAI Label's ``roi``), boxes around
  labels with (random) margins, box masks;
- :mod:`~common.boxes.transforms`: the MONAI transforms shared by training, ``inference.json``, the evaluation and
  the MONAI Label app.
"""

from __future__ import annotations

from common.boxes.box import Box, box_from_mask, box_mask, box_size, parse_box
from common.boxes.transforms import (
    SCRIBBLE_BG,
    SCRIBBLE_FG,
    BoxMaskd,
    EnforceUserInputd,
    RandBoxMaskFromLabeld,
    RandSliceOfLabeld,
    ResizeToNetworkd,
    ScribbleMapd,
    network_shape,
)

__all__ = [
    "SCRIBBLE_BG",
    "SCRIBBLE_FG",
    "Box",
    "BoxMaskd",
    "EnforceUserInputd",
    "RandBoxMaskFromLabeld",
    "RandSliceOfLabeld",
    "ResizeToNetworkd",
    "ScribbleMapd",
    "box_from_mask",
    "box_mask",
    "box_size",
    "network_shape",
    "parse_box",
]
