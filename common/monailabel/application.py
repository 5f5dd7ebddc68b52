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

Errors a user can fix get a 4xx answer with the reason in ``detail``: 404 for an unknown model or image id, 400
for a request the interaction kind or the bundle's input checks reject (missing upload, clicks outside the image,
annotation on another grid, ...). MONAI Label itself answers malformed ``params`` JSON with 500; the server stays up
in every case.

This module imports ``monailabel`` (the ``label`` extra).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import common
from common.monailabel.bundles import ServedBundle, discover_bundles, parse_kinds, parse_names
from common.monailabel.infer import BundleInteractionInferTask
from common.monailabel.studies import LABELS_FILE
from common.monailabel.train import BundleInteractionTrainTask

__all__ = ["InteractiveSegApp", "read_label_names"]

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
        logger.info(
            "serving %s; trained weights in %s",
            ", ".join(f"{b.name} ({b.kind.name})" for b in self.served),
            self.models_dir,
        )
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="interactive-seg-bundles",
            description="Interactive segmentation bundles: slice propagation, clicks (DeepGrow), ...",
            version=common.__version__,
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

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer, with 404 for an unknown model or image and 400 for a request the checks reject."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; models: {sorted(self._infers)}")
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image):
            store = datastore if datastore else self.datastore()
            if not store.get_image_uri(image):
                raise HTTPException(
                    status_code=404, detail=f"unknown image id {image!r}: see GET /datastore/?output=all for the ids"
                )
        try:
            result: dict[str, Any] = super().infer(request, datastore)
        except (ValueError, FileNotFoundError) as err:
            logger.info("rejected infer request for %s: %s", model, err)
            raise HTTPException(status_code=400, detail=str(err)) from err
        return result
