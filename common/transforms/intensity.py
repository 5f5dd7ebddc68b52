"""Intensity normalisation per modality, chosen in a config by a string: CT window, or per-image statistics for MRI.

Modes (per channel of a channel-first ``(C, *spatial)`` image; float32 output):

* ``"ct_window"`` -- clip to the HU window ``[a_min, a_max]`` then divide by ``ct_scale``: the bundles' CT
  preprocessing. Computed with exactly the arithmetic of MONAI's
  ``ScaleIntensityRanged(a_min, a_max, b_min=a_min / ct_scale, b_max=a_max / ct_scale, clip=True)``, so the two
  give bitwise-equal float32 outputs. No per-image statistics: HU keep their meaning.
* ``"percentile"`` -- clip to the channel's ``[p_low, p_high]`` percentiles (linear interpolation between order
  statistics, as ``numpy.percentile``) and map that range linearly onto ``out_range``. With the default
  ``out_range = (-2.048, 2.048)`` the network sees the same value range as with the default CT window.
* ``"zscore"`` -- ``z = (x - mean) / std`` with mean and std taken inside the body (voxels ``> body_threshold``;
  ``None`` = Otsu's threshold of a 256-bin histogram of the channel, which separates air from the body on CT and
  MRI), clipped to ``[-zscore_clip, zscore_clip]`` and mapped linearly from that interval onto ``out_range``
  (``out_range = (-zscore_clip, zscore_clip)`` leaves the clipped z-scores as they are). Fewer than 2 voxels above
  the threshold: the statistics use the whole channel.

``percentile`` and ``zscore`` are invariant to an increasing affine intensity change ``a * x + b`` (``a > 0``),
up to float rounding. A constant channel (``p_high == p_low``, or a zero standard deviation) is mapped to the middle
of ``out_range``. Any NaN or infinite value raises a ``ValueError`` naming the key (or ``name``).

Config example::

    {"_target_": "common.transforms.NormalizeIntensityByModalityd", "keys": "image", "mode": "@intensity_mode"}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, convert_to_tensor

from common.transforms.functional import _check_number
from common.transforms.provenance import source_name

__all__ = [
    "INTENSITY_MODES",
    "NormalizeIntensityByModalityd",
    "normalize_intensity",
    "otsu_threshold",
]

#: The normalisation modes accepted by :func:`normalize_intensity` and :class:`NormalizeIntensityByModalityd`.
INTENSITY_MODES: tuple[str, ...] = ("ct_window", "percentile", "zscore")

_OTSU_BINS = 256


def _pair(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """``(a, b)`` with ``low <= a < b <= high``, else a ValueError naming ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    a, b = _check_number(value[0], f"{name}[0]"), _check_number(value[1], f"{name}[1]")
    if not low <= a < b <= high:
        bounds = f" within [{low:g}, {high:g}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise ValueError(f"{name} must be (low, high) with low < high{bounds}, got {value!r}")
    return a, b


def _check_options(
    mode: Any,
    ct_window: Any,
    ct_scale: Any,
    percentiles: Any,
    out_range: Any,
    zscore_clip: Any,
    body_threshold: Any,
) -> dict[str, Any]:
    if mode not in INTENSITY_MODES:
        raise ValueError(f"mode must be one of {INTENSITY_MODES}, got {mode!r}")
    scale = _check_number(ct_scale, "ct_scale")
    if scale <= 0:
        raise ValueError(f"ct_scale must be > 0, got {ct_scale!r}")
    clip = _check_number(zscore_clip, "zscore_clip")
    if clip <= 0:
        raise ValueError(f"zscore_clip must be > 0, got {zscore_clip!r}")
    return {
        "mode": mode,
        "ct_window": _pair(ct_window, "ct_window"),
        "ct_scale": scale,
        "percentiles": _pair(percentiles, "percentiles", 0.0, 100.0),
        "out_range": _pair(out_range, "out_range"),
        "zscore_clip": clip,
        "body_threshold": None if body_threshold is None else _check_number(body_threshold, "body_threshold"),
    }


def _percentiles(flat: torch.Tensor, qs: tuple[float, float]) -> tuple[float, float]:
    """Percentiles ``qs`` (0..100) of a 1D tensor, linear between order statistics (``numpy.percentile``'s default).

    CPU tensors use ``numpy.percentile`` (one partial sort for both); other devices ``torch.kthvalue`` (no size limit,
    unlike ``torch.quantile``) on the tensor's device.
    """
    if flat.device.type == "cpu":
        low, high = np.percentile(flat.detach().numpy(), qs)
        return float(low), float(high)
    return _kth_percentiles(flat, qs)


