"""MONAI dictionary transforms of the box pipeline (BIFSeg): box mask, scribble map, resize to the network's size.

One pipeline for training and inference (Wang et al., IEEE TMI 2018)::

    LoadImaged -> EnsureChannelFirstd -> BoxMaskd (request box, stored voxel indices) | RandBoxMaskFromLabeld
      -> ScribbleMapd -> Orientationd(RAS) -> CropForegroundd(source_key="box_mask")
      -> NormalizeIntensityd (z-score inside the box) -> ResizeToNetworkd -> (inferer) -> Invertd -> ...

The box travels as a mask image on the image's grid, so re-orientation and cropping (MONAI's invertible
``Orientationd`` and ``CropForegroundd``) carry it exactly and ``Invertd`` maps the result back into the stored grid.
:class:`ResizeToNetworkd` resizes the crop to the network's size with isotropic voxels (BIFSeg: 2D crops get a
shorter side of 96 pixels, 3D crops a longest side of 80 voxels) and is invertible too.

Arrays are channel-first ``(C, H, W[, D])``; after ``Orientationd(RAS)`` axis ``D`` (the last) runs I-S.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable
from monai.utils import TraceKeys, convert_to_numpy, ensure_tuple_rep

from common.boxes.box import Box, box_from_mask, box_mask, box_size, parse_box
from common.data.geometry import affine_of, axial_axis
from common.transforms.provenance import source_name

__all__ = [
    "SCRIBBLE_BG",
    "SCRIBBLE_FG",
    "BoxMaskd",
    "EnforceUserInputd",
    "RandBoxMaskFromLabeld",
    "RandSliceOfLabeld",
    "ResizeToNetworkd",
    "ScribbleMapd",
    "network_shape",
]

logger = logging.getLogger(__name__)

#: Codes of the scribble map made by :class:`ScribbleMapd` (0: no scribble).
SCRIBBLE_FG = 1
SCRIBBLE_BG = 2


def _like(reference: Any, array: np.ndarray | torch.Tensor) -> Any:
    """``array`` as a MetaTensor with ``reference``'s meta data (affine, file name), or a plain tensor."""
    tensor = torch.as_tensor(array)
    if isinstance(reference, MetaTensor):
        return MetaTensor(tensor, meta=dict(reference.meta), applied_operations=list(reference.applied_operations))
    return tensor


def _spatial_shape(image: Any, key: str, data: Mapping[Hashable, Any]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"{key!r} of {source_name(data, image)} must be channel-first (C, H, W[, D]), got {shape}")
    return shape[1:]


