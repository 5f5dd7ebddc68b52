"""Tests of common.data.geometry: the stored axial axis and voxel indices carried between grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, Spacing

from common.data.geometry import affine_of, axial_axis, map_voxel_indices, slice_axis_in_array

RAS = np.diag([2.5, 2.5, 3.5, 1.0])
# stored (z, x, y) with x and y reversed: S first, then L, then P
SLP = np.array([[0.0, -2.5, 0.0, 100.0], [0.0, 0.0, -2.5, 90.0], [3.5, 0.0, 0.0, -40.0], [0.0, 0.0, 0.0, 1.0]])


def test_axial_axis_of_ras_and_re_stored_volumes() -> None:
    assert axial_axis(RAS) == 2
    assert axial_axis(SLP) == 0
    assert axial_axis(None) == 2
    assert axial_axis(None, default=1) == 1
    assert slice_axis_in_array(SLP, 0) == 1  # L-R runs along the second stored axis


def test_axial_axis_rejects_a_degenerate_affine() -> None:
    with pytest.raises(ValueError, match="cannot find"):
        axial_axis(np.diag([1.0, 1.0, 0.0, 1.0]))


def test_affine_of() -> None:
    assert affine_of(np.zeros(3)) is None
    t = MetaTensor(torch.zeros(1, 2, 2, 2), affine=torch.as_tensor(SLP))
    np.testing.assert_allclose(affine_of(t), SLP)


def test_map_voxel_indices_identity_and_permutation() -> None:
    points = np.array([[0, 0, 0], [3, 4, 5]])
    np.testing.assert_array_equal(map_voxel_indices(points, RAS, RAS, (8, 8, 8)), points)
    # the same world point seen in a grid stored (k, j, i): indices reversed
    perm = RAS @ np.eye(4)[[2, 1, 0, 3]].T
    np.testing.assert_array_equal(map_voxel_indices(points, RAS, perm, (8, 8, 8)), points[:, ::-1])


def test_map_voxel_indices_follows_orientation_and_spacing_exactly() -> None:
    """Each click lands where MONAI's Orientation + Spacing put the voxel it marks (a one-voxel image)."""
    shape = (40, 30, 12)
    rng = np.random.default_rng(0)
    points = np.stack([rng.integers(0, s, 6) for s in shape], axis=1)
    for p in points:
        image = torch.zeros((1, *shape))
        image[(0, *p.tolist())] = 1.0
        src = MetaTensor(image, affine=torch.as_tensor(SLP @ np.diag([0.4, 1.0, 1.0, 1.0])))
        out = Spacing(pixdim=(2.5, 2.5, 0.0), mode="bilinear")(Orientation(axcodes="RAS")(src))
        brightest = np.unravel_index(int(torch.argmax(out[0])), tuple(out.shape[1:]))
        mapped = map_voxel_indices(p[None], src.affine.numpy(), out.affine.numpy(), out.shape[1:])[0]
        assert np.abs(mapped - np.asarray(brightest)).max() <= 1  # bilinear spreads a voxel over neighbours
        assert out[(0, *mapped.tolist())] > 0


def test_map_voxel_indices_never_loses_a_point_on_a_coarser_grid() -> None:
    fine = np.diag([1.0, 1.0, 3.0, 1.0])
    coarse = np.diag([2.5, 2.5, 3.0, 1.0])
    points = np.array([[x, y, 1] for x in range(100) for y in (0, 99)])
    mapped = map_voxel_indices(points, fine, coarse, (40, 40, 4))
    assert mapped.min() >= 0
    assert mapped[:, :2].max() <= 39


def test_map_voxel_indices_errors() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        map_voxel_indices([[1, 2]], RAS, RAS, (4, 4, 4))
    with pytest.raises(ValueError, match="finite"):
        map_voxel_indices([[1, 2, np.nan]], RAS, RAS, (4, 4, 4))
    with pytest.raises(ValueError, match="singular"):
        map_voxel_indices([[1, 2, 3]], RAS, np.zeros((4, 4)), (4, 4, 4))
    with pytest.raises(ValueError, match="same part of the world"):
        map_voxel_indices([[50, 2, 3]], RAS, RAS, (4, 4, 4))
    assert map_voxel_indices(np.zeros((0, 3)), RAS, RAS, (4, 4, 4)).shape == (0, 3)
