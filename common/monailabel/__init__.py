"""MONAI Label app that serves this repository's bundles to viewers (3D Slicer, OHIF) over REST.

MONAI Label's stock ``monaibundle`` app knows a bundle's interaction only from its folder name and passes only the
image to the network; slice propagation (the user's annotated slices) and, later, box + scribbles, fine-tuning and
active learning need an app of their own. This package is that app:

- :mod:`~common.monailabel.kinds`: the *interaction kinds* registry. A kind turns a viewer's request (clicks, an
  uploaded label with annotated slices, ...) into the datalist item a bundle's ``inference.json`` reads. New
  interactions (box + scribbles, ...) register a kind; nothing else changes.
- :mod:`~common.monailabel.bundles`: which bundles are served, under which kind (folder name -> kind, extendable
  with ``--conf kinds``).
- :mod:`~common.monailabel.studies`: a MONAI Label studies folder from an MSD dataset (embedded phantoms by default).
- :mod:`~common.monailabel.params`: what a viewer may put in ``params`` (checked before anything runs).
- :mod:`~common.monailabel.memory`: the last result sent per model, image and segment, to tell a viewer's corrections
  from the result (the correction round trip).
- :mod:`~common.monailabel.infer`, :mod:`~common.monailabel.train`, :mod:`~common.monailabel.application`: the
  MONAI Label task and app classes (these import ``monailabel``, an optional extra: ``pip install -e ".[label]"``).
- :mod:`~common.monailabel.routes`, :mod:`~common.monailabel.datastore`: the app's own ``/infer`` and datastore
  ``PUT`` routes and a datastore that checks tags, ids and labels (import ``monailabel``).
- :mod:`~common.monailabel.strategies`: active-learning query strategies and scoring methods for the bundles with a
  ``"monailabel": {"retrain_from": ...}`` metadata section (imports ``monailabel``).
- ``common/monailabel/app/``: the app folder for ``monailabel start_server --app``.
- :mod:`~common.monailabel.server`: a MONAI Label server as a subprocess (own process group and ``TMPDIR``, started
  until ``/info/`` answers, stopped with its children), MONAI Label's sample apps and a torchvision shim for them; for
  the benchmark and the server tests (runs ``monailabel`` in the subprocess only).

Names load on first access (PEP 562) and only the task, app, route and datastore modules import ``monailabel``, so
``import common.monailabel`` and the other modules work without the extra.
"""

from __future__ import annotations

from common._lazy import lazy_exports

__all__ = [
    "DEFAULT_BUNDLE_KINDS",
    "InteractionKind",
    "ServedBundle",
    "discover_bundles",
    "get_kind",
    "kinds",
    "prepare_studies",
    "register_kind",
]

_SOURCES = {
    "InteractionKind": "kinds",
    "get_kind": "kinds",
    "kinds": "kinds",
    "register_kind": "kinds",
    "DEFAULT_BUNDLE_KINDS": "bundles",
    "ServedBundle": "bundles",
    "discover_bundles": "bundles",
    "prepare_studies": "studies",
}

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, __all__)
