"""Per-round result records, their CSV/JSON files, and summary statistics over cases.

File formats (written by :func:`common.evaluation.loop.run_interactive_evaluation`, read back by
:func:`read_records`):

- ``rounds.csv``: one row per method x case x structure x round, columns :data:`RECORD_FIELDS`. Undefined
  distances (one mask empty) are written as ``inf``; booleans as ``true`` / ``false``.
- ``rounds.json``: the same rows as a JSON list of objects; undefined distances are ``null`` (strict JSON).
- ``summary.json``: :func:`summarise` output (strict JSON, ``null`` where a statistic is undefined).

Summary statistics (:func:`summarise`) per method, per round, and per group (``"all"`` plus each group such as
``"seen"`` / ``"unseen"``) and per structure name: for each metric ``n_finite``, ``n_undefined`` (number of
non-finite values, i.e. distances of a prediction or label that is empty), and over the finite values only:
``mean``, ``std`` (sample standard deviation, ``ddof=1``; ``null`` for fewer than 2 values), ``median``, ``q25``,
``q75`` (numpy's linear-interpolation percentiles). Undefined values are never averaged in.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.evaluation.metrics import METRIC_NAMES

__all__ = [
    "RECORD_FIELDS",
    "RoundRecord",
    "metric_stats",
    "read_records",
    "summarise",
    "to_jsonable",
    "write_json",
    "write_records_csv",
    "write_records_json",
]

_DISTANCE_METRICS = ("hd95", "msd")


@dataclass(frozen=True)
class RoundRecord:
    """Result of one interaction round for one structure of one case.

    Args:
        method: method name (e.g. the bundle name).
        case_id: case identifier.
        structure: label value of the structure.
        structure_name: its name.
        group: ``"seen"`` / ``"unseen"`` (or any grouping string).
        round: 1-based round index.
        n_interactions: interactions the user had given when this prediction was made.
        dice: Dice of the prediction after this round.
        hd95: symmetric HD95 in mm (``inf`` if undefined).
        msd: symmetric mean surface distance in mm (``inf`` if undefined).
        seconds: wall time of the model adapter call for this round (0 for carried rows).
        carried: True if the user had stopped before this round and the metrics are carried forward from the
            last real round (so curves over rounds stay comparable across cases).
    """

    method: str
    case_id: str
    structure: int
    structure_name: str
    group: str
    round: int
    n_interactions: int
    dice: float
    hd95: float
    msd: float
    seconds: float
    carried: bool


#: Column order of ``rounds.csv`` / key order of ``rounds.json``.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RoundRecord))


def to_jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` for strict JSON: non-finite floats -> ``None``, numpy scalars -> Python,
    tuples -> lists, ``Path`` -> str, dataclasses -> dicts."""
    if isinstance(obj, RoundRecord):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented strict JSON (see :func:`to_jsonable`)."""
    Path(path).write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_records_csv(records: Sequence[RoundRecord], path: Path) -> None:
    """Write records to a CSV file with header :data:`RECORD_FIELDS` (``inf`` for undefined distances)."""
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(RECORD_FIELDS)
        for rec in records:
            row = asdict(rec)
            writer.writerow(
                [("true" if row[k] else "false") if isinstance(row[k], bool) else row[k] for k in RECORD_FIELDS]
            )


def write_records_json(records: Sequence[RoundRecord], path: Path) -> None:
    """Write records as a JSON list of objects (``null`` for undefined distances)."""
    write_json([asdict(r) for r in records], path)


def _parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{where}: cannot parse boolean {value!r}.")


def _record_from_mapping(row: dict[str, Any], where: str) -> RoundRecord:
    missing = [k for k in RECORD_FIELDS if k not in row]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}.")
    try:
        metrics: dict[str, float] = {}
        for m in METRIC_NAMES:
            if row[m] is None:  # JSON null
                if m not in _DISTANCE_METRICS:
                    raise ValueError(f"{m} is null")
                metrics[m] = math.inf
            else:
                metrics[m] = float(row[m])
        return RoundRecord(
            method=str(row["method"]),
            case_id=str(row["case_id"]),
            structure=int(row["structure"]),
            structure_name=str(row["structure_name"]),
            group=str(row["group"]),
            round=int(row["round"]),
            n_interactions=int(row["n_interactions"]),
            dice=metrics["dice"],
            hd95=metrics["hd95"],
            msd=metrics["msd"],
            seconds=float(row["seconds"]),
            carried=_parse_bool(row["carried"], where),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: invalid record {row!r}: {err}") from err


def read_records(path: Path) -> list[RoundRecord]:
    """Read ``rounds.csv`` or ``rounds.json`` back into records (``null`` distances become ``inf``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: unknown suffix or malformed content.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [_record_from_mapping(dict(row), f"{path} line {i + 2}") for i, row in enumerate(csv.DictReader(fh))]
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
        return [_record_from_mapping(dict(row), f"{path} item {i}") for i, row in enumerate(data)]
    raise ValueError(f"unknown records file type {path.suffix!r} for {path}; expected .csv or .json.")


def metric_stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """Statistics of one metric over cases, excluding (but counting) non-finite values.

    Returns:
        ``{"n_finite", "n_undefined", "mean", "std", "median", "q25", "q75"}``; the statistics are ``None`` when
        there is no finite value (``std`` also when there is only one).
    """
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, float | int | None] = {"n_finite": int(finite.size), "n_undefined": int(arr.size - finite.size)}
    if finite.size == 0:
        out.update(mean=None, std=None, median=None, q25=None, q75=None)
        return out
    q25, median, q75 = np.percentile(finite, [25.0, 50.0, 75.0])
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else None,
        median=float(median),
        q25=float(q25),
        q75=float(q75),
    )
    return out


