"""MONAI Label query strategies and scoring methods of the active-learning bundles (Groff 2018).

For every served bundle whose ``metadata.json`` has a ``"monailabel": {"retrain_from": ...}`` section and whose
pre-processing reads a box (kind ``box_scribbles``), the app serves one MONAI Label ``Strategy``
(``POST /activelearning/<name>``) and one ``ScoringMethod`` (``POST /scoring/<name>``) per name of
:data:`common.active_learning.STRATEGIES`; :func:`method_names` gives the names (``entropy``, ``mc_dropout``, ``tta``,
``last``; ``random`` and ``first`` are MONAI Label's own strategies, so the bundle's get ``<bundle>_random`` and
``<bundle>_first``).

Both score the datastore's images *without a final label* with
:func:`common.active_learning.strategies.score_cases` (higher = annotate first):

- a case's network input comes from the bundle's own pre-processing (the infer task's parsed ``preprocessing``
  transforms, the ones ``/infer`` runs) on ``{"image": path, "box": box}``: the box is the user's last box for that
  image (``image info["box"][<bundle>]``, stored by the app after a box inference, voxel indices as stored,
  ``[[start...], [stop...]]``), else the whole image extent (the box transform gets ``[[0, ...], shape]``);
- the network is a copy of the infer task's network with the current weights (the app's retrained weights when they
  exist, else the bundle's ``models/model.pt``: what ``/infer`` uses);
- an image whose pre-processing fails (a corrupt file, a stored box that no longer fits) is skipped with a logged
  reason; the others are still scored.

A strategy returns ``{"id": image_id, "score": ..., "scored_with": {...}, "candidates": n, "skipped": {...},
"reused": k}`` for the best-scored image (``None``, MONAI Label's empty answer ``{}``, when no unlabelled image is
left or none can be read). A scoring method stores one record per image in the datastore's image info,
``info["scores"][<name>]`` = ``{"score", "strategy", "bundle", "weights", "weights_mtime_ns", "box", "box_source"
("user" or "image"), "samples", "seed", "ts"}``. Network strategies (``entropy``, ``mc_dropout``, ``tta``) reuse a
stored record made with the same weights file (path and modification time), box, ``samples`` and ``seed`` instead of
running the network again (a scoring request with ``{"force": true}`` recomputes); ``random``, ``first`` and ``last``
depend on the set of candidates and are always recomputed.

Request options (``params`` of ``/activelearning/<name>``, body of ``/scoring/<name>``): ``seed`` (integer >= 0,
default 0), ``samples`` (integer >= 2; default 10 for ``mc_dropout``, 8 for ``tta``: every flip combination once).
Bad values raise ``ValueError`` (HTTP 400 through the app).

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from torch import nn

from common.active_learning.strategies import STRATEGIES, score_cases
from common.monailabel.infer import BundleInteractionInferTask, parsed_box
from common.networks.weights import load_weights

__all__ = [
    "BOX_INFO_KEY",
    "DEFAULT_SAMPLES",
    "NETWORK_STRATEGIES",
    "SCORES_INFO_KEY",
    "BundleScoring",
    "BundleStrategy",
    "CaseInput",
    "CaseScorer",
    "ScoreRun",
    "build_active_learning",
    "method_names",
    "remember_box",
    "request_options",
    "stored_box",
]

logger = logging.getLogger(__name__)

#: Image info key of the user's boxes: ``{bundle name: [[start...], [stop...]]}``.
BOX_INFO_KEY = "box"
#: Image info key of the stored scores: ``{method name: record}`` (see the module docstring).
SCORES_INFO_KEY = "scores"
#: Strategies that run the network (their scores are per image and can be reused).
NETWORK_STRATEGIES: tuple[str, ...] = ("entropy", "mc_dropout", "tta")
#: Default ``samples`` per strategy (others: 10, unused by ``random``/``first``/``last``/``entropy``).
DEFAULT_SAMPLES: dict[str, int] = {"mc_dropout": 10, "tta": 8}

_REASON_CHARS = 300


def method_names(bundles: Sequence[str], taken: Collection[str] = ()) -> dict[str, tuple[str, str]]:
    """MONAI Label names of the bundles' strategies: ``{name: (bundle, strategy)}``.

    Each strategy of :data:`STRATEGIES` is served under its own name (``entropy``) unless that name is ``taken``
    (MONAI Label's ``random`` and ``first``) or used by an earlier bundle; it is then ``<bundle>_<strategy>``.

    Args:
        bundles: the active-learning bundles' names, in the order they claim names.
        taken: names already served.

    Raises:
        ValueError: a bundle named twice, or two names colliding even when qualified.
    """
    if len(set(bundles)) != len(bundles):
        raise ValueError(f"bundles named more than once: {sorted(b for b in set(bundles) if bundles.count(b) > 1)}")
    names: dict[str, tuple[str, str]] = {}
    for bundle in bundles:
        for strategy in STRATEGIES:
            name = strategy if strategy not in taken and strategy not in names else f"{bundle}_{strategy}"
            if name in names or name in taken:
                raise ValueError(f"strategy name {name!r} of bundle {bundle!r} is already served")
            names[name] = (bundle, strategy)
    return names


def _int_option(request: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = request.get(key, default)
    if value is None:
        return default
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value != int(value) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def request_options(request: Mapping[str, Any], strategy: str) -> tuple[int, int]:
    """``(seed, samples)`` of a strategy or scoring request (defaults: 0 and :data:`DEFAULT_SAMPLES` or 10).

    Raises:
        ValueError: ``seed`` not an integer >= 0, ``samples`` not an integer >= 2.
    """
    seed = _int_option(request, "seed", 0, 0)
    samples = _int_option(request, "samples", DEFAULT_SAMPLES.get(strategy, 10), 2)
    return seed, samples


def stored_box(info: Mapping[str, Any], bundle: str) -> list[list[int]] | None:
    """The user's last box for ``bundle`` in an image info (``None`` when never boxed or malformed)."""
    boxes = info.get(BOX_INFO_KEY)
    return parsed_box(boxes.get(bundle)) if isinstance(boxes, Mapping) else None


def _reload(datastore: Datastore) -> None:
    """Re-read a local datastore's file if another process changed it (MONAI Label's ``LocalDatastore`` private
    reload, also run by its file watcher), so that an update does not drop what the other process wrote."""
    reload = getattr(datastore, "_init_from_datastore_file", None)
    if callable(reload):
        reload()


def _update_info(datastore: Datastore, image_id: str, key: str, entry: str, value: Any) -> None:
    """``info[key][entry] = value`` for ``image_id`` (other entries of ``info[key]`` kept)."""
    _reload(datastore)
    current = datastore.get_image_info(image_id).get(key)
    merged = dict(current) if isinstance(current, Mapping) else {}
    merged[entry] = value
    datastore.update_image_info(image_id, {key: merged})


def remember_box(datastore: Datastore, image_id: str, bundle: str, box: Any) -> bool:
    """Store the user's box for ``bundle`` in the image info (``info["box"][bundle]``); returns whether it was stored.

    Args:
        datastore: the app's datastore.
        image_id: a datastore image id.
        bundle: the bundle name.
        box: ``[[start...], [stop...]]`` voxel indices as stored (what the infer task reports as ``box``); anything
            else is not stored.
    """
    parsed = parsed_box(box)
    if parsed is None:
        return False
    try:
        _update_info(datastore, image_id, BOX_INFO_KEY, bundle, parsed)
    except Exception as err:  # the inference succeeded; a datastore that cannot store info must not fail it
        logger.warning("could not store the box of %s for %s: %s", image_id, bundle, err)
        return False
    logger.info("stored the box %s of %s for %s", parsed, image_id, bundle)
    return True


@dataclass
class CaseInput:
    """One image's network input: ``x`` ``(1, C, *spatial)`` float32, the ``box`` used (``[[start], [stop]]`` voxel
    indices as stored) and where it came from (``box_source``: ``"user"`` or ``"image"``, the whole extent)."""

    x: torch.Tensor
    box: list[list[int]]
    box_source: str


@dataclass
class ScoreRun:
    """What :meth:`CaseScorer.score` did: ``records`` by image id, ids ``reused`` from the datastore, ``skipped``
    ids with their reasons."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _reason(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _input_channels(metadata: Mapping[str, Any]) -> int | None:
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    image: Any = next(iter(inputs.values()), {}) if isinstance(inputs, Mapping) else {}
    channels = image.get("num_channels") if isinstance(image, Mapping) else None
    return channels if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0 else None


def _is_fresh(
    record: Mapping[str, Any],
    strategy: str,
    path: Path,
    mtime: int,
    user_box: list[list[int]] | None,
    seed: int,
    samples: int,
) -> bool:
    """Whether a stored score record was made by ``strategy`` with these weights (path and mtime) and this box
    (the user's, or the whole image when the user never boxed it), ``seed`` and ``samples`` (``entropy``: any)."""
    if isinstance(record.get("score"), bool) or not isinstance(record.get("score"), int | float):
        return False
    box_ok = (
        record.get("box_source") == "user" and record.get("box") == user_box
        if user_box is not None
        else record.get("box_source") == "image"
    )
    return (
        box_ok
        and record.get("strategy") == strategy
        and record.get("weights") == str(path)
        and record.get("weights_mtime_ns") == mtime
        and (strategy == "entropy" or (record.get("seed") == seed and record.get("samples") == samples))
    )


class CaseScorer:
    """Network inputs and scores of datastore images for one active-learning bundle (shared by its strategies and
    scoring methods).

    Args:
        task: the bundle's infer task (its pre-transforms, network template and weights are used as they are).
        device: where the network runs (default: CUDA when available, else the CPU).

    Raises:
        ValueError: the bundle's pre-processing reads no box (a strategy needs the box crop as network input).
    """

    def __init__(self, task: BundleInteractionInferTask, device: str | torch.device | None = None) -> None:
        if task.box_key is None:
            raise ValueError(
                f"bundle {task.bundle.name}: active-learning strategies need a pre-processing with a box transform "
                "(kind box_scribbles)"
            )
        self.task = task
        self.bundle = task.bundle.name
        self.box_key: str = task.box_key
        self.channels = _input_channels(task.bundle.metadata())
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self._network: tuple[tuple[str, int], nn.Module] | None = None
        self.lock = threading.Lock()

    def weights(self) -> tuple[Path, int]:
        """The weights file the infer task uses now and its modification time (ns).

        Raises:
            FileNotFoundError: no weights file.
        """
        path = self.task.get_path()
        if not path:
            raise FileNotFoundError(f"bundle {self.bundle} has no weights file ({self.task.path})")
        return Path(path), Path(path).stat().st_mtime_ns

    def network(self) -> tuple[nn.Module, Path, int]:
        """A copy of the infer task's network with the current weights (reloaded when the file changes)."""
        path, mtime = self.weights()
        key = (str(path), mtime)
        if self._network is None or self._network[0] != key:
            network = copy.deepcopy(self.task.network)
            load_weights(network, path, self.device)
            network.to(self.device).eval()
            self._network = (key, network)
            logger.info("%s: scoring with %s", self.bundle, path)
        return self._network[1], path, mtime

    def network_input(self, image: str, box: list[list[int]] | None) -> CaseInput:
        """The bundle's pre-processing of ``image`` inside ``box`` (``None``: the whole image extent).

        The transforms are the infer task's own, run one by one; right before the box transform, a missing box
        becomes ``[[0, ...], spatial shape]`` of the loaded image. The network input is the first ``num_channels``
        channels (``metadata.json`` ``network_data_format.inputs.image.num_channels``) of the pre-processed image,
        as the bundle's inferer feeds the network (the scribble codes follow).

        Raises:
            Exception: whatever the transforms raise for this image (unreadable file, box outside the image, ...).
        """
        data: dict[Any, Any] = {self.task.input_key: image}
        if box is not None:
            data[self.box_key] = box
        for transform in self.task.pre_transforms():
            if getattr(transform, "box_key", None) == self.box_key and data.get(self.box_key) is None:
                keys = getattr(transform, "keys", (self.task.input_key,))
                shape = tuple(int(n) for n in data[keys[0]].shape[1:])
                data[self.box_key] = [[0] * len(shape), list(shape)]
            data = transform(data)
            if not isinstance(data, dict):
                raise ValueError(f"the bundle's pre-processing returned {type(data).__name__}, not a dict")
        raw = data[self.task.input_key]
        tensor = raw.as_tensor() if isinstance(raw, MetaTensor) else torch.as_tensor(raw)
        x = tensor[None, : self.channels].float() if self.channels else tensor[None].float()
        used = parsed_box(data.get(self.box_key))
        if used is None:
            raise ValueError(f"the bundle's box transform left no parsed box (got {data.get(self.box_key)!r})")
        return CaseInput(x, used, "user" if box is not None else "image")

    def candidates(self, request: Mapping[str, Any], datastore: Datastore) -> list[str]:
        """The datastore's images without a final label, sorted by id (MONAI Label's ``first`` order)."""
        return sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))

    def score(
        self,
        name: str,
        strategy: str,
        images: Sequence[str],
        datastore: Datastore,
        seed: int,
        samples: int,
        reuse: bool = True,
        store: bool = False,
    ) -> ScoreRun:
        """Score ``images`` (each pre-processed; unreadable ones skipped with a logged reason).

        Args:
            name: the method name (key of the stored records).
            strategy: a :data:`STRATEGIES` name.
            images: datastore image ids, in candidate order.
            datastore: the datastore.
            seed / samples: see :func:`request_options`.
            reuse: take a fresh stored record instead of running the network (network strategies only).
            store: store each new record in the image info.
        """
        run = ScoreRun()
        with self.lock:
            network: nn.Module | None = None
            if strategy in NETWORK_STRATEGIES:
                network, path, mtime = self.network()
            else:
                path, mtime = self.weights()
            valid: list[tuple[str, CaseInput]] = []
            for image_id in images:
                info = datastore.get_image_info(image_id)
                user_box = stored_box(info, self.bundle)
                scores = info.get(SCORES_INFO_KEY)
                record = scores.get(name) if isinstance(scores, Mapping) else None
                if (
                    reuse
                    and strategy in NETWORK_STRATEGIES
                    and isinstance(record, Mapping)
                    and _is_fresh(record, strategy, path, mtime, user_box, seed, samples)
                ):
                    run.records[image_id] = dict(record)
                    run.reused.append(image_id)
                    continue
                try:
                    case = self.network_input(datastore.get_image_uri(image_id), user_box)
                    if strategy in NETWORK_STRATEGIES:
                        value = float(score_cases(strategy, network, [case.x], seed=seed, samples=samples)[0])
                        run.records[image_id] = self._record(strategy, value, path, mtime, case, seed, samples)
                    else:
                        valid.append((image_id, case))
                except Exception as err:
                    run.skipped[image_id] = _reason(err)
                    logger.warning("%s: skipping image %s: %s", name, image_id, run.skipped[image_id])
            if valid:
                values = score_cases(strategy, None, [case.x for _, case in valid], seed=seed, samples=samples)
                for (image_id, case), value in zip(valid, values, strict=True):
                    run.records[image_id] = self._record(strategy, float(value), path, mtime, case, seed, samples)
        if store:
            for image_id, record in run.records.items():
                if image_id not in run.reused:
                    try:
                        _update_info(datastore, image_id, SCORES_INFO_KEY, name, record)
                    except Exception as err:
                        logger.warning("%s: could not store the score of %s: %s", name, image_id, _reason(err))
        return run

    def _record(
        self, strategy: str, value: float, path: Path, mtime: int, case: CaseInput, seed: int, samples: int
    ) -> dict[str, Any]:
        return {
            "score": value,
            "strategy": strategy,
            "bundle": self.bundle,
            "weights": str(path),
            "weights_mtime_ns": mtime,
            "box": case.box,
            "box_source": case.box_source,
            "samples": samples,
            "seed": seed,
            "ts": int(time.time()),
        }

    def first_readable(
        self, name: str, images: Sequence[str], datastore: Datastore, run: ScoreRun
    ) -> tuple[str, CaseInput] | None:
        """The first of ``images`` whose pre-processing succeeds, with its input (the others skipped into ``run``)."""
        for image_id in images:
            try:
                box = stored_box(datastore.get_image_info(image_id), self.bundle)
                return image_id, self.network_input(datastore.get_image_uri(image_id), box)
            except Exception as err:
                run.skipped[image_id] = _reason(err)
                logger.warning("%s: skipping image %s: %s", name, image_id, run.skipped[image_id])
        return None


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; strategies: {list(STRATEGIES)}")


