"""The MONAI Label app folder: ``monailabel start_server --app <this folder> --studies DIR``.

Its ``main.py`` only imports :class:`common.monailabel.application.InteractiveSegApp` from the installed ``common``
(no ``sys.path`` changes), so the folder can also be copied anywhere. MONAI Label creates ``model/``, ``lib/``,
``logs/`` and ``bin/`` in the app folder when the server starts.
"""

from __future__ import annotations

__all__: list[str] = []
