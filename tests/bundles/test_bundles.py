"""Checks run over every bundle in ``bundles/`` (a new bundle is covered on arrival).

Static checks (config ids MONAI Label and ``monai.bundle`` rely on, offline metadata validation, ``network_def``
identity, portability) and live ones: every config part naming ``common`` instantiates, and
``multi_gpu_train.json`` runs one short epoch under ``torchrun --nproc_per_node 2`` on the CPU (gloo backend).

Bundle convention used here: ``configs/quick.json`` is an override that makes training and evaluation run in
seconds to minutes on a 2-core CPU (tiny network, few samples); tests and the README demo use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from common.bundle import (
    INFERENCE_IDS,
    TRAIN_IDS,
    common_references,
    config_portability_problems,
    find_bundles,
    metadata_problems,
    missing_config_ids,
    missing_files,
    network_def_problems,
    read_config,
    run_monai_bundle,
)

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = find_bundles(ROOT / "bundles")
CONFIG_FILES = ("inference.json", "train.json", "evaluate.json", "multi_gpu_train.json", "quick.json")
# Workflows whose parts are instantiated: each is a list of config files merged in order (overrides last).
WORKFLOWS = {
    "inference": ["inference.json"],
    "train": ["train.json", "quick.json"],
    "evaluate": ["inference.json", "evaluate.json", "quick.json"],
}

bundle_param = pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)


def test_repository_has_bundles() -> None:
    assert BUNDLES, "no bundle found under bundles/: the checks below would test nothing"


@bundle_param
def test_required_files(bundle: Path) -> None:
    assert missing_files(bundle) == []
    assert (bundle / "configs" / "quick.json").is_file(), "configs/quick.json (fast CPU override) is missing"


@bundle_param
def test_config_ids_monai_label_relies_on(bundle: Path) -> None:
    configs = bundle / "configs"
    problems = missing_config_ids(read_config(configs / "inference.json"), INFERENCE_IDS)
    problems += missing_config_ids(read_config(configs / "train.json"), TRAIN_IDS)
    assert problems == []


@bundle_param
def test_network_def_identical_in_train_and_inference(bundle: Path) -> None:
    configs = bundle / "configs"
    assert network_def_problems(read_config(configs / "train.json"), read_config(configs / "inference.json")) == []


@bundle_param
def test_shipped_weights_match_inference_network(bundle: Path) -> None:
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():
        pytest.skip(f"{bundle.name} ships no weights")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)


@bundle_param
def test_metadata_valid_offline(bundle: Path) -> None:
    assert metadata_problems(read_config(bundle / "configs" / "metadata.json")) == []


@bundle_param
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_configs_portable(bundle: Path, name: str) -> None:
    assert config_portability_problems(read_config(bundle / "configs" / name)) == []


def _parser(bundle: Path, files: list[str], overrides: dict[str, object]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in files])
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser


@bundle_param
@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_every_part_naming_common_instantiates(
    bundle: Path, workflow: str, tiny_phantoms: Path, tmp_path: Path
) -> None:
    files = WORKFLOWS[workflow]
    raw: dict[str, object] = {}
    for name in files:
        raw.update(read_config(bundle / "configs" / name))
    ids = common_references(raw)
    image, label = (str(tiny_phantoms / d / "phantom_000.nii.gz") for d in ("imagesTr", "labelsTr"))
    datalist = [{"image": image, "label": label, "annotation": label}]  # inference inputs, whatever keys a bundle uses
    overrides = {
        "dataset_dir": str(tiny_phantoms),
        "output_dir": str(tmp_path),
        "ckpt_dir": str(tmp_path),
        "ckpt_path": str(tmp_path / "model.pt"),
        "datalist": datalist,
    }
    parser = _parser(bundle, files, overrides)
    if "network_def" in parser:  # parts that load trained weights find an (untrained) checkpoint
        torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "model.pt")
    failures = {}
    for part in ids:
        if part.startswith(("run", "initialize", "finalize")):
            continue  # actions, exercised by the smoke runs
        try:
            parser.get_parsed_content(part, instantiate=True)
        except Exception as err:  # report every failing part at once
            failures[part] = f"{type(err).__name__}: {err}"
    assert failures == {}


@bundle_param
def test_multi_gpu_train_one_epoch_under_torchrun_on_cpu(bundle: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
    configs = [str(bundle / "configs" / f) for f in ("train.json", "quick.json", "multi_gpu_train.json")]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "monai.bundle", "run",
        "--config_file", repr(configs),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(tiny_phantoms),
        "--output_dir", str(tmp_path / "out"),
        "--ckpt_dir", str(tmp_path / "ckpt"),
        "--max_epochs", "1",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "Epoch[1]" in result.stdout + result.stderr


@bundle_param
def test_verify_net_in_out(bundle: Path, tmp_path: Path) -> None:
    configs = bundle / "configs"
    run_monai_bundle(
        ["verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"),
         "--config_file", str(configs / "inference.json"), "--n", "4", "--device", "cpu"],
        cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip


@bundle_param
def test_ckpt_export_gives_a_working_torchscript_model(bundle: Path, tmp_path: Path) -> None:
    configs = bundle / "configs"
    files = [str(configs / "inference.json"), str(configs / "quick.json")]
    checkpoint = tmp_path / "model.pt"
    network = _parser(bundle, ["inference.json", "quick.json"], {}).get_parsed_content("network_def")
    torch.save(network.state_dict(), checkpoint)
    exported = tmp_path / "model.ts"
    run_monai_bundle(
        ["ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(checkpoint),
         "--meta_file", str(configs / "metadata.json"), "--config_file", repr(files), "--key_in_ckpt", ""],
        cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    formats = read_config(configs / "metadata.json")["network_data_format"]
    in_channels = formats["inputs"]["image"]["num_channels"]
    out_channels = formats["outputs"]["pred"]["num_channels"]
    spatial = (32,) * len(formats["inputs"]["image"]["spatial_shape"])  # 2D or 3D networks
    model = torch.jit.load(str(exported)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, in_channels, *spatial))
    assert out.shape == (1, out_channels, *spatial)


@bundle_param
@pytest.mark.parametrize(
    ("workflow_type", "files"), [("train", ["train.json", "quick.json"]), ("infer", ["inference.json"])]
)
def test_monai_workflow_properties(
    bundle: Path, workflow_type: str, files: list[str], tiny_phantoms: Path, tmp_path: Path
) -> None:
    """MONAI's own contract check (``TrainProperties`` / ``InferProperties``), as model-zoo's CI runs it: the
    workflow initialises (the inference one loads the shipped weights) and no required property is missing."""
    from monai.bundle import ConfigWorkflow

    image, label = (str(tiny_phantoms / d / "phantom_000.nii.gz") for d in ("imagesTr", "labelsTr"))
    overrides: dict[str, object] = (
        {"ckpt_dir": str(tmp_path / "models")}
        if workflow_type == "train"
        else {"datalist": [{"image": image, "annotation": label}]}  # what a user passes with --datalist
    )
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / f) for f in files],
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        dataset_dir=str(tiny_phantoms),
        output_dir=str(tmp_path),
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    assert workflow.dataset_dir == str(tiny_phantoms)


@bundle_param
def test_parsed_metadata_keeps_every_required_package(bundle: Path) -> None:
    parser = ConfigParser()
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    required = parser.get_parsed_content("_meta_#required_packages_version")
    assert {"nibabel", "pytorch-ignite", "interactive-seg-bundles", "tensorboard"} <= set(required)
    assert "optional_packages_version" not in read_config(bundle / "configs" / "metadata.json")


MODEL_CARD_KEYS = {
    "weights", "training_data", "training_configs", "steps", "training_time", "device", "limitations",
    "finetune_command", "docs",
}  # fmt: skip


def _shipped_training_config(bundle: Path) -> dict:
    """``train.json`` merged with the overrides the shipped weights were trained with (the model card's recipe)."""
    merged: dict = {}
    for name in read_config(bundle / "configs" / "metadata.json")["model_card"]["training_configs"]:
        merged.update(read_config(bundle / "configs" / name))
    return merged


@bundle_param
def test_model_card_is_complete(bundle: Path) -> None:
    meta = read_config(bundle / "configs" / "metadata.json")
    card = meta["model_card"]
    assert set(card) >= MODEL_CARD_KEYS
    assert card["training_configs"][0] == "train.json"
    assert all((bundle / "configs" / name).is_file() for name in card["training_configs"])
    assert (bundle / card["weights"]).is_file()
    assert "--finetune true" in card["finetune_command"]
    assert "Model card" in (bundle / "docs" / "README.md").read_text()
    metrics = meta["eval_metrics"]
    for contrast in ("ct", "heldout_t1", "heldout_t2"):  # seen and unseen, on CT and both held-out contrasts
        assert any(f"_{contrast}_seen" in key for key in metrics), contrast
        assert any(f"_{contrast}_unseen" in key for key in metrics), contrast
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())


