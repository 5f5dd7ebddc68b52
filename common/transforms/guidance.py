"""Click guidance: user clicks -> Gaussian guidance channels of the network input (DeepGrow: Sakinis et al.,
arXiv:1903.08205, 2019).

Two steps, so that spatial transforms (e.g. ``Orientationd``) can move clicks exactly between them:

1. :class:`ClickMapsd` turns the point lists a user (or MONAI Label) sends, ``foreground`` and ``background``,
   into a binary *click map* ``(2, *spatial)`` (channel 0 foreground, 1 background) on the image grid, after
   checking every click.
2. :class:`AddGuidanced` renders the click map into guidance with :func:`render_guidance` and appends the two
   channels to the image: network input ``(C_img + 2, *spatial)``.

For a 2D network on a volume, :class:`SliceAxisLastd` (placed between ``Orientationd`` and ``Spacingd``) makes the
axis across the slices the viewer shows the last axis of the grid when the request names the viewer's slice, so that
the slices the network segments, the guidance and the inferer's slices are the viewer's plane whatever the stored axis
order (see :class:`SliceAxisLastd`).

Training renders the batched click maps of the click simulation (:mod:`common.interaction.click_training`) with the
same :func:`render_guidance`, so training and inference share one code path.

Conventions: clicks are integer voxel indices into the array *without* its channel dimension, in array axis order
(``(i, j)`` for a 2D image ``(C, H, W)``, ``(i, j, k)`` for a volume ``(C, H, W, D)``; for NIfTI data the axes as
stored). Guidance of one channel is ``G = F / max(F)`` with ``F`` the binary click map smoothed by a Gaussian
(``sigma`` in voxels, truncated at ``truncated * sigma``, zero padding), so every click of a channel peaks at 1 when
clicks are further apart than a few sigma, and a channel without clicks is all zeros.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import InvertibleTransform, MapTransform
from monai.transforms.spatial.functional import orientation
from monai.utils import TraceKeys, convert_to_numpy, convert_to_tensor

from common.data.geometry import affine_of, axial_axis, map_voxel_indices

__all__ = [
    "STAMP_LIMIT",
    "AddGuidanced",
    "ClickMapsd",
    "SliceAxisLastd",
    "add_guidance_stamps",
    "click_map_from_points",
    "normalise_guidance",
    "render_guidance",
    "render_slice_guidance",
    "validate_points",
]

logger = logging.getLogger(__name__)

FOREGROUND, BACKGROUND = 0, 1


def _sigma_tuple(sigma: float | Sequence[float], spatial_dims: int) -> tuple[float, ...]:
    values = (sigma,) * spatial_dims if isinstance(sigma, int | float) else tuple(sigma)
    if len(values) != spatial_dims or not all(math.isfinite(float(s)) and float(s) > 0 for s in values):
        raise ValueError(f"sigma must be a positive number or {spatial_dims} positive numbers, got {sigma!r}")
    return tuple(float(s) for s in values)


#: Above this many clicked voxels (or on a GPU) guidance is rendered by convolution instead of stamping kernels.
STAMP_LIMIT = 4096


def _gaussian_kernels(sigmas: tuple[float, ...], truncated: float) -> list[torch.Tensor]:
    """The 1D kernels of MONAI's ``GaussianFilter`` (``approx="erf"``), float32 on the CPU."""
    return [gaussian_1d(torch.tensor(s), truncated=truncated, approx="erf").float() for s in sigmas]


@functools.lru_cache(maxsize=32)
def _conv_weights(
    sigmas: tuple[float, ...], truncated: float, channels: int, device: str
) -> tuple[tuple[torch.Tensor, tuple[int, ...]], ...]:
    """Per spatial axis: the depthwise 1D kernel as a conv weight ``(C, 1, 1.., k, ..1)`` and its padding, on
    ``device``, made once (no host-to-device copy per call)."""
    out = []
    for axis, kernel in enumerate(_gaussian_kernels(sigmas, truncated)):
        shape = [1] * len(sigmas)
        shape[axis] = len(kernel)
        padding = [0] * len(sigmas)
        padding[axis] = (len(kernel) - 1) // 2
        weight = kernel.reshape(1, 1, *shape).repeat(channels, *([1] * (len(sigmas) + 1)))
        out.append((weight.to(device), tuple(padding)))
    return tuple(out)