class BoxMaskd(MapTransform):
    """The request's box as a mask image ``d[name]`` on the image's grid (before any spatial transform).

    Args:
        keys: the image key (its stored grid defines the box's voxel indices).
        box_key: key of the box in the request: ``[[start], [stop]]`` or MONAI Label's flat ``roi`` (see
            :func:`common.boxes.box.parse_box`).
        name: key of the new ``(1, H, W[, D])`` uint8 mask (a MetaTensor with the image's meta, so spatial
            transforms move it with the image).
        spatial_dims: the model's dimensionality: ``2`` needs a box one slice thick along the image's axial axis (a
            2D model segments the slice the box was drawn on), ``3`` a box of at least ``min_slices`` slices;
            ``None`` accepts both.
        min_slices: see ``spatial_dims=3``.
        clip: clip a box that sticks out of the image (else raise).

    Raises:
        ValueError: no box, a malformed box, a box outside the image, or one of the wrong thickness for the model.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        box_key: str = "box",
        name: str = "box_mask",
        spatial_dims: int | None = None,
        min_slices: int = 2,
        clip: bool = True,
    ) -> None:
        super().__init__(keys)
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be 2, 3 or None, got {spatial_dims!r}")
        self.box_key = box_key
        self.name = name
        self.spatial_dims = spatial_dims
        self.min_slices = int(min_slices)
        self.clip = clip

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            shape = _spatial_shape(image, str(key), d)
            if self.box_key not in d or d[self.box_key] is None:
                raise ValueError(
                    f"no box for {source_name(d, image)}: send {self.box_key!r} as [[i0, j0, k0], [i1, j1, k1]] voxel "
                    "indices of the image as stored (stop exclusive) or MONAI Label's roi [i0, i1, j0, j1, k0, k1]"
                )
            box = parse_box(d[self.box_key], shape, clip=self.clip)
            self._check_thickness(box, image, shape, d)
            d[self.name] = _like(image, box_mask(shape, box)[None].astype(np.uint8))
            d[self.box_key] = [list(box[0]), list(box[1])]
        return d

    def _check_thickness(self, box: Box, image: Any, shape: tuple[int, ...], d: Mapping[Hashable, Any]) -> None:
        if self.spatial_dims is None or len(shape) != 3:
            return
        axis = axial_axis(affine_of(image))
        thickness = box_size(box)[axis]
        if self.spatial_dims == 2 and thickness != 1:
            raise ValueError(
                f"this is a 2D model: draw the box on one axial slice of {source_name(d, image)} (the box spans "
                f"{thickness} slices along the stored axial axis {axis}); use the 3D model for a 3D box"
            )
        if self.spatial_dims == 3 and thickness < self.min_slices:
            raise ValueError(
                f"this is a 3D model: the box must span at least {self.min_slices} slices of {source_name(d, image)} "
                f"along the stored axial axis {axis}, got {thickness}; use the 2D model for a box on one slice"
            )


class RandSliceOfLabeld(Randomizable, MapTransform):
    """Training (2D models): keep one random axial slice of a binary label, zero elsewhere.

    The slice is drawn uniformly among the slices along the last spatial axis (I-S after ``Orientationd(RAS)``)
    holding at least ``min_voxels`` foreground voxels (the slice with most voxels if none does). ``pick="largest"``
    always keeps the slice with most voxels (deterministic validation).

    Args:
        keys: binary label key(s), channel-first ``(1, H, W, D)``.
        min_voxels: minimum foreground voxels of a drawn slice.
        pick: ``"random"`` or ``"largest"``.

    Raises:
        ValueError: an empty label or a label that is not 3D channel-first.
    """

    def __init__(self, keys: KeysCollection = "label", min_voxels: int = 10, pick: str = "random") -> None:
        MapTransform.__init__(self, keys)
        if pick not in ("random", "largest"):
            raise ValueError(f"pick must be 'random' or 'largest', got {pick!r}")
        self.min_voxels = int(min_voxels)
        self.pick = pick

    def randomize(self, data: Any = None) -> None:  # the draw depends on each label: see __call__
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if len(label.shape) != 4:
                raise ValueError(f"{key!r} of {source_name(d, label)} must be (1, H, W, D), got {tuple(label.shape)}")
            counts = convert_to_numpy(label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
            if counts.max() == 0:
                raise ValueError(f"{key!r} of {source_name(d, label)} is empty: no slice to draw a box on")
            candidates = np.flatnonzero(counts >= self.min_voxels)
            if self.pick == "random" and len(candidates):
                index = int(self.R.choice(candidates))
            else:
                index = int(np.argmax(counts))
            keep = torch.zeros(label.shape, dtype=label.dtype, device=label.device)
            keep[..., index] = 1
            d[key] = label * keep
            d[f"{key}_slice"] = index
        return d


class RandBoxMaskFromLabeld(Randomizable, MapTransform):
    """Training: the bounding box of the label widened by a random margin per side, as a mask ``d[name]``.

    BIFSeg's training boxes: the ground truth's box expanded by a random margin of 0 to 10 voxels.

    Args:
        keys: the binary label key, channel-first.
        name: key of the ``(1, H, W[, D])`` uint8 box mask.
        margin_range: ``(low, high)`` margin in voxels (inclusive) per spatial axis, or one pair for every axis.

    Raises:
        ValueError: an empty label, bad margins.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        name: str = "box_mask",
        margin_range: Sequence[int] | Sequence[Sequence[int]] = (0, 10),
    ) -> None:
        MapTransform.__init__(self, keys)
        self.name = name
        self.margin_range = margin_range

    def randomize(self, data: Any = None) -> None:  # margins are drawn per call from self.R
        pass

    def _ranges(self, ndim: int) -> list[tuple[int, int]]:
        spec = self.margin_range
        if len(spec) == 2 and all(isinstance(v, int | np.integer) for v in spec):
            return [(int(spec[0]), int(spec[1]))] * ndim  # type: ignore[arg-type]
        ranges = [tuple(int(v) for v in r) for r in spec]  # type: ignore[union-attr]
        if len(ranges) != ndim:
            raise ValueError(f"margin_range needs one (low, high) per spatial axis ({ndim}), got {spec!r}")
        return ranges  # type: ignore[return-value]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            mask = convert_to_numpy(label)[0] > 0
            if not mask.any():
                raise ValueError(f"{key!r} of {source_name(d, label)} is empty: no box can be drawn around it")
            rng = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))
            box = box_from_mask(mask, rng=rng, margin_range=self._ranges(mask.ndim))
            d[self.name] = _like(label, box_mask(mask.shape, box)[None].astype(np.uint8))
        return d