@bundle_param
def test_spacing_and_intensity_agree_in_metadata_training_and_inference(bundle: Path) -> None:
    """The metadata, the shipped weights' training recipe and ``inference.json`` agree on geometry and intensity."""
    meta = read_config(bundle / "configs" / "metadata.json")
    configs = {"shipped recipe": _shipped_training_config(bundle), "inference.json": read_config(
        bundle / "configs" / "inference.json")}  # fmt: skip
    for name, config in configs.items():
        if meta["input_geometry"]["spacing_mm"] is None:  # box crops resized to the network's size (BIFSeg)
            assert "target_spacing" not in config, name
            assert {"resize_rule", "resize_size", "resize_axes"} <= set(config), name
            assert meta["intensity_normalisation"]["mode"] == "box_zscore"
            assert '"NormalizeIntensityd"' in json.dumps(config), name
            continue
        spacing = [None if s <= 0 else s for s in config["target_spacing"]]
        assert spacing == meta["input_geometry"]["spacing_mm"], name
        assert config["intensity_mode"] == meta["intensity_normalisation"]["mode"], name
        assert config["ct_window"] == meta["intensity_normalisation"]["ct_window"], name
        assert config["ct_scale"] == meta["intensity_normalisation"]["ct_scale"], name


@bundle_param
def test_training_writes_to_a_run_folder_by_default(bundle: Path) -> None:
    parser = _parser(bundle, ["train.json"], {})
    ckpt_dir = Path(parser.get_parsed_content("ckpt_dir")).resolve()
    assert ckpt_dir == (bundle / "runs" / "models").resolve()
    assert Path(parser.get_parsed_content("finetune_path")).resolve() == (bundle / "models" / "model.pt").resolve()
    assert parser.get_parsed_content("finetune") is False
    assert parser.get_parsed_content("resume") is False