def _smooth(maps: torch.Tensor, sigmas: tuple[float, ...], truncated: float) -> torch.Tensor:
    """Zero-padded separable Gaussian smoothing of float maps ``(B, C, *spatial)``: one depthwise convolution per
    axis (MONAI's ``separable_filtering`` with the kernels of ``GaussianFilter``, without re-making them)."""
    conv = torch.nn.functional.conv2d if maps.dim() == 4 else torch.nn.functional.conv3d
    channels = maps.shape[1]
    for weight, padding in _conv_weights(sigmas, float(truncated), channels, str(maps.device)):
        maps = conv(maps, weight, padding=padding, groups=channels)
    return maps


def _stamp(maps: torch.Tensor, sigmas: tuple[float, ...], truncated: float, device: torch.device) -> torch.Tensor:
    """Zero-padded separable Gaussian smoothing of sparse click maps: one kernel stamp per clicked voxel.

    The clicked voxels are found where ``maps`` lies; the stamps are added on ``device``.
    """
    out = torch.zeros(maps.shape, dtype=torch.float32, device=device)
    clicked = maps.nonzero()  # (M, 2 + nd): batch, channel, voxel
    if len(clicked):
        spatial = tuple(int(v) for v in maps.shape[2:])
        flat = torch.zeros(len(clicked), dtype=torch.int64, device=maps.device)
        for axis, extent in enumerate(spatial):
            flat = flat * extent + clicked[:, 2 + axis]
        clicked, flat = clicked.to(device), flat.to(device)
        mask = torch.ones(len(clicked), dtype=torch.bool, device=device)
        add_guidance_stamps(out, flat, clicked[:, 1], mask, sigmas, truncated, batch=clicked[:, 0])
    return out


