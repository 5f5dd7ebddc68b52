"""Getting a real Medical Segmentation Decathlon task (online path).

:func:`download_msd_task` wraps :class:`monai.apps.DecathlonDataset` (``download=True``, ``cache_rate=0``): it
downloads ``<root_dir>/<task>.tar`` from MONAI's MSD mirror, checks its MD5 and unpacks it to ``<root_dir>/<task>/``;
the folder is then read with :func:`common.data.msd.load_msd_dataset`::

    task_dir = download_msd_task("data", "Task09_Spleen")
    dataset = load_msd_dataset(task_dir)

If ``<root_dir>/<task>/dataset.json`` already exists nothing is downloaded (MONAI itself would download the tar again
when only the unpacked folder is present). Offline, an unpacked task folder copied to ``<root_dir>/<task>/`` is used
as is. Note that ``DecathlonDataset`` needs the standard MSD keys ``name, description, reference, licence,
tensorImageSize, modality, labels, numTraining, numTest`` in ``dataset.json`` (all real MSD tasks have them), a
``"training"`` list for the ``training``/``validation`` sections and a ``"test"`` list for the ``test`` section.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.data.msd import load_msd_dataset

__all__ = ["MSD_SECTIONS", "MSD_TASKS", "download_msd_task", "msd_task_dir"]

logger = logging.getLogger(__name__)

#: Tasks that MONAI's ``DecathlonDataset`` can download.
MSD_TASKS: tuple[str, ...] = (
    "Task01_BrainTumour",
    "Task02_Heart",
    "Task03_Liver",
    "Task04_Hippocampus",
    "Task05_Prostate",
    "Task06_Lung",
    "Task07_Pancreas",
    "Task08_HepaticVessel",
    "Task09_Spleen",
    "Task10_Colon",
)
#: Sections of ``DecathlonDataset``.
MSD_SECTIONS: tuple[str, ...] = ("training", "validation", "test")


def msd_task_dir(root: str | Path, task: str = "Task09_Spleen") -> Path:
    """Folder ``<root>/<task>`` of an unpacked MSD task (it need not exist yet).

    Raises:
        ValueError: ``task`` is not a plain folder name (empty, contains a path separator, or ``.``/``..``).
    """
    if not isinstance(task, str) or not task or task in {".", ".."} or "/" in task or "\\" in task:
        raise ValueError(f"task must be a folder name like 'Task09_Spleen', got {task!r}")
    return Path(root).expanduser() / task


def download_msd_task(
    root_dir: str | Path,
    task: str = "Task09_Spleen",
    section: str = "training",
    seed: int = 0,
    download: bool = True,
    **kwargs: Any,
) -> Path:
    """Download (if needed) and unpack an MSD task with MONAI, and return its folder.

    Args:
        root_dir: folder receiving ``<task>.tar`` and ``<task>/`` (created if missing).
        task: one of :data:`MSD_TASKS`.
        section: ``DecathlonDataset`` section used to check that MONAI can load the folder.
        seed: seed of ``DecathlonDataset``'s training/validation shuffle (irrelevant for the returned folder).
        download: allow downloading; with ``False`` the folder must already exist.
        **kwargs: passed to ``monai.apps.DecathlonDataset`` (e.g. ``val_frac``, ``progress``); ``cache_rate`` is 0
            unless given.

    Returns:
        The task folder ``<root_dir>/<task>``, already checked with ``load_msd_dataset(check_files=True)``.

    Raises:
        ValueError: unknown task or section.
        FileNotFoundError: ``download=False`` and the task folder (with ``dataset.json``) does not exist.
        RuntimeError / OSError: download failures (raised by MONAI), e.g. without internet access.
    """
    if task not in MSD_TASKS:
        raise ValueError(f"unknown MSD task {task!r}; MONAI can download: {', '.join(MSD_TASKS)}")
    if section not in MSD_SECTIONS:
        raise ValueError(f"section must be one of {MSD_SECTIONS}, got {section!r}")
    from monai.apps import DecathlonDataset  # heavy import, only on this path

    root = Path(root_dir).expanduser()
    task_dir = msd_task_dir(root, task)
    present = (task_dir / "dataset.json").is_file()
    if not present and not download:
        raise FileNotFoundError(
            f"MSD task folder {task_dir} (with dataset.json) not found and download=False; "
            "pass download=True or copy the unpacked task there"
        )
    root.mkdir(parents=True, exist_ok=True)
    if not present:
        logger.info("downloading MSD %s into %s", task, root)
    kwargs.setdefault("cache_rate", 0.0)
    DecathlonDataset(root_dir=root, task=task, section=section, download=not present, seed=seed, **kwargs)
    load_msd_dataset(task_dir, check_files=True)
    return task_dir
