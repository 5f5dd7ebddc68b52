"""Data: the embedded phantom dataset, MSD ``dataset.json`` loading, k-fold splits and per-structure samples.

Names are re-exported lazily (PEP 562), so ``import common.data`` stays cheap; configs can use the short paths, e.g.
``"$common.data.load_msd_dataset(@dataset_dir)"`` or ``"_target_": "common.data.SelectStructured"``.
"""

from __future__ import annotations

from common._lazy import lazy_exports

__all__ = [
    "Fold",
    "MSDDataset",
    "SelectSliced",
    "SelectStructured",
    "axial_axis",
    "binary_label",
    "case_ids",
    "check_datalist",
    "download_msd_task",
    "expand_structures",
    "generate_dataset",
    "kfold_splits",
    "load_label_array",
    "load_msd_dataset",
    "map_voxel_indices",
    "msd_task_dir",
    "resolve_structures",
    "select_fold",
    "validate_case",
    "write_variant",
]

_SOURCES = {
    "check_datalist": "datalist",
    "axial_axis": "geometry",
    "map_voxel_indices": "geometry",
    "Fold": "splits",
    "case_ids": "splits",
    "kfold_splits": "splits",
    "select_fold": "splits",
    "MSDDataset": "msd",
    "load_label_array": "msd",
    "load_msd_dataset": "msd",
    "validate_case": "msd",
    "SelectSliced": "structures",
    "SelectStructured": "structures",
    "binary_label": "structures",
    "expand_structures": "structures",
    "resolve_structures": "structures",
    "download_msd_task": "download",
    "msd_task_dir": "download",
    "generate_dataset": "phantoms",
    "write_variant": "variants",
}


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
