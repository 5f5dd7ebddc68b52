"""The export makes every bundle self-contained: the library copy under ``scripts/`` with ``common`` renamed, configs
naming that copy, PyPI requirements, and the adaptations MONAI Label's stock ``monaibundle`` app needs.

The main check runs the exported bundles in a fresh interpreter that cannot import ``common`` (an import hook
refuses it; the repository is not on ``sys.path``), one bundle after the other the way MONAI Label loads them
(bundle folder on ``sys.path``, ``scripts`` modules unloaded before each).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.bundle import find_bundles, metadata_problems, read_config
from common.bundle.export import (
    LIBRARY_ROOT,
    ExportedBundle,
    adapt_inference_config,
    adapt_train_configs,
    export_bundle,
    library_closure,
    library_package_name,
    main,
    rename_package,
)

ROOT = Path(__file__).resolve().parents[3]
BUNDLES = find_bundles(ROOT / "bundles")
LIBRARY_REFERENCE = re.compile(r"(?<![\w.])common\.|\$import common\b")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportedBundle]:
    """Every bundle of the repository exported once per test module."""
    out = tmp_path_factory.mktemp("exported")
    return {bundle.name: export_bundle(bundle, out) for bundle in BUNDLES}


# ------------------------------------------------------------------------------------------------------- renaming


SOURCE = '''"""Docs mention common.data.load and ``common.bundle``."""
from __future__ import annotations
import common
import common.data as cd
from common.data import (
    x,
    y,
)
from common import z  # comment
def f(common_references: int) -> object:
    from common.bundle import checks
    name = "common.bundle"
    text = "common is a word"
    accent = "é"; value = common.data.load("é")
    return x.common, common_references, checks, name, text, accent, value
'''


def test_rename_package_renames_imports_attribute_chains_and_module_strings() -> None:
    renamed = rename_package(SOURCE, "common", "common_ab12")
    assert renamed.splitlines()[0] == SOURCE.splitlines()[0]  # docstrings are text
    assert "import common_ab12\n" in renamed
    assert "import common_ab12.data as cd" in renamed
    assert "from common_ab12.data import (" in renamed
    assert "from common_ab12 import z  # comment" in renamed
    assert "from common_ab12.bundle import checks" in renamed
    assert 'name = "common_ab12.bundle"' in renamed
    assert 'text = "common is a word"' in renamed
    assert 'accent = "é"; value = common_ab12.data.load("é")' in renamed  # columns counted in characters
    assert "x.common, common_references" in renamed
    ast.parse(renamed)


def test_rename_package_leaves_a_local_name_alone_where_the_package_is_not_imported() -> None:
    source = "def f(common):\n    return common.intersection({1})\n"
    assert rename_package(source, "common", "common_ab12") == source


def test_rename_package_refuses_what_does_not_parse() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        rename_package("def f(:\n", "common", "common_ab12")


# -------------------------------------------------------------------------------------------------------- closure


def test_library_closure_follows_lazy_exports_and_imports() -> None:
    modules = library_closure(["common.data.SelectStructured"])
    for needed in ("common", "common._lazy", "common.data", "common.data.structures", "common.data.msd"):
        assert needed in modules
    assert "common.transforms.provenance" in modules  # imported by common.data.structures
    assert "common.transforms" in modules  # its package's __init__ runs too
    assert not any(m.startswith(("common.monailabel.application", "common.evaluation")) for m in modules)


@pytest.mark.parametrize("name", ["common.nope", "common.data.NoSuchThing", "common.networks.weights.nothing"])
def test_library_closure_rejects_names_the_library_lacks(name: str) -> None:
    with pytest.raises(ValueError, match=r"no|not"):
        library_closure([name])


def test_package_name_is_a_hash_of_the_copied_sources(tmp_path: Path) -> None:
    modules = library_closure(["common.data.SelectStructured"])
    name = library_package_name(modules)
    assert re.fullmatch(r"common_[0-9a-f]{8}", name)
    assert library_package_name(modules) == name
    copy = tmp_path / "common"
    shutil.copytree(LIBRARY_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert library_package_name(modules, copy) == name
    structures = copy / "data" / "structures.py"
    structures.write_text(structures.read_text() + "\n# changed\n")
    assert library_package_name(modules, copy) != name


# --------------------------------------------------------------------------------------------------------- export


def test_repository_has_bundles_to_export() -> None:
    assert {"deepgrow_clicks", "slice_propagation", "bifseg", "active_learning"} <= {b.name for b in BUNDLES}


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_exported_bundle_holds_the_library_and_never_names_common(
    exported: dict[str, ExportedBundle], bundle: str
) -> None:
    result = exported[bundle]
    root = result.root
    for name in ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/train.json", "models/model.pt"):
        assert (root / name).is_file(), name
    assert (root / "docs" / "README.md").is_file()
    library = root / "scripts" / result.package
    assert (library / "__init__.py").is_file()
    copied = sorted(library.rglob("*.py"))
    assert len(copied) == len(result.modules)
    for path in [root / "scripts" / "__init__.py", *copied]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "common"], f"{path} imports common"
    for config in sorted((root / "configs").glob("*.json")):
        if config.name == "metadata.json":
            continue
        text = config.read_text(encoding="utf-8")
        assert not LIBRARY_REFERENCE.search(text), f"{config.name} still names common"
        content = json.loads(text)
        if "imports" in content:
            assert content["imports"][0] == "$import scripts"


@pytest.mark.parametrize("bundle", [b.name for b in BUNDLES])
def test_exported_metadata_requires_packages_installable_from_pypi(
    exported: dict[str, ExportedBundle], bundle: str
) -> None:
    metadata = read_config(exported[bundle].root / "configs" / "metadata.json")
    assert metadata_problems(metadata) == []
    required = metadata["required_packages_version"]
    optional = metadata.get("optional_packages_version", {})
    pins = {**required, **optional}
    assert "interactive-seg-bundles" not in pins
    assert not {"torch", "numpy", "monai"} & set(pins)  # they have their own *_version fields
    assert {"nibabel", "scipy"} <= set(required)  # imported at module level by the copied library
    for dist, version in pins.items():
        assert importlib.metadata.version(dist)  # a real distribution (installed here, so resolvable by pip)
        assert re.fullmatch(r"\d+(\.\d+)*\w*", version), (dist, version)
    original = read_config(ROOT / "bundles" / bundle / "configs" / "metadata.json")
    for dist, version in original["required_packages_version"].items():
        if dist != "interactive-seg-bundles":
            assert required[dist] == version  # the bundle's own pins are kept


def test_command_line_exports_refuses_to_overwrite_and_forces(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bundle = ROOT / "bundles" / "bifseg"
    assert main(["--bundle", str(bundle), "--out", str(tmp_path)]) == 0
    assert "scripts/common_" in capsys.readouterr().out
    marker = tmp_path / "bifseg" / "marker"
    marker.write_text("old export")
    with pytest.raises(SystemExit) as stop:
        main(["--bundle", str(bundle), "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "exists" in capsys.readouterr().err
    assert main(["--bundle", str(bundle), "--out", str(tmp_path), "--force"]) == 0
    assert not marker.exists()
    with pytest.raises(SystemExit):
        main(["--bundle", str(tmp_path), "--out", str(tmp_path / "x")])  # not a bundle


def test_export_refuses_a_target_inside_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(ROOT / "bundles" / "bifseg" / "configs", bundle / "configs")
    with pytest.raises(ValueError, match="outside"):
        export_bundle(bundle, bundle / "out")


# ------------------------------------------------------------------------------------------ stock app adaptations


def test_train_configs_take_the_datastore_items_monai_label_writes() -> None:
    folder = ROOT / "bundles" / "deepgrow_clicks" / "configs"
    configs = {name: read_config(folder / name) for name in ("train.json", "multi_gpu_train.json")}
    out = adapt_train_configs(configs, "common")
    train = out["train.json"]
    assert train["train"]["dataset"] == {"data": "@train_items"}  # the slot MONAI Label overrides
    assert train["train"]["samples"]["data"] == "$@datastore_samples(@train#dataset#data)"
    assert train["train"]["samples"]["_target_"] == "CacheDataset"
    assert train["train"]["dataloader"]["dataset"] == "@train#samples"
    assert train["validate"]["dataloader"]["dataset"] == "@validate#samples"
    saver = [h for h in train["validate"]["handlers"] if h.get("save_key_metric")]
    assert saver[0]["save_dir"] == "@model_dir"
    assert train["model_dir"] == "$@bundle_root + '/models'"
    assert train["val_interval"] == "$min(1, @train#trainer#max_epochs)"  # a 1-epoch request still validates
    multi = out["multi_gpu_train.json"]
    assert multi["train#sampler"]["dataset"] == "@train#samples"
    assert "train#samples#progress" in multi
    assert "train#dataset#progress" not in multi
    assert configs["train.json"]["train"]["dataset"]["_target_"] == "CacheDataset"  # input untouched
    del configs["train.json"]["validate"]["handlers"][-1]
    with pytest.raises(ValueError, match="CheckpointSaver"):
        adapt_train_configs(configs, "common")


def test_inference_config_checks_what_the_request_must_send() -> None:
    configs = ROOT / "bundles"
    propagation = adapt_inference_config(read_config(configs / "slice_propagation/configs/inference.json"), "sp")
    pre = propagation["preprocessing"]["transforms"]
    assert "stock_app_" in pre[0]["func"]  # image_path set aside
    assert "missing_input" in pre[1]["func"]
    assert "annotation=d['label']" in pre[1]["func"]
    assert "stock_app_image_" in propagation["postprocessing"]["transforms"][-1]["func"]
    bifseg = adapt_inference_config(read_config(configs / "bifseg/configs/inference.json"), "bifseg")
    pre = bifseg["preprocessing"]["transforms"]
    assert "needs a box" in pre[1]["func"]
    assert "scribbles=d['label']" in pre[2]["func"]
    assert "missing_input" not in pre[2]["func"]
    loaders = [t for t in pre if t.get("_target_") == "LoadImaged"]
    assert loaders[0]["keys"] == "image"
    nested = [t for t in pre if t.get("_target_") == "Compose"]
    assert nested[0]["transforms"][0]["keys"] == ["scribbles"]
    assert nested[0]["transforms"][0]["allow_missing_keys"] is True
    with pytest.raises(ValueError, match="LoadImaged"):
        adapt_inference_config({"preprocessing": {"transforms": []}, "postprocessing": []}, "x")


# ---------------------------------------------------------------------------------- a fresh interpreter, no common

CHECK_SCRIPT = r"""
import importlib.abc, json, os, sys