def _kth_percentiles(flat: torch.Tensor, qs: tuple[float, float]) -> tuple[float, float]:
    """:func:`_percentiles` with ``torch.kthvalue``, on the tensor's device."""
    n = flat.numel()
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        below = min(math.floor(pos), n - 1)
        value = float(torch.kthvalue(flat, below + 1).values)
        frac = pos - below
        if frac > 0.0 and below + 1 < n:
            value += (float(torch.kthvalue(flat, below + 2).values) - value) * frac
        out.append(value)
    return out[0], out[1]


def otsu_threshold(values: torch.Tensor, bins: int = _OTSU_BINS) -> float:
    """Otsu's threshold of the values' histogram (``bins`` equal bins between min and max).

    Args:
        values: any-shape float tensor of finite values.
        bins: histogram bins.

    Returns:
        The upper edge of the bin maximising the between-class variance (foreground = ``values > threshold``);
        where several consecutive bin edges give the same split (empty bins in a gap between the modes), the
        middle of them. The minimum for a constant tensor.
    """
    flat = values.reshape(-1).to(torch.float64 if values.dtype == torch.float64 else torch.float32)
    lo, hi = (float(v) for v in torch.aminmax(flat))
    if hi <= lo:
        return lo
    hist = torch.histc(flat, bins=bins, min=lo, max=hi).to(torch.float64)
    width = (hi - lo) / bins
    centres = lo + (torch.arange(bins, dtype=torch.float64, device=hist.device) + 0.5) * width
    w0 = torch.cumsum(hist, 0)
    s0 = torch.cumsum(hist * centres, 0)
    total, total_sum = w0[-1], s0[-1]
    w1 = total - w0
    valid = (w0 > 0) & (w1 > 0)
    m0 = s0 / w0.clamp(min=1.0)
    m1 = (total_sum - s0) / w1.clamp(min=1.0)
    between = torch.where(valid, w0 * w1 * (m0 - m1) ** 2, torch.zeros_like(w0))[:-1]
    first = int(torch.argmax(between))
    # empty bins after the best split give the same split: take the middle of that plateau (of the gap)
    plateau = torch.nonzero(between[first:] != between[first])
    last = first + (int(plateau[0]) - 1 if plateau.numel() else between.numel() - 1 - first)
    return lo + (0.5 * (first + last) + 1.0) * width


def _linear(x: torch.Tensor, low: float, high: float, out_range: tuple[float, float]) -> torch.Tensor:
    """Clip ``x`` to ``[low, high]`` and map it linearly onto ``out_range``; a constant range gives its middle."""
    b_min, b_max = out_range
    if not high > low:
        return torch.full_like(x, 0.5 * (b_min + b_max))
    y = (x.clamp(low, high) - low) / (high - low)
    return (y * (b_max - b_min) + b_min).clamp(b_min, b_max)


def _normalize_channel(x: torch.Tensor, opts: Mapping[str, Any]) -> torch.Tensor:
    mode = opts["mode"]
    if mode == "ct_window":
        # the arithmetic of monai.transforms.ScaleIntensityRange(a_min, a_max, b_min, b_max, clip=True)
        a_min, a_max = opts["ct_window"]
        b_min, b_max = a_min / opts["ct_scale"], a_max / opts["ct_scale"]
        y = (x - a_min) / (a_max - a_min)
        return torch.clamp(y * (b_max - b_min) + b_min, b_min, b_max)
    flat = x.reshape(-1)
    if mode == "percentile":
        low, high = _percentiles(flat, opts["percentiles"])
        return _linear(x, low, high, opts["out_range"])
    threshold = opts["body_threshold"]
    if threshold is None:
        threshold = otsu_threshold(flat)
    body = flat[flat > threshold]
    if body.numel() < 2:
        body = flat
    body = body.to(torch.float64)
    mean, std = float(body.mean()), float(body.std(correction=0))
    clip = opts["zscore_clip"]
    if not std > 0:
        return _linear(x, 0.0, 0.0, opts["out_range"])
    return _linear((x - mean) / std, -clip, clip, opts["out_range"])


