"""The domain-randomised training configs (``synthetic.json``) and the region-growing evaluation override
(``region_grow.json``) of the bundles that have them, on the tiny phantoms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from common.bundle import run_monai_bundle
from common.evaluation import IntensityRegionGrowAdapter
from common.training import latest_checkpoint

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"
BUNDLE_ENV = {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}  # as CI: 2 cores, no GPU

SYNTHETIC_BUNDLES = sorted(p.parents[1].name for p in BUNDLES_DIR.glob("*/configs/synthetic.json"))
REGION_GROW_BUNDLES = sorted(p.parents[1].name for p in BUNDLES_DIR.glob("*/configs/region_grow.json"))


def test_the_click_and_propagation_bundles_have_randomised_training() -> None:
    assert set(SYNTHETIC_BUNDLES) == {"active_learning", "bifseg", "deepgrow_clicks", "slice_propagation"}


def _parser(bundle: str, files: list[str], data: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES_DIR / bundle / "configs" / f) for f in files])
    parser.update({"bundle_root": str(BUNDLES_DIR / bundle), "dataset_dir": str(data), "num_workers": 0})
    return parser


def _first(sample: object) -> dict:
    return sample[0] if isinstance(sample, list) else sample  # type: ignore[return-value]


@pytest.mark.parametrize("bundle", SYNTHETIC_BUNDLES)
def test_training_images_are_synthetic_and_validation_images_real(bundle: str, tiny_phantoms: Path) -> None:
    parser = _parser(bundle, ["train.json", "synthetic.json"], tiny_phantoms)
    per_modality = "intensity_mode" in parser  # BIFSeg normalises inside the box instead (z-score)
    if per_modality:
        assert parser.get_parsed_content("intensity_mode") == "percentile"
    item = parser.get_parsed_content("train_items")[0]
    volume = parser.get_parsed_content("train_volume_transforms")
    names = [type(t).__name__ for t in volume]
    assert names.index("Orientationd") < names.index("HUTissueClassesd") < names.index("SynthesizeIntensitiesd")
    assert "Spacingd" not in names or names.index("Spacingd") < names.index("HUTissueClassesd")
    assert names.index("RandSynthNoised") < names.index("SelectStructured")
    chain = parser.get_parsed_content("train#preprocessing")
    chain_names = [type(t).__name__ for t in chain.transforms]
    normalise = "NormalizeIntensityByModalityd" if per_modality else "NormalizeIntensityd"
    assert chain_names.index("RandSynthNoised") < chain_names.index(normalise)
    assert _first(chain(dict(item)))["image"].ndim in (3, 4)  # (C, H, W[, D]) training samples
    volume_chain = Compose(volume).set_random_state(0)
    first, second = volume_chain(dict(item)), volume_chain(dict(item))
    assert not torch.allclose(first["image"], second["image"])  # a new image at every call
    # the real pipeline on the same item: the CT image, the same label
    real = _parser(bundle, ["train.json"], tiny_phantoms).get_parsed_content("volume_transforms")
    real_volume = Compose(real)(dict(item))
    synthetic_volume = Compose(volume)(dict(item))
    assert torch.equal(real_volume["label"], synthetic_volume["label"])
    assert not torch.allclose(real_volume["image"], synthetic_volume["image"])
    if per_modality:
        assert float(synthetic_volume["image"].abs().max()) <= 2.048 + 1e-4  # percentile-normalised, no HU left
    val_chain = parser.get_parsed_content("validate#preprocessing")
    val_item = parser.get_parsed_content("val_items")[0]
    val_names = [type(t).__name__ for t in val_chain.transforms]
    assert "SynthesizeIntensitiesd" not in val_names
    assert torch.equal(_first(val_chain(dict(val_item)))["image"], _first(val_chain(dict(val_item)))["image"])


@pytest.mark.parametrize("bundle", REGION_GROW_BUNDLES)
def test_region_grow_override_swaps_only_the_model(bundle: str, tiny_phantoms: Path, tmp_path: Path) -> None:
    parser = _parser(bundle, ["inference.json", "evaluate.json", "region_grow.json"], tiny_phantoms)
    parser.update({"output_dir": str(tmp_path)})
    assert isinstance(parser.get_parsed_content("adapter"), IntensityRegionGrowAdapter)
    assert parser.get_parsed_content("method") == "region_grow"
    assert (
        type(parser.get_parsed_content("robot")).__name__
        == type(
            _parser(bundle, ["inference.json", "evaluate.json"], tiny_phantoms).get_parsed_content("robot")
        ).__name__
    )


def test_randomised_training_runs_and_resumes(tiny_phantoms: Path, tmp_path: Path) -> None:
    configs = BUNDLES_DIR / "slice_propagation" / "configs"
    files = repr([str(configs / f) for f in ("train.json", "synthetic.json", "quick.json")])
    args = ["run", "--config_file", files, "--bundle_root", str(configs.parent), "--dataset_dir", str(tiny_phantoms),
            "--output_dir", str(tmp_path / "runs"), "--ckpt_dir", str(tmp_path / "models")]  # fmt: skip
    run_monai_bundle([*args, "--max_epochs", "1"], cwd=tmp_path, env=BUNDLE_ENV)
    assert (tmp_path / "models" / "model.pt").is_file()
    first = torch.load(latest_checkpoint(tmp_path / "models"), weights_only=True)["trainer"]
    assert first["iteration"] == first["epoch_length"]  # one epoch done
    run_monai_bundle([*args, "--max_epochs", "2", "--resume", "true"], cwd=tmp_path, env=BUNDLE_ENV)
    second = torch.load(latest_checkpoint(tmp_path / "models"), weights_only=True)["trainer"]
    assert second["iteration"] == 2 * first["epoch_length"]  # epoch 2 went on from epoch 1's state
