"""Synthetic CT-like abdominal phantoms: the embedded default dataset.

Each case is an ``(H, W, D)`` volume indexed ``[i, j, k]`` = NIfTI voxel axes (x towards the patient's right,
y anterior, z superior; axis 2 is the axial slice axis) with HU-like intensities, and a uint8 label map with the ten
classes of :data:`PHANTOM_STRUCTURES`. The anatomy is built from implicit shapes (:mod:`common.data.phantom_shapes`)
in a canonical frame that always fills the field of view, evaluated on a smoothly deformed grid; every organ gets
random size and position jitter. The clean HU image is blurred (partial volume), a smooth additive bias field and
Gaussian noise are added, and the result is rounded to integer HU.

Command line (MSD layout: ``DIR/imagesTr``, ``DIR/labelsTr``, ``DIR/dataset.json``, ``DIR/montage_phantom_000.png``)::

    python -m common.data.phantoms --out data/phantom --cases 12 --seed 0

Same seed -> byte-identical files. Case ``i`` depends only on ``(seed, i)`` (``SeedSequence(seed).spawn``), not on the
number of cases.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from common.data.phantom_shapes import Z_ASPECT, Box, Grid, ellipsoid, make_grid, sample_curve, smooth_field, tube

__all__ = [
    "DEFAULT_CASES",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "NOISE_STD_HU_RANGE",
    "PHANTOM_LABELS",
    "PHANTOM_STRUCTURES",
    "PHANTOM_VOLUME_FRACTION_RANGES",
    "PhantomStructure",
    "case_rng",
    "dataset_json",
    "generate_case",
    "generate_dataset",
    "main",
    "nifti_gz_bytes",
    "phantom_affine",
    "structure_split",
    "validate_geometry",
    "write_atomic",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhantomStructure:
    """One label class of the phantom.

    Attributes:
        value: label value in the uint8 label map.
        name: structure name used in ``dataset.json``.
        family: shape family (what makes the class a distinct test of a method).
        group: ``"seen"`` (may be trained on) or ``"unseen"`` (held out).
        hu: nominal intensity in HU before per-case jitter.
    """

    value: int
    name: str
    family: str
    group: str
    hu: float


#: The label classes, in label-value order.
PHANTOM_STRUCTURES: tuple[PhantomStructure, ...] = (
    PhantomStructure(1, "liver", "large smooth organ", "seen", 60.0),
    PhantomStructure(2, "spleen", "medium blob (crescent)", "seen", 50.0),
    PhantomStructure(3, "kidney_left", "medium blob, one of a left/right pair", "seen", 150.0),
    PhantomStructure(4, "kidney_right", "mirrored pair of kidney_left, own size", "unseen", 150.0),
    PhantomStructure(5, "aorta", "long thin straight tube along z", "unseen", 200.0),
    PhantomStructure(6, "bowel", "tube winding along a random 3D curve", "seen", 0.0),
    PhantomStructure(7, "iliac", "one tube in upper slices splitting into two below", "unseen", 180.0),
    PhantomStructure(8, "adrenal", "small structure (< 1 % of the volume) in fat", "unseen", 30.0),
    PhantomStructure(9, "pancreas", "low-contrast structure (contrast ~ noise std)", "seen", 50.0),
    PhantomStructure(10, "liver_lesion", "1-3 small blobs inside the liver", "seen", 25.0),
)

#: ``dataset.json`` label table: value -> name, background included.
PHANTOM_LABELS: dict[int, str] = {0: "background", **{s.value: s.name for s in PHANTOM_STRUCTURES}}

#: Expected fraction of all voxels per class ``(min, max)`` for grids of at least 48 voxels a side: the range seen
#: over hundreds of seeds, widened by ~40 % (lower bound x 0.6, upper bound x 1.4).
PHANTOM_VOLUME_FRACTION_RANGES: dict[str, tuple[float, float]] = {
    "liver": (0.03, 0.10),
    "spleen": (0.0015, 0.011),
    "kidney_left": (0.001, 0.009),
    "kidney_right": (0.001, 0.009),
    "aorta": (0.0008, 0.004),
    "bowel": (0.0018, 0.011),
    "iliac": (0.0004, 0.002),
    "adrenal": (0.00006, 0.0007),
    "pancreas": (0.0005, 0.003),
    "liver_lesion": (0.00003, 0.002),
}

#: Range of the per-case standard deviation of the additive Gaussian noise (HU).
NOISE_STD_HU_RANGE: tuple[float, float] = (10.0, 18.0)
DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 96)
DEFAULT_SPACING: tuple[float, float, float] = (2.5, 2.5, 3.5)
DEFAULT_CASES = 12
MIN_SIDE, MAX_SIDE = 32, 512

_CASE_RE = re.compile(r"^phantom_\d+\.nii\.gz(\.tmp)?$")
_MONTAGE_RE = re.compile(r"^montage_phantom_\d+\.png$")
_LABEL = {s.name: s.value for s in PHANTOM_STRUCTURES}
_AIR_HU = -1000.0
_NIFTI1_HEADER_BYTES = 348
_CUBE = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
_SPHERE_DIRECTIONS = _CUBE / np.maximum(np.linalg.norm(_CUBE, axis=1, keepdims=True), 1.0)  # 26 unit vectors + centre


def structure_split() -> dict[str, list[str]]:
    """``{"seen": [...], "unseen": [...]}`` structure names, in label-value order."""
    return {g: [s.name for s in PHANTOM_STRUCTURES if s.group == g] for g in ("seen", "unseen")}


def validate_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], tuple[float, ...]]:
    """Check a grid ``shape`` (3 ints in ``[32, 512]``) and ``spacing`` (3 positive finite mm); return them as tuples.

    Raises:
        ValueError: naming the offending argument and value.
    """
    try:
        dims = [int(s) for s in shape]
    except (TypeError, ValueError):
        raise ValueError(f"shape must be 3 integers, got {shape!r}") from None
    if len(dims) != 3 or any(isinstance(s, bool) or int(s) != s for s in shape):
        raise ValueError(f"shape must be 3 integers (H, W, D), got {shape!r}")
    if any(not MIN_SIDE <= s <= MAX_SIDE for s in dims):
        raise ValueError(f"shape {tuple(dims)} out of range: every side must be in [{MIN_SIDE}, {MAX_SIDE}] voxels")
    try:
        mm = [float(s) for s in spacing]
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be 3 numbers (mm), got {spacing!r}") from None
    if len(mm) != 3 or any(not math.isfinite(s) or s <= 0 for s in mm):
        raise ValueError(f"spacing must be 3 positive finite numbers (mm), got {spacing!r}")
    return (dims[0], dims[1], dims[2]), tuple(mm)


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Diagonal ``(4, 4)`` voxel-to-world affine (mm) with the volume centre at the world origin."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape, dtype=float) - 1.0) * np.asarray(spacing, dtype=float)
    return affine


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of case ``index``: child ``index`` of ``SeedSequence(seed)``, independent of the number of cases."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(index + 1)[index])


# --------------------------------------------------------------------------------------------------- anatomy


class _Canvas:
    """Clean HU image and label map painted in order: later shapes overwrite earlier ones."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.image = np.full(grid.shape, _AIR_HU, dtype=np.float32)
        self.label = np.zeros(grid.shape, dtype=np.uint8)
        self.cavity = np.zeros(grid.shape, dtype=bool)  # inside the abdominal wall muscle: organs are clipped to it
        self.texture = np.zeros(grid.shape, dtype=np.float32)  # 0 (fat) .. 1 (soft tissue) mix of the background

    def paint(self, box: Box, mask: np.ndarray, hu: float | np.ndarray, value: int = 0) -> None:
        img = self.image[box]
        img[mask] = hu if np.isscalar(hu) else np.asarray(hu)[mask]
        self.label[box][mask] = value


