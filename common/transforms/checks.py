"""Input checks that turn a wrong image geometry into a clear error at load time, naming the file.

A 4-D NIfTI ``(H, W, D, T)`` (a time series, or several MRI modalities) or a multi-channel image otherwise fails
deep inside a bundle ("not a 2D image" in slice propagation, a convolution channel mismatch in DeepGrow).
:class:`CheckSpatialDimsd` runs right after ``EnsureChannelFirstd`` and says what was found and what is needed::

    {"_target_": "LoadImaged", "keys": ["image", "label"]},
    {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
    {"_target_": "common.transforms.CheckSpatialDimsd", "keys": ["image", "label"]},
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CheckSpatialDimsd"]

_AXIS_NAMES = ("H", "W", "D")


def _expected_shape(spatial_dims: int, channels: int) -> str:
    """The channel-first shape a check asks for, in words: ``(1, H, W, D)`` for ``(3, 1)``, ``(2, H, W)`` for
    ``(2, 2)``; more than three spatial axes are named ``S1, S2, ...``."""
    names = _AXIS_NAMES if spatial_dims <= len(_AXIS_NAMES) else tuple(f"S{i + 1}" for i in range(spatial_dims))
    return "(" + ", ".join([str(channels), *names[:spatial_dims]]) + ")"


def _shape_of(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _meta_of(data: Mapping[Hashable, Any], key: Hashable) -> Mapping[str, Any]:
    """Meta data of ``data[key]``: a MetaTensor's ``.meta``, else ``data["<key>_meta_dict"]``, else empty."""
    meta = getattr(data[key], "meta", None)
    if isinstance(meta, Mapping) and meta:
        return meta
    fallback = data.get(f"{key}_meta_dict")
    return fallback if isinstance(fallback, Mapping) else {}


class CheckSpatialDimsd(MapTransform):
    """Check that each channel-first array has ``channels`` channels and ``spatial_dims`` spatial axes.

    Place it right after ``EnsureChannelFirstd``. That transform moves the 4th axis of a 4-D NIfTI
    ``(H, W, D, T)`` (time points, or MRI modalities as in the MSD brain task) to the channel axis, giving
    ``(T, H, W, D)``, so such a file is reported as a multi-channel image and the message says that the channels come
    from the file's 4th axis. When the shapes are right the arrays pass through untouched (same objects).

    Args:
        keys: keys of the channel-first arrays to check (``(C, H, W, D)`` tensors or arrays, e.g. MetaTensors from
            ``LoadImaged`` + ``EnsureChannelFirstd``).
        spatial_dims: number of spatial axes required (3 for a volume ``(C, H, W, D)``, 2 for an image
            ``(C, H, W)``).
        channels: number of channels required.
        allow_missing_keys: do not raise if a key is missing from the data.

    Raises:
        ValueError: at construction, ``spatial_dims`` or ``channels`` not a positive integer; when called, an array
            with another number of channels or spatial axes; the message names the key, the file
            (``meta["filename_or_obj"]`` if known), the shape found and the shape needed, e.g. ``image
            /x/y.nii.gz has shape (2, 64, 64, 32) (2 channels): the bundle needs a single-channel 3D volume
            (1, H, W, D); ...``.

    Example:
        >>> import numpy as np
        >>> CheckSpatialDimsd("image")({"image": np.zeros((1, 8, 8, 4))})["image"].shape
        (1, 8, 8, 4)
    """

    def __init__(
        self, keys: KeysCollection, spatial_dims: int = 3, channels: int = 1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        for name, value in (("spatial_dims", spatial_dims), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.spatial_dims = spatial_dims
        self.channels = channels

    def _needed(self) -> str:
        kind = "single-channel" if self.channels == 1 else f"{self.channels}-channel"
        what = "volume" if self.spatial_dims == 3 else "image"
        return f"a {kind} {self.spatial_dims}D {what} {_expected_shape(self.spatial_dims, self.channels)}"

    def _message(self, key: Hashable, shape: tuple[int, ...], meta: Mapping[str, Any]) -> str:
        filename = meta.get("filename_or_obj")
        name = f"{key} {filename}" if isinstance(filename, str) or hasattr(filename, "__fspath__") else f"{key}"
        if len(shape) == 0:
            return f"{name} is a scalar (shape ()): the bundle needs {self._needed()}"
        n_channels, n_spatial = shape[0], len(shape) - 1
        found = []
        if n_channels != self.channels:
            found.append(f"{n_channels} channel" + ("" if n_channels == 1 else "s"))
        if n_spatial != self.spatial_dims:
            found.append(f"{n_spatial} spatial " + ("axis" if n_spatial == 1 else "axes"))
        message = f"{name} has shape {shape} ({', '.join(found)}): the bundle needs {self._needed()}"
        if n_channels != self.channels and _original_channel_dim(meta) == -1:
            file_shape = (*shape[1:], n_channels)
            message += (
                f". The file is a {len(file_shape)}-D image {file_shape} whose last axis (time points or "
                "modalities) EnsureChannelFirstd made the channel axis"
            )
        if n_spatial < self.spatial_dims:
            message += f"; a {n_spatial}D image cannot be used, provide a {self.spatial_dims}D volume"
        elif n_channels > self.channels or n_spatial > self.spatial_dims:
            message += "; select one channel/time point first (e.g. save img.dataobj[..., t] as a 3-D NIfTI)"
        else:
            message += f"; provide {self.channels} channels"
        return message

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check ``data[key]`` for every key; return ``data`` (a shallow copy) unchanged.

        Raises:
            ValueError: see the class docstring.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            shape = _shape_of(d[key])
            if shape is None:
                raise ValueError(f"{key} must be an array or tensor (C, ...), got {type(d[key]).__name__}")
            if len(shape) != self.spatial_dims + 1 or shape[0] != self.channels:
                raise ValueError(self._message(key, shape, _meta_of(d, key)))
        return d


def _original_channel_dim(meta: Mapping[str, Any]) -> int | None:
    """``meta["original_channel_dim"]`` as an int, or None if absent / ``"no_channel"`` / NaN."""
    value = meta.get("original_channel_dim")
    if value is None:
        return None
    try:
        number = float(value)  # a tensor, numpy scalar or plain number
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else int(number)
