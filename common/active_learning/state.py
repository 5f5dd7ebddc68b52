"""On-disk state of the active-learning loop: what was annotated, skipped and retrained, and the RNG state.

Layout of a loop's ``state_dir``::

    state.json                  # LoopState (written atomically after every case and every retraining)
    labels/<case key>.nii.gz    # each corrected label, written once, never overwritten
    labels/<case key>.json      # its annotation record (written before the label: a label with a record is complete)
    models/round_<k>.pt         # the weights retrained after round k
    report.json, report.md, learning_curves.png

A loop interrupted at any point resumes from ``state.json``: cases annotated before the interruption keep their
labels (a label whose record exists but that ``state.json`` does not list yet is adopted, not redone), a retraining
that did not finish is run again from the same inputs and seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.jsonio import write_json_atomic

__all__ = ["STATE_VERSION", "LoopState", "write_json_atomic"]  # write_json_atomic: re-exported from common.jsonio

STATE_VERSION = 1


@dataclass
class LoopState:
    """Everything the loop needs to resume.

    Attributes:
        settings: the loop's settings (a resumed loop must have the same ones).
        pool: case keys of the pool, in the given order.
        remaining: keys not yet annotated or skipped, in pool order.
        annotated: one record per corrected case, in annotation order (``key``, ``label``, ``score``, Dice per round,
            interactions, ...).
        skipped: ``{"key", "reason"}`` per case the loop could not use (unreadable, no usable label).
        models: one entry per model: round 0 is the general model, then one per retraining (``round``, ``cases``,
            ``weights``, ``heldout`` Dice, ``retrain`` figures).
        rng: the state of the loop's ``numpy.random.Generator`` (PCG64) after the last step.
    """

    settings: dict[str, Any]
    pool: list[str]
    remaining: list[str]
    annotated: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    @classmethod
    def new(cls, settings: dict[str, Any], pool: list[str], seed: int) -> LoopState:
        """A fresh state over ``pool`` with the RNG seeded by ``seed``."""
        return cls(
            settings=settings,
            pool=list(pool),
            remaining=list(pool),
            rng=dict(np.random.default_rng(seed).bit_generator.state),
        )

    def generator(self) -> np.random.Generator:
        """A generator in the stored state (draws from it must be stored back with :meth:`keep`)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng
        return rng

    def keep(self, rng: np.random.Generator) -> None:
        """Store ``rng``'s state."""
        self.rng = dict(rng.bit_generator.state)

    def save(self, path: str | Path) -> Path:
        """Write the state atomically."""
        return write_json_atomic(asdict(self), path)

    @classmethod
    def load(cls, path: str | Path) -> LoopState:
        """Read a state written by :meth:`save`.

        Raises:
            ValueError: the file is not a loop state of this version (the message names the file).
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {STATE_VERSION}")
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path} is not a readable active-learning loop state: {err}") from err

    @property
    def cases_in_last_model(self) -> int:
        """Corrected cases the newest model was trained on (0: the general model)."""
        return int(self.models[-1]["cases"]) if self.models else 0
