"""Tests of common.training.checkpoints.latest_checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.training.checkpoints import latest_checkpoint


def test_latest_checkpoint_takes_the_highest_epoch(tmp_path: Path) -> None:
    for name in ("checkpoint_checkpoint_epoch=2.pt", "checkpoint_checkpoint_epoch=10.pt", "model.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_checkpoint_epoch=10.pt")


@pytest.mark.parametrize("make", [False, True])
def test_latest_checkpoint_says_how_to_start(tmp_path: Path, make: bool) -> None:
    folder = tmp_path / "run"
    if make:
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="without --resume"):
        latest_checkpoint(folder)