def render_guidance(
    click_maps: torch.Tensor,
    sigma: float | Sequence[float] = 2.0,
    truncated: float = 4.0,
    method: str = "auto",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Gaussian guidance from binary click maps, for a whole batch at once.

    Two implementations give the same result (to float rounding): ``"conv"`` smooths the maps with the separable
    kernel of MONAI's ``GaussianFilter`` (zero padding; kernels made once per device), ``"stamp"`` adds the same
    kernel, cut at the borders, around each clicked voxel (a few microseconds per click, so rendering costs next to
    nothing next to the network on a CPU). ``"auto"`` stamps maps that lie on the CPU with at most
    :data:`STAMP_LIMIT` clicked voxels and convolves otherwise (on a GPU the convolution is a handful of kernels
    and needs no synchronisation).

    Args:
        click_maps: ``(B, 2, *spatial)`` (2 or 3 spatial dims), non-zero at clicked voxels (bool or numbers;
            channel 0 foreground, 1 background; any number of channels works).
        sigma: Gaussian standard deviation in voxels, one value or one per spatial axis.
        truncated: the kernel is cut at ``truncated * sigma`` voxels (MONAI's ``GaussianFilter``).
        method: ``"auto"``, ``"conv"`` or ``"stamp"``.
        device: where the guidance is made and returned (default: the maps' device). Maps on the CPU with a GPU
            ``device`` are stamped there from the clicked voxels' indices, so the dense map never crosses over.

    Returns:
        float32 ``(B, 2, *spatial)`` in ``[0, 1]``: each channel is the smoothed map divided by its maximum, so it is
        1 at an isolated click and 0 far from clicks; a channel without clicks stays 0.

    Raises:
        ValueError: wrong rank, a bad ``sigma`` or ``method``.
    """
    if click_maps.dim() not in (4, 5):
        raise ValueError(f"click_maps must be (B, C, H, W) or (B, C, H, W, D), got shape {list(click_maps.shape)}")
    if method not in ("auto", "conv", "stamp"):
        raise ValueError(f"method must be 'auto', 'conv' or 'stamp', got {method!r}")
    target = click_maps.device if device is None else torch.device(device)
    spatial_dims = click_maps.dim() - 2
    sigmas = _sigma_tuple(sigma, spatial_dims)
    binary = click_maps != 0
    if method == "auto":
        on_cpu = binary.device.type == "cpu"
        method = "stamp" if on_cpu and int(torch.count_nonzero(binary)) <= STAMP_LIMIT else "conv"
    if method == "stamp":
        smoothed = _stamp(binary, sigmas, truncated, target)
    else:
        smoothed = _smooth(binary.to(device=target, dtype=torch.float32), sigmas, truncated).clamp_min_(0.0)
    return normalise_guidance(smoothed)


def normalise_guidance(smoothed: torch.Tensor) -> torch.Tensor:
    """Divide each channel of smoothed click maps ``(B, C, *spatial)`` by its maximum (channels of zeros stay 0)."""
    # a channel without clicks is all zeros, and 0 / tiny = 0: no branch needed (three kernels on a GPU)
    peak = smoothed.amax(dim=tuple(range(2, smoothed.dim())), keepdim=True)
    return smoothed / peak.clamp_min(torch.finfo(torch.float32).tiny)


@functools.lru_cache(maxsize=16)
def _stamp_table(
    sigmas: tuple[float, ...], truncated: float, device: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Kernel values ``(M,)``, their offsets ``(M, nd)`` from the centre, and the radii, on ``device``."""
    kernels = _gaussian_kernels(sigmas, truncated)
    radii = tuple((len(k) - 1) // 2 for k in kernels)
    stamp = kernels[0]
    for kernel in kernels[1:]:
        stamp = stamp[..., None] * kernel
    grids = torch.meshgrid(*[torch.arange(-r, r + 1) for r in radii], indexing="ij")
    offsets = torch.stack([g.reshape(-1) for g in grids], dim=1)
    return stamp.reshape(-1).to(device), offsets.to(device), radii


def add_guidance_stamps(
    smoothed: torch.Tensor,
    index: torch.Tensor,
    channel: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | Sequence[float] = 2.0,
    truncated: float = 4.0,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add one click per sample to *unnormalised* smoothed click maps, in place, on their device, batched.

    ``normalise_guidance(smoothed)`` then equals :func:`render_guidance` of the click maps (to float rounding), so
    the click loop of training updates guidance at the cost of one stamp per click instead of a convolution of the
    whole batch per round. The caller must skip clicks on an already clicked voxel (``mask``), as a binary click map
    counts each voxel once (:func:`common.transforms.clicks.add_new_clicks`).

    Args:
        smoothed: float32 ``(B, C, *spatial)``, updated in place.
        index: int64 ``(N,)`` flat spatial index of each click (``N = B`` with one click per sample).
        channel: int64 ``(N,)`` channel of the click (0 foreground, 1 background).
        mask: bool ``(N,)``: which clicks are added.
        sigma: Gaussian standard deviation in voxels.
        truncated: kernel cut-off in multiples of sigma.
        batch: int64 ``(N,)`` sample of each click; ``None`` means click ``i`` belongs to sample ``i``.

    Returns:
        ``smoothed``.
    """
    spatial = tuple(int(v) for v in smoothed.shape[2:])
    values, offsets, _ = _stamp_table(_sigma_tuple(sigma, len(spatial)), float(truncated), str(smoothed.device))
    centre = torch.stack(torch.unravel_index(index, spatial), dim=1)  # (B, nd)
    position = centre[:, None, :] + offsets[None]  # (B, M, nd)
    # bounds checked against Python ints: a device tensor of the shape would cost a host-to-device copy, which
    # synchronises the device (this runs in every click round of training)
    inside = (position >= 0).all(dim=2) & mask[:, None]
    flat = torch.zeros(position.shape[:2], dtype=torch.int64, device=smoothed.device)
    for axis, extent in enumerate(spatial):
        coordinate = position[..., axis]
        inside &= coordinate < extent
        flat = flat * extent + coordinate.clamp(0, extent - 1)
    n = int(np.prod(spatial))
    sample = torch.arange(smoothed.shape[0], device=smoothed.device) if batch is None else batch
    target = (sample[:, None] * smoothed.shape[1] + channel[:, None]) * n + flat
    smoothed.view(-1).index_add_(0, target.reshape(-1), (values[None] * inside).reshape(-1))
    return smoothed


def render_slice_guidance(
    click_maps: torch.Tensor,
    axis: int,
    sigma: float | Sequence[float] = 2.0,
    truncated: float = 4.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """2D guidance on every slice of volumetric click maps (for a 2D network applied slice by slice).

    Args:
        click_maps: ``(B, C, H, W, D)`` binary click maps.
        axis: spatial axis (0, 1 or 2) that indexes the slices.
        sigma: in-plane Gaussian standard deviation in voxels.
        truncated: kernel cut-off in multiples of sigma.
        device: where the guidance is made and returned (default: the maps' device), see :func:`render_guidance`.

    Returns:
        float32 ``(B, C, H, W, D)``: each slice normalised on its own, no guidance bleeds between slices.
    """
    if click_maps.dim() != 5:
        raise ValueError(f"click_maps must be (B, C, H, W, D), got shape {list(click_maps.shape)}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    b, c = click_maps.shape[:2]
    moved = torch.movedim(click_maps, axis + 2, 2)  # (B, C, S, P, Q)
    n_slices, plane = moved.shape[2], moved.shape[3:]
    slices = moved.permute(0, 2, 1, 3, 4).reshape(b * n_slices, c, *plane)
    # only slices with a click are rendered: the others stay zero (a 200-slice volume with clicks on a few slices
    # costs a few slices' work)
    target = click_maps.device if device is None else torch.device(device)
    clicked = slices.flatten(1).any(dim=1).nonzero().flatten()
    rendered = torch.zeros(slices.shape, dtype=torch.float32, device=target)
    if clicked.numel():
        rendered[clicked.to(target)] = render_guidance(slices[clicked], sigma, truncated, device=target)
    rendered = rendered.reshape(b, n_slices, c, *plane).permute(0, 2, 1, 3, 4)
    return torch.movedim(rendered, 2, axis + 2).contiguous()


def validate_points(points: Any, spatial_shape: Sequence[int], name: str) -> np.ndarray:
    """Check user clicks and return them as ``int64 (N, len(spatial_shape))``.

    Args:
        points: a sequence of clicks, each a sequence of ``len(spatial_shape)`` integer voxel indices (an empty
            sequence or ``None`` means no click); floats that are whole numbers are accepted.
        spatial_shape: the image's spatial shape (no channel dimension).
        name: what the clicks are called in error messages (e.g. ``"foreground"``).

    Raises:
        ValueError: not a list of points, wrong number of coordinates, non-integer or non-finite coordinates, or a
            click outside the image (the message gives the click, the image shape and the valid range).
    """
    ndim = len(spatial_shape)
    if points is None:
        return np.zeros((0, ndim), dtype=np.int64)
    if isinstance(points, str | bytes):
        raise ValueError(f"{name} clicks must be a list of points like [[i, j, k], ...], got the string {points!r}")
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    try:
        values = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} clicks must be a list of points of {ndim} numbers each, got {points!r}") from err
    if values.size == 0:
        return np.zeros((0, ndim), dtype=np.int64)
    if values.ndim == 1:
        raise ValueError(f"{name} clicks must be a list of points [[...], ...], got one flat point {values.tolist()}")
    if values.ndim != 2 or values.shape[1] != ndim:
        raise ValueError(
            f"{name} clicks must each have {ndim} coordinates for an image of spatial shape {tuple(spatial_shape)}, "
            f"got {values.tolist()}"
        )
    if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
        raise ValueError(f"{name} clicks must be integer voxel indices, got {values.tolist()}")
    clicks = values.astype(np.int64)
    outside = (clicks < 0) | (clicks >= np.asarray(spatial_shape, dtype=np.int64))
    if outside.any():
        bad = clicks[outside.any(axis=1)][0].tolist()
        limits = ", ".join(f"0..{s - 1}" for s in spatial_shape)
        raise ValueError(
            f"{name} click {bad} lies outside the image of spatial shape {tuple(spatial_shape)} (valid: {limits})"
        )
    return clicks


def click_map_from_points(
    foreground: Any,
    background: Any,
    spatial_shape: Sequence[int],
    require_foreground: bool = False,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Binary click map ``(2, *spatial_shape)`` (uint8; channel 0 foreground, 1 background) from point lists.

    Args:
        foreground: positive clicks, see :func:`validate_points`.
        background: negative clicks.
        spatial_shape: image spatial shape.
        require_foreground: raise if there is no foreground click (a structure needs at least one).
        device: where the map is made (default CPU); on a GPU only the click indices cross over.

    Raises:
        ValueError: bad clicks (see :func:`validate_points`), no clicks at all, or no foreground click when
            ``require_foreground``.
    """
    shape = tuple(int(s) for s in spatial_shape)
    fg = validate_points(foreground, shape, "foreground")
    bg = validate_points(background, shape, "background")
    if len(fg) == 0 and len(bg) == 0:
        raise ValueError("no clicks: give at least one foreground click inside the structure to segment")
    if require_foreground and len(fg) == 0:
        raise ValueError(f"no foreground click: {len(bg)} background click(s) alone do not say what to segment")
    maps = torch.zeros((2, *shape), dtype=torch.uint8, device=device)
    channels = np.repeat([FOREGROUND, BACKGROUND], [len(fg), len(bg)])
    index = torch.from_numpy(np.concatenate([channels[:, None], np.concatenate([fg, bg])], axis=1)).to(maps.device)
    maps[tuple(index.T)] = 1
    return maps


def _all_finite(image: torch.Tensor) -> bool:
    """No NaN or infinite value in ``image``: one min/max reduction (NaN propagates into both) and one read."""
    if image.numel() == 0 or not image.is_floating_point():
        return True
    low, high = torch.aminmax(image)
    return all(math.isfinite(v) for v in torch.stack([low, high]).tolist())


class ClickMapsd(MapTransform):
    """Check the user's clicks against the image and store them as a binary click map on the image's grid.

    Reads ``data[image_key]`` (channel-first ``(C, *spatial)``) and the point lists ``data[foreground_key]``,
    ``data[background_key]`` (MONAI Label's request keys), writes ``data[map_key]``: a uint8
    ``MetaTensor``/tensor ``(2, *spatial)`` carrying the image's meta data (affine).

    Where the clicks come from (``coordinates``):

    - ``"current"``: voxel indices of the image as it is now (e.g. training data, or clicks already on the grid);
      spatial transforms applied afterwards to image and map together must use nearest interpolation and must not
      down-sample (flips and permutations keep every click, resampling can drop one).
    - ``"stored"``: voxel indices of the image *as stored in its file* (what viewers send). Place the transform after
      every spatial transform (``Orientationd``, :class:`SliceAxisLastd`, ``Spacingd``): the clicks are checked
      against the stored shape (``meta["spatial_shape"]``) and carried exactly to the nearest voxel of the current
      grid through the affines (``meta["original_affine"]`` -> ``image.affine``,
      :func:`common.data.geometry.map_voxel_indices`), so no click is lost however the image was re-oriented or
      resampled.

    The viewer's slice, ``data[slice_key]`` (optional; an index along ``axis`` of the grid the clicks refer to, as
    MONAI Label's 2D DeepGrow clients send it): in-plane clicks (one coordinate fewer than the volume) get it as their
    missing coordinate, and with ``slice_only`` the clicks on other slices are dropped (a 2D model segments the
    viewer's slice only; 3D Slicer sends the clicks of every slice when its slice index is 0).

    Args:
        image_key: key of the channel-first image.
        foreground_key: key of the positive clicks (list of points, voxel indices, see module docstring).
        background_key: key of the negative clicks.
        map_key: output key of the click map.
        slice_key: key of the optional slice index.
        axis: the slice axis (spatial axis index of the grid the clicks refer to) of ``slice_key``; ``None``: the
            axial axis of that grid, found from its affine (2 without geometry). MONAI Label viewers send the index
            along stored axis 2 (the ``k`` of ``[i, j, k]``).
        slice_only: with ``data[slice_key]`` given, keep only the clicks on that slice (raise if none is left).
        require_foreground: raise if there is no foreground click.
        check_image: raise if the image holds NaN or infinite values.
        allow_missing_keys: treat a missing click key as "no clicks of this kind".
        coordinates: ``"current"`` or ``"stored"``, see above.

    Raises:
        ValueError: NaN image, wrong rank, a click outside the image or with the wrong number of coordinates, no
            clicks (or, with ``slice_only``, none on the viewer's slice), in-plane clicks on a volume without
            ``slice_key``, a slice index outside the volume, or ``coordinates="stored"`` on an image without the
            loader's meta data.

    Example:
        >>> t = ClickMapsd(image_key="image")
        >>> out = t({"image": torch.zeros(1, 8, 8, 4), "foreground": [[2, 3, 1]], "background": []})
        >>> out["clicks"].shape
        torch.Size([2, 8, 8, 4])
    """

    def __init__(
        self,
        image_key: str = "image",
        foreground_key: str = "foreground",
        background_key: str = "background",
        map_key: str = "clicks",
        slice_key: str = "slice",
        axis: int | None = 2,
        slice_only: bool = False,
        require_foreground: bool = False,
        check_image: bool = True,
        allow_missing_keys: bool = True,
        coordinates: str = "current",
    ) -> None:
        super().__init__([foreground_key, background_key], allow_missing_keys)
        if coordinates not in ("current", "stored"):
            raise ValueError(f"coordinates must be 'current' or 'stored', got {coordinates!r}")
        if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
            raise ValueError(f"axis must be 0, 1, 2 or None (the axial axis), got {axis!r}")
        self.image_key = image_key
        self.foreground_key = foreground_key
        self.background_key = background_key
        self.map_key = map_key
        self.slice_key = slice_key
        self.axis = axis
        self.slice_only = bool(slice_only)
        self.require_foreground = require_foreground
        self.check_image = check_image
        self.coordinates = coordinates

    def _slice(self, d: Mapping[Hashable, Any], spatial: tuple[int, ...], affine: np.ndarray | None) -> tuple[int, int]:
        """``(axis, index)`` of the viewer's slice in the grid of ``spatial`` (a volume), checked."""
        axis = self.axis if self.axis is not None else axial_axis(affine)
        k = _slice_index(d[self.slice_key], self.slice_key)
        if not 0 <= k < spatial[axis]:
            raise ValueError(f"slice {k} lies outside the volume: axis {axis} has {spatial[axis]} slices")
        return axis, k

    def _clicks(self, d: Mapping[Hashable, Any], key: str, spatial: tuple[int, ...], affine: np.ndarray | None) -> Any:
        if key not in d:
            if not self.allow_missing_keys:
                raise ValueError(f"missing key {key!r} (the {key} clicks)")
            return []
        points = d[key]
        if len(spatial) != 3 or points is None or len(points) == 0:
            return points
        arr = np.asarray(points, dtype=object)
        if arr.ndim == 2 and arr.shape[1] == 2:  # in-plane clicks on a volume: need the slice index
            if d.get(self.slice_key) is None:
                raise ValueError(
                    f"{key} clicks {np.asarray(points).tolist()} have 2 coordinates but the image is a volume "
                    f"{spatial}: give clicks as (i, j, k) or the slice index under {self.slice_key!r}"
                )
            axis, k = self._slice(d, spatial, affine)
            return [[*p[:axis], k, *p[axis:]] for p in np.asarray(points).tolist()]
        return points

    def _points(
        self, d: Mapping[Hashable, Any], spatial: tuple[int, ...], affine: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Checked foreground and background clicks ``int64 (N, ndim)`` in the grid of ``spatial``; with
        ``slice_only`` and a slice index, only the clicks on that slice."""
        fg, bg = (
            validate_points(self._clicks(d, key, spatial, affine), spatial, key)
            for key in (self.foreground_key, self.background_key)
        )
        if not self.slice_only or len(spatial) != 3 or d.get(self.slice_key) is None:
            return fg, bg
        axis, k = self._slice(d, spatial, affine)
        kept = fg[fg[:, axis] == k], bg[bg[:, axis] == k]
        dropped = len(fg) + len(bg) - len(kept[0]) - len(kept[1])
        if dropped and not (len(kept[0]) or len(kept[1])):
            raise ValueError(
                f"no click lies on slice {k} (axis {axis}) named by {self.slice_key!r}: the clicks are on slices "
                f"{sorted({int(p[axis]) for p in (*fg, *bg)})}"
            )
        if dropped:
            logger.info("dropped %d click(s) off slice %d (axis %d): the model segments that slice", dropped, k, axis)
        return kept

    def _stored_grid(self, image: Any) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        """(stored spatial shape, stored affine, current affine) of a loaded ``MetaTensor``."""
        stored_shape, stored_affine = _stored_geometry(image, self.image_key, "clicks in stored coordinates")
        current = affine_of(image)
        if current is None:
            raise ValueError(f"{self.image_key!r} carries no affine: clicks in stored coordinates need one")
        return stored_shape, stored_affine, current

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"missing key {self.image_key!r} (the image)")
        image = d[self.image_key]
        if image.ndim not in (3, 4):
            raise ValueError(
                f"{self.image_key!r} must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(image.shape)}"
            )
        if self.check_image and not _all_finite(convert_to_tensor(image, track_meta=False)):
            raise ValueError(f"{self.image_key!r} holds NaN or infinite values")
        spatial = tuple(int(s) for s in image.shape[1:])
        if self.coordinates == "stored":
            stored_shape, stored_affine, current_affine = self._stored_grid(image)
            if len(stored_shape) != len(spatial):
                raise ValueError(f"stored shape {stored_shape} and image {tuple(image.shape)} differ in rank")
            fg, bg = (
                map_voxel_indices(points, stored_affine, current_affine, spatial)
                for points in self._points(d, stored_shape, stored_affine)
            )
        else:
            fg, bg = self._points(d, spatial, affine_of(image))
        maps = click_map_from_points(
            fg, bg, spatial, self.require_foreground, device=image.device if isinstance(image, torch.Tensor) else None
        )
        meta = getattr(image, "meta", None)
        d[self.map_key] = MetaTensor(maps, meta=dict(meta)) if meta is not None else maps
        return d


def _stored_geometry(image: Any, key: str, purpose: str) -> tuple[tuple[int, ...], np.ndarray]:
    """(stored spatial shape, stored affine) from the loader's meta data of ``image``.

    Raises:
        ValueError: ``image`` lacks ``meta["spatial_shape"]`` or ``meta["original_affine"]`` (not from ``LoadImaged``).
    """
    meta = getattr(image, "meta", None) or {}
    shape, original = meta.get("spatial_shape"), meta.get("original_affine")
    if shape is None or original is None:
        raise ValueError(
            f"{key!r} carries no stored geometry (meta 'spatial_shape' and 'original_affine' from LoadImaged): "
            f"{purpose} need the image as loaded by LoadImaged"
        )
    stored_shape = tuple(int(s) for s in np.asarray(convert_to_tensor(shape, track_meta=False)).reshape(-1))
    stored_affine = np.asarray(convert_to_tensor(original, track_meta=False), dtype=np.float64)
    return stored_shape, stored_affine


def _axes_along(current: np.ndarray, target: np.ndarray) -> tuple[int, ...]:
    """For each voxel axis ``b`` of the grid of ``target`` (an affine), the voxel axis of the grid of ``current`` that
    runs along it (grids that differ by axis permutations and flips; for slightly oblique ones the closest axis)."""
    to_current = np.linalg.solve(np.asarray(current, np.float64), np.asarray(target, np.float64))[:3, :3]
    return tuple(int(np.argmax(np.abs(to_current[:, b]))) for b in range(3))


def _slice_index(raw: Any, key: str) -> int:
    """A slice index from a request value (an int, or a whole-number float or string)."""
    if isinstance(raw, bool):
        raise ValueError(f"{key} must be an integer slice index, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an integer slice index, got {raw!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{key} must be an integer slice index, got {raw!r}")
    return int(value)


class SliceAxisLastd(MapTransform, InvertibleTransform):
    """Make the axis across the viewer's slices the last axis of the grid, for a 2D model on the viewer's plane.

    A 2D click model runs on the slices along the last axis of its pre-processed grid (:class:`AddGuidanced`
    ``slice_axis=2``, :class:`common.clicks.ClickInferer` ``axis=2``); after ``Orientationd(axcodes="RAS")`` those
    are axial slices. MONAI Label's 2D DeepGrow clients (3D Slicer) instead send the index of the slice the user works
    on as ``data[slice_key]``, an index along stored array axis ``stored_axis`` (2: the ``k`` of ``[i, j, k]``), and
    replace only that stored slice with the answer, whatever plane it shows. When ``data[slice_key]`` is given, this
    transform permutes the spatial axes of ``keys`` so that the current axis that runs along stored axis
    ``stored_axis`` comes last (the other two keep their order; no flip, no resampling), so the network segments
    exactly the stored slice the viewer shows. Without a slice index (or with ``stored_axis=None``) it leaves the grid
    as it is (today's axial slices through the clicks).

    Place it after ``Orientationd`` and before ``Spacingd`` (whose last pixdim should be ``0``, keeping the slice
    spacing, so that the viewer's stored slice is one slice of the resampled grid and comes back as one slice). The
    permutation is recorded on each ``MetaTensor`` (every call records one, the identity included) and undone by
    ``Invertd`` (:meth:`inverse`).

    Args:
        keys: keys of channel-first volumes ``(C, H, W, D)`` as loaded by ``LoadImaged`` (``meta["original_affine"]``,
            ``meta["spatial_shape"]``), re-oriented so far by permutations and flips only.
        slice_key: key of the viewer's slice index (optional in the data).
        stored_axis: the stored array axis the slice index runs along (0, 1 or 2); ``None``: never permute (e.g. for
            a 3D model).
        allow_missing_keys: skip missing keys.

    Raises:
        ValueError: a bad ``stored_axis``; at call time a bad slice index (not an integer, outside the stored volume),
            an input that is not a volume, or one without the loader's meta data.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        slice_key: str = "slice",
        stored_axis: int | None = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if stored_axis is not None and (isinstance(stored_axis, bool) or stored_axis not in (0, 1, 2)):
            raise ValueError(f"stored_axis must be 0, 1, 2 or None (never permute), got {stored_axis!r}")
        self.slice_key = slice_key
        self.stored_axis = stored_axis

    def _permutation(self, key: Hashable, image: Any, slice_index: Any) -> tuple[int, int, int]:
        """New spatial axis ``b`` is current axis ``permutation[b]`` (identity without a slice index), for the
        channel-first volume ``image`` of ``key`` (loader's meta data, current affine) and the request's slice index
        (or ``None``)."""
        if self.stored_axis is None or slice_index is None:
            return (0, 1, 2)
        if image.ndim != 4:
            raise ValueError(
                f"a slice index ({self.slice_key!r}) needs a channel-first volume (C, H, W, D), got shape "
                f"{tuple(image.shape)}"
            )
        stored_shape, stored_affine = _stored_geometry(image, str(key), "viewer slices")
        current = affine_of(image)
        if current is None or len(stored_shape) != 3:
            raise ValueError(f"a slice index needs a volume with an affine, got stored shape {stored_shape}")
        k = _slice_index(slice_index, self.slice_key)
        if not 0 <= k < stored_shape[self.stored_axis]:
            raise ValueError(
                f"slice {k} lies outside the volume: stored axis {self.stored_axis} has "
                f"{stored_shape[self.stored_axis]} slices"
            )
        across = _axes_along(current, stored_affine)[self.stored_axis]
        others = [a for a in range(3) if a != across]
        return (others[0], others[1], across)

    def _apply(self, image: Any, permutation: Sequence[int], trace: bool) -> Any:
        """Permute the spatial axes of ``image`` (new axis ``b`` = old axis ``permutation[b]``), affine updated."""
        # nibabel orientation rows: (new position of old axis a, no flip)
        ornt = np.array([[list(permutation).index(a), 1] for a in range(3)], dtype=np.float64)
        with self.trace_transform(trace):
            return orientation(image, affine_of(image), ornt, lazy=False, transform_info=self.get_transform_info())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise ValueError(f"{key!r} must be a MetaTensor as LoadImaged makes it, got {type(image).__name__}")
            perm = self._permutation(key, image, d.get(self.slice_key))
            if perm != (0, 1, 2):
                logger.debug("viewer slice %s: spatial axes %s of %r", d.get(self.slice_key), perm, key)
            d[key] = self._apply(image, perm, trace=True)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the recorded permutation of each key (``Invertd`` calls this on the prediction)."""
        d = dict(data)
        for key in self.key_iterator(d):
            transform = self.pop_transform(d[key])
            before = np.asarray(convert_to_numpy(transform[TraceKeys.EXTRA_INFO]["original_affine"]), np.float64)
            current = affine_of(d[key])
            if current is None:
                raise ValueError(f"{key!r} has no affine to undo the permutation of its axes with")
            d[key] = self._apply(d[key], _axes_along(current, before), trace=False)
        return d


class AddGuidanced(MapTransform):
    """Render the click map into Gaussian guidance and append it to the image channels.

    ``data[image_key]`` ``(C, *spatial)`` becomes ``(C + 2, *spatial)``: the image, then foreground and background
    guidance from ``data[map_key]`` (see :func:`render_guidance`). With ``slice_axis`` set, a volume gets 2D guidance
    on each slice along that axis (for a 2D network run slice by slice); otherwise guidance has the image's
    dimensionality.

    Args:
        image_key: key of the channel-first image.
        map_key: key of the click map ``(2, *spatial)`` (from :class:`ClickMapsd`).
        sigma: Gaussian standard deviation in voxels (the paper: 2).
        slice_axis: spatial axis of the slices for per-slice 2D guidance on a volume, or ``None``.
        delete_map: remove ``map_key`` afterwards.

    Raises:
        ValueError: the click map's spatial shape differs from the image's.
    """

    def __init__(
        self,
        image_key: str = "image",
        map_key: str = "clicks",
        sigma: float | Sequence[float] = 2.0,
        slice_axis: int | None = None,
        delete_map: bool = True,
    ) -> None:
        super().__init__([image_key, map_key])
        self.image_key = image_key
        self.map_key = map_key
        self.sigma = sigma
        self.slice_axis = slice_axis
        self.delete_map = delete_map

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, maps = d[self.image_key], d[self.map_key]
        if tuple(maps.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f"click map {tuple(maps.shape)} and image {tuple(image.shape)} differ in spatial shape; apply the "
                "same spatial transforms to both"
            )
        batch = convert_to_tensor(maps, track_meta=False)[None]
        img = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
        # rendered where the image lies (numpy < 2 arrays have no ``.device``)
        if self.slice_axis is not None and batch.dim() == 5:
            guidance = render_slice_guidance(batch, self.slice_axis, self.sigma, device=img.device)[0]
        else:
            guidance = render_guidance(batch, self.sigma, device=img.device)[0]
        d[self.image_key] = torch.cat([img.to(torch.float32), guidance], dim=0)
        if self.delete_map:
            d.pop(self.map_key)
        return d
