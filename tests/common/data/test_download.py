"""Offline behaviour of the MSD download path: nothing here may touch the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import monai.apps.datasets as monai_datasets
import pytest
from monai.apps import DecathlonDataset

from common.data.download import MSD_TASKS, download_msd_task, msd_task_dir
from common.data.msd import load_msd_dataset


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt of MONAI to download fails the test."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"download attempted: {args} {kwargs}")

    monkeypatch.setattr(monai_datasets, "download_and_extract", forbidden)


def test_msd_task_dir(tmp_path: Path) -> None:
    assert msd_task_dir(tmp_path, "Task09_Spleen") == tmp_path / "Task09_Spleen"
    for bad in ["", "..", "a/b", "a\\b"]:
        with pytest.raises(ValueError, match="task must be a folder name"):
            msd_task_dir(tmp_path, bad)


def test_monai_decathlon_dataset_loads_fake_task_offline(spleen_task: Path) -> None:
    root = spleen_task.parent
    train = DecathlonDataset(root, "Task09_Spleen", "training", download=False, cache_rate=0.0, progress=False)
    val = DecathlonDataset(root, "Task09_Spleen", "validation", download=False, cache_rate=0.0, progress=False)
    assert len(train) == 4
    assert len(val) == 1  # int(5 * val_frac=0.2)
    ours = load_msd_dataset(spleen_task)
    monai_images = sorted(str(Path(d["image"])) for d in [*train.data, *val.data])
    assert monai_images == sorted(i["image"] for i in ours.training)
    item = val[0]
    assert tuple(item["image"].shape) == (24, 24, 16)
    assert tuple(item["label"].shape) == (24, 24, 16)
    assert float(item["label"].sum()) == 8 * 8 * 4
    test = DecathlonDataset(
        root, "Task09_Spleen", "test", transform=(lambda d: d), download=False, cache_rate=0.0, progress=False
    )
    assert sorted(Path(d["image"]).name for d in test.data) == ["test_0.nii.gz", "test_1.nii.gz"]


def test_download_msd_task_uses_existing_folder(spleen_task: Path) -> None:
    # download=True must not download (the fixture forbids it) when the unpacked folder is already there
    assert download_msd_task(spleen_task.parent, "Task09_Spleen", progress=False) == spleen_task
    assert download_msd_task(spleen_task.parent, download=False, section="test", progress=False) == spleen_task


def test_download_msd_task_offline_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Task09_Spleen \(with dataset.json\) not found and download=False"):
        download_msd_task(tmp_path, "Task09_Spleen", download=False)
    with pytest.raises(ValueError, match="unknown MSD task 'Task11_Kidney'"):
        download_msd_task(tmp_path, "Task11_Kidney", download=False)
    with pytest.raises(ValueError, match="section must be one of"):
        download_msd_task(tmp_path, "Task09_Spleen", section="train", download=False)
    assert "Task09_Spleen" in MSD_TASKS


def test_download_msd_task_would_download_when_missing(tmp_path: Path) -> None:
    # with the network blocked by the fixture, a missing task reaches MONAI's download call
    with pytest.raises(AssertionError, match="download attempted"):
        download_msd_task(tmp_path / "new", "Task04_Hippocampus", progress=False)
    assert (tmp_path / "new").is_dir()


def test_download_msd_task_validates_the_folder(spleen_task: Path) -> None:
    (spleen_task / "labelsTr" / "spleen_3.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"spleen_3\.nii\.gz"):
        download_msd_task(spleen_task.parent, "Task09_Spleen", progress=False)
