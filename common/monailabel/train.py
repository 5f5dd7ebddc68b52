"""MONAI Label train task that runs a bundle's ``train.json`` on the datastore's final labels.

It reuses MONAI Label's ``BundleTrainTask`` (``monailabel/tasks/train/bundle.py``: datalist from the datastore,
train/validation partition, config overrides, ``monai.bundle.run``) and changes what this repository's bundles need:

- datastore labels are multi-label volumes; the bundles train on one structure at a time, so each volume becomes one
  item per structure present (:func:`common.data.expand_structures`, after the split by volume, so that no volume
  is in both lists);
- the weights go to the app's folder (``ckpt_dir`` / ``output_dir`` overridden), never into the bundle: the shipped
  ``models/model.pt`` is not overwritten; training starts from the newest weights (the app's, else the bundle's),
  or always from the bundle's shipped general weights when its ``metadata.json`` says
  ``"monailabel": {"retrain_from": "general_weights"}`` (the active-learning bundle: every retraining starts from the
  general model, never from an earlier retrained one);
- a few of the bundle's top-level hyper-parameters (:data:`TRAIN_PARAMS`) can be set per request, next to MONAI
  Label's ``max_epochs``, ``val_split`` and ``pretrained``; unknown or mistyped values are refused;
- single-process training only (MONAI Label's multi-GPU path writes a config file into the bundle folder);
- one training per weights file: the training holds the weights folder's lock (:class:`common.monailabel.lifecycle.
  TrainingLock`; another live training of the same weights makes it fail with a message naming that process's PID)
  and stops itself when the server that started it is gone (:func:`common.monailabel.lifecycle.watch_server`);
- checkpoints (the ``model.pt`` that inference reloads while training runs) are written atomically
  (:class:`AtomicCheckpointSaver` replaces the bundle's ``CheckpointSaver``): never missing nor half-written;
- the training's stats (MONAI Label's ``train_stats`` format: ``epoch``, ``total_epochs``, ``best_metric`` =
  the best validation value of the run's key metric, ``total_time``, ...) go to ``train_stats.json`` next to the
  weights after each epoch (:class:`TrainStatsHandler`), with ``status`` ``running`` / ``done`` / ``failed``
  (``interrupted`` when a killed training's server restarts); ``/info``'s ``train_stats`` (3D Slicer's progress and
  accuracy bars) reads it.

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.tasks.train.handler import prepare_stats

from common.data.msd import load_label_array
from common.data.structures import expand_structures
from common.jsonio import read_json_object, write_json_atomic
from common.monailabel.bundles import ServedBundle
from common.monailabel.lifecycle import STATS_NAME, TrainingLock, watch_server

__all__ = ["TRAIN_PARAMS", "AtomicCheckpointSaver", "BundleInteractionTrainTask", "TrainStatsHandler", "label_table"]

logger = logging.getLogger(__name__)

#: Top-level ``train.json`` hyper-parameters a train request may set (when the bundle has them and they are numbers).
TRAIN_PARAMS: tuple[str, ...] = (
    "learning_rate",
    "slices_per_volume",
    "volumes_per_batch",
    "num_workers",
    "val_interval",
)


def label_table(items: Sequence[Mapping[str, Any]], names: Mapping[int, str] | None = None) -> dict[int, str]:
    """``{label value: structure name}`` for the structures of the datastore's labels.

    Args:
        items: ``{"label": path}`` dicts.
        names: known names (the studies folder's ``labels.json``); when ``None``, the values present in the label
            files are read and named ``label_<value>``.

    Raises:
        ValueError: no structure at all.
    """
    if names:
        table = {int(v): str(n) for v, n in names.items() if int(v) != 0}
    else:
        values: set[int] = set()
        for item in items:
            values.update(int(v) for v in np.unique(load_label_array(item["label"])) if v != 0)
        table = {v: f"label_{v}" for v in sorted(values)}
    if not table:
        raise ValueError("the datastore's final labels hold no structure (only background)")
    return table


def _check_param(name: str, value: Any, default: Any) -> int | float:
    """``value`` as the type of the bundle's ``default`` (int: ``>= 1``, ``>= 0`` for ``num_workers``; float: ``> 0``).

    Raises:
        ValueError: not a finite number, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ValueError(f"train parameter {name} must be a number, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        minimum = 0 if name == "num_workers" else 1
        if value != int(value) or value < minimum:
            raise ValueError(f"train parameter {name} must be an integer >= {minimum}, got {value!r}")
        return int(value)
    if value <= 0:
        raise ValueError(f"train parameter {name} must be positive, got {value!r}")
    return float(value)


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` with atomic writes (temporary file in the folder, then a rename) and an optional fixed
    file name; a fixed-name file is not removed before its replacement is written (the rename replaces it)."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping[str, Any], filename: str, metadata: Mapping[str, Any] | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically.

    MONAI's saver removes the previous best ``model.pt`` and then writes the new one in place: meanwhile the file is
    missing or half-written (inference reloads it when it changes; a kill leaves it truncated). Here each file goes
    to a temporary file in the same folder (ignite's ``tmpXXXXXXXX``) and is renamed over the old one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(str(self.save_dir), fixed)


class TrainStatsHandler:
    """Writes a training's stats to a JSON file when it starts, after each epoch and when it completes.

    The content is MONAI Label's ``train_stats`` (``monailabel.tasks.train.handler.prepare_stats``: ``epoch``,
    ``total_epochs``, ``start_ts``, ``total_time`` once the last epoch is done else ``current_time``, ``train`` and
    ``eval`` with their ``metrics``, ``key_metric_name``, ``best_metric`` and ``best_metric_epoch``, and top-level
    ``best_metric``: the evaluator's best key-metric value, the one ``model.pt`` was saved for, left out until a
    validation has run), plus ``status`` (``running``, ``done``), ``model``, ``weights``, ``run`` and ``pid``.
    The file is replaced atomically (:func:`~common.jsonio.write_json_atomic`).

    Args:
        path: the JSON file.
        evaluator: the validation engine (``None``: train metrics only).
        run: an id of this training run.
        model: the model (bundle) name.
        weights: the weights file the training writes.
    """

    def __init__(self, path: str, evaluator: Any = None, run: str = "", model: str = "", weights: str = "") -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self.run = run
        self.model = model
        self.weights = weights
        self.start_ts = time.time()

    def attach(self, engine: Any) -> None:
        """Register on the trainer's ``STARTED``, ``EPOCH_COMPLETED`` (after the validation handler: attach it last)
        and ``COMPLETED`` events."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write, "running")
        engine.add_event_handler(Events.COMPLETED, self.write, "done")

    def _started(self, engine: Any) -> None:
        self.start_ts = time.time()
        self.write(engine, "running")

    def write(self, engine: Any, status: str) -> dict[str, Any]:
        """Write the stats of ``engine`` (the trainer) with ``status``; returns them."""
        stats: dict[str, Any] = prepare_stats(self.start_ts, engine, self.evaluator)
        best = self.evaluator if self.evaluator is not None else engine
        if getattr(best.state, "best_metric_epoch", -1) < 1:
            stats.pop("best_metric", None)  # no validation yet: MONAI's placeholder is -1
        else:
            stats["best_metric_epoch"] = best.state.best_metric_epoch
        stats["key_metric_name"] = getattr(best.state, "key_metric_name", None)
        stats.update(status=status, model=self.model, weights=self.weights, run=self.run, pid=os.getpid())
        write_json_atomic(stats, self.path)
        return stats


class BundleInteractionTrainTask(BundleTrainTask):
    """Train one bundle from the datastore's final labels (``POST /train/<bundle>``).

    Args:
        bundle: the bundle (its ``configs/train.json`` must exist).
        trained_weights: where the weights go (``.../model.pt``; its folder also gets ``runs/`` for TensorBoard).
        label_names: structure names by label value (``None``: ``label_<value>``).

    Raises:
        FileNotFoundError: the bundle has no ``configs/train.json``.
    """

    def __init__(
        self, bundle: ServedBundle, trained_weights: Path, label_names: Mapping[int, str] | None = None
    ) -> None:
        if not bundle.train_config.is_file():
            raise FileNotFoundError(f"bundle {bundle.name} has no {bundle.train_config}: it cannot be trained")
        if Path(trained_weights).name != "model.pt":
            raise ValueError(
                f"trained weights must be named model.pt (the bundles' checkpoint name): {trained_weights}"
            )
        super().__init__(str(bundle.root), conf={}, load_strict=True)
        self.bundle = bundle
        self.trained_weights = Path(trained_weights)
        self.label_names = dict(label_names) if label_names else None
        self.retrain_from = bundle.retrain_from or "latest"
        #: the weights the last training started from (``None``: from scratch, or no training yet)
        self.started_from: Path | None = None
        self.params = {
            k: self.bundle_config[k]
            for k in TRAIN_PARAMS
            if k in self.bundle_config
            and isinstance(self.bundle_config[k], int | float)
            and not isinstance(self.bundle_config[k], bool)
        }
        epochs = self.bundle_config.get("max_epochs", 50)
        self.default_epochs = epochs if isinstance(epochs, int) else 50
        self._request: dict[str, Any] = {}
        self._run = ""

    @property
    def stats_path(self) -> Path:
        """The train stats file (:class:`TrainStatsHandler`), next to the trained weights."""
        return self.trained_weights.parent / STATS_NAME

    def stats(self) -> dict[str, Any]:
        """The stats of the last training of these weights (``/info``'s ``train_stats``; ``{}`` before any)."""
        return read_json_object(self.stats_path)

    def latest_weights(self) -> Path:
        """The app's trained weights when they exist, else the bundle's ``models/model.pt``."""
        return self.trained_weights if self.trained_weights.is_file() else self.bundle.weights

    def start_weights(self) -> Path:
        """The weights a (``pretrained``) training starts from: the bundle's ``models/model.pt`` when the bundle
        retrains from its general weights (``retrain_from``), else :meth:`latest_weights`."""
        return self.bundle.weights if self.retrain_from == "general_weights" else self.latest_weights()

    def config(self) -> dict[str, Any]:
        """Train options shown to viewers: MONAI Label's, the bundle's epochs and :data:`TRAIN_PARAMS`.

        Built once (MONAI Label's look-up of display options the bundle does not have costs about 8 ms per call, and
        every ``/info`` asks every trainer); the list of weights files (``model_filename``) is read each time.
        """
        cached: dict[str, Any] | None = getattr(self, "_options", None)
        if cached is None:
            cached = dict(super().config())
            cached.pop("multi_gpu", None)
            cached.pop("gpus", None)
            cached.update(max_epochs=self.default_epochs, **self.params)
            self._options = cached
        options = dict(cached)
        if "model_filename" in options:
            models = sorted((p.name for p in (self.bundle.root / "models").glob("*.pt")), key=len)
            options["model_filename"] = models
        return options

    def _check_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        checked = dict(request)
        epochs = checked.get("max_epochs", self.default_epochs)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {epochs!r}")
        checked["max_epochs"] = epochs
        split = checked.get("val_split", 0.2)
        if isinstance(split, bool) or not isinstance(split, int | float) or not 0 < split < 1:
            raise ValueError(f"val_split must be a number in (0, 1) (the bundles validate every epoch), got {split!r}")
        checked["val_split"] = float(split)
        for name, default in self.params.items():
            if name in checked:
                checked[name] = _check_param(name, checked[name], default)
        checked["multi_gpu"] = False
        return checked

    def _fetch_datalist(self, request: Mapping[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = super()._fetch_datalist(request, datastore)
        if len(items) < 2:
            raise ValueError(
                "training needs at least 2 images with a final label (1 for validation), "
                f"the datastore has {len(items)}"
            )
        return items

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: Mapping[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        train, val = super()._partition_datalist(datalist, request, shuffle)
        if not train or not val:
            raise ValueError(
                f"val_split={request.get('val_split')} leaves {len(train)} training and {len(val or [])} validation "
                "volumes: both need at least one"
            )
        table = label_table(datalist, self.label_names)
        return expand_structures(train, table), expand_structures(val, table)

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list[dict[str, Any]]) -> None:
        if not pretrained or any(h.get("_target_") == "CheckpointLoader" for h in train_handlers):
            return
        path = self.start_weights()
        self.started_from = path
        logger.info("training %s from %s (retrain_from: %s)", self.bundle.name, path, self.retrain_from)
        loader = {
            "_target_": "CheckpointLoader",
            "load_path": str(path),
            "load_dict": {"model": "$@network"},
            "strict": True,
            "map_location": "cpu",
        }
        train_handlers.insert(0, loader)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        out_dir = self.trained_weights.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        overrides["ckpt_dir"] = str(out_dir)
        overrides["output_dir"] = str(out_dir / "runs")
        overrides["max_epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        for name in self.params:
            if name in self._request:
                overrides[name] = self._request[name]
        key = self.const.key_train_handlers()
        stats = {
            "_target_": f"{__name__}.{TrainStatsHandler.__name__}",
            "path": str(self.stats_path),
            "evaluator": "@validate#evaluator" if self.bundle_config.get("validate#evaluator") is not None else None,
            "run": self._run,
            "model": self.bundle.name,
            "weights": str(self.trained_weights),
        }
        overrides[key] = [*overrides.get(key, []), stats]  # a new list: the bundle config's own is not changed
        validate_handlers = self.bundle_config.get("validate#handlers")
        if isinstance(validate_handlers, list):
            overrides["validate#handlers"] = [_atomic_saver(h) for h in validate_handlers]
        if isinstance(self.bundle_config.get("resume_saver"), dict):
            overrides["resume_saver"] = _atomic_saver(self.bundle_config.get("resume_saver"))
        return overrides

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Check the request, train, and report where the weights are.

        Raises:
            ValueError: bad parameters, or too few labelled volumes for a train/validation split.
            common.monailabel.lifecycle.TrainingBusyError: another live process trains the same weights file.
        """
        self._request = self._check_request(request)
        self.started_from = None
        self._run = uuid.uuid4().hex[:12]
        watch_server()
        with TrainingLock(self.trained_weights):
            try:
                super().__call__(self._request, datastore)
            except BaseException as err:
                self._mark_failed(err)
                raise
        weights = self.trained_weights if self.trained_weights.is_file() else None
        result = {
            "bundle": self.bundle.name,
            "weights": str(weights) if weights else None,
            "started_from": str(self.started_from) if self.started_from else None,
            "retrain_from": self.retrain_from,
            "best_metric": self.stats().get("best_metric"),
        }
        logger.info("train result %s", json.dumps(result))
        return result

    def _mark_failed(self, err: BaseException) -> None:
        """Set this run's stats file (if it got that far) to ``failed`` with the error."""
        stats = self.stats()
        if stats.get("run") == self._run and stats.get("status") == "running":
            stats.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
            write_json_atomic(stats, self.stats_path)


def _atomic_saver(handler: Any) -> Any:
    """``handler`` (a bundle config item) with :class:`AtomicCheckpointSaver` as target when it is a MONAI
    ``CheckpointSaver`` (a copy; other items unchanged)."""
    if isinstance(handler, dict) and str(handler.get("_target_", "")).rsplit(".", 1)[-1] == "CheckpointSaver":
        return {**handler, "_target_": f"{__name__}.{AtomicCheckpointSaver.__name__}"}
    return handler
