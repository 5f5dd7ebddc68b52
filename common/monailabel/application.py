"""The MONAI Label app: serves this repository's bundles for inference and training.

Started by ``monailabel start_server --app common/monailabel/app --studies DIR`` (the app folder's ``main.py``
only imports :class:`InteractiveSegApp`). Options, as ``--conf KEY VALUE`` pairs:

``bundles``
    folder holding the bundles (default: the repository's ``bundles/`` next to the installed ``common``).
``models``
    comma-separated bundle names to serve (default: every complete bundle with an interaction kind).
``kinds``
    extra bundle-to-kind mapping, ``"my_bundle:clicks"`` or a JSON object (see :mod:`common.monailabel.bundles`).
``models_dir``
    where training writes weights, one ``<bundle>/model.pt`` each (default: the app folder's ``model/``).
``preload``
    ``true`` loads every network at start (default ``false``: on the first request).
``threads``
    torch threads per inference (default: half the usable cores, at least 1); inferences run one at a time.
``auto_scoring``
    ``true`` lets MONAI Label run every scoring method at start and after each ``/activelearning`` and ``/train``
    request (its ``MONAI_LABEL_AUTO_UPDATE_SCORING``); default ``false``: scoring runs when ``/scoring/<name>`` is
    asked for (each run scores every unlabelled image with the network).

Active learning (:mod:`common.monailabel.strategies`): for each served bundle whose metadata has
``"monailabel": {"retrain_from": ...}``, ``/activelearning/<name>`` and ``/scoring/<name>`` for every query strategy
(next to MONAI Label's own ``random`` and ``first``); a box inference on a datastore image stores the user's box in
the image info (``info["box"][<bundle>]``), so that strategies and scoring look inside it.

Errors a user can fix get a 4xx answer with the reason in ``detail``: 404 for an unknown model, image id, session,
strategy or scoring method (the detail lists the names), 400 for malformed or forbidden ``params``
(:mod:`common.monailabel.params`), an upload that is not an image, or a request the interaction kind or the bundle's
input checks reject (missing upload, clicks outside the image, annotation on another grid, bad strategy options,
...), 422 for a graph cut that ran out of time. The app's own routes (:mod:`common.monailabel.routes`) serve
``POST /infer/{model}`` and the datastore's ``PUT`` requests, and its datastore
(:class:`~common.monailabel.datastore.CheckedDatastore`) checks tags, ids and labels: see the README's security
section.

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, Match
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import common
from common.monailabel.bundles import ServedBundle, discover_bundles, parse_kinds, parse_names
from common.monailabel.datastore import CheckedDatastore
from common.monailabel.infer import BundleInteractionInferTask
from common.monailabel.params import DEFAULT_SAVE_TAG, check_label_tag
from common.monailabel.routes import AddImageRoute, InferRoute, SaveLabelRoute, install_first
from common.monailabel.strategies import BundleScoring, BundleStrategy, build_active_learning, remember_box
from common.monailabel.studies import LABELS_FILE
from common.monailabel.train import BundleInteractionTrainTask
from common.refinement.graphcut import GraphCutTimeout

__all__ = [
    "InteractiveSegApp",
    "UnknownNameRoute",
    "install_unknown_name_route",
    "parse_threads",
    "read_label_names",
    "usable_cores",
]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


def read_label_names(studies: str) -> dict[int, str] | None:
    """Structure names from ``STUDIES/labels.json`` (written by :mod:`common.monailabel.studies`), if any.

    Raises:
        ValueError: the file exists but is not a ``{"<int>": "<name>"}`` JSON object.
    """
    path = Path(studies) / LABELS_FILE
    if studies.startswith(("http://", "https://")) or not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError
        return {int(k): str(v) for k, v in raw.items()}
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f'{path} must be a JSON object {{"<label value>": "<name>"}}: {err}') from err


class UnknownNameRoute(APIRoute):
    """A route that answers ``POST <prefix>/{name}`` with 404 (and the known names) for a name not in ``names()``.

    It matches only unknown names, so known ones reach MONAI Label's own endpoint unchanged. MONAI Label's
    ``/scoring/<method>`` starts a background process before the app sees the method name (an unknown name then only
    fails in the task status); this route, put in front of it, refuses the request instead.

    Args:
        prefix: the path before the name, e.g. ``"/scoring"``.
        names: the known names (read at each request).
        what: what a name names, for the message (``"scoring method"``).
    """

    def __init__(self, prefix: str, names: Callable[[], Collection[str]], what: str) -> None:
        self.names = names
        self.what = what
        super().__init__(f"{prefix}/{{name}}", self._refuse, methods=["POST"], include_in_schema=False)

    async def _refuse(self, name: str) -> JSONResponse:
        detail = f"unknown {self.what} {name!r}; {self.what}s: {sorted(self.names())}"
        return JSONResponse({"detail": detail}, status_code=404)

    def matches(self, scope: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Starlette's match, except that known names do not match."""
        match, child = super().matches(scope)
        if match != Match.NONE and child.get("path_params", {}).get("name") in self.names():
            return Match.NONE, {}
        return match, child