def _round_block(records: Sequence[RoundRecord], metrics: Sequence[str]) -> dict[str, Any]:
    block: dict[str, Any] = {
        "n": len(records),
        "n_carried": sum(r.carried for r in records),
        "mean_n_interactions": float(np.mean([r.n_interactions for r in records])),
        "mean_seconds": float(np.mean([r.seconds for r in records if not r.carried] or [0.0])),
    }
    for m in metrics:
        block[m] = metric_stats([getattr(r, m) for r in records])
    return block


def _grouped(records: Sequence[RoundRecord], key: str | None, metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{group value (or "all" if key is None): {round as str: block}}``, groups sorted by name."""
    by: dict[str, dict[int, list[RoundRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by["all" if key is None else str(getattr(r, key))][r.round].append(r)
    return {name: {str(rnd): _round_block(by[name][rnd], metrics) for rnd in sorted(by[name])} for name in sorted(by)}


def summarise(records: Iterable[RoundRecord], metrics: Sequence[str] = METRIC_NAMES) -> dict[str, Any]:
    """Summary statistics per method, group and round (and per structure name), see the module docstring.

    Args:
        records: rows of one or several methods (``method`` distinguishes them).
        metrics: metric fields to summarise.

    Returns:
        ``{"metrics": [...], "statistics": str, "methods": {method: {"n_curves", "n_rounds", "per_group":
        {group: {round: block}}, "per_structure": {structure_name: {round: block}}}}}`` where ``group`` includes
        ``"all"``, ``round`` is a string (JSON keys) and ``block`` is ``{"n", "n_carried", "mean_n_interactions",
        "mean_seconds", <metric>: metric_stats(...)}``.

    Raises:
        ValueError: no records, an unknown metric, duplicate rows, or a method whose curves do not all cover
            the same rounds (statistics per round would then mix different populations).
    """
    recs = list(records)
    if not recs:
        raise ValueError("cannot summarise an empty list of records.")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(METRIC_NAMES)}.")
    by_method: dict[str, list[RoundRecord]] = defaultdict(list)
    for r in recs:
        by_method[r.method].append(r)
    methods: dict[str, Any] = {}
    for method, rows in by_method.items():
        curves: dict[tuple[str, int], list[int]] = defaultdict(list)
        for r in rows:
            curves[(r.case_id, r.structure)].append(r.round)
        round_sets = {tuple(sorted(rs)) for rs in curves.values()}
        for key, rs in curves.items():
            if len(rs) != len(set(rs)):
                raise ValueError(f"method {method!r}: duplicate rounds for case {key[0]} structure {key[1]}.")
        if len(round_sets) != 1:
            raise ValueError(
                f"method {method!r}: curves cover different rounds ({sorted(round_sets)[:3]} ...); carry the last "
                "metrics forward so every case has every round."
            )
        if any(r.group == "all" for r in rows):
            raise ValueError(f"method {method!r}: 'all' is reserved for the union of groups; rename that group.")
        per_group = _grouped(rows, None, metrics)
        per_group.update(_grouped(rows, "group", metrics))
        methods[method] = {
            "n_curves": len(curves),
            "n_rounds": max(r.round for r in rows),
            "per_group": per_group,
            "per_structure": _grouped(rows, "structure_name", metrics),
        }
    return {
        "metrics": list(metrics),
        "statistics": (
            "per metric over the cases of a round: n_finite, n_undefined (non-finite, e.g. a distance with an empty "
            "mask), and over finite values only: mean, std (ddof=1), median, q25, q75 (linear interpolation)"
        ),
        "methods": methods,
    }