def _jit(rng: np.random.Generator, x: float, spread: float) -> float:
    return float(x + rng.uniform(-spread, spread))


def _ell_box(center: Sequence[float], semi: Sequence[float]) -> tuple[list[float], list[float]]:
    r = max(semi[0], semi[1])
    half = (r, r, semi[2])
    return [c - h for c, h in zip(center, half, strict=True)], [c + h for c, h in zip(center, half, strict=True)]


def _union_box(*boxes: tuple[Sequence[float], Sequence[float]]) -> tuple[list[float], list[float]]:
    return [min(b[0][i] for b in boxes) for i in range(3)], [max(b[1][i] for b in boxes) for i in range(3)]


def _curve_box(points: np.ndarray, radius: float) -> tuple[list[float], list[float]]:
    pad = np.array([radius, radius, radius / Z_ASPECT])
    return list(points.min(axis=0) - pad), list(points.max(axis=0) + pad)


@dataclass(frozen=True)
class _Body:
    """Random body outline: superellipse cross-section (exponent 2.5) whose semi-axes vary smoothly along ``w``."""

    a_phase: tuple[float, float]
    b_phase: tuple[float, float]
    b_post: float
    fat: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Body:
        return cls(
            (rng.uniform(0.4, 0.9), rng.uniform(0, 2)),
            (rng.uniform(0.4, 0.9), rng.uniform(0, 2)),
            rng.uniform(0.64, 0.68),
            rng.uniform(0.05, 0.11),
        )

    def layers(self, uu: np.ndarray, vv: np.ndarray, ww: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised body radius ``r`` (< 1 inside the skin) and the inner radii of the fat and of the wall muscle.

        ``uu, vv, ww`` are canonical coordinates (grid arrays or 1D point arrays of one shape).
        """
        a = 0.88 + 0.04 * np.sin(np.pi * (self.a_phase[0] * ww + self.a_phase[1]))
        b_ant = 0.68 + 0.04 * np.sin(np.pi * (self.b_phase[0] * ww + self.b_phase[1]))
        b = np.where(vv > 0, b_ant, np.float32(self.b_post))
        r = (((uu / a) ** 2) ** 1.25 + ((vv / b) ** 2) ** 1.25) ** 0.4
        fat_in = 1.0 - 0.015 - self.fat * (1.0 + 0.8 * np.clip(vv, 0.0, None))  # thicker anteriorly
        return r, fat_in, fat_in - 0.055

    def in_cavity(self, points: np.ndarray, margin: float) -> bool:
        """Whether all ``(N, 3)`` canonical points lie inside the wall muscle by ``margin`` (radius units)."""
        pts = np.asarray(points, dtype=np.float32)
        r, _, muscle_in = self.layers(pts[:, 0], pts[:, 1], pts[:, 2])
        return bool(np.all(r < muscle_in - margin))


def _paint_body(c: _Canvas, rng: np.random.Generator, hu: dict[str, float], body: _Body) -> None:
    """Skin, subcutaneous fat, wall muscle and a fat/soft-tissue visceral background."""
    g = c.grid
    r, fat_in, muscle_in = body.layers(g.U, g.V, g.W)
    everything: Box = (slice(None), slice(None), slice(None))
    c.paint(everything, r < 1.0, hu["muscle"])
    c.paint(everything, (r < 1.0 - 0.015) & (r >= fat_in), hu["fat"])
    c.cavity = r < muscle_in
    c.texture = np.clip(0.35 + smooth_field(rng, g.shape, 0.9, n_modes=4, max_cycles=1.6), 0.0, 1.0)
    c.paint(everything, c.cavity, hu["fat"] + (hu["tissue"] - hu["fat"]) * c.texture)


def _paint_spine(c: _Canvas, rng: np.random.Generator, hu: dict[str, float]) -> None:
    """Vertebral bodies with discs, spinal canal, posterior arch, paraspinal and psoas muscles (unlabelled)."""
    g = c.grid
    vc, rv = _jit(rng, -0.25, 0.02), _jit(rng, 0.11, 0.01)
    box = g.box([-0.45, -0.75, -1.0], [0.45, -0.15, 1.0])
    uu, vv, ww = g.at(box)
    in_body = c.image[box] > -500
    for side in (-1.0, 1.0):  # paraspinal muscles, then psoas growing towards the pelvis
        para = ellipsoid((uu, vv, ww), (side * 0.14, vc - rv - 0.12, 0.0), (0.11, 0.09, 9.0))
        c.paint(box, (para < 1.0) & in_body, hu["muscle"])
        psoas_r = np.clip(0.03 + 0.1 * (0.3 - ww) / 1.3, 0.0, None)
        psoas = (uu - side * (rv + 0.06)) ** 2 + (vv - vc - 0.02) ** 2 < psoas_r**2
        c.paint(box, psoas & (ww < 0.3) & c.cavity[box], hu["muscle"])
    rho2 = uu**2 + (vv - vc) ** 2
    period = rng.uniform(0.16, 0.2)
    disc = np.mod(ww / period + rng.uniform(0, 1), 1.0) < 0.2
    c.paint(box, rho2 < rv**2, np.where(disc, hu["disc"], hu["bone"]).astype(np.float32))
    c.paint(box, (rho2 < rv**2) & (rho2 > (0.85 * rv) ** 2) & ~disc, hu["cortex"])
    canal_v = vc - rv - 0.055
    arch = uu**2 + (vv - canal_v) ** 2
    c.paint(box, (arch < 0.085**2) & ~disc, hu["cortex"])
    spinous = ellipsoid((uu, vv, ww), (0.0, canal_v - 0.1, 0.0), (0.025, 0.07, 9.0))
    c.paint(box, (spinous < 1.0) & ~disc & in_body, hu["cortex"])
    c.paint(box, arch < 0.05**2, hu["csf"])


def _paint_fat_and_stomach(
    c: _Canvas,
    rng: np.random.Generator,
    hu: dict[str, float],
    kidneys: list[dict[str, Any]],
    adrenal_apex: tuple[float, float, float],
) -> None:
    g = c.grid
    for k in kidneys:  # perirenal fat
        semi = [1.35 * s + 0.03 for s in k["semi"]]
        box = g.box(*_ell_box(k["center"], semi))
        c.paint(box, (ellipsoid(g.at(box), k["center"], semi, k["angle"]) < 1) & c.cavity[box], hu["fat"])
    pad_c, pad_s = (adrenal_apex[0], adrenal_apex[1] - 0.06, adrenal_apex[2]), (0.15, 0.14, 0.24)
    box = g.box(*_ell_box(pad_c, pad_s))
    c.paint(box, (ellipsoid(g.at(box), pad_c, pad_s) < 1) & c.cavity[box], hu["fat"])
    mes_c, mes_s = (0.0, 0.25, -0.5), (0.6, 0.4, 0.6)  # mesenteric fat around the bowel, lightly textured
    box = g.box(*_ell_box(mes_c, mes_s))
    mes = hu["fat"] + 0.3 * (hu["tissue"] - hu["fat"]) * c.texture[box]
    c.paint(box, (ellipsoid(g.at(box), mes_c, mes_s) < 1) & c.cavity[box], mes)
    for side in (1.0, -1.0):  # ascending (patient right) and descending colon: stool with gas on top
        cu, cv, r = side * _jit(rng, 0.58, 0.03), _jit(rng, 0.02, 0.04), 0.07 * rng.uniform(0.9, 1.2)
        box = g.box([cu - r, cv - r, -0.75], [cu + r, cv + r, 0.15])
        uu, vv, ww = g.at(box)
        rho2 = (uu - cu) ** 2 + (vv - cv) ** 2
        inside = (ww > -0.75) & (ww < 0.15) & c.cavity[box]
        c.paint(box, (rho2 < r**2) & inside, hu["wall"])
        c.paint(
            box, (rho2 < (0.75 * r) ** 2) & inside, np.where(cv + 0.2 * r < vv, _AIR_HU, hu["stool"]).astype(np.float32)
        )
    for side in (1.0, -1.0):  # lung bases behind the liver dome and the spleen
        lu_c, lu_s = (side * _jit(rng, 0.42, 0.03), _jit(rng, -0.12, 0.03), _jit(rng, 1.2, 0.05)), (0.34, 0.42, 0.5)
        box = g.box(*_ell_box(lu_c, lu_s))
        c.paint(box, (ellipsoid(g.at(box), lu_c, lu_s) < 1) & c.cavity[box], hu["lung"] + 40.0 * c.texture[box])
    st_c = (_jit(rng, -0.38, 0.04), _jit(rng, 0.28, 0.03), _jit(rng, 0.55, 0.05))  # stomach with an air-fluid level
    st_s = (0.22, 0.17, 0.25)
    box = g.box(*_ell_box(st_c, st_s))
    q = ellipsoid(g.at(box), st_c, st_s, 0.5)
    c.paint(box, (q < 1) & c.cavity[box], hu["wall"])
    lumen = (q < 0.75) & c.cavity[box]
    c.paint(box, lumen, np.where(g.V[box] > st_c[1] + 0.06, _AIR_HU, hu["fluid"]).astype(np.float32))


def _organ_params(rng: np.random.Generator) -> dict[str, Any]:
    """Random geometry of all labelled structures (canonical frame), drawn in a fixed order."""
    p: dict[str, Any] = {}
    s = rng.uniform(0.9, 1.1)
    lc = (_jit(rng, 0.45, 0.04), _jit(rng, 0.02, 0.04), _jit(rng, 0.42, 0.05))
    p["liver"] = [
        (lc, (0.4 * s, 0.5 * s, 0.5 * s), _jit(rng, 0.0, 0.15)),
        ((lc[0] - 0.42, lc[1] + 0.2, lc[2] + 0.12), (0.33 * s, 0.2 * s, 0.28 * s), _jit(rng, -0.35, 0.15)),
        ((lc[0] + 0.1, lc[1] - 0.05, lc[2] - 0.42), (0.2 * s, 0.26 * s, 0.3 * s), _jit(rng, 0.0, 0.2)),
    ]
    s = rng.uniform(0.85, 1.15)
    p["spleen"] = (
        (_jit(rng, -0.57, 0.03), _jit(rng, -0.2, 0.04), _jit(rng, 0.5, 0.06)),
        (0.13 * s, 0.27 * s, 0.28 * s),
        _jit(rng, 0.45, 0.15),
    )
    base = (_jit(rng, 0.42, 0.03), _jit(rng, -0.3, 0.03), _jit(rng, 0.02, 0.05), _jit(rng, 0.5, 0.15))
    p["kidneys"] = []
    for side, dz in ((-1.0, 0.05), (1.0, -0.05)):  # left (u < 0, a little higher), then its mirror image
        s = rng.uniform(0.82, 1.18)
        center = (side * _jit(rng, base[0], 0.02), _jit(rng, base[1], 0.02), _jit(rng, base[2] + dz, 0.03))
        p["kidneys"].append({"center": center, "semi": (0.17 * s, 0.125 * s, 0.32 * s), "angle": -side * base[3]})
    p["aorta"] = (_jit(rng, -0.07, 0.02), _jit(rng, -0.06, 0.02), 0.065 * rng.uniform(0.9, 1.1), _jit(rng, -0.25, 0.05))
    ax, ay, _, w_end = p["aorta"]
    w_split = w_end - rng.uniform(0.17, 0.23)
    junction = (ax + _jit(rng, 0.0, 0.02), ay + 0.02, w_split)
    p["iliac_trunk"] = np.linspace((ax, ay, w_end + 0.1), junction, 40)
    p["iliac_branches"] = [
        sample_curve(
            np.array(
                [
                    junction,
                    (ax + side * _jit(rng, 0.15, 0.02), ay + 0.04, w_split - 0.3),
                    (ax + side * _jit(rng, 0.32, 0.04), ay + _jit(rng, 0.1, 0.03), -1.15),
                ]
            ),
            150,
        )
        for side in (-1.0, 1.0)
    ]
    p["iliac_r"] = (0.052 * rng.uniform(0.9, 1.1), 0.042 * rng.uniform(0.9, 1.1))
    t = np.linspace(0.0, 1.0, 600)  # bowel: irregular descending helix (loops separated by > one diameter)
    theta = rng.uniform(0, 2 * np.pi) + 2 * np.pi * rng.uniform(1.3, 2.2) * t
    wobble = [0.05 * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t + rng.uniform(0, 2 * np.pi)) for _ in range(2)]
    p["bowel"] = (
        np.stack(
            [
                _jit(rng, 0.0, 0.06) + rng.uniform(0.2, 0.3) * np.cos(theta) + wobble[0],
                _jit(rng, 0.3, 0.03) + rng.uniform(0.08, 0.13) * np.sin(theta) + wobble[1],
                _jit(rng, -0.1, 0.04) + (_jit(rng, -0.8, 0.05) + 0.1) * t,
            ],
            axis=1,
        ),
        0.075 * rng.uniform(0.9, 1.1),
    )
    pc = np.array([(0.13, 0.04, 0.02), (0.0, 0.13, 0.1), (-0.2, 0.1, 0.18), (-0.4, -0.05, 0.27)])
    pc += rng.uniform(-0.03, 0.03, size=pc.shape)
    s = rng.uniform(0.9, 1.1)
    p["pancreas"] = (sample_curve(pc, 200), np.linspace(0.085, 0.05, 200) * s)
    p["pancreas_pad"] = 0.15 + 0.04 * np.sin(
        2 * np.pi * rng.uniform(1.0, 2.5) * np.linspace(0, 1, 200) + rng.uniform(0, 2 * np.pi)
    )
    p["adrenal_apex"] = (_jit(rng, -0.29, 0.02), _jit(rng, -0.13, 0.02), _jit(rng, 0.48, 0.03))
    p["adrenal_scale"] = rng.uniform(0.85, 1.15)
    return p


def _smooth_union(qs: Sequence[np.ndarray], k: float = 0.08) -> np.ndarray:
    """Smooth minimum of the signed radii ``sqrt(q) - 1`` (``< 0`` inside the union)."""
    d = [np.sqrt(q) - 1.0 for q in qs]
    m = np.minimum.reduce(d)
    return m - k * np.log(sum(np.exp((m - x) / k) for x in d))


def _paint_organs(c: _Canvas, hu: dict[str, float], p: dict[str, Any]) -> None:
    g = c.grid
    # tissue pad around the pancreas: its neighbourhood has (nearly) its own intensity
    pts, radii = p["pancreas"]
    pad = radii + p["pancreas_pad"]
    box = g.box(*_curve_box(pts, float(pad.max())))
    c.paint(box, (tube(g.at(box), pts, pad) < 1) & c.cavity[box], hu["tissue"])
    # liver
    box = g.box(*_union_box(*(_ell_box(cen, semi) for cen, semi, _ in p["liver"])))
    liver = _smooth_union([ellipsoid(g.at(box), cen, semi, ang) for cen, semi, ang in p["liver"]]) < 0
    c.paint(box, liver & c.cavity[box], hu["liver"], _LABEL["liver"])
    # spleen: ellipsoid with a medial notch (crescent cross-section)
    cen, semi, ang = p["spleen"]
    box = g.box(*_ell_box(cen, semi))
    notch_c = (cen[0] + 1.2 * semi[0] * math.cos(ang), cen[1] + 1.2 * semi[0] * math.sin(ang), cen[2])
    notch_s = (0.6 * semi[0], 0.6 * semi[1], 1.2 * semi[2])
    spleen = (ellipsoid(g.at(box), cen, semi, ang) < 1) & (ellipsoid(g.at(box), notch_c, notch_s, ang) > 1)
    c.paint(box, spleen & c.cavity[box], hu["spleen"], _LABEL["spleen"])
    # bowel: wall and content
    pts, r = p["bowel"]
    box = g.box(*_curve_box(pts, r))
    rel = tube(g.at(box), pts, r)
    c.paint(
        box,
        (rel < 1) & c.cavity[box],
        np.where(rel < 0.65, hu["fluid"], hu["wall"]).astype(np.float32),
        _LABEL["bowel"],
    )
    # kidneys: cortex, medulla, hilum notch
    for name, k in zip(("kidney_left", "kidney_right"), p["kidneys"], strict=True):
        box = g.box(*_ell_box(k["center"], k["semi"]))
        q = ellipsoid(g.at(box), k["center"], k["semi"], k["angle"])
        medial = (math.cos(k["angle"]), math.sin(k["angle"]))
        if k["center"][0] > 0:
            medial = (-medial[0], -medial[1])
        hil_c = (
            k["center"][0] + 0.95 * k["semi"][0] * medial[0],
            k["center"][1] + 0.95 * k["semi"][0] * medial[1],
            k["center"][2],
        )
        hilum = ellipsoid(g.at(box), hil_c, (0.07, 0.07, 0.35 * k["semi"][2])) < 1
        c.paint(
            box,
            (q < 1) & ~hilum & c.cavity[box],
            np.where(q < 0.4, hu["medulla"], hu["cortex_k"]).astype(np.float32),
            _LABEL[name],
        )
    # pancreas
    pts, radii = p["pancreas"]
    box = g.box(*_curve_box(pts, float(radii.max())))
    c.paint(box, (tube(g.at(box), pts, radii) < 1) & c.cavity[box], hu["pancreas"], _LABEL["pancreas"])
    # iliac (below the aorta's end) then aorta: one vessel tree, two labels
    ax, ay, ra, w_end = p["aorta"]
    rt, rb = p["iliac_r"]
    pts = np.concatenate([p["iliac_trunk"], *p["iliac_branches"]])
    radii = np.concatenate([np.full(len(p["iliac_trunk"]), rt)] + [np.full(len(b), rb) for b in p["iliac_branches"]])
    box = g.box(*_curve_box(pts, rt))
    iliac = (tube(g.at(box), pts, radii) < 1) & (g.W[box] < w_end)
    c.paint(box, iliac & c.cavity[box], hu["iliac"], _LABEL["iliac"])
    box = g.box([ax - ra, ay - ra, w_end], [ax + ra, ay + ra, 1.0])
    uu, vv, ww = g.at(box)
    aorta = ((uu - ax) ** 2 + (vv - ay) ** 2 < ra**2) & (w_end <= ww)
    c.paint(box, aorta & c.cavity[box], hu["aorta"], _LABEL["aorta"])
    # left adrenal: inverted Y of two thin limbs meeting anteriorly, inside its fat pad
    apex, s = p["adrenal_apex"], p["adrenal_scale"]
    limbs = [
        ((apex[0] + 0.03, apex[1] - 0.07, apex[2]), (0.028 * s, 0.085 * s, 0.13 * s), 0.25),
        ((apex[0] - 0.05, apex[1] - 0.06, apex[2] - 0.02), (0.028 * s, 0.08 * s, 0.12 * s), -0.6),
    ]
    box = g.box(*_union_box(*(_ell_box(cen, semi) for cen, semi, _ in limbs)))
    adrenal = np.minimum.reduce([ellipsoid(g.at(box), cen, semi, ang) for cen, semi, ang in limbs]) < 1
    c.paint(box, adrenal & c.cavity[box], hu["adrenal"], _LABEL["adrenal"])


def _paint_lesions(c: _Canvas, rng: np.random.Generator, hu: dict[str, float], p: dict[str, Any], body: _Body) -> None:
    """1-3 spherical lesions strictly inside the main liver lobe, clear of the organs painted over the liver."""
    g = c.grid
    cen, semi, ang = p["liver"][0]
    kid = p["kidneys"][1]
    scale = np.array([1.0, 1.0, Z_ASPECT])
    others = np.concatenate([p["pancreas"][0], p["bowel"][0]]) * scale
    clearance = max(float(p["pancreas"][1].max()), p["bowel"][1]) + 0.04
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.05, 0.1)
        kid_pad = [max(kid["semi"][:2]) + r + 0.03] * 2 + [kid["semi"][2] + r + 0.03]
        inner = [x - r - 0.04 for x in semi]
        extremes = r * _SPHERE_DIRECTIONS / scale
        point = np.array(cen, dtype=np.float32)
        for _try in range(200):  # rejection sampling (a fixed number of draws per try: shape-independent)
            cand = np.array([cen[i] + rng.uniform(-1, 1) * semi[i] for i in range(3)], dtype=np.float32)
            pt = (cand[:1], cand[1:2], cand[2:])
            if (
                ellipsoid(pt, cen, inner, ang)[0] < 1
                and ellipsoid(pt, kid["center"], kid_pad)[0] > 1
                and np.min(np.linalg.norm(others - cand * scale, axis=1)) > r + clearance
                and body.in_cavity(cand + extremes, 0.06)
            ):
                point = cand
                break
        sph = (float(r), float(r), float(r / Z_ASPECT))
        centre = [float(x) for x in point]
        box = g.box(*_ell_box(centre, sph))
        mask = (ellipsoid(g.at(box), centre, sph) < 1) & (c.label[box] == _LABEL["liver"])
        c.paint(box, mask, hu["lesion"], _LABEL["liver_lesion"])


def _intensities(rng: np.random.Generator, noise_std: float) -> dict[str, float]:
    nominal = {s.name: s.hu for s in PHANTOM_STRUCTURES}
    hu = {
        "fat": _jit(rng, -100.0, 10.0),
        "muscle": _jit(rng, 50.0, 5.0),
        "tissue": _jit(rng, 40.0, 5.0),
        "bone": _jit(rng, 350.0, 50.0),
        "cortex": _jit(rng, 700.0, 80.0),
        "disc": _jit(rng, 90.0, 10.0),
        "csf": _jit(rng, 15.0, 5.0),
        "wall": _jit(rng, 40.0, 8.0),
        "fluid": _jit(rng, -10.0, 20.0),
        "stool": _jit(rng, -50.0, 20.0),
        "lung": _jit(rng, -860.0, 20.0),
        "liver": _jit(rng, nominal["liver"], 8.0),
        "spleen": _jit(rng, nominal["spleen"], 5.0),
        "cortex_k": _jit(rng, 165.0, 15.0),
        "medulla": _jit(rng, 120.0, 15.0),
        "aorta": _jit(rng, nominal["aorta"], 20.0),
        "iliac": _jit(rng, nominal["iliac"], 15.0),
        "adrenal": _jit(rng, nominal["adrenal"], 8.0),
    }
    hu["pancreas"] = hu["tissue"] + noise_std * rng.uniform(0.5, 1.0)
    hu["lesion"] = hu["liver"] - rng.uniform(25.0, 45.0)
    return hu


def generate_case(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one phantom case.

    The anatomy (random draws included) does not depend on ``shape``: the same generator state gives the same
    phantom sampled on another grid. ``spacing`` (mm) sets the partial-volume blur in voxels: a box average over the
    voxel combined with a scanner point-spread function of 1.0 mm (in-plane) and 1.5 mm (along z) standard deviation.

    Args:
        rng: random generator of this case (see :func:`case_rng`).
        shape: grid shape ``(H, W, D)``, each side in ``[32, 512]``.
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``(image, label)``: ``(H, W, D)`` float32 integer-valued HU in ``[-1024, 3071]`` and ``(H, W, D)`` uint8
        labels (values of :data:`PHANTOM_STRUCTURES`, 0 = background); every class is present.

    Raises:
        ValueError: bad ``shape`` or ``spacing``.
        RuntimeError: a class ended up empty (cannot happen for valid shapes; guarded so it never goes unnoticed).
    """
    dims, mm = validate_geometry(shape, spacing)
    noise_std = rng.uniform(*NOISE_STD_HU_RANGE)
    hu = _intensities(rng, noise_std)
    params = _organ_params(rng)
    grid = make_grid(rng, dims, amplitude=rng.uniform(0.02, 0.04), max_cycles=0.7)
    canvas = _Canvas(grid)
    body = _Body.draw(rng)
    _paint_body(canvas, rng, hu, body)
    _paint_fat_and_stomach(canvas, rng, hu, params["kidneys"], params["adrenal_apex"])
    _paint_spine(canvas, rng, hu)
    _paint_organs(canvas, hu, params)
    _paint_lesions(canvas, rng, hu, params, body)
    label = canvas.label
    counts = np.bincount(label.ravel(), minlength=len(PHANTOM_LABELS))
    missing = [PHANTOM_LABELS[v] for v in range(1, len(PHANTOM_LABELS)) if counts[v] == 0]
    if missing:
        raise RuntimeError(f"phantom on grid {dims} lost structure(s) {missing}; use a larger shape")
    sigma = [math.sqrt(1.0 / 12.0 + (psf / s) ** 2) for psf, s in zip((1.0, 1.0, 1.5), mm, strict=True)]
    image = gaussian_filter(canvas.image, sigma=sigma, mode="nearest")
    image += smooth_field(rng, dims, rng.uniform(5.0, 15.0), n_modes=2, max_cycles=0.4)
    image += np.float32(noise_std) * rng.standard_normal(dims, dtype=np.float32)
    np.rint(image, out=image)
    np.clip(image, -1024.0, 3071.0, out=image)
    return image, label


# --------------------------------------------------------------------------------------------------- writing


def nifti_gz_bytes(
    array: np.ndarray, affine: np.ndarray, descrip: str, is_label: bool, compresslevel: int = 6
) -> bytes:
    """Gzipped NIfTI-1 bytes with a fixed gzip header (mtime 0, no file name), so equal arrays give equal bytes.

    sform = qform = ``affine`` (code 1, so nibabel and ITK read the same geometry), identity intensity scaling,
    units mm; ``is_label`` sets the NIfTI label intent.
    """
    img = nib.Nifti1Image(array, affine)
    hdr = img.header
    hdr.set_data_dtype(array.dtype)
    hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr["descrip"] = descrip.encode("ascii", "replace")[:79]
    if is_label:
        hdr.set_intent("label")
    raw = bytearray(img.to_bytes())
    # nibabel writes scl_slope = NaN ("no scaling") for unscaled data; store the explicit identity scaling instead
    final = nib.Nifti1Header(binaryblock=bytes(raw[:_NIFTI1_HEADER_BYTES]))
    final["scl_slope"], final["scl_inter"] = 1.0, 0.0
    raw[:_NIFTI1_HEADER_BYTES] = final.binaryblock
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=compresslevel) as gz:
        gz.write(bytes(raw))
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (no half-written file on failure)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def dataset_json(n_cases: int, seed: int, shape: Sequence[int], spacing: Sequence[float]) -> dict[str, Any]:
    """The ``dataset.json`` content of a phantom set (MSD keys plus ``"structure_split"`` and ``"phantom"``)."""
    ids = [f"phantom_{i:03d}" for i in range(n_cases)]
    return {
        "name": "Phantom",
        "description": "Synthetic CT-like abdominal phantoms (common.data.phantoms), seen/unseen in structure_split",
        "reference": "generated by python -m common.data.phantoms",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "numTraining": n_cases,
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
        "test": [],
        "structure_split": structure_split(),
        "phantom": {"seed": seed, "shape": list(shape), "spacing": list(spacing), "generator": __name__},
    }


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove only files this generator writes."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"output directory {out} is not empty; pass overwrite=True (--overwrite) to replace it")
    for sub in ("imagesTr", "labelsTr"):
        folder = out / sub
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and _CASE_RE.match(f.name):
                    f.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
    for f in out.iterdir():
        if f.is_file() and (f.name == "dataset.json" or _MONTAGE_RE.match(f.name)):
            f.unlink()