repo, bundles, phantoms = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo]


class RefuseCommon(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "common" or name.startswith("common."):
            raise ImportError(f"the exported bundle imported {name}")
        return None


sys.meta_path.insert(0, RefuseCommon())

import torch
from monai.bundle import ConfigParser

image, label = (f"{phantoms}/{d}/phantom_000.nii.gz" for d in ("imagesTr", "labelsTr"))
report = {}
for name, root in bundles.items():
    sys.path.insert(0, root)  # as MONAI Label's BundleInferTask / BundleTrainTask do, one bundle at a time
    for module in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[module]
    result = report[name] = {}
    infer = ConfigParser()
    infer.read_config(f"{root}/configs/inference.json")
    infer["bundle_root"] = root
    network = infer.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(f"{root}/models/model.pt", map_location="cpu", weights_only=True))
    result["network"] = type(network).__module__
    for part in ("preprocessing", "postprocessing", "inferer"):
        infer.get_parsed_content(part, instantiate=True)
    checks = []  # the transforms the export put before LoadImaged, run on what MONAI Label would pass
    for transform in infer.get_parsed_content("preprocessing").transforms:
        if type(transform).__name__ != "Lambda":
            break
        checks.append(transform)
    bare = {"image": image, "image_path": image}
    full = dict(bare, label=label, box=[[0, 0, 20], [32, 32, 21]])
    for case, data in {"bare": bare, "full": full}.items():
        try:
            for transform in checks:
                data = transform(data)
            result[case] = sorted(data)
        except ValueError as err:
            result[case] = f"{type(err).__name__}: {err}"
    train = ConfigParser()
    train.read_config(f"{root}/configs/train.json")
    train["bundle_root"] = root
    for part in ("network_def", "loss", "train#preprocessing", "validate#preprocessing"):
        train.get_parsed_content(part, instantiate=True)
    samples = train.get_parsed_content("datastore_samples")
    items = samples([{"image": image, "label": label}])
    result["samples"] = len(items)
    result["structures"] = sorted({item["structure"] for item in items})
    result["passthrough"] = samples(items) is items
    train["train#trainer#max_epochs"] = 1  # what MONAI Label writes for a 1-epoch request
    result["val_interval"] = train.get_parsed_content("val_interval")
    train["train#dataset#data"] = [{"image": image, "label": label}]  # what MONAI Label writes
    train["train#samples#num_workers"] = 0
    dataset = train.get_parsed_content("train#samples", instantiate=True)
    first = dataset[0]
    first = first[0] if isinstance(first, list) else first
    result["dataset"] = [len(dataset), sorted(first)]
    sys.path.remove(root)