class ScribbleMapd(MapTransform):
    """The user's scribbles as one code map ``(1, H, W[, D])``: 0 none, :data:`SCRIBBLE_FG`, :data:`SCRIBBLE_BG`.

    The viewer uploads a label volume on the image's grid in which foreground scribbles have one value and
    background scribbles another (MONAI Label's defaults: background 2, foreground 3; 3D Slicer names them in
    ``label_info``, read by the interaction kind into ``d[fg_value_key]`` / ``d[bg_value_key]``). Other values (the
    user's other segments) are ignored. Without an upload, the map is all zeros (no scribbles).

    Args:
        keys: the scribble key (the loaded upload, channel-first; may be absent).
        image_key: the image, whose grid the upload must share.
        fg_value_key / bg_value_key: keys of the label values in the item (defaults below when absent).
        fg_value / bg_value: default label values.

    Raises:
        ValueError: an upload of another shape or affine than the image, or equal foreground/background values.
    """

    def __init__(
        self,
        keys: KeysCollection = "scribbles",
        image_key: str = "image",
        fg_value_key: str = "scribbles_fg_value",
        bg_value_key: str = "scribbles_bg_value",
        fg_value: int = 3,
        bg_value: int = 2,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self.fg_value_key = fg_value_key
        self.bg_value_key = bg_value_key
        self.fg_value = int(fg_value)
        self.bg_value = int(bg_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        shape = _spatial_shape(image, self.image_key, d)
        fg_value = int(d.get(self.fg_value_key, self.fg_value))
        bg_value = int(d.get(self.bg_value_key, self.bg_value))
        if fg_value == bg_value:
            raise ValueError(f"foreground and background scribbles must have different label values, got {fg_value}")
        for key in self.keys:
            upload = d.get(key)
            codes = np.zeros((1, *shape), dtype=np.uint8)
            if upload is not None and not isinstance(upload, str):
                values = convert_to_numpy(upload)
                if values.shape[1:] != shape or values.shape[0] != 1:
                    raise ValueError(
                        f"the scribbles {source_name(d, upload)} have shape {tuple(values.shape[1:])} but the image "
                        f"{source_name(d, image)} has {shape}: upload them on the image's grid"
                    )
                up_affine, im_affine = affine_of(upload), affine_of(image)
                if up_affine is not None and im_affine is not None and not np.allclose(up_affine, im_affine, atol=1e-3):
                    raise ValueError(
                        f"the scribbles {source_name(d, upload)} and the image {source_name(d, image)} have different "
                        "affines: upload them on the image's grid"
                    )
                codes[values == fg_value] = SCRIBBLE_FG
                codes[values == bg_value] = SCRIBBLE_BG
            elif isinstance(upload, str):
                raise ValueError(f"the scribbles {upload!r} were not loaded: put {key!r} in LoadImaged's keys")
            d[key] = _like(image, codes)
        return d


#: Largest ratio of the longest to the shortest resized side (in mm) of a box: a thinner box (a line, a
#: one-voxel-wide ROI) cannot hold an object to segment and would blow up to a huge network input.
MAX_BOX_ASPECT = 8.0


def network_shape(
    shape: Sequence[int],
    spacing: Sequence[float],
    rule: str,
    size: int,
    axes: int,
    max_aspect: float = MAX_BOX_ASPECT,
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Output shape and per-axis scale (input voxels per output voxel) of :class:`ResizeToNetworkd`.

    The first ``axes`` spatial axes are resampled to isotropic voxels (in mm) such that the shorter
    (``rule="shorter_side"``) or longest (``"longest_side"``) of them has ``size`` voxels; other axes keep their
    voxels.

    Raises:
        ValueError: unknown rule, bad ``axes`` or ``size``, non-positive spacing, or (``"shorter_side"``, whose
            output grows with the box's elongation) a box whose sides differ by more than ``max_aspect`` times.
    """
    if rule not in ("shorter_side", "longest_side"):
        raise ValueError(f"rule must be 'shorter_side' or 'longest_side', got {rule!r}")
    if not 1 <= axes <= len(shape):
        raise ValueError(f"axes must be in 1..{len(shape)}, got {axes}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if any(not np.isfinite(s) or s <= 0 for s in spacing[:axes]):
        raise ValueError(f"spacing must be positive and finite, got {tuple(spacing)}")
    extents = [float(n) * float(s) for n, s in zip(shape[:axes], spacing[:axes], strict=True)]
    if rule == "shorter_side" and max(extents) > max_aspect * min(extents):  # "longest_side" outputs are bounded
        raise ValueError(
            f"the box is too thin: {' x '.join(f'{e:.1f}' for e in extents)} mm (sides differ by more than "
            f"{max_aspect:g} times); draw a box around the object"
        )
    reference = min(extents) if rule == "shorter_side" else max(extents)
    voxel = reference / size
    out = [max(1, round(e / voxel)) for e in extents] + [int(n) for n in shape[axes:]]
    scale = tuple(float(n) / o for n, o in zip(shape, out, strict=True))
    return tuple(out), scale


def _resize(x: torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a channel-first ``(C, *spatial)`` tensor (align_corners=False: voxel centres scale about the box)."""
    x_float = x.float()[None]
    if mode == "nearest":
        out = F.interpolate(x_float, size=tuple(shape), mode="nearest-exact")
    else:
        interp = {2: "bilinear", 3: "trilinear"}[len(shape)] if mode in ("bilinear", "trilinear") else mode
        out = F.interpolate(x_float, size=tuple(shape), mode=interp, align_corners=False)
    return out[0]


def _scale_affine(scale: Sequence[float]) -> np.ndarray:
    """Voxel-to-voxel affine of a resize with ``scale`` input voxels per output voxel (align_corners=False)."""
    n = len(scale)
    m = np.eye(n + 1)
    for axis, s in enumerate(scale):
        m[axis, axis] = s
        m[axis, n] = (s - 1.0) / 2.0
    return m


class ResizeToNetworkd(MapTransform, InvertibleTransform):
    """Resize box crops to the network's size with isotropic voxels; invertible (``Invertd`` restores the crop shape).

    BIFSeg: 2D crops are resized so that min(width, height) = 96 pixels (``rule="shorter_side", size=96,
    axes=2``: the in-plane axes of an ``(H, W, D)`` crop, slices untouched), 3D crops so that the longest side is 80
    voxels (``rule="longest_side", size=80, axes=3``). Sizes are measured in mm (from the affine), so anisotropic
    voxels become isotropic.

    Args:
        keys: keys to resize (image, scribble map, label).
        rule: ``"shorter_side"`` or ``"longest_side"``.
        size: voxels of the reference side.
        axes: how many leading spatial axes are resized.
        mode: per key: ``"bilinear"`` (linear in 2D/3D) or ``"nearest"`` (label maps, scribbles).

    The inverse resamples back with linear interpolation (``nearest`` for keys resized with ``nearest``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        rule: str = "shorter_side",
        size: int = 96,
        axes: int = 2,
        mode: str | Sequence[str] = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if rule not in ("shorter_side", "longest_side"):
            raise ValueError(f"rule must be 'shorter_side' or 'longest_side', got {rule!r}")
        self.rule = rule
        self.size = int(size)
        self.axes = int(axes)
        self.modes = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.modes):
            x = d[key]
            spatial = tuple(int(s) for s in x.shape[1:])
            affine = affine_of(x)
            if affine is None:
                spacing = [1.0] * len(spatial)
            else:
                spacing = list(np.linalg.norm(affine[:3, :3], axis=0))[: len(spatial)]
                spacing += [1.0] * (len(spatial) - len(spacing))
            out_shape, scale = network_shape(spatial, spacing, self.rule, self.size, self.axes)
            resized = _resize(torch.as_tensor(x), out_shape, mode).to(torch.as_tensor(x).dtype)
            out = _like(x, resized)
            if isinstance(out, MetaTensor):
                self.push_transform(
                    out,
                    orig_size=spatial,
                    affine=_scale_affine(scale),
                    extra_info={"mode": mode, "scale": list(scale)},
                )
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            transform = self.pop_transform(x)
            orig = tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE])
            mode = transform[TraceKeys.EXTRA_INFO]["mode"]
            scale = transform[TraceKeys.EXTRA_INFO]["scale"]
            restored = _resize(torch.as_tensor(x), orig, "nearest" if mode == "nearest" else "bilinear")
            out = _like(x, restored.to(torch.as_tensor(x).dtype))
            if isinstance(out, MetaTensor):
                out.affine = torch.as_tensor(affine_of(x) @ np.linalg.inv(_scale_affine(scale)), dtype=torch.float64)
            d[key] = out
        return d


class EnforceUserInputd(MapTransform):
    """Post-processing in the stored grid: nothing outside the box, scribbles exactly as drawn.

    Args:
        keys: binary prediction key(s), ``(1, H, W[, D])`` in the image's stored grid.
        box_key: the box mask as made by :class:`BoxMaskd` (a copy taken before any spatial transform).
        scribbles_key: the scribble code map as made by :class:`ScribbleMapd` (copy before spatial transforms).

    Raises:
        ValueError: shapes differ (the post-processing did not invert the pre-processing).
    """

    def __init__(
        self, keys: KeysCollection = "pred", box_key: str = "user_box", scribbles_key: str = "user_scribbles"
    ) -> None:
        super().__init__(keys)
        self.box_key = box_key
        self.scribbles_key = scribbles_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = torch.as_tensor(d[self.box_key]) > 0
        codes = torch.as_tensor(d[self.scribbles_key]) if self.scribbles_key in d else None
        for key in self.key_iterator(d):
            pred = d[key]
            if tuple(pred.shape) != tuple(box.shape):
                raise ValueError(
                    f"{key!r} has shape {tuple(pred.shape)} but the box mask {tuple(box.shape)}: the post-processing "
                    "must invert the pre-processing into the stored grid"
                )
            out = torch.as_tensor(pred).clone()
            out[~box.to(out.device)] = 0
            if codes is not None:
                out[(codes == SCRIBBLE_FG).to(out.device)] = 1
                out[(codes == SCRIBBLE_BG).to(out.device)] = 0
            d[key] = _like(pred, out)
        return d
