"""Domain-randomised training images from label maps (SynthSeg-style), as one ``Compose``-ready chain.

Pretrained weights meet scans of any contrast and resolution; a model trained on one kind of synthetic image (e.g.
CT-like phantoms) learns that contrast. SynthSeg (Billot et al., "SynthSeg: segmentation of brain MRI scans of any
contrast and resolution without retraining", Medical Image Analysis 86, 2023) instead generates every training image
afresh from its label map with random intensities per region, a bias field, gamma, a random resolution and noise.
:func:`synthetic_image_transforms` returns that chain (modules: :mod:`.synthesis_intensities`,
:mod:`.synthesis_corruption`, :mod:`.synthesis_resolution`):

1. :class:`SynthesizeIntensitiesd`: Gaussian per region (mean ``~ U(0, 255)``, std ``~ U(0, 35)``), background split
   into random sub-regions;
2. :class:`RandSynthBiasFieldd`: smooth multiplicative field ``exp(b)``, ``std(b) ~ U(0, 0.5)``;
3. :class:`RandSynthGammad`: min-max to ``[0, 1]``, ``x ** gamma`` with ``log gamma ~ N(0, 0.4^2)``;
4. :class:`RandContrastInversiond`: ``1 - x`` with probability 0.5;
5. :class:`RandResolutiond`: blur + down/up-sampling along a random axis to ``U(1, 9)`` mm (others ``U(1, 3)`` mm);
6. :class:`RandSynthNoised`: white noise, std ``~ U(0, 0.05)``.

Config use (each transform as ``"_target_": "common.transforms.RandResolutiond"`` etc., or the factory; with
``"imports": ["$import common"]``)::

    {"_target_": "Compose", "transforms": "$common.transforms.synthetic_image_transforms('label', 'image')"}

Montage of samples: :mod:`common.transforms.synthesis_montage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, MapTransform

from common.transforms.synthesis_corruption import (
    RandContrastInversiond,
    RandSynthBiasFieldd,
    RandSynthGammad,
    RandSynthNoised,
)
from common.transforms.synthesis_intensities import (
    DEFAULT_BACKGROUND_CLASSES,
    DEFAULT_MEAN_RANGE,
    DEFAULT_STD_RANGE,
    SynthesizeIntensitiesd,
    _check_prob,
)
from common.transforms.synthesis_resolution import RandResolutiond

__all__ = ["synthesize_image", "synthetic_image_transforms"]


def synthetic_image_transforms(
    label_key: str = "label",
    image_key: str = "image",
    *,
    mean_range: Sequence[float] = DEFAULT_MEAN_RANGE,
    std_range: Sequence[float] = DEFAULT_STD_RANGE,
    background: int = 0,
    background_classes: Sequence[int] = DEFAULT_BACKGROUND_CLASSES,
    bias_std_range: Sequence[float] = (0.0, 0.5),
    bias_prob: float = 1.0,
    gamma_std: float = 0.4,
    invert_prob: float = 0.5,
    slice_spacing_range: Sequence[float] = (1.0, 9.0),
    inplane_spacing_range: Sequence[float] = (1.0, 3.0),
    resolution_axes: Sequence[int] | None = None,
    resolution_prob: float = 1.0,
    spacing: float | Sequence[float] | None = None,
    noise_std_range: Sequence[float] = (0.0, 0.05),
    noise_prob: float = 1.0,
) -> list[MapTransform]:
    """The synthesis chain (steps 1-6 of the module docstring) as a list for ``Compose``.

    The label stays untouched; ``image_key`` is (over)written with a float32 image in ``[0, 1]`` up to blur and noise
    (roughly ``[-0.2, 1.2]``), on the label's grid (same shape, container type and meta data). Put it after loading
    and spatial pre-processing of the label (and any spatial augmentation), before intensity normalisation.

    Args:
        label_key: key of the ``(1, H, W[, D])`` integer label map.
        image_key: output image key.
        mean_range: per-region mean prior ``U(low, high)`` (SynthSeg: ``(0, 255)``).
        std_range: per-region std prior ``U(low, high)`` (SynthSeg: ``(0, 35)``).
        background: background label value.
        background_classes: inclusive range of the number of background sub-regions.
        bias_std_range: ``U`` range of the bias field's log-domain std (SynthSeg: ``(0, 0.5)``).
        bias_prob: probability of a bias field.
        gamma_std: std of ``log(gamma)`` (SynthSeg: 0.4).
        invert_prob: probability of contrast inversion.
        slice_spacing_range: acquisition spacing (mm) of the random slice axis (SynthSeg: ``(1, 9)``).
        inplane_spacing_range: acquisition spacing (mm) of the other axes.
        resolution_axes: candidate slice axes (``None`` = all).
        resolution_prob: probability of the resolution simulation.
        spacing: grid spacing (mm) for the resolution simulation; ``None`` = from the image's affine, else 1 mm.
        noise_std_range: ``U`` range of the noise std (fraction of the ``[0, 1]`` range).
        noise_prob: probability of noise.

    Raises:
        ValueError: any bad option (from the transform that takes it).
    """
    return [
        SynthesizeIntensitiesd(label_key, image_key, mean_range, std_range, background, background_classes),
        RandSynthBiasFieldd(image_key, bias_prob, bias_std_range),
        RandSynthGammad(image_key, 1.0, gamma_std),
        RandContrastInversiond(image_key, _check_prob(invert_prob, "invert_prob")),
        RandResolutiond(
            image_key, resolution_prob, slice_spacing_range, inplane_spacing_range, resolution_axes, spacing
        ),
        RandSynthNoised(image_key, noise_prob, noise_std_range),
    ]


def synthesize_image(label: Any, seed: int = 0, **options: Any) -> Any:
    """One synthetic image of a label map, deterministic for ``seed`` (for docs, tests and figures).

    Args:
        label: channel-first ``(1, H, W[, D])`` integer label map (numpy, torch or MetaTensor).
        seed: non-negative integer; the same seed and options always give the same image.
        options: keyword options of :func:`synthetic_image_transforms`.

    Returns:
        The float32 image ``(1, H, W[, D])`` in the label's container type.

    Raises:
        ValueError: bad ``seed``, options or label.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    chain = Compose(synthetic_image_transforms("label", "image", **options)).set_random_state(seed=int(seed))
    data: dict[Any, Any] = {"label": label}
    for transform in chain.transforms:  # as Compose does, without wrapping a ValueError into a RuntimeError
        data = transform(data)
    return data["image"]
