from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

import common.data.structures as structures_module
from common.data.msd import load_msd_dataset
from common.data.structures import (
    SelectSliced,
    SelectStructured,
    binary_label,
    expand_structures,
    resolve_structures,
)

# Expected content of MULTI_CASES (see conftest.MULTI_BOXES): case -> structure -> slices along z containing it.
EXPECTED_Z_SLICES: dict[str, dict[int, list[int]]] = {
    "case_a": {1: list(range(0, 8)), 2: [5, 6, 7, 8], 4: [10, 11]},
    "case_b": {1: [3, 4, 5], 2: [0], 3: [12, 13, 14, 15], 4: [12, 13, 14, 15]},
    "case_c": {},
}
NAMES = {1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right"}
GROUP = {1: "seen", 2: "seen", 3: "seen", 4: "unseen"}


def _pairs(samples: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(s["case_id"], s["structure"]) for s in samples}


def test_volume_level_only_present_structures(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    samples = expand_structures(ds.training, ds)
    expected = [(case, s) for case, per in EXPECTED_Z_SLICES.items() for s in sorted(per)]
    assert [(s["case_id"], s["structure"]) for s in samples] == expected  # ordered by item, then structure
    for s in samples:
        assert s["structure_name"] == NAMES[s["structure"]]
        assert s["group"] == GROUP[s["structure"]]
        assert isinstance(s["structure"], int)
        assert s["image"].endswith(f"imagesTr/{s['case_id']}.nii.gz")
        assert s["label"].endswith(f"labelsTr/{s['case_id']}.nii.gz")
        assert "slice" not in s
        assert "axis" not in s
    assert ("case_a", 3) not in _pairs(samples)  # kidney_left is absent from case_a


def test_seen_only_expansion_excludes_unseen(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    for level in ("volume", "slice"):
        seen = expand_structures(ds.training, ds, level=level, group="seen")
        assert seen
        assert {s["group"] for s in seen} == {"seen"}
        assert {s["structure_name"] for s in seen} == {"liver", "spleen", "kidney_left"}
        assert not {s["structure"] for s in seen} & {4}
        unseen = expand_structures(ds.training, ds, level=level, group="unseen")
        assert {s["structure_name"] for s in unseen} == {"kidney_right"}  # it is present in the data
        everything = expand_structures(ds.training, ds, level=level)
        assert len(seen) + len(unseen) == len(everything)


def test_slice_level_exact_slices(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    samples = expand_structures(ds.training, ds, level="slice")
    got: dict[str, dict[int, list[int]]] = {case: {} for case in EXPECTED_Z_SLICES}
    for s in samples:
        assert s["axis"] == 2
        assert isinstance(s["slice"], int)
        got[s["case_id"]].setdefault(s["structure"], []).append(s["slice"])
    assert got == EXPECTED_Z_SLICES
    assert len(samples) == 14 + 12


def test_slice_level_other_axis_and_min_voxels(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    liver_x = expand_structures(ds.training[:1], ds, level="slice", axis=0, structures=["liver"])
    assert [s["slice"] for s in liver_x] == list(range(2, 10))
    assert {s["axis"] for s in liver_x} == {0}
    assert [s["slice"] for s in expand_structures(ds.training[:1], ds, level="slice", axis=-2, structures=[1])] == list(
        range(2, 10)
    )
    # case_b's spleen is a single voxel: dropped with min_voxels=2, at slice and volume level
    spleen_b = [ds.training[1]]
    assert len(expand_structures(spleen_b, ds, level="slice", structures=["spleen", "liver"], min_voxels=1)) == 4
    two = expand_structures(spleen_b, ds, level="slice", structures=["spleen", "liver"], min_voxels=2)
    assert _pairs(two) == {("case_b", 1)}
    assert _pairs(expand_structures(spleen_b, ds, min_voxels=2)) == {("case_b", 1), ("case_b", 3), ("case_b", 4)}
    # liver slices of case_b hold 8 * 8 = 64 voxels
    assert len(expand_structures(spleen_b, ds, level="slice", structures=["liver"], min_voxels=64)) == 3
    with pytest.raises(ValueError, match="no samples of structures"):
        expand_structures(spleen_b, ds, level="slice", structures=["liver"], min_voxels=65)


def test_structures_by_name_or_value(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    by_name = expand_structures(ds.training, ds, structures=["kidney_right", "spleen"])
    by_value = expand_structures(ds.training, ds, structures=[4, 2])
    assert by_name == by_value
    assert _pairs(by_name) == {("case_a", 2), ("case_a", 4), ("case_b", 2), ("case_b", 4)}
    assert resolve_structures(ds, "liver") == {1: "liver"}
    assert resolve_structures(ds, group="unseen") == {4: "kidney_right"}


def test_unknown_or_conflicting_structures(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    with pytest.raises(ValueError, match=r"unknown structure 'aorta'; valid structures: 1 'liver', 2 'spleen'"):
        expand_structures(ds.training, ds, structures=["aorta"])
    with pytest.raises(ValueError, match="unknown structure 0"):
        expand_structures(ds.training, ds, structures=[0])
    with pytest.raises(ValueError, match="'kidney_right' is unseen, not in the requested group 'seen'"):
        expand_structures(ds.training, ds, structures=["kidney_right"], group="seen")
    with pytest.raises(ValueError, match="group must be"):
        expand_structures(ds.training, ds, group="all")
    with pytest.raises(ValueError, match="level must be"):
        expand_structures(ds.training, ds, level="case")
    with pytest.raises(ValueError, match="axis must be"):
        expand_structures(ds.training, ds, level="slice", axis=3)
    with pytest.raises(ValueError, match="min_voxels must be"):
        expand_structures(ds.training, ds, min_voxels=0)


def test_empty_case_warns_and_empty_total_raises(
    multi_task: Path, caplog: pytest.LogCaptureFixture, msd_tools: SimpleNamespace
) -> None:
    ds = load_msd_dataset(multi_task)
    with caplog.at_level(logging.WARNING, logger="common.data.structures"):
        samples = expand_structures(ds.training, ds)
    assert len(samples) == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "case_c" in warnings[0]
    with pytest.raises(ValueError, match=r"no samples of structures \['liver', 'spleen', .*\] in 1 volumes"):
        expand_structures(ds.training[2:], ds)
    with pytest.raises(ValueError, match=r"no samples of structures \['kidney_left'\] in 1 volumes"):
        expand_structures(ds.training[:1], ds, structures=["kidney_left"])


def test_plain_label_table_and_spleen_task(spleen_task: Path) -> None:
    ds = load_msd_dataset(spleen_task)
    samples = expand_structures(ds.training, {"0": "background", "1": "spleen"}, level="slice")
    # spleen_i covers slices i .. i+3
    assert Counter(s["case_id"] for s in samples) == {f"spleen_{i}": 4 for i in range(2, 7)}
    assert {(s["case_id"], s["slice"]) for s in samples} == {
        (f"spleen_{i}", k) for i in range(2, 7) for k in range(i, i + 4)
    }
    assert {s["group"] for s in samples} == {"seen"}
    assert samples == expand_structures(ds.training, ds, level="slice")


def test_each_label_file_loaded_once(multi_task: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_msd_dataset(multi_task)
    calls: list[str] = []
    original = structures_module.load_label_array

    def counting(path: str | Path) -> np.ndarray:
        calls.append(str(path))
        return original(path)

    monkeypatch.setattr(structures_module, "load_label_array", counting)
    items = ds.training + [dict(i, extra=True) for i in ds.training]
    samples = expand_structures(items, ds)
    assert len(samples) == 14
    assert sorted(calls) == sorted(i["label"] for i in ds.training)


def test_bad_items(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    with pytest.raises(ValueError, match="item 0 must be a dict with a 'label' path"):
        expand_structures([{"image": "x.nii.gz"}], ds)
    expanded = expand_structures(ds.training, ds)
    with pytest.raises(ValueError, match="already expanded"):
        expand_structures(expanded, ds)
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz"):
        expand_structures([{"label": str(multi_task / "nope.nii.gz")}], ds)


def test_case_id_added_when_missing(multi_task: Path) -> None:
    ds = load_msd_dataset(multi_task)
    items = [{"image": i["image"], "label": i["label"]} for i in ds.training[:1]]
    assert {s["case_id"] for s in expand_structures(items, ds)} == {"case_a"}


def test_binary_label() -> None:
    label = np.array([[0, 1, 2], [2, 2, 4]], dtype=np.int16)
    out = binary_label(label, 2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(binary_label(label.astype(np.float32), 4), [[0, 0, 0], [0, 0, 1]])


# ---------------------------------------------------------------- transforms


def _multilabel(msd_tools: SimpleNamespace) -> np.ndarray:
    return msd_tools.MULTI_CASES["case_a"][None].astype(np.float32)  # (1, 24, 24, 16)


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
def test_select_structured_types(kind: str, msd_tools: SimpleNamespace) -> None:
    arr = _multilabel(msd_tools)
    label: Any
    if kind == "numpy":
        label = arr
    elif kind == "torch":
        label = torch.as_tensor(arr)
    else:
        label = MetaTensor(
            torch.as_tensor(arr), affine=torch.as_tensor(msd_tools.AFFINE), meta={"filename_or_obj": "a.nii"}
        )
    out = SelectStructured(keys="label")({"label": label, "structure": 2, "image": "untouched"})
    result = out["label"]
    assert type(result) is type(label)
    assert result.dtype == label.dtype
    assert tuple(result.shape) == arr.shape
    expected = (arr == 2).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(result), expected)
    assert float(expected.sum()) == 6 * 6 * 4
    assert out["image"] == "untouched"
    if kind == "meta":
        np.testing.assert_allclose(np.asarray(result.affine), msd_tools.AFFINE)
        assert result.meta["filename_or_obj"] == "a.nii"
    # the input dict is not modified in place
    assert float(np.asarray(label).max()) == 4


def test_select_structured_empty_structure(msd_tools: SimpleNamespace) -> None:
    label = MetaTensor(
        torch.as_tensor(_multilabel(msd_tools)), meta={"filename_or_obj": "/data/labelsTr/case_a.nii.gz"}
    )
    with pytest.raises(ValueError, match=r"structure 3 is absent from 'label' of /data/labelsTr/case_a.nii.gz"):
        SelectStructured(keys="label")({"label": label, "structure": 3})
    with pytest.raises(ValueError, match="structure 3 is absent from 'label' of case case_a"):
        SelectStructured(keys="label")({"label": _multilabel(msd_tools), "structure": 3, "case_id": "case_a"})
    out = SelectStructured(keys="label", allow_empty=True)({"label": label, "structure": 3})
    assert float(out["label"].sum()) == 0
    with pytest.raises(KeyError, match="no 'structure' key"):
        SelectStructured(keys="label")({"label": label})
    with pytest.raises(ValueError, match="must be an integer"):
        SelectStructured(keys="label")({"label": label, "structure": "spleen"})


def test_select_structured_from_bundle_config(msd_tools: SimpleNamespace) -> None:
    parser = ConfigParser({"t": {"_target_": "common.data.structures.SelectStructured", "keys": "label"}})
    transform = parser.get_parsed_content("t")
    assert isinstance(transform, SelectStructured)
    out = transform({"label": torch.as_tensor(_multilabel(msd_tools)), "structure": np.int64(4)})
    assert float(out["label"].sum()) == 3 * 4 * 2


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_select_sliced(kind: str, axis: int, msd_tools: SimpleNamespace) -> None:
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(2, 6, 7, 8)).astype(np.float32)
    img: Any = arr if kind == "numpy" else torch.as_tensor(arr)
    if kind == "meta":
        img = MetaTensor(img, affine=torch.as_tensor(msd_tools.AFFINE), meta={"filename_or_obj": "a.nii"})
    index = 3
    out = SelectSliced(keys="image")({"image": img, "slice": index, "axis": axis})["image"]
    assert type(out) is type(img)
    expected = np.take(arr, index, axis=axis + 1)
    assert tuple(out.shape) == expected.shape
    np.testing.assert_array_equal(np.asarray(out), expected)
    if kind == "meta":
        assert out.meta["filename_or_obj"] == "a.nii"
        # 2D voxel (i, j) maps to the same world point as the 3D voxel it came from
        kept = [a for a in range(3) if a != axis]
        for i, j in [(0, 0), (1, 2), (4, 5)]:
            voxel3 = np.zeros(3)
            voxel3[kept[0]], voxel3[kept[1]], voxel3[axis] = i, j, index
            world3 = msd_tools.AFFINE @ np.append(voxel3, 1.0)
            world2 = np.asarray(out.affine) @ np.array([i, j, 0.0, 1.0])
            np.testing.assert_allclose(world2, world3)
        np.testing.assert_allclose(np.asarray(img.affine), msd_tools.AFFINE)  # input meta untouched


def test_select_sliced_default_axis_and_errors() -> None:
    arr = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    out = SelectSliced(keys=["image", "label"])({"image": arr, "label": arr + 1, "slice": 4})
    np.testing.assert_array_equal(out["image"], arr[..., 4])
    np.testing.assert_array_equal(out["label"], arr[..., 4] + 1)
    with pytest.raises(ValueError, match=r"slice 5 is out of range for axis 2 of 'image' with shape \(2, 3, 4, 5\)"):
        SelectSliced(keys="image")({"image": arr, "slice": 5})
    with pytest.raises(ValueError, match="must be channel-first"):
        SelectSliced(keys="image")({"image": arr[0], "slice": 1})
    with pytest.raises(ValueError, match="axis must be"):
        SelectSliced(keys="image")({"image": arr, "slice": 1, "axis": 3})
    with pytest.raises(KeyError, match="no 'slice' key"):
        SelectSliced(keys="image")({"image": arr})


def test_pipeline_on_expanded_slice_samples(multi_task: Path) -> None:
    """LoadImaged -> EnsureChannelFirstd -> SelectStructured -> SelectSliced on real files gives the right masks."""
    ds = load_msd_dataset(multi_task)
    samples = expand_structures(ds.training, ds, level="slice", group="seen")
    transform = Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            SelectStructured(keys="label"),
            SelectSliced(keys=["image", "label"]),
        ]
    )
    voxels = {1: 8 * 8, 2: 6 * 6, 3: 3 * 3}
    for sample in samples[::3]:
        out = transform(sample)
        assert tuple(out["image"].shape) == (1, 24, 24)
        assert tuple(out["label"].shape) == (1, 24, 24)
        assert set(np.unique(out["label"].numpy()).tolist()) <= {0.0, 1.0}
        expected = 1 if (sample["case_id"], sample["structure"]) == ("case_b", 2) else voxels[sample["structure"]]
        assert float(out["label"].sum()) == expected
        # the image is brightest (label * 100) inside the structure
        inside = out["image"][out["label"] > 0]
        assert float(inside.mean()) > 100 * sample["structure"] - 20
