"""Config adaptations for MONAI Label's stock ``monaibundle`` app (``sample-apps/monaibundle``).

It serves every bundle through ``BundleInferTask``: the infer type comes from the folder name (``deepgrow`` in the
name: clicks; otherwise ``segmentation``, for which 3D Slicer and OHIF send no clicks, box or label), the request's
``params`` are merged into the data dict, an uploaded label volume arrives as the path ``label``. It trains through
``BundleTrainTask``, which overrides ``train#dataset#data`` and ``validate#dataset#data`` with the datastore's
``[{"image", "label"}]`` (whole multi-label volumes) and serves ``models/model.pt``. The exported configs meet that:

- ``inference.json``: a bundle that reads a label volume besides the image (slice propagation's ``annotation``, the
  box bundles' ``scribbles``) takes the uploaded ``label`` file for it when the data dict has none; when the volume
  is required and missing, inference fails with a ``ValueError`` saying what to send (not a ``KeyError``), as does a
  request without the box the box bundles need (HTTP 400 with the message under MONAI Label, instead of a bare
  500). The request's plain-string ``image_*`` entries (MONAI Label's ``image_path``) are set aside during the
  pipeline: MONAI's ``Spacingd`` would update them as meta-data dicts.
- ``train.json``: ``train#dataset`` / ``validate#dataset`` hold only the ``data`` list MONAI Label fills; the
  datasets the loaders use are ``train#samples`` / ``validate#samples``, made of ``datastore_samples(data)``: items
  without ``structure`` (datastore volumes) become one item per structure present in the label
  (:func:`common.data.expand_structures`, structures named ``label_<value>``), items already expanded (the bundle's
  own ``train_items``) pass unchanged. References to ``@train#dataset`` and overrides of ``train#dataset#...`` in the
  other configs (``multi_gpu_train.json``) follow the rename.
- ``train.json``: the best model (the key-metric ``CheckpointSaver``) is written to ``model_dir``
  (``$@bundle_root + '/models'``), the weights MONAI Label serves, as in model-zoo bundles; per-epoch resume
  checkpoints and TensorBoard logs stay under ``output_dir`` / ``ckpt_dir``. ``val_interval`` is capped by the
  number of epochs (``train#trainer#max_epochs``, which MONAI Label's request sets), so that a training shorter than
  the validation interval still validates once and saves a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ASIDE_PREFIX", "adapt_inference_config", "adapt_train_configs"]


def _transforms(config: Mapping[str, Any], key: str) -> list[Any] | None:
    """The transform list of ``config[key]`` (a ``Compose`` dict or a list), ``None`` if there is none."""
    part = config.get(key)
    if isinstance(part, dict) and isinstance(part.get("transforms"), list):
        transforms: list[Any] = part["transforms"]
        return transforms
    return part if isinstance(part, list) else None


#: Prefix under which :func:`adapt_inference_config` keeps plain ``image_*`` request entries during inference.
ASIDE_PREFIX = "stock_app_"


def adapt_inference_config(config: dict[str, Any], bundle_name: str) -> dict[str, Any]:
    """``inference.json`` for MONAI Label's stock app (the input config is not modified).

    - MONAI Label keeps the image's path as the string ``image_path`` in the data dict (its writer reads it after the
      post-processing), and MONAI's ``Spacingd`` updates every ``image_*`` entry as a meta-data dict after
      resampling ``image`` (``AttributeError: 'str' object has no attribute 'update'``). A first ``Lambda``
      renames plain-string ``image_*`` entries ``stock_app_image_*``; a last post-processing ``Lambda`` renames
      them back.
    - When the preprocessing's ``LoadImaged`` reads one volume besides ``image`` (``annotation``, ``scribbles``),
      a ``Lambda`` gives a data dict without that key the path ``label`` (MONAI Label's uploaded label volume) for
      it. An optional volume (``allow_missing_keys``) gets its own ``LoadImaged`` inside a ``Compose``: MONAI
      Label's ``LoadImageTensord``, which replaces every top-level ``LoadImaged``, ignores ``allow_missing_keys``.
    - A request without a required volume, or without the box a ``BoxMaskd`` reads, raises
      ``scripts.MissingInputError`` (a ``ValueError``; under MONAI Label an HTTP 400 whose detail names what to
      send) before anything is loaded.

    Raises:
        ValueError: no preprocessing / postprocessing transform list, no ``LoadImaged``, or one reading more than one
            extra volume.
    """
    config = json.loads(json.dumps(config))
    transforms = _transforms(config, "preprocessing")
    post = _transforms(config, "postprocessing")
    if transforms is None or post is None:
        raise ValueError(f"{bundle_name}: inference.json needs preprocessing and postprocessing transform lists")
    loaders = [t for t in transforms if isinstance(t, dict) and str(t.get("_target_", "")).endswith("LoadImaged")]
    if not loaders:
        raise ValueError(f"{bundle_name}: inference.json's preprocessing has no LoadImaged")
    keys = loaders[0].get("keys", "image")
    extra = [k for k in ([keys] if isinstance(keys, str) else keys) if k != "image"]
    if len(extra) > 1:
        raise ValueError(f"{bundle_name}: LoadImaged reads several volumes besides the image: {extra}")
    added = [
        {
            "_target_": "Lambda",
            "func": f"$lambda d: {{({ASIDE_PREFIX!r} + k if isinstance(k, str) and k.startswith('image_') "
            "and isinstance(v, str) else k): v for k, v in d.items()}",
        }
    ]
    boxes = [t for t in transforms if isinstance(t, dict) and str(t.get("_target_", "")).endswith(".BoxMaskd")]
    for box in boxes:
        box_key = box.get("box_key", "box")
        message = (
            f'{bundle_name} needs a box: send params {{"{box_key}": [[i0, j0, k0], [i1, j1, k1]]}} (voxel indices of '
            "the image as stored, stop exclusive; MONAI Label's roi [i0, i1, j0, j1, k0, k1] also works there). "
            f"MONAI Label's stock monaibundle app serves {bundle_name} as a 'segmentation' model, for which 3D "
            "Slicer and OHIF send no box: see the bundle's docs/README.md"
        )
        added.append(
            {
                "_target_": "Lambda",
                "func": f"$lambda d: d if d.get({box_key!r}) is not None else scripts.missing_input({message!r})",
            }
        )
    if extra:
        key = extra[0]
        uploaded = "isinstance(d.get('label'), str) and os.path.isfile(d['label'])"
        if loaders[0].get("allow_missing_keys", False):
            func = f"$lambda d: dict(d, {key}=d['label']) if {key!r} not in d and {uploaded} else d"
            # MONAI Label wraps every LoadImaged in its LoadImageTensord, which reads d[key] for each key whatever
            # allow_missing_keys says: the optional volume is loaded by a LoadImaged inside a Compose it leaves alone
            position = transforms.index(loaders[0])
            optional_loader = {**loaders[0], "keys": [key], "allow_missing_keys": True}
            loaders[0]["keys"] = "image"
            loaders[0].pop("allow_missing_keys", None)
            transforms.insert(position + 1, {"_target_": "Compose", "transforms": [optional_loader]})
        else:
            message = (
                f"{bundle_name} needs the user's {key} volume: upload it as the label file of the request "
                f"(multipart field 'label' of POST /infer/{bundle_name}), or give {key!r} in a bundle datalist. "
                f"MONAI Label's stock monaibundle app serves {bundle_name} as a 'segmentation' model, for which "
                "3D Slicer and OHIF upload no label: see the bundle's docs/README.md"
            )
            func = (
                f"$lambda d: d if {key!r} in d else dict(d, {key}=d['label']) if {uploaded} "
                f"else scripts.missing_input({message!r})"
            )
        added.append({"_target_": "Lambda", "func": func})
    transforms[:0] = added
    post.append(
        {
            "_target_": "Lambda",
            "func": f"$lambda d: {{(k[{len(ASIDE_PREFIX)}:] if isinstance(k, str) and "
            f"k.startswith({ASIDE_PREFIX + 'image_'!r}) else k): v for k, v in d.items()}}",
        }
    )
    if "$import os" not in config.get("imports", []):
        config["imports"] = [*config.get("imports", []), "$import os"]
    return config


_SECTIONS = ("train", "validate")


def _rename_dataset_refs(config: Any) -> Any:
    """``@train#dataset`` -> ``@train#samples`` (same for ``validate``) in every string; sub-ids are kept."""
    if isinstance(config, dict):
        return {k: _rename_dataset_refs(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_rename_dataset_refs(v) for v in config]
    if isinstance(config, str):
        return re.sub(r"@(train|validate)#dataset(?![#\w])", r"@\1#samples", config)
    return config


def adapt_train_configs(configs: Mapping[str, dict[str, Any]], package: str) -> dict[str, dict[str, Any]]:
    """The bundle's configs with ``train.json`` made trainable by MONAI Label's ``BundleTrainTask``.

    Args:
        configs: ``{file name: raw config}`` with ``common`` already renamed ``package``; must hold ``train.json``.
        package: the library copy's package name (used by ``datastore_samples``).

    Returns:
        New configs (inputs are not modified): see the module docstring (``datastore_samples``,
        ``train#samples`` / ``validate#samples``, ``model_dir``, ``val_interval``); override keys ``train#dataset#<k>``
        (``k != "data"``) of the other configs become ``train#samples#<k>``.

    Raises:
        ValueError: ``train.json`` lacks ``train#dataset#data`` / ``validate#dataset#data`` or the key-metric
            ``CheckpointSaver`` in ``validate#handlers``.
    """
    out = {name: json.loads(json.dumps(config)) for name, config in configs.items()}
    train = out.get("train.json")
    if train is None:
        raise ValueError("the bundle has no train.json")
    for section in _SECTIONS:
        dataset = train.get(section, {}).get("dataset")
        if not isinstance(dataset, dict) or "data" not in dataset:
            raise ValueError(f"train.json has no {section}#dataset#data (MONAI Label overrides it)")
        train[section]["dataset"] = {"data": dataset["data"]}
        train[section]["samples"] = {**dataset, "data": f"$@datastore_samples(@{section}#dataset#data)"}
    train["datastore_samples"] = (
        "$lambda items: items if all('structure' in d for d in items) else "
        f"{package}.data.expand_structures(items, {{v: 'label_' + str(v) for d in items for v in "
        f"numpy.unique({package}.data.load_label_array(d['label'])).astype(int).tolist() if v != 0}}, "
        "level='volume')"
    )
    savers = [
        h
        for h in train.get("validate", {}).get("handlers", [])
        if isinstance(h, dict) and h.get("_target_") == "CheckpointSaver" and h.get("save_key_metric")
    ]
    if len(savers) != 1:
        raise ValueError(f"train.json's validate#handlers must hold one key-metric CheckpointSaver, got {len(savers)}")
    train["model_dir"] = "$@bundle_root + '/models'"
    savers[0]["save_dir"] = "@model_dir"
    interval = train.get("val_interval")
    if isinstance(interval, int) and not isinstance(interval, bool):
        train["val_interval"] = f"$min({interval}, @train#trainer#max_epochs)"
    for name, config in out.items():
        renamed = _rename_dataset_refs(config)
        if name != "train.json":
            renamed = {re.sub(r"^(train|validate)#dataset#(?!data$)", r"\1#samples#", k): v for k, v in renamed.items()}
        out[name] = renamed
    return out
