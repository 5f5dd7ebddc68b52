"""Session-wide fixtures: a tiny embedded phantom dataset made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-case phantom dataset of 64 x 64 x 40 voxels in MSD layout (one volume per fold); returns its folder."""
    from common.data.phantoms import generate_dataset

    out = tmp_path_factory.mktemp("phantoms") / "Phantoms"
    generate_dataset(out, n_cases=5, seed=0, shape=(64, 64, 40))
    return out


@pytest.fixture(scope="session")
def geometry_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One default-size phantom stored three ways plus an MRI-like copy, in one MSD folder (scans the project did not
    store itself).

    Case ``geo_native``: as generated (128 x 128 x 96 voxels of 2.5 x 2.5 x 3.5 mm, RAS, the shipped models'
    spacing); ``geo_restored``: the same voxels re-stored slices first with flips (axcodes S, L, P; lossless);
    ``geo_fine``: resampled to 1 mm in-plane (320 x 320 x 96); ``geo_mri``: the native geometry with an MRI-like T1
    contrast (no HU meaning). Same world, same structures, same labels table.
    """
    import json
    import shutil

    from common.data.phantoms import generate_dataset
    from common.data.variants import write_variant

    root = tmp_path_factory.mktemp("geometry")
    source = root / "source"
    generate_dataset(source, n_cases=1, seed=0)
    folders = {
        "native": source,
        "restored": write_variant(source, root / "restored", "restored"),
        "fine": write_variant(source, root / "fine", "fine", in_plane_spacing=1.0),
        "mri": write_variant(source, root / "mri", "mri"),
    }
    out = root / "Geometry"
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    training = []
    for name, folder in folders.items():
        for sub in ("imagesTr", "labelsTr"):
            shutil.copyfile(folder / sub / "phantom_000.nii.gz", out / sub / f"geo_{name}.nii.gz")
        training.append({"image": f"./imagesTr/geo_{name}.nii.gz", "label": f"./labelsTr/geo_{name}.nii.gz"})
    meta = json.loads((source / "dataset.json").read_text())
    meta.update(training=training, numTraining=len(training), test=[], numTest=0)
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out
