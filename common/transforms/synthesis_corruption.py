"""Domain-randomised image synthesis, intensity corruptions: bias field, gamma, contrast inversion and noise.

Applied to the piecewise-Gaussian images of :class:`~common.transforms.synthesis_intensities.SynthesizeIntensitiesd`
so that a network meets smooth intensity inhomogeneity, non-linear contrast changes, both polarities of contrast and
noise during training (SynthSeg, Billot et al., Medical Image Analysis 2023; the ranges are stated per transform).
Each transform draws its parameters once per call through ``self.R`` (``set_random_state`` makes it reproducible) and
applies them to every key; large random fields come from a torch generator seeded from ``self.R``.

Shapes: channel-first ``(C, H, W)`` or ``(C, H, W, D)`` indexed ``[c, i, j(, k)]`` as stored. Outputs are float32 in
the input's container type (numpy -> numpy, torch -> torch, MetaTensor -> MetaTensor with the meta data kept).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from common.transforms.functional import _check_number
from common.transforms.synthesis_intensities import (
    _MAX_SEED,
    _check_channel_first,
    _check_prob,
    _check_range,
    _like,
    upsample_coarse_field,
)

__all__ = [
    "BIAS_CLIP_STDS",
    "LOG_GAMMA_CLIP_STDS",
    "RandContrastInversiond",
    "RandSynthBiasFieldd",
    "RandSynthGammad",
    "RandSynthNoised",
    "minmax_normalise",
]

#: The coarse bias field is clipped at this many of its standard deviations, so the multiplicative factor stays in
#: ``[exp(-3 s), exp(3 s)]`` (``s`` = the drawn field std; a Gaussian exceeds 3 std with probability 0.3 %).
BIAS_CLIP_STDS = 3.0
#: ``log(gamma)`` is clipped at this many ``gamma_std``: gamma in ``[exp(-1.2), exp(1.2)] = [0.30, 3.32]`` for 0.4.
LOG_GAMMA_CLIP_STDS = 3.0


def minmax_normalise(image: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max normalisation of a channel-first float tensor to ``[0, 1]`` (a constant channel -> 0)."""
    flat = image.reshape(image.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *([1] * (image.ndim - 1)))
    high = flat.max(dim=1).values.view(-1, *([1] * (image.ndim - 1)))
    span = high - low
    return torch.where(span > 0, (image - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


class _RandImaged(RandomizableTransform, MapTransform):
    """Draw parameters once per call (``randomize(first image)``), then map ``_apply`` over the keys' images."""

    name = "_RandImaged"
    #: apply ``_apply`` also when the random draw says no (it then uses neutral parameters)
    always_apply = False

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, _check_prob(prob))

    def randomize(self, data: Any = None) -> None:
        """Decide whether to apply (``prob``) and draw the parameters for the image ``data`` (only via ``self.R``)."""
        super().randomize(None)
        self._draw(data)

    def _draw(self, image: torch.Tensor) -> None:
        """Draw the parameters (subclasses); called on every call, also when not applying."""

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the ``keys`` images transformed (float32, container type kept)."""
        d = dict(data)
        images = {}
        for key in self.key_iterator(d):
            raw = _check_channel_first(d[key], key, d, self.name, channels=None)
            images[key] = (raw, convert_to_tensor(raw, track_meta=False, dtype=torch.float32))
        if not images:
            self.randomize(None)
            return d
        self.randomize(next(iter(images.values()))[1])
        for key, (raw, image) in images.items():
            d[key] = _like(self._apply(image) if self._do_transform or self.always_apply else image, raw)
        return d


class RandSynthBiasFieldd(_RandImaged):
    """Multiply images by a smooth random bias field ``exp(b)`` (SynthSeg's model of MR intensity inhomogeneity).

    Per call a field std ``s ~ U(std_range)`` is drawn, then ``b`` on a coarse lattice of ``control_points`` per axis
    (fewer on shorter axes) ``~ N(0, s^2)``, clipped at :data:`BIAS_CLIP_STDS` ``* s``, and interpolated (bi/tri)
    linearly onto the image grid; every channel is multiplied by ``exp(b)``. The factor therefore lies in
    ``[exp(-3 s), exp(3 s)]`` (:attr:`factor_bounds` for the largest ``s``).

    Ranges and sources: ``std_range=(0, 0.5)``: SynthSeg's ``bias_field_std = 0.5`` (``s ~ U(0, 0.5)``; its training
    script uses 0.7). ``control_points=4``: SynthSeg samples the field on a lattice of ~2.5 % of the image size (4 to 6
    points per axis for 160-256 voxels), i.e. a field varying over a quarter of the field of view.

    Args:
        keys: image keys.
        prob: probability of applying the field.
        std_range: ``(low, high)`` of the field's standard deviation (log domain), in ``[0, 2]``.
        control_points: coarse lattice points per axis (>= 2).
        allow_missing_keys: don't raise if a key is missing.

    Attributes (last call): ``field_std`` (0 when not applied) and ``coarse`` (the clipped lattice values).
    """

    name = "RandSynthBiasFieldd"

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        std_range: Sequence[float] = (0.0, 0.5),
        control_points: int = 4,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.std_range = _check_range(std_range, "std_range", minimum=0.0, maximum=2.0)
        if isinstance(control_points, (bool, np.bool_)) or not isinstance(control_points, (int, np.integer)):
            raise ValueError(f"control_points must be an integer >= 2, got {control_points!r}")
        if control_points < 2:
            raise ValueError(f"control_points must be an integer >= 2, got {control_points!r}")
        self.control_points = int(control_points)
        self.field_std = 0.0
        self.coarse: np.ndarray | None = None

    @property
    def factor_bounds(self) -> tuple[float, float]:
        """Bounds of the multiplicative factor for any draw: ``exp(-+3 * std_range[1])``."""
        limit = BIAS_CLIP_STDS * self.std_range[1]
        return math.exp(-limit), math.exp(limit)

    def _draw(self, image: torch.Tensor | None) -> None:
        self.field_std, self.coarse = 0.0, None
        if not self._do_transform or image is None:
            return
        self.field_std = float(self.R.uniform(*self.std_range))
        shape = tuple(min(self.control_points, int(n)) for n in image.shape[1:])
        limit = BIAS_CLIP_STDS * self.field_std
        self.coarse = np.clip(self.R.standard_normal(shape) * self.field_std, -limit, limit)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        assert self.coarse is not None
        log_field = upsample_coarse_field(self.coarse, image.shape[1:], device=image.device)
        return image * torch.exp(log_field)[None]


class RandSynthGammad(_RandImaged):
    """Min-max normalise images to ``[0, 1]`` per channel, then raise them to a random power ``gamma``.

    ``log(gamma) ~ N(0, gamma_std^2)``, clipped at :data:`LOG_GAMMA_CLIP_STDS` ``* gamma_std``; with probability
    ``1 - prob`` ``gamma = 1`` (the normalisation is always applied, so the output is always in ``[0, 1]``).

    Ranges and sources: ``gamma_std=0.4`` is SynthSeg's (``IntensityAugmentation(gamma_std=.4)`` after min-max
    normalisation): gamma mostly in ``[0.45, 2.2]`` (2 std), at most ``[0.30, 3.32]``.

    Args:
        keys: image keys.
        prob: probability of a random gamma.
        gamma_std: standard deviation of ``log(gamma)`` (>= 0).
        allow_missing_keys: don't raise if a key is missing.

    Attributes (last call): ``gamma``.
    """

    name = "RandSynthGammad"
    always_apply = True

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        gamma_std: float = 0.4,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.gamma_std = _check_number(gamma_std, "gamma_std")
        if not 0.0 <= self.gamma_std <= 2.0:
            raise ValueError(f"gamma_std must be in [0, 2], got {gamma_std!r}")
        self.gamma = 1.0

    @property
    def gamma_bounds(self) -> tuple[float, float]:
        """Bounds of ``gamma`` for any draw."""
        limit = LOG_GAMMA_CLIP_STDS * self.gamma_std
        return math.exp(-limit), math.exp(limit)

    def _draw(self, image: torch.Tensor | None) -> None:
        self.gamma = 1.0
        if self._do_transform:
            limit = LOG_GAMMA_CLIP_STDS * self.gamma_std
            self.gamma = math.exp(float(np.clip(self.R.normal(0.0, self.gamma_std), -limit, limit)))

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        return minmax_normalise(image).clamp(0.0, 1.0) ** self.gamma


class RandContrastInversiond(_RandImaged):
    """With probability ``prob``, invert the contrast of images: ``x -> min + max - x`` per channel (``1 - x`` on
    ``[0, 1]``), so dark structures become bright and the intensity range is kept.

    Not part of SynthSeg's published model (its random means already make every contrast possible, lab2im offers
    ``contrast_inversion`` as an option); it flips the polarity of what the bias field and gamma did, e.g. a dark
    background becomes bright. ``prob=0.5`` makes both polarities equally likely.

    Attributes (last call): ``inverted``.
    """

    name = "RandContrastInversiond"

    def __init__(self, keys: KeysCollection = "image", prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.inverted = False

    def _draw(self, image: torch.Tensor | None) -> None:
        self.inverted = bool(self._do_transform)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.reshape(image.shape[0], -1)
        shape = (-1, *([1] * (image.ndim - 1)))
        return (flat.min(dim=1).values + flat.max(dim=1).values).view(shape) - image


class RandSynthNoised(_RandImaged):
    """Add white Gaussian noise of a random standard deviation ``~ U(std_range)`` (image intensity units).

    Ranges and sources: ``std_range=(0, 0.05)`` for images normalised to ``[0, 1]`` (as in
    :func:`~common.transforms.synthesis.synthetic_image_transforms`, after :class:`RandSynthGammad`): up to 5 % of the
    intensity range, i.e. an SNR down to ~20 of the brightest tissue, added on top of the within-region Gaussian
    spread (up to 35/255 = 14 %) which low resolution partly averages out. SynthSeg adds noise of random std in the
    low-resolution domain; here it is added on the final grid (white at full resolution).

    Attributes (last call): ``noise_std`` (0 when not applied).
    """

    name = "RandSynthNoised"

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        std_range: Sequence[float] = (0.0, 0.05),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.std_range = _check_range(std_range, "std_range", minimum=0.0)
        self.noise_std = 0.0
        self._seed = 0

    def _draw(self, image: torch.Tensor | None) -> None:
        self.noise_std = 0.0
        if self._do_transform:
            self.noise_std = float(self.R.uniform(*self.std_range))
            self._seed = int(self.R.randint(_MAX_SEED))  # one seed: the same noise for every key of equal shape

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self._seed)
        noise = torch.randn(image.shape, generator=generator, dtype=torch.float32)
        return image + self.noise_std * noise.to(image.device)
