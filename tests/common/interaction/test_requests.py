"""Tests of common.interaction.requests: a user's state as the MONAI Label request a viewer sends."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.interaction.requests import scribbles_volume, slices_volume, state_request, write_label_like
from common.interaction.state import InteractionState

AFFINE = np.array([[0.0, -2.5, 0.0, 100.0], [0.0, 0.0, -2.5, 90.0], [3.5, 0.0, 0.0, -40.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 8, 10), np.int16), AFFINE), path)
    return path


def test_slices_volume_along_any_axis() -> None:
    state = InteractionState(axis=0)
    state.slices[3] = np.ones((8, 10), np.uint8)
    volume = slices_volume(state, (6, 8, 10))
    assert volume.dtype == np.uint8
    assert volume.sum() == 80
    assert volume[3].all()


def test_slices_volume_errors() -> None:
    state = InteractionState(axis=2)
    state.slices[12] = np.ones((6, 8), np.uint8)
    with pytest.raises(ValueError, match="outside the volume"):
        slices_volume(state, (6, 8, 10))
    state = InteractionState(axis=2)
    state.slices[1] = np.ones((8, 6), np.uint8)
    with pytest.raises(ValueError, match="has shape"):
        slices_volume(state, (6, 8, 10))


def test_write_label_like_keeps_the_image_grid(image_path: Path, tmp_path: Path) -> None:
    out = write_label_like(np.ones((6, 8, 10), np.uint8), image_path, tmp_path / "label.nii")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, AFFINE)
    assert written.get_data_dtype() == np.uint8
    with pytest.raises(ValueError, match="does not match"):
        write_label_like(np.ones((6, 8, 9), np.uint8), image_path, tmp_path / "bad.nii")


def test_state_request_has_the_viewer_keys(image_path: Path, tmp_path: Path) -> None:
    state = InteractionState(axis=0, foreground=[(1, 2, 3)], background=[(4, 5, 6)])
    state.slices[2] = np.eye(8, 10, dtype=np.uint8)
    request = state_request(state, image_path, (6, 8, 10), tmp_path)
    assert request["image"] == str(image_path)
    assert request["foreground"] == [[1, 2, 3]]
    assert request["background"] == [[4, 5, 6]]
    label = np.asarray(nib.load(request["label"]).dataobj)
    np.testing.assert_array_equal(label[2], np.eye(8, 10))
    assert label.sum() == 8


def test_state_request_without_slices_writes_nothing(image_path: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    request = state_request(InteractionState(foreground=[(0, 0, 0)]), image_path, (6, 8, 10), work)
    assert "label" not in request
    assert list(work.iterdir()) == []


def test_state_request_sends_the_box_as_roi_and_scribbles_as_slicer_does(image_path: Path, tmp_path: Path) -> None:
    state = InteractionState(box=((1, 2, 3), (5, 6, 4)))
    fg = np.zeros((6, 8, 10), bool)
    bg = np.zeros((6, 8, 10), bool)
    fg[2, 3, 3] = True
    bg[0, 0, 3] = True
    state.scribbles_fg, state.scribbles_bg = fg, bg
    request = state_request(state, image_path, (6, 8, 10), tmp_path)
    assert request["roi"] == [1, 5, 2, 6, 3, 4]
    names = {e["name"]: e["id"] for e in request["label_info"]}
    upload = nib.load(request["label"])
    np.testing.assert_allclose(upload.affine, AFFINE)
    data = np.asarray(upload.dataobj)
    assert data[2, 3, 3] == names["foreground_scribbles"]
    assert data[0, 0, 3] == names["background_scribbles"]
    assert np.count_nonzero(data) == 2
    assert "label" not in state_request(InteractionState(box=state.box), image_path, (6, 8, 10), tmp_path)


def test_scribbles_volume_refuses_overlaps_and_shapes() -> None:
    both = np.zeros((2, 2, 2), bool)
    both[0, 0, 0] = True
    with pytest.raises(ValueError, match="both foreground and background"):
        scribbles_volume(InteractionState(scribbles_fg=both, scribbles_bg=both), (2, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        scribbles_volume(InteractionState(scribbles_fg=both), (2, 2, 3))
    state = InteractionState(scribbles_fg=both)
    state.slices[0] = np.ones((2, 2))
    with pytest.raises(ValueError, match="not both"):
        state_request(state, "x.nii.gz", (2, 2, 2), ".")