@bundle_param
def test_torchscript_swap_of_network_def_runs_inference(bundle: Path, tiny_phantoms: Path, tmp_path: Path) -> None:
    """model-zoo's documented swap: ``network_def`` = ``$torch.jit.load(...)``; the rest of ``inference.json`` must not
    read attributes of the Python network (e.g. its depth), and the result equals the eager network's."""
    import json

    import nibabel as nib
    import numpy as np

    from common.bundle.pipeline import BundleInferencePipeline

    configs = bundle / "configs"
    weights = bundle / "models" / "model.pt"
    exported = tmp_path / "model.ts"
    run_monai_bundle(
        ["ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(weights),
         "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
         "--key_in_ckpt", ""],
        cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    image = tiny_phantoms / "imagesTr" / "phantom_000.nii.gz"
    label = nib.load(tiny_phantoms / "labelsTr" / "phantom_000.nii.gz")
    truth = np.asarray(label.dataobj) == 3
    k = int(np.flatnonzero(truth.any(axis=(0, 1))).mean())
    annotation = np.zeros(truth.shape, np.uint8)
    annotation[..., k] = truth[..., k]
    nib.save(nib.Nifti1Image(annotation, label.affine), tmp_path / "annotation.nii.gz")
    i, j = (int(v) for v in np.argwhere(truth[..., k])[0])
    rows, cols = np.nonzero(truth[..., k])
    box = [[int(rows.min()) - 3, int(cols.min()) - 3, k], [int(rows.max()) + 4, int(cols.max()) + 4, k + 1]]
    if read_config(configs / "inference.json").get("spatial_dims") == 3:  # a 3D box model: the structure's 3D box
        lo, hi = np.argwhere(truth).min(axis=0), np.argwhere(truth).max(axis=0)
        box = [[int(v) for v in lo - np.array([3, 3, 1])], [int(v) for v in hi + np.array([4, 4, 2])]]
    item = {  # what each bundle reads: an annotated slice, a click, a box on that slice (3D models: around the object)
        "image": str(image),
        "annotation": str(tmp_path / "annotation.nii.gz"),
        "foreground": [[i, j, k]],
        "box": box,
    }
    (tmp_path / "datalist.json").write_text(json.dumps({"datalist": [item]}))
    run_monai_bundle(
        ["run", "--config_file", repr([str(configs / "inference.json"), str(tmp_path / "datalist.json")]),
         "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "out"),
         "--network_def", f"$torch.jit.load({str(exported)!r})", "--ckpt_path", str(weights)],
        cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"},
    )  # fmt: skip
    (written,) = sorted((tmp_path / "out").glob("*.nii.gz"))
    eager = BundleInferencePipeline.from_bundle(bundle, device="cpu")(item)["pred"]
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj) > 0, np.asarray(eager)[0] > 0.5)
