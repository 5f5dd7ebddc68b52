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
