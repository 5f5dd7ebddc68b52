"""Implicit-shape primitives of the synthetic CT phantom (:mod:`common.data.phantoms`).

All shapes live in a *canonical frame* ``(u, v, w)`` that always spans the whole field of view: ``u`` along array
axis 0 (x, towards the patient's right for our RAS+ affines), ``v`` along axis 1 (y, anterior) and ``w`` along axis 2
(z, superior), each running from -1 at the first voxel edge to +1 at the last one. Voxel spacing only enters the
affine, so the anatomy is the same at every grid size. Distances along curves use the metric
``(du, dv, Z_ASPECT * dw)``: one ``w`` unit is ``Z_ASPECT`` times as long as one ``u``/``v`` unit, which is the
physical aspect of the default grid (128 x 128 x 96 voxels of 2.5 x 2.5 x 3.5 mm).

A smooth random displacement field ``d`` deforms every case: a shape defined by ``f(p) < 0`` in the canonical frame
occupies the voxels ``x`` with ``f(x + d(x)) < 0``. :class:`Grid` holds the displaced coordinates ``x + d(x)`` and,
because ``|d|`` is bounded, can restrict the evaluation of a shape to the index box around its canonical bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

__all__ = [
    "Z_ASPECT",
    "Box",
    "Grid",
    "ellipsoid",
    "make_grid",
    "sample_curve",
    "smooth_field",
    "tube",
]

#: Length of one canonical ``w`` unit in canonical ``u``/``v`` units (physical aspect of the default grid).
Z_ASPECT = 1.05

Box = tuple[slice, slice, slice]
F32 = NDArray[np.float32]


def axis_coords(n: int) -> F32:
    """Canonical coordinates of the ``n`` voxel centres of one axis: ``(2 i + 1) / n - 1``, shape ``(n,)``."""
    return ((2.0 * np.arange(n) + 1.0) / n - 1.0).astype(np.float32)


def smooth_field(
    rng: np.random.Generator,
    shape: Sequence[int],
    amplitude: float,
    n_modes: int = 3,
    max_cycles: float = 0.6,
) -> F32:
    """Smooth random field: a sum of ``n_modes`` plane waves with random direction, frequency and phase.

    Args:
        rng: random generator (consumed identically for every ``shape``).
        shape: ``(H, W, D)`` grid shape.
        amplitude: the sum of the mode amplitudes, i.e. the bound on ``|field|``.
        n_modes: number of plane waves.
        max_cycles: highest frequency in cycles per canonical unit (the frame is 2 units wide).

    Returns:
        ``(H, W, D)`` float32 field with ``|field| <= amplitude`` and ``|grad field| <= 2 pi max_cycles amplitude``
        (canonical units).
    """
    weights = rng.dirichlet(np.ones(n_modes)) * amplitude
    u, v, w = (axis_coords(n) for n in shape)
    field = np.zeros(tuple(shape), dtype=np.float32)
    for weight in weights:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        k = 2.0 * np.pi * rng.uniform(0.25, 1.0) * max_cycles * direction
        phase = rng.uniform(0.0, 2.0 * np.pi)
        arg = (k[0] * u)[:, None, None] + (k[1] * v)[None, :, None] + (k[2] * w + phase)[None, None, :]
        field += np.float32(weight) * np.sin(arg, dtype=np.float32)
    return field


@dataclass(frozen=True)
class Grid:
    """Displaced canonical coordinates of every voxel of an ``(H, W, D)`` grid.

    Attributes:
        u: ``(H,)`` undisplaced canonical coordinates of axis 0 (likewise ``v`` ``(W,)`` and ``w`` ``(D,)``).
        U: ``(H, W, D)`` displaced coordinate ``u + d_u`` (likewise ``V`` and ``W``).
        margin: bound on ``|d|`` per axis, used to pad bounding boxes.
    """

    u: F32
    v: F32
    w: F32
    U: F32
    V: F32
    W: F32
    margin: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(H, W, D)``."""
        return (self.u.size, self.v.size, self.w.size)

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> Box:
        """Index box of all voxels whose displaced position can fall inside the canonical box ``[lo, hi]``."""
        slices = []
        for axis, lo_a, hi_a in zip((self.u, self.v, self.w), lo, hi, strict=True):
            inside = np.nonzero((axis >= lo_a - self.margin) & (axis <= hi_a + self.margin))[0]
            slices.append(slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0))
        return (slices[0], slices[1], slices[2])

    def at(self, box: Box) -> tuple[F32, F32, F32]:
        """Displaced coordinates ``(U, V, W)`` restricted to ``box``."""
        return self.U[box], self.V[box], self.W[box]