def normalize_intensity(
    image: NdarrayOrTensor,
    mode: str = "ct_window",
    ct_window: Sequence[float] = (-1024.0, 1024.0),
    ct_scale: float = 500.0,
    percentiles: Sequence[float] = (0.5, 99.5),
    out_range: Sequence[float] = (-2.048, 2.048),
    zscore_clip: float = 5.0,
    body_threshold: float | None = None,
    name: str = "image",
) -> NdarrayOrTensor:
    """Normalise a channel-first image per channel (see the module docstring for the modes).

    Args:
        image: ``(C, *spatial)`` numpy array, torch tensor or MetaTensor (any real dtype).
        mode: ``"ct_window"``, ``"percentile"`` or ``"zscore"``.
        ct_window: ``ct_window`` mode: HU window ``(a_min, a_max)``.
        ct_scale: ``ct_window`` mode: divisor of the clipped HU (output range ``ct_window / ct_scale``).
        percentiles: ``percentile`` mode: ``(p_low, p_high)`` in ``[0, 100]``.
        out_range: ``percentile`` and ``zscore`` modes: output ``(low, high)``.
        zscore_clip: ``zscore`` mode: z-scores are clipped to ``[-zscore_clip, zscore_clip]`` before the mapping
            onto ``out_range``.
        body_threshold: ``zscore`` mode: voxels above it (input units) give the statistics; ``None`` = Otsu.
        name: what to call the image in error messages.

    Returns:
        float32 array of the input's type and shape (numpy -> numpy, tensor -> tensor on the same device,
        MetaTensor -> MetaTensor with its meta data).

    Raises:
        ValueError: bad option, fewer than 2 dimensions, an empty image, or NaN/infinite values.
    """
    opts = _check_options(mode, ct_window, ct_scale, percentiles, out_range, zscore_clip, body_threshold)
    shape = tuple(image.shape)
    if len(shape) < 2 or 0 in shape:
        raise ValueError(f"{name} must be a non-empty channel-first array (C, *spatial), got shape {shape}")
    data = convert_to_tensor(image, track_meta=False)
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(image).__name__}")
    if data.dtype == torch.bool or data.is_complex():
        raise ValueError(f"{name} must have a real numeric dtype, got {data.dtype}")
    if not data.is_floating_point():
        data = data.to(torch.float32)
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        nans = int(torch.isnan(data).sum())
        raise ValueError(
            f"{name} has {nans} NaN and {int((~finite).sum()) - nans} infinite values; intensity normalisation "
            "needs finite values"
        )
    out = torch.stack([_normalize_channel(channel, opts) for channel in data]).to(torch.float32)
    return convert_to_dst_type(out, dst=image, dtype=torch.float32)[0]


class NormalizeIntensityByModalityd(MapTransform):
    """Dictionary transform of :func:`normalize_intensity`: one normalisation per modality, chosen by ``mode``.

    ``mode="ct_window"`` with the defaults equals the bundles'
    ``ScaleIntensityRanged(a_min=-1024, a_max=1024, b_min=-1024 / 500, b_max=1024 / 500, clip=True)``;
    ``"percentile"`` or ``"zscore"`` suit MRI and scans of unknown intensity scale (see the module docstring).

    Args:
        keys: keys of channel-first ``(C, *spatial)`` images.
        mode: ``"ct_window"``, ``"percentile"`` or ``"zscore"``.
        ct_window: HU window ``(a_min, a_max)`` of ``ct_window``.
        ct_scale: divisor of the clipped HU of ``ct_window``.
        percentiles: ``(p_low, p_high)`` of ``percentile``, in ``[0, 100]``.
        out_range: output ``(low, high)`` of ``percentile`` and ``zscore``.
        zscore_clip: z-score clipping of ``zscore``.
        body_threshold: body threshold of ``zscore`` in input units (``None`` = Otsu).
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: bad options (at construction), or an image with NaN/infinite values (naming its key).

    Example:
        >>> NormalizeIntensityByModalityd("image", mode="percentile")({"image": mri})["image"].amax() <= 2.048
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "ct_window",
        ct_window: Sequence[float] = (-1024.0, 1024.0),
        ct_scale: float = 500.0,
        percentiles: Sequence[float] = (0.5, 99.5),
        out_range: Sequence[float] = (-2.048, 2.048),
        zscore_clip: float = 5.0,
        body_threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.options = _check_options(mode, ct_window, ct_scale, percentiles, out_range, zscore_clip, body_threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalise every key of ``data`` (a shallow copy is returned)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize_intensity(d[key], **self.options, name=f"key {key!r} of {source_name(d, d[key])}")
        return d
