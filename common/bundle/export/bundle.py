"""Export one bundle: the library copy, the renamed and adapted configs and the metadata, written atomically.

The layout written is the one described in :mod:`common.bundle.export`: ``LICENSE``, ``models/`` and ``docs/``
copied, ``configs/`` renamed (:mod:`common.bundle.export.rename`, :mod:`common.bundle.export.scripts`) and adapted
(:mod:`common.bundle.export.stock_app`), ``metadata.json`` with PyPI requirements
(:mod:`common.bundle.export.requirements`), ``scripts/`` holding the library copy
(:mod:`common.bundle.export.library`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.bundle.checks import read_config
from common.bundle.export.library import config_references, data_files, library_closure, library_package_name
from common.bundle.export.rename import rename_in_config, rename_package
from common.bundle.export.requirements import pinned_requirements, third_party_imports
from common.bundle.export.scripts import scripts_init, with_scripts_import
from common.bundle.export.sources import LIBRARY, LIBRARY_ROOT, module_file
from common.bundle.export.stock_app import adapt_inference_config, adapt_train_configs

__all__ = ["COPIED", "ExportedBundle", "export_bundle"]

logger = logging.getLogger(__name__)

#: Bundle files and folders copied as they are (``runs/``, ``eval/`` ... are outputs, not part of a bundle).
COPIED = ("LICENSE", "models", "docs")


@dataclass
class ExportedBundle:
    """What :func:`export_bundle` wrote.

    Attributes:
        root: the exported bundle folder.
        package: the library copy's package name (``common_<hash>``), under ``root/scripts/``.
        modules: the copied library modules, by their name in ``common`` (``common.data.structures``).
        required: ``required_packages_version`` written to ``metadata.json``.
        optional: ``optional_packages_version`` written to ``metadata.json``.
    """

    root: Path
    package: str
    modules: list[str] = field(default_factory=list)
    required: dict[str, str] = field(default_factory=dict)
    optional: dict[str, str] = field(default_factory=dict)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=4) + "\n", encoding="utf-8")


def export_bundle(
    bundle: str | Path, out_dir: str | Path, overwrite: bool = False, root: Path = LIBRARY_ROOT
) -> ExportedBundle:
    """Export ``bundle`` to ``out_dir/<bundle name>``, self-contained (see :mod:`common.bundle.export`).

    Args:
        bundle: the bundle folder (``bundles/deepgrow_clicks``).
        out_dir: where the exported bundle folder is created.
        overwrite: replace an existing export of the same name.
        root: the library's folder (``common/``).

    Returns:
        What was written.

    Raises:
        FileNotFoundError: ``bundle`` has no ``configs/metadata.json``.
        FileExistsError: the target exists and ``overwrite`` is false.
        ValueError: a config names something the library lacks, or a config cannot be adapted.
    """
    bundle = Path(bundle).resolve()
    if not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle: it has no configs/metadata.json")
    target = Path(out_dir).resolve() / bundle.name
    if target == bundle or bundle in target.parents:
        raise ValueError(f"export {bundle} to a folder outside it, not {target}")
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists: remove it or pass overwrite=True (--force)")
        shutil.rmtree(target)

    config_files = sorted(p for p in (bundle / "configs").iterdir() if p.is_file())
    configs = {p.name: read_config(p) for p in config_files if p.suffix == ".json" and p.name != "metadata.json"}
    references: set[str] = set()
    for config in configs.values():
        references |= config_references(config)
    modules = library_closure(references, root)
    package = library_package_name(modules, root)

    staging = target.with_name(f".{target.name}.export-tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name in COPIED:
            source = bundle / name
            if source.is_dir():
                shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.is_file():
                shutil.copy2(source, staging / name)
        library = staging / "scripts" / package
        for module in modules:
            path = module_file(module, root)
            assert path is not None  # library_closure checked it
            destination = library / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(rename_package(path.read_text(encoding="utf-8"), LIBRARY, package), "utf-8")
        for data in data_files(modules, root):
            shutil.copy2(data, library / data.relative_to(root))
        (staging / "scripts" / "__init__.py").write_text(scripts_init(package), encoding="utf-8")

        renamed = {name: with_scripts_import(rename_in_config(c, package)) for name, c in configs.items()}
        if "inference.json" in renamed:
            renamed["inference.json"] = adapt_inference_config(renamed["inference.json"], bundle.name)
        if "train.json" in renamed:
            renamed = adapt_train_configs(renamed, package)
        (staging / "configs").mkdir()
        for path in config_files:
            if path.name in renamed:
                _write_json(staging / "configs" / path.name, renamed[path.name])
            elif path.name != "metadata.json":
                shutil.copy2(path, staging / "configs" / path.name)

        metadata = read_config(bundle / "configs" / "metadata.json")
        module_level, nested = third_party_imports(modules, root)
        required, optional = pinned_requirements(metadata, module_level, nested)
        metadata["required_packages_version"] = required
        if optional:
            metadata["optional_packages_version"] = optional
        else:
            metadata.pop("optional_packages_version", None)
        _write_json(staging / "configs" / "metadata.json", metadata)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.debug("exported %s -> %s (%d library modules as %s)", bundle.name, target, len(modules), package)
    return ExportedBundle(target, package, modules, required, optional)