class InteractiveSegApp(MONAILabelApp):
    """MONAI Label app serving the bundles of ``--conf bundles`` (see the module docstring for the options).

    Args:
        app_dir: the app folder (MONAI Label creates ``model/``, ``logs/`` ... in it).
        studies: the studies folder or DICOMweb URL.
        conf: the ``--conf`` options.

    Raises:
        FileNotFoundError / ValueError: no bundles folder, a requested bundle missing or incomplete, an unknown
            kind, a bad ``labels.json``, or a bundle config that fails to instantiate.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        self.served: list[ServedBundle] = discover_bundles(
            conf.get("bundles") or None, parse_kinds(conf.get("kinds")), parse_names(conf.get("models"))
        )
        self.models_dir = Path(conf.get("models_dir") or os.path.join(app_dir, "model")).resolve()
        self.label_names = read_label_names(studies)
        self.preload = str(conf.get("preload", "false")).lower() in _TRUE
        self.auto_scoring = str(conf.get("auto_scoring", "false")).lower() in _TRUE
        self.threads = parse_threads(conf.get("threads"))
        torch.set_num_threads(self.threads)
        self._infer_lock = threading.Lock()
        logger.info(
            "serving %s; trained weights in %s; %d torch threads per inference",
            ", ".join(f"{b.name} ({b.kind.name})" for b in self.served),
            self.models_dir,
            self.threads,
        )
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="interactive-seg-bundles",
            description="Interactive segmentation bundles: slice propagation, clicks (DeepGrow), ...",
            version=common.__version__,
        )
        self._auto_update_scoring = bool(getattr(self, "_auto_update_scoring", False) and self.auto_scoring)
        self._install_lifecycle()

    def info(self) -> dict[str, Any]:
        """MONAI Label's ``/info``, with ``train_stats`` holding only models that have trained, newest first.

        3D Slicer shows the first entry of ``train_stats`` in its accuracy bar (``next(iter(...values()))``); an empty
        entry of a model never trained would hide the one that was.
        """
        meta: dict[str, Any] = super().info()
        stats = meta.get("train_stats")
        if isinstance(stats, dict):
            trained = [(name, s) for name, s in stats.items() if isinstance(s, dict) and s]
            trained.sort(key=lambda item: item[1].get("start_ts") or 0, reverse=True)
            meta["train_stats"] = dict(trained)
        return meta

    def init_datastore(self) -> Datastore:
        """A :class:`~common.monailabel.datastore.CheckedDatastore` on a studies folder (MONAI Label's settings);
        MONAI Label's own datastores for DICOMweb, XNAT and DSA."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return CheckedDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def trained_weights(self, bundle: ServedBundle) -> Path:
        """Where training writes ``bundle``'s weights and inference looks for them first."""
        return self.models_dir / bundle.name / "model.pt"

    def init_infers(self) -> dict[str, InferTask]:
        """One infer task per served bundle, named after the bundle folder."""
        return {
            b.name: BundleInteractionInferTask(b, self.trained_weights(b), preload=self.preload) for b in self.served
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        """One train task per served bundle that has a ``configs/train.json``."""
        return {
            b.name: BundleInteractionTrainTask(b, self.trained_weights(b), self.label_names)
            for b in self.served
            if b.train_config.is_file()
        }

    def init_strategies(self) -> dict[str, Strategy]:
        """MONAI Label's ``random`` and ``first``, plus every query strategy of the active-learning bundles."""
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        strategies.update(self._active_learning()[0])
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        """One scoring method per query strategy of the active-learning bundles (same names as the strategies)."""
        return dict(self._active_learning()[1])

    def _active_learning(self) -> tuple[dict[str, BundleStrategy], dict[str, BundleScoring]]:
        """The active-learning strategies and scoring methods, built once (they share one scorer per bundle)."""
        built: tuple[dict[str, BundleStrategy], dict[str, BundleScoring]] | None = getattr(self, "_al_built", None)
        if built is None:
            tasks = {k: v for k, v in self._infers.items() if isinstance(v, BundleInteractionInferTask)}
            built = build_active_learning(tasks, taken=("random", "first"))
            self._al_built = built
        return built

    def on_init_complete(self) -> None:
        """MONAI Label's start-up, after putting the 404 route for unknown scoring methods in front of its own."""
        prefix = settings.MONAI_LABEL_API_STR
        install_unknown_name_route(prefix + "/scoring", lambda: self._scoring_methods, "scoring method")
        for route in (
            InferRoute(prefix),
            SaveLabelRoute(prefix),
            AddImageRoute(prefix),
            AddImageRoute(prefix, "/datastore/"),
        ):
            install_first(route, _same_route(route))
        super().on_init_complete()

    def infer_models(self) -> list[str]:
        """The names of the served models (``/infer/<name>``)."""
        return sorted(self._infers)

    def image_path_of(self, image_id: Any, datastore: Any = None) -> str:
        """The file of datastore image ``image_id`` (in ``datastore``, default: the app's).

        Raises:
            HTTPException: 404 for anything that is not the id of a datastore image (file paths included).
        """
        store = datastore if datastore else self.datastore()
        uri = store.get_image_uri(image_id) if isinstance(image_id, str) and image_id else ""
        if not uri:
            raise HTTPException(
                status_code=404,
                detail=f"unknown image id {image_id!r}: images are datastore ids (GET /datastore/?output=all lists "
                "them), a session_id, or an uploaded file; file paths are not accepted",
            )
        return str(uri)

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer entry point (also used by batch inference): ``request["image"]`` must be a datastore
        image id; see :meth:`run_infer`.

        Raises:
            HTTPException: 404 for an unknown model or image id, 400 for a request the checks reject.
        """
        store = datastore if datastore else self.datastore()
        image = request.get("image")
        return self.run_infer(dict(request), self.image_path_of(image, store), str(image), store)

    def run_infer(
        self, request: dict[str, Any], image_path: str, image_id: str | None, datastore: Any = None
    ) -> dict[str, Any]:
        """Run model ``request["model"]`` on the image file ``image_path`` (one inference at a time).

        Args:
            request: the checked request (:func:`common.monailabel.params.check_params`) with ``model``.
            image_path: a file the server holds: a datastore image, a session's image or an upload.
            image_id: the datastore id of ``image_path`` (``None`` for sessions and uploads: nothing is stored then).
            datastore: the datastore (default: the app's).

        Returns:
            MONAI Label's result: ``{"label", "tag", "file", "params"}``.

        After a successful inference of a datastore image with a box (kind ``box_scribbles``), the box the bundle
        used is stored in the image info (:func:`common.monailabel.strategies.remember_box`); with ``save_label`` the
        result is stored under ``label_tag`` (never ``final``: :func:`~common.monailabel.params.check_params`).

        Raises:
            HTTPException: 404 for an unknown model; 400 for a request the interaction kind or the bundle's checks
                reject; 422 when the graph cut ran out of time.
        """
        model = request.get("model")
        task = self._infers.get(model) if isinstance(model, str) else None
        if task is None:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; models: {self.infer_models()}")
        store = datastore if datastore else self.datastore()
        request.update(image=image_path, description=task.description)
        try:
            with self._infer_lock:
                result_file, result_json = task(request)
        except GraphCutTimeout as err:
            raise HTTPException(status_code=422, detail=str(err)) from err
        except (ValueError, FileNotFoundError) as err:
            logger.info("rejected infer request for %s: %s", model, err)
            raise HTTPException(status_code=400, detail=str(err)) from err
        label_id = result_file
        if image_id is not None and request.get("save_label") and result_file and os.path.exists(result_file):
            tag = check_label_tag(request.get("label_tag") or DEFAULT_SAVE_TAG, allow_final=False)
            label_id = store.save_label(image_id, result_file, tag, {"model": model, "params": result_json})
        if image_id is not None and isinstance(result_json, dict) and result_json.get("box") is not None:
            remember_box(store, image_id, str(model), result_json["box"])
        return {"label": label_id, "tag": DEFAULT_SAVE_TAG, "file": result_file, "params": result_json}

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's active learning, with 404 for an unknown strategy and 400 for bad strategy options."""
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise HTTPException(
                status_code=404, detail=f"unknown strategy {strategy!r}; strategies: {sorted(self._strategies)}"
            )
        try:
            result: dict[str, Any] = super().next_sample(request)
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        return result

    def scoring(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's scoring, with 404 for an unknown method and 400 for bad options (``run_sync`` requests
        answer them; background runs end with the error in the task status)."""
        method = request.get("method")
        if method not in self._scoring_methods:
            raise HTTPException(
                status_code=404,
                detail=f"unknown scoring method {method!r}; scoring methods: {sorted(self._scoring_methods)}",
            )
        try:
            result: dict[str, Any] = super().scoring(request, datastore)
        except ValueError as err:
            raise HTTPException(status_code=400, detail=str(err)) from err
        return result

    def _install_lifecycle(self) -> None:
        """In the server: stop the training processes with it, clean up a killed server's leftovers, refuse (409) a
        training of weights another process trains (:func:`common.monailabel.lifecycle.install_server_guard`)."""
        from common.monailabel.lifecycle import install_server_guard

        install_server_guard(
            {n: t.trained_weights for n, t in self._trainers.items() if isinstance(t, BundleInteractionTrainTask)}
        )


def _same_route(route: APIRoute) -> Callable[[Any], bool]:
    return lambda other: type(other) is type(route) and getattr(other, "path", None) == route.path


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def parse_threads(value: Any) -> int:
    """The ``threads`` option: torch threads per inference (default: half the usable cores, at least 1).

    Inferences run one at a time; half the cores keeps the other half for a training started from the viewer and for
    the server itself (torch's default, every core, made each request 4 to 6 times slower on a busy 2-core machine).

    Raises:
        ValueError: not a positive integer.
    """
    if value is None or value == "":
        return max(1, usable_cores() // 2)
    try:
        threads = int(str(value))
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"--conf threads must be a positive integer, got {value!r}")
    return threads


def install_unknown_name_route(prefix: str, names: Callable[[], Collection[str]], what: str) -> bool:
    """Put an :class:`UnknownNameRoute` first in the running MONAI Label server's routes (once).

    Does nothing outside the server (MONAI Label's background task processes never import ``monailabel.app``).
    Returns whether the route is in place.
    """
    path = f"{prefix}/{{name}}"
    return install_first(
        UnknownNameRoute(prefix, names, what), lambda r: isinstance(r, UnknownNameRoute) and r.path == path
    )
