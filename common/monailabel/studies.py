"""A MONAI Label studies folder from an MSD-layout dataset (the embedded phantoms by default).

MONAI Label's local datastore reads images from the studies folder itself and the final labels from
``labels/final/`` under the same file names::

    STUDIES/phantom_000.nii.gz            STUDIES/labels/final/phantom_000.nii.gz
    STUDIES/phantom_004.nii.gz            (no label: an image left to annotate)
    STUDIES/labels.json                   {"0": "background", "1": "liver", ...}  (structure names for the app)

Files are copied, so the server's writes (saved labels, ``datastore_v2.json``) never touch the dataset. Nothing
already in the studies folder is replaced: an identical file is kept, a label the user may have edited is kept
(with a warning), and a different image under the same name is an error.

Command line::

    python -m common.monailabel.studies --out data/monailabel_studies            # embedded phantoms
    python -m common.monailabel.studies --out studies --dataset /data/Task09_Spleen --unlabelled 5
"""

from __future__ import annotations

import argparse
import filecmp
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.data.msd import load_msd_dataset

__all__ = ["LABELS_FILE", "StudiesSummary", "main", "prepare_studies"]

logger = logging.getLogger(__name__)

#: Structure names of the studies folder, ``{"<value>": "<name>"}`` (MSD ``labels`` table).
LABELS_FILE = "labels.json"

#: Where the phantoms are generated when no dataset is given (the same place as the demo's).
DEFAULT_DATASET = Path("data") / "Phantoms"


@dataclass
class StudiesSummary:
    """What :func:`prepare_studies` did.

    Attributes:
        root: the studies folder.
        images: images now in the folder from this dataset (copied or already there).
        labelled: images with a final label.
        copied: files written.
        kept: files already present and left as they were.
    """

    root: Path
    images: list[str] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)
    copied: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def _copy_new(src: Path, dst: Path, summary: StudiesSummary, user_editable: bool) -> None:
    """Copy ``src`` to ``dst`` unless ``dst`` exists (identical or a user's edit: kept; else an error)."""
    if dst.exists():
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            summary.kept.append(dst)
            return
        if user_editable and dst.is_file():
            logger.warning("kept %s: it differs from %s (a label saved from a viewer?)", dst, src)
            summary.kept.append(dst)
            return
        raise FileExistsError(f"{dst} exists and differs from {src}: choose another studies folder (--out)")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    summary.copied.append(dst)


def prepare_studies(dataset_dir: str | Path, out_dir: str | Path, unlabelled: int = 2) -> StudiesSummary:
    """Fill a MONAI Label studies folder from an MSD-layout dataset.

    Args:
        dataset_dir: dataset folder with ``dataset.json`` (MSD layout).
        out_dir: the studies folder; created if missing, existing files are never replaced (see module docstring).
        unlabelled: the last ``unlabelled`` training cases are copied without their label (images to annotate);
            test images are always copied without label.

    Returns:
        A :class:`StudiesSummary`.

    Raises:
        FileNotFoundError: the dataset or one of its files is missing.
        ValueError: bad ``dataset.json``, ``unlabelled`` negative or leaving no labelled case.
        FileExistsError: ``out_dir`` is a file, or holds a different image under a case's file name, or a
            different ``labels.json``.
    """
    if isinstance(unlabelled, bool) or not isinstance(unlabelled, int) or unlabelled < 0:
        raise ValueError(f"unlabelled must be a non-negative integer, got {unlabelled!r}")
    dataset = load_msd_dataset(dataset_dir)
    training = [*dataset.training, *dataset.validation]
    if unlabelled >= len(training):
        raise ValueError(
            f"unlabelled={unlabelled} leaves no labelled case: the dataset {dataset.root} has {len(training)} "
            "training cases"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"studies path {out} exists and is not a folder")
    labels_dir = out / "labels" / "final"
    labels_dir.mkdir(parents=True, exist_ok=True)
    summary = StudiesSummary(root=out.resolve())

    table = {str(v): n for v, n in dataset.labels.items()}
    labels_file = out / LABELS_FILE
    if labels_file.exists():
        try:
            existing = json.loads(labels_file.read_text())
        except json.JSONDecodeError:
            existing = None
        if existing != table:
            raise FileExistsError(f"{labels_file} exists with other structure names: choose another --out")
        summary.kept.append(labels_file)
    else:
        labels_file.write_text(json.dumps(table, indent=2) + "\n")
        summary.copied.append(labels_file)

    n_labelled = len(training) - unlabelled
    for index, item in enumerate(training):
        image = Path(item["image"])
        _copy_new(image, out / image.name, summary, user_editable=False)
        summary.images.append(item["case_id"])
        if index < n_labelled:
            _copy_new(Path(item["label"]), labels_dir / image.name, summary, user_editable=True)
            summary.labelled.append(item["case_id"])
    for item in dataset.test:
        image = Path(item["image"])
        _copy_new(image, out / image.name, summary, user_editable=False)
        summary.images.append(item["case_id"])
    logger.info(
        "studies %s: %d images (%d labelled), %d files copied, %d kept",
        out,
        len(summary.images),
        len(summary.labelled),
        len(summary.copied),
        len(summary.kept),
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: prints a one-line summary; exits non-zero with a message on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m common.monailabel.studies", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="the studies folder for monailabel start_server")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help=f"MSD-layout dataset folder (default: {DEFAULT_DATASET}, generated with the embedded phantoms if absent)",
    )
    parser.add_argument("--unlabelled", type=int, default=2, help="training cases to leave unlabelled (default 2)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    dataset = args.dataset
    try:
        if dataset is None:
            dataset = DEFAULT_DATASET
            if not (dataset / "dataset.json").is_file():
                from common.data.phantoms import generate_dataset

                generate_dataset(dataset)
        summary = prepare_studies(dataset, args.out, args.unlabelled)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        parser.error(str(err))
    print(
        f"studies folder {summary.root}: {len(summary.images)} images ({len(summary.labelled)} labelled) from "
        f"{dataset}; {len(summary.copied)} files copied, {len(summary.kept)} kept, {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