def _with_bundle(info: dict[str, Any], scorer: CaseScorer, strategy: str) -> dict[str, Any]:
    """A task's MONAI Label info with the bundle and the strategy added."""
    info.update(bundle=scorer.bundle, strategy=strategy)
    return info


class BundleStrategy(Strategy):
    """``POST /activelearning/<name>``: the unlabelled image ``strategy`` scores highest (see the module docstring).

    Args:
        name: the MONAI Label name (see :func:`method_names`).
        strategy: a :data:`STRATEGIES` name.
        scorer: the bundle's :class:`CaseScorer`.
    """

    def __init__(self, name: str, strategy: str, scorer: CaseScorer) -> None:
        _check_strategy(strategy)
        super().__init__(f"{_DESCRIPTIONS[strategy]} ({scorer.bundle}; unlabelled images, inside the user's box)")
        self.name, self.strategy, self.scorer = name, strategy, scorer

    def info(self) -> dict[str, Any]:
        """MONAI Label's strategy info plus the bundle and the strategy."""
        return _with_bundle(super().info(), self.scorer, self.strategy)

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """The next image to annotate, or ``None`` (MONAI Label answers ``{}``) when no unlabelled image is left.

        Raises:
            ValueError: bad ``seed`` / ``samples``.
        """
        seed, samples = request_options(request, self.strategy)
        images = self.scorer.candidates(request, datastore)
        if not images:
            logger.info("%s: no unlabelled image left", self.name)
            return None
        if self.strategy in NETWORK_STRATEGIES:
            run = self.scorer.score(self.name, self.strategy, images, datastore, seed, samples)
            ranked = [i for i in images if i in run.records]
            best = max(ranked, key=lambda i: run.records[i]["score"], default=None)  # ties: the first in id order
        else:
            placeholders = [torch.zeros((1, 1, 1, 1, 1))] * len(images)
            values = score_cases(self.strategy, None, placeholders, seed=seed, samples=samples)
            order = [images[int(i)] for i in np.argsort(-values, kind="stable")]
            run = ScoreRun()
            found = self.scorer.first_readable(self.name, order, datastore, run)
            best = found[0] if found else None
            if found is not None:
                score = float(values[images.index(found[0])])
                run.records[found[0]] = {"score": score, "box": found[1].box, "box_source": found[1].box_source}
        if best is None:
            logger.warning(
                "%s: none of the %d unlabelled images could be read: %s", self.name, len(images), run.skipped
            )
            return None
        record = run.records[best]
        weights, _ = self.scorer.weights()
        result = {
            "id": best,
            "score": record["score"],
            "scored_with": {
                "strategy": self.strategy,
                "bundle": self.scorer.bundle,
                "weights": str(weights) if self.strategy in NETWORK_STRATEGIES else None,
                "box": record.get("box"),
                "box_source": record.get("box_source"),
            },
            "candidates": len(images),
            "skipped": run.skipped,
            "reused": len(run.reused),
        }
        logger.info("%s: selected %s (score %s)", self.name, best, record["score"])
        return result


