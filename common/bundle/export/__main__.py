"""``python -m common.bundle.export``: the command line of :mod:`common.bundle.export.cli`."""

from __future__ import annotations

from common.bundle.export.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
