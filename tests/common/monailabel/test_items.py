"""Tests of the request -> datalist item builders (no ``monailabel`` needed)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.monailabel.items import binarise_annotation, box_scribbles_item, click_item, slice_propagation_item
from common.monailabel.memory import RememberedResult

SHAPE = (8, 9, 10)  # all sides differ: a transposed copy cannot go unnoticed
AFFINE = np.array([[0.8, 0, 0, -3.0], [0, 0.9, 0, 4.0], [0, 0, 2.5, -5.0], [0, 0, 0, 1]])


def _label(tmp_path: Path, values: dict[int, int], name: str = "upload.nii.gz", dtype: type = np.uint8) -> Path:
    """A label volume with ``value`` painted on slice ``k`` for each ``{k: value}`` entry (a 3x3 square)."""
    data = np.zeros(SHAPE, dtype=dtype)
    for k, value in values.items():
        data[2:5, 3:6, k] = value
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _slices(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask.any(axis=(0, 1))).tolist()


def test_binary_annotation_is_read_and_left_untouched(tmp_path: Path) -> None:
    upload = _label(tmp_path, {4: 1})
    before = upload.read_bytes()
    mask, affine, header = binarise_annotation(upload, None)
    assert mask.dtype == bool
    assert _slices(mask) == [4]
    np.testing.assert_allclose(affine, AFFINE)
    assert header is not None
    assert upload.read_bytes() == before


def test_single_segment_value_is_the_structure(tmp_path: Path) -> None:
    upload = _label(tmp_path, {4: 3, 6: 3})  # a viewer's only segment exported with value 3
    mask, _, _ = binarise_annotation(upload, None)
    np.testing.assert_array_equal(mask, _read(upload)[0] == 3)


def test_label_value_selects_one_structure_of_a_multi_label_upload(tmp_path: Path) -> None:
    mask, _, _ = binarise_annotation(_label(tmp_path, {2: 1, 4: 4, 7: 9}), 4)
    assert _slices(mask) == [4]


def test_slicers_selected_label_name_and_label_info_select_the_segment(tmp_path: Path) -> None:
    # 3D Slicer exports every segment with value = segment index + 1 and names them in label_info
    upload = _label(tmp_path, {2: 1, 4: 2, 7: 3})
    label_info = [{"name": "liver", "id": 1}, {"name": "spleen", "id": 2}, {"name": "foreground_scribbles", "id": 3}]
    mask, _, _ = binarise_annotation(upload, None, {"label_info": label_info, "selected_label_name": "spleen"})
    assert _slices(mask) == [4]
    mask, _, _ = binarise_annotation(upload, None, {"label_info": label_info, "label_name": "liver"})
    assert _slices(mask) == [2]
    with pytest.raises(ValueError, match=r"'kidney' is not among the uploaded segments"):
        binarise_annotation(upload, None, {"label_info": label_info, "selected_label_name": "kidney"})
    with pytest.raises(ValueError, match=r"'aorta' \(label value 4\) is empty"):
        binarise_annotation(upload, None, {"label_info": [{"name": "aorta", "id": 4}], "selected_label_name": "aorta"})


def test_several_values_without_label_value_name_the_values(tmp_path: Path) -> None:
    upload = _label(tmp_path, {2: 1, 4: 4})
    with pytest.raises(ValueError, match=r"several label values \[1, 4\].*label_value"):
        binarise_annotation(upload, None)


def test_label_value_absent_from_the_upload_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"label_value 5 does not occur.*values \[1, 4\]"):
        binarise_annotation(_label(tmp_path, {2: 1, 4: 4}), 5)


def test_non_integer_upload_raises(tmp_path: Path) -> None:
    upload = tmp_path / "soft.nii.gz"
    nib.save(nib.Nifti1Image(np.full(SHAPE, 0.5, dtype=np.float32), AFFINE), str(upload))
    with pytest.raises(ValueError, match="integer label values"):
        binarise_annotation(upload, None)


@pytest.mark.parametrize(
    "content", [b"NRRD0004\n", b"not an image at all", b"\x1f\x8b\x08\x00garbage"], ids=["nrrd", "text", "gzip"]
)
def test_unreadable_uploads_are_value_errors_naming_the_file(tmp_path: Path, content: bytes) -> None:
    for name in ("label.nrrd", "label.nii.gz"):
        upload = tmp_path / name
        upload.write_bytes(content)
        with pytest.raises(ValueError, match=f"cannot read the uploaded label {name}"):
            binarise_annotation(upload, None)


def test_nrrd_uploads_as_3d_slicer_writes_them_are_read_in_ras(tmp_path: Path) -> None:
    itk = pytest.importorskip("itk")
    data = np.zeros(SHAPE, dtype=np.uint8)
    data[2:5, 3:6, 4] = 2
    image = itk.image_from_array(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))  # ITK arrays are (k, j, i)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((3.0, -4.0, -5.0))  # LPS: RAS (-3, 4, -5)
    image.SetDirection(itk.matrix_from_array(np.diag([-1.0, -1.0, 1.0])))  # LPS of a RAS-aligned grid
    upload = tmp_path / "label.nrrd"
    itk.imwrite(image, str(upload))
    mask, affine, header = binarise_annotation(upload, None)
    assert header is None
    assert _slices(mask) == [4]
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)


def test_slice_propagation_item_writes_the_users_slices(tmp_path: Path) -> None:
    upload = _label(tmp_path, {4: 1})
    item = slice_propagation_item({"image": "img.nii.gz", "label": str(upload)}, tmp_path)
    assert item["empty_slices"] == []
    assert item["user_slices"] == [4]
    assert item["slice_axis"] == 2
    data, affine = _read(Path(item["annotation"]))
    np.testing.assert_array_equal(data, _read(upload)[0])
    np.testing.assert_allclose(affine, AFFINE)


def test_slice_propagation_item_tells_corrections_from_the_remembered_result(tmp_path: Path) -> None:
    # the server sent slices 3-7 for an annotation on slice 5; the user erased slice 7 and redrew slice 3
    sent = np.zeros(SHAPE, dtype=bool)
    sent[2:5, 3:6, 3:8] = True
    upload = sent.copy()
    upload[..., 7] = False
    upload[1:6, 2:7, 3] = True
    path = tmp_path / "upload.nii.gz"
    nib.save(nib.Nifti1Image(upload.astype(np.uint8), AFFINE), str(path))
    previous = RememberedResult(sent, AFFINE, 2, (5,))
    item = slice_propagation_item({"label": str(path), "previous_result": previous}, tmp_path)
    assert item["user_slices"] == [3, 5, 7]
    assert item["empty_slices"] == [7]
    data, _ = _read(Path(item["annotation"]))
    assert _slices(data) == [3, 5]  # untouched slices 4 and 6 are predicted again
    np.testing.assert_array_equal(data[..., 3], upload[..., 3])
    # a remembered result on another grid is ignored: every non-empty slice is the user's again
    other = RememberedResult(sent, AFFINE * 2, 2, (5,))
    item = slice_propagation_item({"label": str(path), "previous_result": other}, tmp_path)
    assert item["user_slices"] == [3, 4, 5, 6]


def test_slice_propagation_item_with_only_emptied_slices_says_so(tmp_path: Path) -> None:
    sent = np.zeros(SHAPE, dtype=bool)
    sent[2:5, 3:6, 4] = True
    path = tmp_path / "upload.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, dtype=np.uint8), AFFINE), str(path))
    with pytest.raises(ValueError, match=r"nothing to propagate.*empty.*only emptied slices \[4\]"):
        slice_propagation_item(
            {"label": str(path), "previous_result": RememberedResult(sent, AFFINE, 2, (4,))}, tmp_path
        )


@pytest.mark.parametrize("raw", [4, 4.0, "4"])
def test_slice_propagation_item_reads_label_value_from_params(tmp_path: Path, raw: object) -> None:
    upload = _label(tmp_path, {2: 1, 4: 4})
    item = slice_propagation_item({"label": str(upload), "label_value": raw}, tmp_path)
    data, _ = _read(Path(item["annotation"]))
    assert np.flatnonzero(data.any(axis=(0, 1))).tolist() == [4]


@pytest.mark.parametrize("raw", [0, -1, 2.5, "four", True, [4]])
def test_slice_propagation_item_rejects_bad_label_values(tmp_path: Path, raw: object) -> None:
    upload = _label(tmp_path, {2: 1, 4: 4})
    with pytest.raises(ValueError, match="label_value must be a positive integer"):
        slice_propagation_item({"label": str(upload), "label_value": raw}, tmp_path)


@pytest.mark.parametrize("label", [None, "", "liver"])
def test_slice_propagation_item_without_upload_says_how_to_send_one(tmp_path: Path, label: str | None) -> None:
    request = {"image": "img.nii.gz"} if label is None else {"image": "img.nii.gz", "label": label}
    error = FileNotFoundError if label else ValueError
    with pytest.raises(error, match="multipart file 'label'"):
        slice_propagation_item(request, tmp_path)


def test_click_item_copies_the_clicks_as_lists(tmp_path: Path) -> None:
    item = click_item({"image": "x", "foreground": [(1, 2, 3)], "label": "liver"}, tmp_path)
    assert item == {"foreground": [[1, 2, 3]], "background": []}


def test_click_item_keeps_coordinates_for_the_bundle_to_check(tmp_path: Path) -> None:
    # out-of-image and malformed coordinates are the bundle's click transform's to reject, with the image shape
    item = click_item({"foreground": [[999, 0, 0]], "background": [[1, 2]]}, tmp_path)
    assert item == {"foreground": [[999, 0, 0]], "background": [[1, 2]]}


@pytest.mark.parametrize("request_", [{}, {"foreground": [], "background": None}])
def test_click_item_without_clicks_raises(tmp_path: Path, request_: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="no clicks"):
        click_item(request_, tmp_path)


def test_click_item_rejects_non_list_clicks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="foreground must be a list of clicks"):
        click_item({"foreground": "[[1, 2, 3]]"}, tmp_path)


# --- box + scribbles (BIFSeg) -----------------------------------------------------------------------------------------


def test_box_scribbles_item_takes_slicers_roi_and_label_info(tmp_path: Path) -> None:
    upload = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(upload))
    request = {
        "image": "img.nii.gz",
        "label": str(upload),
        "roi": [10, 2, 3, 12, 5, 5],
        "label_info": [
            {"name": "liver", "id": 1},
            {"name": "background_scribbles", "id": 4},
            {"name": "foreground_scribbles", "id": 5},
        ],
    }
    item = box_scribbles_item(request, tmp_path)
    assert item == {
        "box": [10, 2, 3, 12, 5, 5],
        "scribbles": str(upload),
        "scribbles_fg_value": 5,
        "scribbles_bg_value": 4,
    }


def test_box_scribbles_item_defaults_and_params(tmp_path: Path) -> None:
    item = box_scribbles_item({"box": [[0, 0, 0], [2, 2, 2]]}, tmp_path)
    assert item == {"box": [[0, 0, 0], [2, 2, 2]], "scribbles_fg_value": 3, "scribbles_bg_value": 2}
    item = box_scribbles_item({"roi": [0, 2, 0, 2, 0, 2], "scribbles_fg_value": 7}, tmp_path)
    assert item["scribbles_fg_value"] == 7


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        ({}, ValueError, "no box"),
        ({"roi": []}, ValueError, "no box"),
        ({"roi": [0, 1, 0, 1, 0, 1], "label": "/nonexistent/label.nii.gz"}, FileNotFoundError, "do not exist"),
        ({"roi": [0, 1, 0, 1, 0, 1], "scribbles_fg_value": 2}, ValueError, "share the label value"),
        ({"roi": [0, 1, 0, 1, 0, 1], "label_info": "x"}, ValueError, "label_info"),
        ({"roi": [0, 1, 0, 1, 0, 1], "scribbles_bg_value": -1}, ValueError, "positive integer"),
    ],
)
def test_box_scribbles_item_bad_requests(
    tmp_path: Path, request_: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        box_scribbles_item(request_, tmp_path)
