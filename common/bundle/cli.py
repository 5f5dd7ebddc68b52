"""Run ``python -m monai.bundle`` in a subprocess, as a user would (tests, the demo)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["run_monai_bundle"]


def run_monai_bundle(
    args: Sequence[str],
    cwd: str | Path | None = None,
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python -m monai.bundle ARGS`` with this interpreter, output captured.

    Args:
        args: the ``monai.bundle`` arguments, e.g. ``["run", "--config_file", "...", "--bundle_root", "..."]``.
        cwd: working directory (a bundle must not depend on it).
        timeout: seconds before the run is killed.
        env: variables set on top of the current environment (e.g. ``{"OMP_NUM_THREADS": "2"}``).
        check: raise if the command fails.

    Returns:
        The completed process (``stdout``/``stderr`` as text).

    Raises:
        RuntimeError: ``check`` and a non-zero exit; the message holds the ends of stdout and stderr.
    """
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"monai.bundle {' '.join(args[:1])} failed (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result
