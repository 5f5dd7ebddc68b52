"""Command line of the export: ``python -m common.bundle.export (--bundle DIR ... | --all) --out DIR [--force]``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from common.bundle.checks import find_bundles
from common.bundle.export.bundle import export_bundle

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m common.bundle.export (--bundle DIR ... | --all) --out DIR [--force]``.

    Returns:
        0; a bundle that cannot be exported ends the program with status 2 and the reason (``argparse`` error).
    """
    parser = argparse.ArgumentParser(
        prog="python -m common.bundle.export",
        description="Export bundles self-contained (library copied into scripts/), for model-zoo and MONAI Label.",
    )
    parser.add_argument("--bundle", action="append", default=[], help="a bundle folder (repeatable)")
    parser.add_argument("--all", action="store_true", help="every bundle under --bundles-dir")
    parser.add_argument("--bundles-dir", default="bundles", help="where --all looks (default: bundles)")
    parser.add_argument("--out", required=True, help="output folder; each bundle goes to OUT/<name>")
    parser.add_argument("--force", action="store_true", help="replace existing exports")
    args = parser.parse_args(argv)
    bundles = [Path(b) for b in args.bundle]
    if args.all:
        found = find_bundles(args.bundles_dir)
        if not found:
            parser.error(f"no bundle under {args.bundles_dir}")
        bundles += [b for b in found if b.resolve() not in {x.resolve() for x in bundles}]
    if not bundles:
        parser.error("give --bundle DIR or --all")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for bundle in bundles:
        try:
            exported = export_bundle(bundle, args.out, overwrite=args.force)
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            parser.error(f"{bundle}: {err}")
        print(f"{bundle} -> {exported.root} ({len(exported.modules)} modules, scripts/{exported.package})")
    return 0