def generate_dataset(
    out_dir: str | Path,
    n_cases: int = DEFAULT_CASES,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    overwrite: bool = False,
    montage: bool = True,
) -> Path:
    """Write a phantom set in MSD layout and return the path of its ``dataset.json``.

    Writes ``out_dir/imagesTr/phantom_XXX.nii.gz`` (int16 HU, scl_slope 1), ``out_dir/labelsTr/phantom_XXX.nii.gz``
    (uint8), ``out_dir/dataset.json`` and (``montage=True``) ``out_dir/montage_phantom_000.png``. The affine is
    diagonal (``spacing`` mm) with the volume centre at the world origin.

    Args:
        out_dir: output folder; created if missing. A non-empty folder needs ``overwrite=True``.
        n_cases: number of cases (>= 1).
        seed: non-negative integer; case ``i`` uses :func:`case_rng` ``(seed, i)``.
        shape: grid ``(H, W, D)``, each side in ``[32, 512]``.
        spacing: voxel size in mm, 3 positive numbers.
        overwrite: replace an existing set; only the generator's own files are removed, other files are kept.
        montage: also write the label-overlay montage PNG of case 0.

    Raises:
        ValueError: bad ``n_cases``, ``seed``, ``shape`` or ``spacing``.
        FileExistsError: ``out_dir`` is not empty (without ``overwrite``) or is a file.
    """
    dims, mm = validate_geometry(shape, spacing)
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = phantom_affine(dims, mm)
    for i in range(int(n_cases)):
        t0 = time.perf_counter()
        case = f"phantom_{i:03d}"
        image, label = generate_case(case_rng(int(seed), i), dims, mm)
        descrip = f"{case} seed={int(seed)} common.data.phantoms"
        write_atomic(
            out / "imagesTr" / f"{case}.nii.gz", nifti_gz_bytes(image.astype(np.int16), affine, descrip, False)
        )
        write_atomic(out / "labelsTr" / f"{case}.nii.gz", nifti_gz_bytes(label, affine, descrip, True))
        if i == 0 and montage:
            from common.visualization.montage import save_label_montage

            save_label_montage(
                image,
                label,
                out / f"montage_{case}.png",
                label_names=PHANTOM_LABELS,
                spacing=mm,
                title=f"{case} (seed {int(seed)})",
            )
        logger.info("wrote %s in %.2f s", case, time.perf_counter() - t0)
    path = out / "dataset.json"
    text = json.dumps(dataset_json(int(n_cases), int(seed), dims, mm), indent=2) + "\n"
    write_atomic(path, text.encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 0 on success, exits non-zero with a message on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m common.data.phantoms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help=f"number of cases (default {DEFAULT_CASES})")
    parser.add_argument("--seed", type=int, default=0, help="non-negative random seed (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("H", "W", "D"))
    parser.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("SX", "SY", "SZ"))
    parser.add_argument("--overwrite", action="store_true", help="replace the phantom files of a non-empty --out")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = generate_dataset(args.out, args.cases, args.seed, args.shape, args.spacing, args.overwrite)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    print(f"wrote {args.cases} phantom cases to {path.parent} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