class BundleScoring(ScoringMethod):
    """``POST /scoring/<name>``: score every unlabelled image with ``strategy`` and store the records (see the module
    docstring; MONAI Label's ``EpistemicScoring`` is the model).

    Args:
        name: the MONAI Label name (see :func:`method_names`).
        strategy: a :data:`STRATEGIES` name.
        scorer: the bundle's :class:`CaseScorer`.
    """

    def __init__(self, name: str, strategy: str, scorer: CaseScorer) -> None:
        _check_strategy(strategy)
        super().__init__(f"stores the {strategy} score of every unlabelled image ({scorer.bundle})")
        self.name, self.strategy, self.scorer = name, strategy, scorer

    def info(self) -> dict[str, Any]:
        """MONAI Label's scoring info plus the bundle and the strategy."""
        return _with_bundle(super().info(), self.scorer, self.strategy)

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Score and store; returns ``{"method", "strategy", "bundle", "weights", "scores": {id: score}, "reused":
        [ids], "skipped": {id: reason}}``.

        Raises:
            ValueError: bad ``seed`` / ``samples`` / ``force``.
        """
        seed, samples = request_options(request, self.strategy)
        force = request.get("force", False)
        if not isinstance(force, bool):
            raise ValueError(f"force must be true or false, got {force!r}")
        images = self.scorer.candidates(request, datastore)
        logger.info("%s: scoring %d unlabelled images", self.name, len(images))
        run = self.scorer.score(self.name, self.strategy, images, datastore, seed, samples, reuse=not force, store=True)
        weights, _ = self.scorer.weights()
        result = {
            "method": self.name,
            "strategy": self.strategy,
            "bundle": self.scorer.bundle,
            "weights": str(weights),
            "scores": {i: r["score"] for i, r in run.records.items()},
            "reused": run.reused,
            "skipped": run.skipped,
        }
        logger.info(
            "%s: %d scored (%d reused), %d skipped", self.name, len(run.records), len(run.reused), len(run.skipped)
        )
        return result


_DESCRIPTIONS: dict[str, str] = {
    "random": "a random unlabelled image (seeded)",
    "first": "the first unlabelled image by id",
    "last": "the last unlabelled image by id",
    "entropy": "the highest mean predictive entropy",
    "mc_dropout": "the highest MC-dropout variance",
    "tta": "the highest test-time-augmentation (flip) variance",
}


def build_active_learning(
    tasks: Mapping[str, BundleInteractionInferTask], taken: Collection[str] = ()
) -> tuple[dict[str, BundleStrategy], dict[str, BundleScoring]]:
    """Strategies and scoring methods of the active-learning bundles among ``tasks`` (bundle name -> infer task).

    A bundle takes part when its metadata has ``"monailabel": {"retrain_from": ...}``; one without a box transform
    is left out with a warning. Names: :func:`method_names` (``taken``: MONAI Label's own strategies).
    """
    scorers: dict[str, CaseScorer] = {}
    for name, task in sorted(tasks.items()):
        if task.bundle.retrain_from is None:
            continue
        try:
            scorers[name] = CaseScorer(task)
        except ValueError as err:
            logger.warning("no active-learning strategies for %s: %s", name, err)
    names = method_names(list(scorers), taken)
    strategies = {n: BundleStrategy(n, s, scorers[b]) for n, (b, s) in names.items()}
    scoring = {n: BundleScoring(n, s, scorers[b]) for n, (b, s) in names.items()}
    return strategies, scoring
