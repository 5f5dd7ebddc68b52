"""Tests of the MONAI Label studies folder made from an MSD dataset (no ``monailabel`` needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.monailabel import prepare_studies
from common.monailabel.studies import LABELS_FILE, main

CASES = [f"phantom_{i:03d}" for i in range(5)]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_what_monai_label_reads(tiny_phantoms: Path, tmp_path: Path) -> None:
    summary = prepare_studies(tiny_phantoms, tmp_path / "studies", unlabelled=2)
    studies = tmp_path / "studies"
    assert summary.images == CASES
    assert summary.labelled == CASES[:3]
    assert sorted(p.name for p in studies.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in CASES]
    assert sorted(p.name for p in (studies / "labels" / "final").iterdir()) == [f"{c}.nii.gz" for c in CASES[:3]]
    for case in CASES:
        assert (studies / f"{case}.nii.gz").read_bytes() == (tiny_phantoms / "imagesTr" / f"{case}.nii.gz").read_bytes()
    for case in CASES[:3]:
        label = (studies / "labels" / "final" / f"{case}.nii.gz").read_bytes()
        assert label == (tiny_phantoms / "labelsTr" / f"{case}.nii.gz").read_bytes()
    names = json.loads((studies / LABELS_FILE).read_text())
    assert names["0"] == "background"
    assert names["4"] == "kidney_right"
    assert len(names) == 11
    assert len(summary.copied) == 5 + 3 + 1
    assert summary.kept == []


def test_dataset_is_left_untouched(tiny_phantoms: Path, tmp_path: Path) -> None:
    before = _tree(tiny_phantoms)
    prepare_studies(tiny_phantoms, tmp_path / "studies")
    assert _tree(tiny_phantoms) == before


def test_rerun_keeps_everything_and_a_users_edited_label(tiny_phantoms: Path, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    prepare_studies(tiny_phantoms, studies, unlabelled=1)
    edited = studies / "labels" / "final" / "phantom_000.nii.gz"
    shutil.copyfile(tiny_phantoms / "labelsTr" / "phantom_001.nii.gz", edited)  # "the user saved another label"
    saved = studies / "labels" / "original" / "phantom_004.nii.gz"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"a label saved by the server")
    before = _tree(studies)
    summary = prepare_studies(tiny_phantoms, studies, unlabelled=1)
    assert _tree(studies) == before
    assert summary.copied == []
    assert edited in summary.kept


def test_a_different_image_under_a_case_name_is_an_error(tiny_phantoms: Path, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "phantom_002.nii.gz").write_bytes(b"someone else's image")
    with pytest.raises(FileExistsError, match=r"phantom_002.nii.gz exists and differs"):
        prepare_studies(tiny_phantoms, studies)
    assert (studies / "phantom_002.nii.gz").read_bytes() == b"someone else's image"


def test_other_structure_names_are_an_error(tiny_phantoms: Path, tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / LABELS_FILE).write_text('{"0": "background", "1": "spleen"}')
    with pytest.raises(FileExistsError, match="other structure names"):
        prepare_studies(tiny_phantoms, studies)


@pytest.mark.parametrize(("unlabelled", "match"), [(-1, "non-negative"), (True, "non-negative"), (5, "no labelled")])
def test_bad_unlabelled_raises(tiny_phantoms: Path, tmp_path: Path, unlabelled: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prepare_studies(tiny_phantoms, tmp_path / "studies", unlabelled=unlabelled)


def test_out_must_be_a_folder(tiny_phantoms: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        prepare_studies(tiny_phantoms, tmp_path / "file")


def test_missing_dataset_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        prepare_studies(tmp_path / "absent", tmp_path / "studies")


def test_cli_prints_a_summary(tiny_phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "s"), "--dataset", str(tiny_phantoms), "--unlabelled", "1"]) == 0
    out = capsys.readouterr().out
    assert "5 images (4 labelled)" in out
    assert "10 files copied" in out


def test_cli_generates_the_embedded_phantoms_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import common.monailabel.studies as studies_module

    monkeypatch.setattr(studies_module, "DEFAULT_DATASET", tmp_path / "data" / "Phantoms")
    real_generate = __import__("common.data.phantoms", fromlist=["generate_dataset"]).generate_dataset

    def small(out: Path) -> Path:  # the default 12 cases of 128 x 128 x 96 take too long for a unit test
        return real_generate(out, n_cases=3, shape=(40, 40, 32), montage=False)

    monkeypatch.setattr("common.data.phantoms.generate_dataset", small)
    assert main(["--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "data" / "Phantoms" / "dataset.json").is_file()
    assert "3 images (1 labelled)" in capsys.readouterr().out


def test_cli_error_exits_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "s"), "--dataset", str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    assert "dataset folder not found" in capsys.readouterr().err