def make_grid(rng: np.random.Generator, shape: Sequence[int], amplitude: float, max_cycles: float = 0.6) -> Grid:
    """Grid of ``shape`` displaced by three independent :func:`smooth_field` components of bound ``amplitude``.

    The displacement stays a diffeomorphism as long as ``2 pi max_cycles amplitude < 1``.
    """
    u, v, w = (axis_coords(n) for n in shape)
    du, dv, dw = (smooth_field(rng, shape, amplitude, max_cycles=max_cycles) for _ in range(3))
    du += u[:, None, None]
    dv += v[None, :, None]
    dw += w[None, None, :]
    return Grid(u=u, v=v, w=w, U=du, V=dv, W=dw, margin=amplitude)


def ellipsoid(
    coords: tuple[F32, F32, F32],
    center: Sequence[float] | NDArray[np.floating],
    semi_axes: Sequence[float],
    angle: float = 0.0,
) -> F32:
    """Normalised squared radius ``q`` of an ellipsoid (``q < 1`` inside) rotated by ``angle`` radians about ``w``.

    Args:
        coords: ``(U, V, W)`` arrays of one shape (or 1D point arrays).
        center: ``(u, v, w)`` centre in the canonical frame.
        semi_axes: semi-axes along the rotated ``u``, ``v`` and along ``w`` (canonical units).
        angle: in-plane rotation (counter-clockwise from +u towards +v).
    """
    uu, vv, ww = coords
    du = uu - np.float32(center[0])
    dv = vv - np.float32(center[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    a = (c * du + s * dv) / np.float32(semi_axes[0])
    b = (c * dv - s * du) / np.float32(semi_axes[1])
    z = (ww - np.float32(center[2])) / np.float32(semi_axes[2])
    return np.asarray(a * a + b * b + z * z, dtype=np.float32)


def sample_curve(control: NDArray[np.floating], n: int) -> NDArray[np.float64]:
    """``n`` points along the natural cubic spline through the ``(K, 3)`` control points (canonical frame)."""
    control = np.asarray(control, dtype=np.float64)
    t = np.linspace(0.0, 1.0, len(control))
    return np.asarray(CubicSpline(t, control, axis=0, bc_type="natural")(np.linspace(0.0, 1.0, n)))


def tube(
    coords: tuple[F32, F32, F32],
    points: NDArray[np.floating],
    radii: NDArray[np.floating] | float,
) -> F32:
    """Relative distance ``dist / radius`` of every voxel to a tube around a densely sampled curve.

    The distance is measured in the ``(u, v, Z_ASPECT * w)`` metric to the nearest curve sample; sample spacing must
    be well below the radius. The radius of the nearest sample is used, so the tube can taper.

    Args:
        coords: ``(U, V, W)`` arrays of one shape.
        points: ``(M, 3)`` curve samples ``(u, v, w)``.
        radii: tube radius per sample ``(M,)`` or one radius.

    Returns:
        Array of ``coords``' shape: ``< 1`` inside the tube, ``inf`` beyond the largest radius.
    """
    points = np.asarray(points, dtype=np.float64)
    r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(points),))
    scale = np.array([1.0, 1.0, Z_ASPECT])
    uu, vv, ww = coords
    query = np.stack([uu.ravel(), vv.ravel(), ww.ravel()], axis=1).astype(np.float64) * scale
    dist, idx = cKDTree(points * scale).query(query, distance_upper_bound=float(r.max()))
    rel = np.full(dist.shape, np.inf, dtype=np.float32)
    hit = np.isfinite(dist)
    rel[hit] = dist[hit] / r[idx[hit]]
    return rel.reshape(uu.shape)
