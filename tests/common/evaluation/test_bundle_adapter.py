"""Tests of the one-pipeline evaluation path: common.bundle.pipeline and common.evaluation.BundleAdapter.

Real parts only: the bundles' own ``inference.json`` with their shipped weights, real NIfTI files (the tiny
phantoms and a lossless re-stored copy), MONAI's transforms and the robot users.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.bundle.pipeline import BundleInferencePipeline, without_writers
from common.data.variants import restore_array, write_variant
from common.evaluation import BundleAdapter, load_eval_cases, run_interactive_evaluation
from common.interaction import InteractionState, SliceCorrectionRobot
from common.interaction.requests import state_request
from common.monailabel.kinds import get_kind

BUNDLES = Path(__file__).resolve().parents[3] / "bundles"


@pytest.fixture(scope="module")
def restored(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_variant(
        tiny_phantoms, tmp_path_factory.mktemp("restored") / "Phantoms", "restored", cases=["phantom_000"]
    )


@pytest.fixture(scope="module")
def propagation() -> BundleInferencePipeline:
    return BundleInferencePipeline.from_bundle(BUNDLES / "slice_propagation", device="cpu")


@pytest.fixture(scope="module")
def clicks() -> BundleInferencePipeline:
    return BundleInferencePipeline.from_bundle(BUNDLES / "deepgrow_clicks", device="cpu")


def _samples(root: Path, structures: tuple[int, ...] = (3, 4)) -> list[dict[str, object]]:
    return [
        {
            "image": str(root / "imagesTr" / "phantom_000.nii.gz"),
            "label": str(root / "labelsTr" / "phantom_000.nii.gz"),
            "case_id": "phantom_000",
            "structure": s,
            "structure_name": f"s{s}",
            "group": "seen",
        }
        for s in structures
    ]


def test_writers_are_left_out(propagation: BundleInferencePipeline) -> None:
    names = [type(t).__name__ for t in propagation.postprocessing]
    assert "SaveImaged" not in names
    assert without_writers([]) == []


def test_propagation_evaluation_is_identical_on_a_re_stored_copy(
    propagation: BundleInferencePipeline, tiny_phantoms: Path, restored: Path
) -> None:
    """The same scan stored in another axis order with flips gives exactly the same rounds (the robot derives the
    slice axis from the affine, the pipeline re-orients, the result comes back in each file's own grid)."""
    adapter = BundleAdapter(propagation, "slice_propagation", name="prop")
    results = [
        run_interactive_evaluation(
            load_eval_cases(_samples(root)), adapter, SliceCorrectionRobot(), 2, method="prop", progress=False
        )
        for root in (tiny_phantoms, restored)
    ]
    native, stored = ([round(r.dice, 6) for r in res.records] for res in results)
    assert native == stored
    assert all(0.0 < d <= 1.0 for d in native)
    assert [h["state"]["axis"] for h in results[1].interactions] == [0, 0]  # slices first in the re-stored copy


def test_click_pipeline_gives_the_same_mask_for_the_same_clicks_in_any_storage(
    clicks: BundleInferencePipeline, tiny_phantoms: Path, restored: Path, tmp_path: Path
) -> None:
    label = np.asarray(nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz").dataobj) == 3
    z = int(np.flatnonzero(label.any(axis=(0, 1)))[label.any(axis=(0, 1)).sum() // 2])
    i, j = (int(v) for v in np.argwhere(label[..., z]).mean(axis=0).round())
    assert label[i, j, z]
    # the same voxel's index in the re-stored array
    index = np.zeros(label.shape, np.int64)
    index[i, j, z] = 1
    stored_click = [int(v) for v in np.argwhere(restore_array(index))[0]]
    masks = []
    kind = get_kind("clicks")
    for root, click in ((tiny_phantoms, [i, j, z]), (restored, stored_click)):
        image = root / "imagesTr" / "phantom_000.nii.gz"
        request = state_request(InteractionState(foreground=[tuple(click)]), image, nib.load(image).shape, tmp_path)
        masks.append(np.asarray(clicks({**request, **kind.build_item(request, tmp_path)})["pred"])[0])
    assert masks[0].shape == label.shape
    assert masks[0][i, j, z] == 1  # the clicked voxel is segmented
    np.testing.assert_array_equal(restore_array(masks[0]), masks[1])


def test_adapter_errors(propagation: BundleInferencePipeline, tiny_phantoms: Path) -> None:
    case = next(load_eval_cases(_samples(tiny_phantoms, (3,))))
    info = case.info
    state = InteractionState(axis=2)
    state.slices[20] = np.zeros(case.label.shape[:2], np.uint8)
    adapter = BundleAdapter(propagation, "slice_propagation", name="prop")
    with pytest.raises(ValueError, match=r"empty|no annotated|non-zero"):
        adapter(case.image, state, info)  # an empty annotation is refused by the bundle's own check
    no_file = type(info)(**{**info.__dict__, "image_path": ""})
    with pytest.raises(ValueError, match="no image file"):
        adapter(case.image, state, no_file)
    with pytest.raises(ValueError, match="unknown interaction kind"):
        BundleAdapter(propagation, "boxes")


def test_a_4d_image_gets_a_clear_error_from_both_bundles(
    propagation: BundleInferencePipeline, clicks: BundleInferencePipeline, tmp_path: Path
) -> None:
    image = tmp_path / "dynamic.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8, 3), np.float32), np.diag([2.5, 2.5, 3.5, 1.0])), image)
    annotation = tmp_path / "annotation.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8), np.uint8), np.diag([2.5, 2.5, 3.5, 1.0])), annotation)
    with pytest.raises(ValueError, match="single-channel 3D volume"):
        propagation({"image": str(image), "annotation": str(annotation)})
    with pytest.raises(ValueError, match="single-channel 3D volume"):
        clicks({"image": str(image), "foreground": [[1, 1, 1]], "background": []})
