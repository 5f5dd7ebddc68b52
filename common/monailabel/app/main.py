"""MONAI Label entry point: MONAI Label loads this file and instantiates the ``MONAILabelApp`` subclass found here.

Start the server with ``monailabel start_server --app common/monailabel/app --studies STUDIES_DIR`` (options:
``--conf bundles DIR``, ``--conf models a,b``, ``--conf kinds name:kind``, ``--conf models_dir DIR``; see
:mod:`common.monailabel.application`).
"""

from __future__ import annotations

from common.monailabel.application import InteractiveSegApp

__all__ = ["InteractiveSegApp"]