repository_files = [
    m for m, mod in sys.modules.items()
    if os.path.realpath(getattr(mod, "__file__", None) or "/").startswith((f"{repo}/common/", f"{repo}/bundles/"))
]
report["_repository_modules"] = repository_files
report["_libraries"] = sorted(m for m in sys.modules if m.startswith("common_") and "." not in m)
print("REPORT " + json.dumps(report))
"""


def test_exported_bundles_load_instantiate_and_take_datastore_items_without_the_repository(
    exported: dict[str, ExportedBundle], tiny_phantoms: Path, tmp_path: Path
) -> None:
    roots = {name: str(result.root) for name, result in exported.items()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, str(ROOT.resolve()), json.dumps(roots), str(tiny_phantoms)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    report = json.loads(run.stdout.split("REPORT ", 1)[1])
    assert report["_repository_modules"] == []
    assert report["_libraries"] == sorted({r.package for r in exported.values()})
    labels = read_config(tiny_phantoms / "dataset.json")["labels"]
    for name, result in exported.items():
        got = report[name]
        assert got["network"].startswith(f"{result.package}.networks"), got["network"]
        assert got["samples"] >= 1
        assert got["passthrough"] is True
        assert set(got["structures"]) <= {int(v) for v in labels if int(v) != 0}
        assert got["dataset"][0] == got["samples"]
        assert got["val_interval"] == 1
        assert {"image", "label", "structure"} <= set(got["dataset"][1])
        assert isinstance(got["full"], list), got["full"]
        assert "image_path" not in got["full"]
        assert "stock_app_image_path" in got["full"]
    assert "upload it as the label file" in report["slice_propagation"]["bare"]
    assert "annotation" in report["slice_propagation"]["full"]
    for name in ("bifseg", "active_learning"):
        assert "needs a box" in report[name]["bare"]
        assert "scribbles" in report[name]["full"]
    assert isinstance(report["deepgrow_clicks"]["bare"], list)
