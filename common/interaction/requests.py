"""What a viewer would send: an :class:`InteractionState` as a MONAI Label request.

3D Slicer and OHIF send a MONAI Label server the image id, JSON ``params`` (clicks as voxel indices ``[i, j, k]`` of
the image as stored, under ``foreground`` / ``background``) and, for label-map interactions, the current label volume
as an uploaded NIfTI file (MONAI Label stores it and passes its path as ``label``). :func:`state_request` builds that
request from a (robot or human) user's state, so the robot-user evaluation reaches a bundle through exactly the
request shape, interaction kinds and bundle pipeline the MONAI Label app uses.

Conventions: arrays are indexed ``[i, j, k]`` as stored in the image file; ``state.slices`` are 2D masks of slices
along ``state.axis`` of that array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from common.interaction.state import InteractionState

__all__ = [
    "SCRIBBLES_BG_VALUE",
    "SCRIBBLES_FG_VALUE",
    "scribbles_volume",
    "slices_volume",
    "state_request",
    "write_label_like",
]

#: Label values of scribbles in an uploaded label volume: MONAI Label's defaults (``monailabel.scribbles.infer``
#: without labels: background 2, foreground 3), also named in the request's ``label_info`` as 3D Slicer does.
SCRIBBLES_BG_VALUE = 2
SCRIBBLES_FG_VALUE = 3


def slices_volume(state: InteractionState, shape: tuple[int, ...]) -> np.ndarray:
    """The user's annotated slices as a ``uint8`` volume of ``shape`` (1 on the drawn voxels, 0 elsewhere).

    Raises:
        ValueError: a slice index outside the volume along ``state.axis``, or a mask of the wrong shape.
    """
    axis = state.axis
    if not 0 <= axis < len(shape):
        raise ValueError(f"state.axis {axis} is not an axis of a volume of shape {shape}")
    volume = np.zeros(shape, dtype=np.uint8)
    plane = tuple(s for i, s in enumerate(shape) if i != axis)
    for k, mask in state.slices.items():
        if not 0 <= int(k) < shape[axis]:
            raise ValueError(f"annotated slice {k} lies outside the volume: axis {axis} has {shape[axis]} slices")
        m = np.asarray(mask)
        if m.shape != plane:
            raise ValueError(f"annotated slice {k} has shape {m.shape}, a slice along axis {axis} is {plane}")
        index: list[Any] = [slice(None)] * len(shape)
        index[axis] = int(k)
        volume[tuple(index)] = m > 0
    return volume


def scribbles_volume(state: InteractionState, shape: tuple[int, ...]) -> np.ndarray:
    """The user's scribbles as a ``uint8`` volume of ``shape``: 3 on foreground, 2 on background scribbles, else 0.

    Raises:
        ValueError: a scribble mask of the wrong shape, or a voxel in both masks.
    """
    volume = np.zeros(shape, dtype=np.uint8)
    fg = None if state.scribbles_fg is None else np.asarray(state.scribbles_fg) > 0
    bg = None if state.scribbles_bg is None else np.asarray(state.scribbles_bg) > 0
    for name, mask in (("foreground", fg), ("background", bg)):
        if mask is not None and mask.shape != tuple(shape):
            raise ValueError(f"{name} scribbles have shape {mask.shape}, the image {tuple(shape)}")
    if fg is not None and bg is not None and (fg & bg).any():
        raise ValueError(f"{int((fg & bg).sum())} voxels are both foreground and background scribbles")
    if bg is not None:
        volume[bg] = SCRIBBLES_BG_VALUE
    if fg is not None:
        volume[fg] = SCRIBBLES_FG_VALUE
    return volume


def write_label_like(volume: np.ndarray, image_path: str | Path, out_path: str | Path) -> Path:
    """Save a ``uint8`` label volume on the grid of ``image_path`` (its affine and header, as a viewer exports it).

    Raises:
        ValueError: ``volume``'s shape differs from the image's.
    """
    image: Any = nib.load(str(image_path))
    if tuple(volume.shape) != tuple(image.shape[:3]) or len(image.shape) != volume.ndim:
        raise ValueError(f"label volume {volume.shape} does not match image {image_path} of shape {image.shape}")
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    out = Path(out_path)
    nib.save(nib.Nifti1Image(volume.astype(np.uint8), image.affine, header), str(out))
    return out


def state_request(
    state: InteractionState, image_path: str | Path, shape: tuple[int, ...], workdir: str | Path
) -> dict[str, Any]:
    """The MONAI Label request a viewer would send for ``state``.

    ``{"image": image_path}`` plus ``foreground`` / ``background`` (lists of ``[i, j, k]``) when the state has clicks,
    ``label`` (path of an uploaded label volume written into ``workdir``, 1 on the annotated slices) when it has
    annotated slices, ``roi`` (MONAI Label's ``[i0, i1, j0, j1, k0, k1]``, stop exclusive) when it has a box, and
    ``label`` with ``label_info`` (scribble values as 3D Slicer names them, see :func:`scribbles_volume`) when it has
    scribbles.

    Args:
        state: the user's interactions.
        image_path: the image file the request is about.
        shape: the image's spatial shape as stored.
        workdir: an existing folder for the uploaded label file.
    """
    request: dict[str, Any] = {"image": str(image_path)}
    if state.foreground or state.background:
        request["foreground"] = [[int(v) for v in c] for c in state.foreground]
        request["background"] = [[int(v) for v in c] for c in state.background]
    has_scribbles = any(m is not None and np.any(m) for m in (state.scribbles_fg, state.scribbles_bg))
    if state.slices and has_scribbles:
        raise ValueError("a request carries annotated slices or scribbles in its uploaded label, not both")
    if state.slices:
        label = write_label_like(slices_volume(state, shape), image_path, Path(workdir) / "label.nii")
        request["label"] = str(label)
    if state.box is not None:
        request["roi"] = [int(v) for a, b in zip(state.box[0], state.box[1], strict=True) for v in (a, b)]
    if has_scribbles:
        label = write_label_like(scribbles_volume(state, shape), image_path, Path(workdir) / "label.nii")
        request["label"] = str(label)
        request["label_info"] = [
            {"name": "background_scribbles", "id": SCRIBBLES_BG_VALUE},
            {"name": "foreground_scribbles", "id": SCRIBBLES_FG_VALUE},
        ]
    return request
