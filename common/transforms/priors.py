"""Prior-mask transforms of the slice-propagation method (image slice + neighbouring-slice mask -> current mask).

Training (volume-level items, label already binarised to one structure)::

    ... SelectStructured -> RandPriorSliced (2D image/label/prior at slices t and p = t - offset)
        -> joint 2D augmentation of image, label, prior -> RandMaskPriorJitterd (prior only)
        -> ConcatItemsd(["image", "prior"], "image")

Validation and the evaluation robot: :class:`SliceAnnotationFromLabeld` builds the ``(1, H, W, D)`` annotation volume
holding the ground truth on the slices a user would annotate (by default the middle slice of the structure).

Shapes: volumes are channel-first ``(C, H, W, D)`` indexed ``[c, i, j, k]`` (spatial axes = NIfTI voxel axes as
stored, axis 2 = axial by default); slices are ``(C, H, W)`` for axis 2 (generally the slice axis is removed).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import convert_to_dst_type, convert_to_tensor

from common.transforms.functional import (
    JITTER_MODES,
    _check_axis,
    _check_number,
    foreground_per_slice,
    jitter_mask_about_centre,
    middle_slice_index,
)
from common.transforms.provenance import source_name

__all__ = [
    "MaskPriorJitterd",
    "RandMaskPriorJitterd",
    "RandPriorSliced",
    "SliceAnnotationFromLabeld",
]

logger = logging.getLogger(__name__)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_channel_first_3d(d: Mapping[Hashable, Any], key: Hashable, where: str) -> Any:
    """``d[key]`` if it is a channel-first ``(C, H, W, D)`` array, else a KeyError / ValueError."""
    if key not in d:
        raise KeyError(f"{where}: data has no {key!r} key (keys: {list(d)})")
    array = d[key]
    shape = tuple(getattr(array, "shape", ()))
    if len(shape) != 4:
        raise ValueError(
            f"{where}: {key!r} of {source_name(d, array)} must be a channel-first 3D volume (C, H, W, D), "
            f"got shape {shape}"
        )
    return array


def _check_binary(label: torch.Tensor, key: Hashable, source: str, where: str) -> None:
    """Raise if ``label`` has values outside [0, 1] (e.g. a multi-label map that was not binarised)."""
    if label.dtype == torch.bool or label.numel() == 0:
        return
    low, high = torch.aminmax(label)
    if float(low) < 0 or float(high) > 1:
        raise ValueError(
            f"{where}: {key!r} of {source} must be a binary mask of one structure (values 0/1), got values in "
            f"[{float(low):g}, {float(high):g}]; binarise it first (common.data.structures.SelectStructured)"
        )


def _slice_affine_2d(affine: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """In-plane ``3x3`` affine of slice ``index`` along spatial ``axis`` of a ``4x4`` volume affine.

    Keeps the rows and columns of the two in-plane voxel axes (as MONAI's ``SqueezeDim(update_meta=True)`` does) and
    moves the origin to the slice, so 2D voxel ``(i, j)`` maps to the in-plane world coordinates of the 3D voxel it
    came from (exact for axis-aligned affines, e.g. after ``Orientationd``).
    """
    kept = [a for a in range(3) if a != axis]
    rows = torch.tensor([*kept, 3], device=affine.device)
    out = affine.index_select(0, rows).index_select(1, rows).clone()
    out[:2, 2] = affine[kept, 3] + affine[kept, axis] * index
    return out


def _take_slice(array: NdarrayOrTensor, axis: int, index: int) -> NdarrayOrTensor:
    """Slice ``index`` along spatial ``axis`` of a channel-first ``(C, H, W, D)`` array, as a new array.

    numpy -> numpy, torch -> torch (a copy, never a view into the volume, which may sit in a dataset cache).
    MetaTensor -> MetaTensor with the volume's meta data, a ``3x3`` in-plane affine (:func:`_slice_affine_2d`),
    ``spatial_shape`` set to the 2D shape and no ``applied_operations`` (the volume's operations cannot be inverted
    on a slice).
    """
    if isinstance(array, MetaTensor):
        data = array.as_tensor().select(axis + 1, index).clone()
        meta = dict(array.meta)
        affine = array.affine
        if tuple(affine.shape) == (4, 4):
            meta["affine"] = _slice_affine_2d(affine, axis, index)
        if "spatial_shape" in meta:
            meta["spatial_shape"] = np.asarray(data.shape[1:])
        return MetaTensor(data, meta=meta, applied_operations=[])
    if isinstance(array, torch.Tensor):
        return array.select(axis + 1, index).clone()
    return np.take(np.asarray(array), index, axis=axis + 1)


class MaskPriorJitterd(MapTransform):
    """Rotate and scale 2D prior masks about the image centre by a fixed angle and factor (no translation).

    The deterministic counterpart of :class:`RandMaskPriorJitterd` (which calls it); see
    :func:`common.transforms.functional.jitter_mask_about_centre` for the exact geometry and sign convention
    (positive angle = counter-clockwise when displayed with row 0 at the top; centre ``((H - 1) / 2, (W - 1) / 2)``).

    Args:
        keys: keys of channel-first 2D masks ``(C, H, W)`` (usually ``"prior"``).
        angle_deg: rotation in degrees.
        scale: isotropic scale factor > 0 (1.1 = 10 % larger).
        mode: ``"linear"`` (bilinear on ``mask > 0`` thresholded at 0.5; binary output) or ``"nearest"`` (keeps
            values).
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: bad ``scale``/``angle_deg``/``mode``, or a mask that is not ``(C, H, W)``.

    Example:
        >>> MaskPriorJitterd("prior", angle_deg=5.0, scale=0.9)({"prior": prior})["prior"].shape == prior.shape
        True
    """

    def __init__(
        self,
        keys: KeysCollection = "prior",
        angle_deg: float = 0.0,
        scale: float = 1.0,
        mode: str = "linear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.angle_deg = _check_number(angle_deg, "angle_deg")
        self.scale = _check_number(scale, "scale")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if mode not in JITTER_MODES:
            raise ValueError(f"mode must be one of {JITTER_MODES}, got {mode!r}")
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` masks rotated and scaled about the image centre."""
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            shape = tuple(mask.shape)
            if len(shape) != 3:
                raise ValueError(
                    f"{type(self).__name__}: {key!r} of {source_name(d, mask)} must be a channel-first 2D mask "
                    f"(C, H, W), got shape {shape}"
                )
            d[key] = jitter_mask_about_centre(mask, self.angle_deg, self.scale, self.mode)
        return d


class RandMaskPriorJitterd(RandomizableTransform, MapTransform):
    """Randomly rotate and scale 2D prior masks about the image centre ("mask-prior jitter"), no translation.

    With probability ``prob`` one angle ``~ U(-rotate_range_deg, rotate_range_deg)`` and one scale
    ``~ U(1 - scale_range, 1 + scale_range)`` (both shrinking and growing) are drawn per call and applied to every key
    through :class:`MaskPriorJitterd`. The transform is taken about the image centre, not the mask's centre of mass,
    so rotation adds a little translation to off-centre masks, as in the method's best setting (+-1 deg, +-10 %).
    Apply it to the prior only, after the joint augmentation of image, label and prior.

    Args:
        keys: keys of channel-first 2D masks ``(C, H, W)`` (usually ``"prior"``).
        prob: probability of applying the jitter.
        rotate_range_deg: maximum absolute rotation in degrees (>= 0).
        scale_range: maximum relative scale change, in ``[0, 1)`` (0.10 = +-10 %).
        mode: interpolation, see :class:`MaskPriorJitterd`.
        allow_missing_keys: don't raise if a key is missing.

    Attributes:
        angle_deg: the last drawn angle (0 when the last call did not apply the jitter).
        scale: the last drawn scale (1 when the last call did not apply the jitter).

    Raises:
        ValueError: bad ranges, ``prob`` outside ``[0, 1]``, or a mask that is not ``(C, H, W)``.

    Example:
        >>> t = RandMaskPriorJitterd("prior", rotate_range_deg=1.0, scale_range=0.1).set_random_state(seed=0)
        >>> out = t({"prior": prior})
    """

    def __init__(
        self,
        keys: KeysCollection = "prior",
        prob: float = 1.0,
        rotate_range_deg: float = 1.0,
        scale_range: float = 0.10,
        mode: str = "linear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        probability = _check_number(prob, "prob")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        RandomizableTransform.__init__(self, probability)
        self.rotate_range_deg = _check_number(rotate_range_deg, "rotate_range_deg")
        if self.rotate_range_deg < 0:
            raise ValueError(f"rotate_range_deg must be >= 0, got {rotate_range_deg!r}")
        self.scale_range = _check_number(scale_range, "scale_range")
        if not 0.0 <= self.scale_range < 1.0:
            raise ValueError(f"scale_range must be in [0, 1) so that the scale stays positive, got {scale_range!r}")
        if mode not in JITTER_MODES:
            raise ValueError(f"mode must be one of {JITTER_MODES}, got {mode!r}")
        self.mode = mode
        self.angle_deg = 0.0
        self.scale = 1.0

    def randomize(self, data: Any = None) -> None:
        """Decide whether to jitter and draw the angle and scale (only through ``self.R``)."""
        super().randomize(None)
        self.angle_deg, self.scale = 0.0, 1.0
        if not self._do_transform:
            return
        self.angle_deg = float(self.R.uniform(-self.rotate_range_deg, self.rotate_range_deg))
        self.scale = float(self.R.uniform(1.0 - self.scale_range, 1.0 + self.scale_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` masks jittered (or unchanged, with probability 1 - prob)."""
        self.randomize()
        if not self._do_transform:
            return dict(data)
        jitter = MaskPriorJitterd(self.keys, self.angle_deg, self.scale, self.mode, self.allow_missing_keys)
        return jitter(data)


class RandPriorSliced(Randomizable, MapTransform, MultiSampleTrait):
    """Sample 2D training slices ``(image t, label t, prior = label p)`` from a channel-first 3D volume.

    For each of ``num_samples`` samples a prior slice ``p`` is drawn uniformly among the slices where the label is
    non-empty, an offset ``o`` uniformly from ``offsets`` (default ``{-max_offset, ..., max_offset} \\ {0}``: the
    prior comes from a previous *or* subsequent slice), and the current slice is ``t = p + o``. Pairs with ``t``
    outside the volume, or farther than ``include_outside`` slices from the nearest non-empty slice, are redrawn; this
    is implemented exactly as a uniform draw among the valid ``(p, o)`` pairs, so it never loops.

    ``include_outside`` controls empty targets:

    * ``1`` (default): ``t`` may also be an empty slice directly next to the structure (one slice beyond its first or
      last slice, or inside a one-slice gap): the target is empty while the prior is not, which teaches the network
      to stop propagating at the end of the structure.
    * ``0``: ``t`` is restricted to slices where the label is non-empty.
    * ``k``: ``t`` may lie up to ``k`` slices from the structure; ``k >= max |offset|`` removes the restriction.
      ``True``/``False`` count as 1/0.

    Returns a list of ``num_samples`` dicts (like MONAI's ``RandCropByPosNegLabeld``, so ``monai.data.DataLoader``'s
    ``list_data_collate`` flattens them into the batch). Each is a shallow copy of the input dict with:

    * ``image_key``: slice ``t`` of the image, ``(C, H, W)`` for axis 2 (the slice axis is removed);
    * ``label_key``: slice ``t`` of the label, ``(1, H, W)``, values and dtype as in the input;
    * ``prior_key``: slice ``p`` of the label, ``(1, H, W)``, never empty;
    * ``slice_key`` (``"slice"``): ``t`` and ``prior_slice_key`` (``"prior_slice"``): ``p``, Python ints, and
      ``axis_key`` (``"axis"``, unless ``None``): the slice axis, as in the project's slice-level sample dicts.

    Other entries are passed through unchanged. Output arrays have the input's type: numpy -> numpy, torch -> torch
    (copies, not views), MetaTensor -> MetaTensor keeping the volume's meta data, with a ``3x3`` in-plane affine of the
    slice (rows/columns of the two in-plane axes, origin moved to the slice; MONAI's ``SqueezeDim`` convention),
    ``spatial_shape`` set to the 2D shape and empty ``applied_operations``.

    Args:
        image_key: key of the channel-first image ``(C, H, W, D)``.
        label_key: key of the binary (0/1) label of one structure ``(1, H, W, D)`` (binarise multi-label maps first,
            e.g. with ``common.data.structures.SelectStructured``).
        prior_key: output key of the prior mask.
        axis: spatial slice axis (0, 1 or 2; 2 = axial).
        max_offset: largest ``|t - p|`` of the default offsets (>= 1).
        offsets: explicit allowed offsets ``t - p`` (ints); overrides ``max_offset``.
        num_samples: number of samples per call (>= 1).
        include_outside: how far (in slices) ``t`` may lie from the nearest non-empty slice, see above.
        slice_key: output key of ``t``.
        prior_slice_key: output key of ``p``.
        axis_key: output key of the slice axis, or ``None`` to not write it.

    Raises:
        KeyError: ``image_key`` or ``label_key`` is missing.
        ValueError: bad arguments; image or label not 4D channel-first; label with more than one channel or values
            outside [0, 1]; spatial shapes of image and label differ; the label is empty; no valid ``(p, t)`` pair
            (e.g. ``include_outside=0`` and a structure on a single slice). Messages name the keys and the source file.

    Example:
        >>> t = RandPriorSliced(num_samples=4).set_random_state(seed=0)
        >>> samples = t({"image": image, "label": label})  # (1, H, W, D) each
        >>> [s["image"].shape for s in samples] == [(1, H, W)] * 4
        True
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        prior_key: str = "prior",
        axis: int = 2,
        max_offset: int = 2,
        offsets: Sequence[int] | None = None,
        num_samples: int = 1,
        include_outside: int = 1,
        slice_key: str = "slice",
        prior_slice_key: str = "prior_slice",
        axis_key: str | None = "axis",
    ) -> None:
        MapTransform.__init__(self, [image_key, label_key], allow_missing_keys=False)
        self.image_key = image_key
        self.label_key = label_key
        self.prior_key = prior_key
        self.axis = _check_axis(axis)
        self.max_offset = _check_int(max_offset, "max_offset", 1)
        if offsets is None:
            self.offsets = np.asarray([o for o in range(-self.max_offset, self.max_offset + 1) if o != 0])
        else:
            if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence) or len(offsets) == 0:
                raise ValueError(f"offsets must be a non-empty sequence of integers, got {offsets!r}")
            for o in offsets:
                if isinstance(o, (bool, np.bool_)) or not isinstance(o, (int, np.integer)):
                    raise ValueError(f"offsets must be integers, got {offsets!r}")
            self.offsets = np.unique(np.asarray(offsets, dtype=np.int64))
        self.num_samples = _check_int(num_samples, "num_samples", 1)
        if isinstance(include_outside, (bool, np.bool_)):
            include_outside = int(include_outside)
        self.include_outside = _check_int(include_outside, "include_outside", 0)
        self.slice_key = slice_key
        self.prior_slice_key = prior_slice_key
        self.axis_key = axis_key
        self.pairs: list[tuple[int, int]] = []

    def valid_pairs(self, nonempty: np.ndarray) -> np.ndarray:
        """All admissible ``(t, p)`` pairs, shape ``(N, 2)``, for the per-slice foreground flags ``nonempty``."""
        nonempty = np.asarray(nonempty, dtype=bool)
        depth = nonempty.size
        priors = np.flatnonzero(nonempty)
        if priors.size == 0:
            return np.empty((0, 2), dtype=np.int64)
        targets = priors[:, None] + self.offsets[None, :]
        inside = (targets >= 0) & (targets < depth)
        # distance of every slice to the nearest non-empty slice
        distance = np.abs(np.arange(depth)[:, None] - priors[None, :]).min(axis=1)
        valid = inside & (distance[np.clip(targets, 0, depth - 1)] <= self.include_outside)
        t = targets[valid]
        p = np.broadcast_to(priors[:, None], targets.shape)[valid]
        return np.stack([t, p], axis=1).astype(np.int64)

    def randomize(self, data: np.ndarray) -> None:
        """Draw ``num_samples`` ``(t, p)`` pairs uniformly among ``self.valid_pairs(data)`` (only through ``self.R``).

        The pairs are stored in ``self.pairs`` (a list of ``(t, p)`` int tuples; empty if there is no valid pair).

        Args:
            data: boolean per-slice foreground flags of the label along the slice axis.
        """
        pairs = self.valid_pairs(data)
        self.pairs = []
        if len(pairs) == 0:
            return
        chosen = self.R.randint(len(pairs), size=self.num_samples)
        self.pairs = [(int(pairs[i, 0]), int(pairs[i, 1])) for i in chosen]

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        """Return ``num_samples`` shallow copies of ``data`` holding 2D image, label and prior slices."""
        d = dict(data)
        where = type(self).__name__
        image = _check_channel_first_3d(d, self.image_key, where)
        label = _check_channel_first_3d(d, self.label_key, where)
        source = source_name(d, label, image)
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(
                f"{where}: spatial shapes of {self.image_key!r} {tuple(image.shape)} and {self.label_key!r} "
                f"{tuple(label.shape)} differ ({source})"
            )
        if label.shape[0] != 1:
            raise ValueError(
                f"{where}: {self.label_key!r} of {source} must have one channel (the binary mask of one structure), "
                f"got shape {tuple(label.shape)}"
            )
        label_t = convert_to_tensor(label, track_meta=False)
        _check_binary(label_t, self.label_key, source, where)
        nonempty = foreground_per_slice(label_t[0], self.axis)
        if not nonempty.any():
            raise ValueError(
                f"{where}: {self.label_key!r} of {source} is empty (no foreground on any slice), so there is no prior "
                f"slice to sample for {self.image_key!r}; drop structures absent from the volume"
            )
        self.randomize(nonempty)
        pairs = self.pairs
        if not pairs:
            raise ValueError(
                f"{where}: no (current, prior) slice pair of {source} satisfies offsets {self.offsets.tolist()} and "
                f"include_outside={self.include_outside} (structure on slices "
                f"{np.flatnonzero(nonempty).tolist()} of {nonempty.size} along axis {self.axis})"
            )
        samples = []
        for t, p in pairs:
            sample = dict(d)
            sample[self.image_key] = _take_slice(image, self.axis, t)
            sample[self.label_key] = _take_slice(label, self.axis, t)
            sample[self.prior_key] = _take_slice(label, self.axis, p)
            sample[self.slice_key] = t
            sample[self.prior_slice_key] = p
            if self.axis_key is not None:
                sample[self.axis_key] = self.axis
            samples.append(sample)
        return samples


class SliceAnnotationFromLabeld(MapTransform):
    """Build the annotation volume a user (or the evaluation robot) would provide: ground truth on chosen slices only.

    The output ``annotation_key`` holds ``label > 0`` on the chosen slices along ``axis`` and 0 elsewhere, with the
    label's shape ``(1, H, W, D)``, type, dtype, device and meta data. It is the ``annotation`` input of
    slice-propagation inference (annotated slices = slices with any foreground).

    Args:
        label_key: key of the binary label of one structure ``(1, H, W, D)`` (foreground = ``> 0``).
        annotation_key: output key.
        axis: spatial slice axis (0, 1 or 2).
        slices: ``"middle"`` (default): one-shot annotation of the middle slice of the structure's extent along
            ``axis``, ``round((first + last) / 2)`` with halves rounded up, or the nearest non-empty slice if that one
            is empty (see :func:`common.transforms.functional.middle_slice_index`); or explicit slice indices
            (an int or a list of ints). An explicit slice where the label is empty adds nothing (a warning is logged).
        slices_key: if set, the chosen slice indices (list of ints) are stored under this key.
        allow_missing_keys: if ``True`` and ``label_key`` is missing, return the data unchanged.

    Raises:
        KeyError: ``label_key`` is missing (and ``allow_missing_keys`` is ``False``).
        ValueError: bad ``slices``/``axis``; label not ``(1, H, W, D)``; empty label; a slice index outside the volume.

    Example:
        >>> out = SliceAnnotationFromLabeld()({"label": label})  # label (1, H, W, D), structure on slices 10..30
        >>> annotated_slice_indices(out["annotation"][0])
        [20]
    """

    def __init__(
        self,
        label_key: str = "label",
        annotation_key: str = "annotation",
        axis: int = 2,
        slices: str | int | Sequence[int] = "middle",
        slices_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(label_key, allow_missing_keys)
        self.label_key = label_key
        self.annotation_key = annotation_key
        self.axis = _check_axis(axis)
        self.slices: str | list[int]
        if isinstance(slices, str):
            if slices != "middle":
                raise ValueError(f"slices must be 'middle' or slice indices, got {slices!r}")
            self.slices = slices
        else:
            indices = [slices] if isinstance(slices, (int, np.integer)) else slices
            if not isinstance(indices, Sequence) or len(indices) == 0:
                raise ValueError(f"slices must be 'middle', an int or a non-empty list of ints, got {slices!r}")
            self.slices = sorted({_check_int(i, "slice index", 0) for i in indices})
        self.slices_key = slices_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the annotation volume under ``annotation_key``."""
        d = dict(data)
        where = type(self).__name__
        if self.label_key not in d and self.allow_missing_keys:
            return d
        label = _check_channel_first_3d(d, self.label_key, where)
        source = source_name(d, label)
        if label.shape[0] != 1:
            raise ValueError(
                f"{where}: {self.label_key!r} of {source} must have one channel (1, H, W, D), got {tuple(label.shape)}"
            )
        fg = convert_to_tensor(label, track_meta=False)[0] > 0
        nonempty = foreground_per_slice(fg, self.axis)
        if not nonempty.any():
            raise ValueError(f"{where}: {self.label_key!r} of {source} is empty: there is no slice to annotate")
        if self.slices == "middle":
            chosen = [middle_slice_index(fg, self.axis)]
        else:
            chosen = [int(i) for i in self.slices]
            depth = nonempty.size
            outside = [i for i in chosen if i >= depth]
            if outside:
                raise ValueError(
                    f"{where}: slices {outside} are outside {self.label_key!r} of {source}: axis {self.axis} of "
                    f"shape {tuple(label.shape[1:])} has {depth} slices"
                )
            empty = [i for i in chosen if not nonempty[i]]
            if empty:
                logger.warning("%s: slices %s of %s hold no foreground; they add nothing", where, empty, source)
        keep = torch.zeros(nonempty.size, dtype=torch.bool, device=fg.device)
        keep[chosen] = True
        shape = [1, 1, 1]
        shape[self.axis] = -1
        annotation = (fg & keep.reshape(shape))[None]
        d[self.annotation_key], *_ = convert_to_dst_type(annotation, dst=label)
        if self.slices_key is not None:
            d[self.slices_key] = chosen
        return d
