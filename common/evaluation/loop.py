"""The one interactive-evaluation loop every method reports through: robot user x model adapter x cases."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from common.data.geometry import axial_axis
from common.evaluation.cases import CaseInfo, EvalCase
from common.evaluation.metrics import evaluate_all
from common.evaluation.plots import plot_metric_curves
from common.evaluation.records import (
    RoundRecord,
    summarise,
    write_json,
    write_records_csv,
    write_records_json,
)
from common.interaction.robot import RobotUser
from common.interaction.state import InteractionState

__all__ = ["RESULT_FILES", "EvaluationResult", "ModelAdapter", "run_interactive_evaluation"]

logger = logging.getLogger(__name__)

#: Files written into ``out_dir`` (and nothing else).
RESULT_FILES: dict[str, str] = {
    "rounds_csv": "rounds.csv",
    "rounds_json": "rounds.json",
    "summary": "summary.json",
    "interactions": "interactions.json",
    "plot": "curves.png",
}


@runtime_checkable
class ModelAdapter(Protocol):
    """A method under evaluation: image + everything the user gave -> binary prediction.

    ``__call__(image, state, case)``:

    - ``image``: ``(H, W, D)`` float32, read-only, indexed as stored in the NIfTI file.
    - ``state``: a private copy of the :class:`InteractionState` (clicks as ``(i, j, k)`` voxel indices, slices...).
    - ``case``: :class:`CaseInfo` (case id, spacing in mm, structure, group, affine), deliberately without the
      ground truth.
    - returns a binary ``(H, W, D)`` array (bool or 0/1; numpy or torch) for the structure.

    An adapter may also define ``reset(case: CaseInfo) -> None``; the loop then calls it before the first round
    of every case/structure (e.g. to restore weights after test-time fine-tuning, or to clear caches). An optional
    ``name`` attribute is used in error messages.
    """

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray: ...


@dataclass
class EvaluationResult:
    """Everything one evaluation run produced.

    Attributes:
        method: the method name.
        records: one :class:`RoundRecord` per case x structure x round (carried rows included).
        summary: :func:`common.evaluation.records.summarise` output plus a ``"run"`` block (robot, rounds...).
        interactions: per case/structure: the final :meth:`InteractionState.to_json` and the round the user
            stopped at (``None`` if they never stopped).
        files: written files by key of :data:`RESULT_FILES` (empty if no ``out_dir``).
    """

    method: str
    records: list[RoundRecord]
    summary: dict[str, Any]
    interactions: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def _adapter_name(adapter: Any) -> str:
    return str(getattr(adapter, "name", None) or type(adapter).__name__)


def _validate_prediction(out: Any, case: EvalCase, adapter: Any, rnd: int) -> np.ndarray:
    """Check the adapter's output: array of the label's shape, binary, no NaN; return it as uint8."""
    where = f"adapter {_adapter_name(adapter)!r} on case {case.case_id} structure {case.structure_name!r} round {rnd}"
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{where} returned {type(out).__name__}; expected a numpy array of shape {case.label.shape}.")
    if out.shape != case.label.shape:
        raise ValueError(
            f"{where} returned shape {out.shape}; expected {case.label.shape} (H, W, D) without channel/batch dims."
        )
    if out.dtype == bool:
        return out.astype(np.uint8)
    if not np.issubdtype(out.dtype, np.number):
        raise ValueError(f"{where} returned dtype {out.dtype}; expected bool or 0/1 numbers.")
    if np.issubdtype(out.dtype, np.floating) and np.isnan(out).any():
        raise ValueError(f"{where} returned NaN values.")
    if not np.isin(out, (0, 1)).all():
        values = np.unique(out)[:5].tolist()
        raise ValueError(f"{where} returned non-binary values (e.g. {values}); threshold/argmax it first.")
    return out.astype(np.uint8)


def _record(
    method: str, case: EvalCase, rnd: int, n_inter: int, metrics: dict[str, float], seconds: float, carried: bool
) -> RoundRecord:
    return RoundRecord(
        method=method,
        case_id=case.case_id,
        structure=case.structure,
        structure_name=case.structure_name,
        group=case.group,
        round=rnd,
        n_interactions=n_inter,
        dice=metrics["dice"],
        hd95=metrics["hd95"],
        msd=metrics["msd"],
        seconds=seconds,
        carried=carried,
    )


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in RESULT_FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"result files already exist: {existing}; pass overwrite=True to replace them.")
    return paths


def run_interactive_evaluation(
    cases: Iterable[EvalCase],
    adapter: ModelAdapter,
    robot: RobotUser,
    n_rounds: int,
    out_dir: Path | None = None,
    method: str = "method",
    progress: bool = True,
    overwrite: bool = False,
) -> EvaluationResult:
    """Evaluate ``adapter`` with a simulated user for ``n_rounds`` interaction rounds on every case.

    Per case and structure: ``robot.reset`` (with the case's affine, from which slice-wise robots find the stored
    axial axis); the state starts empty (its ``axis`` the robot's slice axis) and the prediction all zeros; then for
    round
    ``r = 1..n_rounds``: ``state = robot.next_interaction(label, prediction, state)``, ``prediction =
    adapter(image, state, case.info)`` (timed), and Dice / HD95 / MSD of the prediction are recorded. When the
    robot returns ``None`` (nothing left to correct) the user has stopped: the remaining rounds are recorded
    with the last metrics carried forward, ``carried=True`` and ``seconds=0``, so every case has every round and
    curves stay comparable (if the user stops before any prediction, the carried metrics are those of the empty
    prediction).

    Args:
        cases: evaluation cases (e.g. :func:`common.evaluation.cases.load_eval_cases`); a (case_id, structure)
            pair may appear only once.
        adapter: the method, see :class:`ModelAdapter`.
        robot: the simulated user.
        n_rounds: number of interaction rounds (>= 1).
        out_dir: if given, write :data:`RESULT_FILES` there (the folder is created; nothing is written outside).
        method: method name written into every record.
        progress: show a tqdm progress bar.
        overwrite: replace existing result files in ``out_dir`` instead of raising.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        ValueError: bad ``n_rounds``/``method``, no cases, a duplicate case/structure, or an invalid adapter output
            (wrong shape, not binary, NaN; the message names adapter, case, structure and round).
        FileExistsError: result files already in ``out_dir`` and ``overwrite`` is False (checked before running).
        RuntimeError: a robot returned a state without incrementing ``n_interactions``.
    """
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise ValueError(f"n_rounds must be an int >= 1, got {n_rounds!r}.")
    if not method or not isinstance(method, str):
        raise ValueError(f"method must be a non-empty string, got {method!r}.")
    paths = _prepare_out_dir(Path(out_dir), overwrite) if out_dir is not None else {}

    records: list[RoundRecord] = []
    interactions: list[dict[str, Any]] = []
    seen_pairs: set[tuple[str, int]] = set()
    reset_adapter = getattr(adapter, "reset", None)
    for case in tqdm(cases, desc=f"eval {method}", unit="structure", disable=not progress):
        pair = (case.case_id, case.structure)
        if pair in seen_pairs:
            raise ValueError(f"case {case.case_id} structure {case.structure} appears twice in the evaluation cases.")
        seen_pairs.add(pair)
        if callable(reset_adapter):
            reset_adapter(case.info)
        robot.reset(case.image, case.label, case.spacing, affine=case.affine)
        state = InteractionState(axis=int(getattr(robot, "slice_axis", axial_axis(case.affine))))
        prediction = np.zeros(case.label.shape, dtype=np.uint8)
        last: dict[str, float] | None = None
        stopped_round: int | None = None

        for rnd in range(1, n_rounds + 1):
            if stopped_round is None:
                new_state = robot.next_interaction(case.label, prediction, state)
                if new_state is None:
                    stopped_round = rnd
                    logger.debug("%s %s: user stopped before round %d", case.case_id, case.structure_name, rnd)
                else:
                    if new_state.n_interactions <= state.n_interactions:
                        raise RuntimeError(
                            f"robot {robot.name!r} returned a state without a new interaction (n_interactions "
                            f"{new_state.n_interactions}) for case {case.case_id} round {rnd}."
                        )
                    state = new_state
                    t0 = time.perf_counter()
                    out = adapter(case.image, state.copy(), case.info)
                    seconds = time.perf_counter() - t0
                    prediction = _validate_prediction(out, case, adapter, rnd)
                    last = evaluate_all(prediction, case.label, case.spacing)
                    records.append(_record(method, case, rnd, state.n_interactions, last, seconds, carried=False))
                    continue
            if last is None:  # stopped before any prediction: carry the empty prediction's metrics
                last = evaluate_all(prediction, case.label, case.spacing)
            records.append(_record(method, case, rnd, state.n_interactions, last, 0.0, carried=True))
        if last is not None:
            logger.debug("%s %s: final dice %.4f", case.case_id, case.structure_name, last["dice"])
        interactions.append(
            {
                "case_id": case.case_id,
                "structure": case.structure,
                "structure_name": case.structure_name,
                "group": case.group,
                "stopped_before_round": stopped_round,
                "state": state.to_json(),
            }
        )
    if not records:
        raise ValueError("no evaluation cases were given.")

    summary = summarise(records)
    summary["run"] = {
        "method": method,
        "adapter": _adapter_name(adapter),
        "robot": robot.config(),
        "n_rounds": n_rounds,
        "n_cases": len({r.case_id for r in records}),
        "n_structures": len(seen_pairs),
    }
    result = EvaluationResult(method=method, records=records, summary=summary, interactions=interactions)
    if paths:
        write_records_csv(records, paths["rounds_csv"])
        write_records_json(records, paths["rounds_json"])
        write_json(summary, paths["summary"])
        write_json(interactions, paths["interactions"])
        plot_metric_curves(summary, paths["plot"], title=f"{method} ({robot.name}, {n_rounds} rounds)")
        result.files = paths
        logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return result
