"""Tests for common.evaluation.loop on tiny synthetic volumes with an oracle adapter."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.evaluation.cases import CaseInfo, EvalCase
from common.evaluation.loop import RESULT_FILES, ModelAdapter, run_interactive_evaluation
from common.evaluation.metrics import hd95, mean_surface_distance
from common.evaluation.records import read_records
from common.interaction.click_robot import CentreOfErrorClickRobot
from common.interaction.robot import RobotUser
from common.interaction.state import InteractionState

SHAPE = (24, 24, 24)
SPACING = (1.0, 1.0, 2.0)


def _cube(start: tuple[int, int, int]) -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[start[0] : start[0] + 8, start[1] : start[1] + 8, start[2] : start[2] + 8] = 1
    return label


def _half(label: np.ndarray) -> np.ndarray:
    """The label with the upper half (along axis 0) of its 8-voxel extent removed: Dice = 2*256/768 = 2/3."""
    idx = np.argwhere(label)
    mid = int(idx[:, 0].min()) + 4
    half = label.copy()
    half[mid:] = 0
    return half


def _cases() -> list[EvalCase]:
    rng = np.random.default_rng(0)
    out = []
    for case_id in ("phantom_000", "phantom_001"):
        image = rng.normal(size=SHAPE).astype(np.float32)
        for structure, name, group, start in (
            (1, "liver", "seen", (4, 4, 4)),
            (4, "kidney_right", "unseen", (14, 4, 12)),
        ):
            out.append(
                EvalCase(case_id, image, _cube(start), SPACING, structure, name, group, np.diag([*SPACING, 1.0]))
            )
    return out


class OracleAdapter:
    """Returns half of the label before ``k`` interactions and the exact label from then on."""

    name = "oracle"

    def __init__(self, cases: list[EvalCase], k: int) -> None:
        self.labels = {(c.case_id, c.structure): c.label for c in cases}
        self.k = k
        self.calls = 0
        self.resets: list[CaseInfo] = []

    def reset(self, case: CaseInfo) -> None:
        self.resets.append(case)

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        self.calls += 1
        assert isinstance(case, CaseInfo)
        assert not hasattr(case, "label")
        label = self.labels[(case.case_id, case.structure)]
        out = label.copy() if state.n_interactions >= self.k else _half(label)
        state.foreground.clear()  # adapters get a private copy: this must not affect the robot's state
        return out


class NeverClicks(RobotUser):
    name = "never"

    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        return None


def test_oracle_rounds_and_carry_forward(tmp_path: Path) -> None:
    cases = _cases()
    adapter = OracleAdapter(cases, k=2)
    out_dir = tmp_path / "nested" / "eval"
    result = run_interactive_evaluation(
        cases, adapter, CentreOfErrorClickRobot(), n_rounds=4, out_dir=out_dir, method="oracle", progress=False
    )
    assert len(result.records) == 4 * 4
    assert adapter.calls == 2 * 4  # rounds 3 and 4 are carried, no adapter call
    assert [(r.case_id, r.structure) for r in adapter.resets] == [(c.case_id, c.structure) for c in cases]

    half_hd = hd95(_half(cases[0].label), cases[0].label, SPACING)
    half_msd = mean_surface_distance(_half(cases[0].label), cases[0].label, SPACING)
    assert 0 < half_hd < math.inf
    for rec in result.records:
        assert rec.method == "oracle"
        if rec.round == 1:
            assert rec.dice == pytest.approx(2 / 3)
            assert (rec.n_interactions, rec.carried) == (1, False)
            assert rec.hd95 == pytest.approx(half_hd)
            assert rec.msd == pytest.approx(half_msd)
            assert rec.seconds >= 0
        elif rec.round == 2:
            assert (rec.dice, rec.hd95, rec.msd, rec.n_interactions, rec.carried) == (1.0, 0.0, 0.0, 2, False)
        else:
            assert (rec.dice, rec.hd95, rec.msd, rec.n_interactions, rec.carried) == (1.0, 0.0, 0.0, 2, True)
            assert rec.seconds == 0.0

    # files: exactly the documented set, nothing else
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(RESULT_FILES.values())
    assert result.files == {k: out_dir / v for k, v in RESULT_FILES.items()}
    with (out_dir / "rounds.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16
    assert rows[0]["case_id"] == "phantom_000"
    assert rows[0]["structure_name"] == "liver"
    assert rows[0]["round"] == "1"
    assert float(rows[0]["dice"]) == pytest.approx(2 / 3)
    assert [r["carried"] for r in rows[:4]] == ["false", "false", "true", "true"]
    assert read_records(out_dir / "rounds.csv") == read_records(out_dir / "rounds.json")
    assert [r.dice for r in read_records(out_dir / "rounds.json")] == pytest.approx([r.dice for r in result.records])

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    block = summary["methods"]["oracle"]["per_group"]
    assert list(block) == ["all", "seen", "unseen"]
    assert block["seen"]["1"]["n"] == 2
    assert block["seen"]["1"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert block["all"]["1"]["dice"]["std"] == pytest.approx(0.0, abs=1e-6)
    assert block["unseen"]["2"]["dice"]["mean"] == pytest.approx(1.0)
    assert block["all"]["3"]["n_carried"] == 4
    assert block["all"]["2"]["n_carried"] == 0
    assert block["all"]["4"]["mean_n_interactions"] == pytest.approx(2.0)
    assert summary["run"] == {
        "method": "oracle",
        "adapter": "oracle",
        "robot": {"name": "centre_of_error_click", "class": "CentreOfErrorClickRobot", "stop_at_dice": None},
        "n_rounds": 4,
        "n_cases": 2,
        "n_structures": 4,
    }

    interactions = json.loads((out_dir / "interactions.json").read_text())
    assert len(interactions) == 4
    first = interactions[0]
    assert first["stopped_before_round"] == 3
    assert first["state"]["n_interactions"] == 2
    assert len(first["state"]["foreground"]) == 2
    # deepest voxel of the cube [4:12]^3 with spacing (1, 1, 2): depth 4 mm for i, j in {7, 8} and k in 5..10
    assert first["state"]["foreground"][0] == [7, 7, 5]
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_who_never_clicks_carries_empty_prediction(tmp_path: Path) -> None:
    cases = _cases()[:2]
    adapter = OracleAdapter(cases, k=1)
    result = run_interactive_evaluation(cases, adapter, NeverClicks(), n_rounds=2, out_dir=tmp_path, progress=False)
    assert adapter.calls == 0
    assert all(r.carried and r.dice == 0.0 and math.isinf(r.hd95) and r.n_interactions == 0 for r in result.records)
    stats = result.summary["methods"]["method"]["per_group"]["all"]["2"]["hd95"]
    assert stats["n_undefined"] == 2
    assert stats["n_finite"] == 0
    assert stats["mean"] is None
    assert json.loads((tmp_path / "rounds.json").read_text())[0]["hd95"] is None
    assert "inf" in (tmp_path / "rounds.csv").read_text()
    assert result.interactions[0]["stopped_before_round"] == 1


def test_without_out_dir_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = _cases()
    result = run_interactive_evaluation(cases, OracleAdapter(cases, 1), CentreOfErrorClickRobot(), 1, progress=True)
    assert result.files == {}
    assert list(tmp_path.iterdir()) == []
    assert all(r.dice == 1.0 for r in result.records)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    cases = _cases()[:1]
    run_interactive_evaluation(cases, OracleAdapter(cases, 1), CentreOfErrorClickRobot(), 2, tmp_path, progress=False)
    before = (tmp_path / "rounds.csv").read_text()
    adapter = OracleAdapter(cases, 5)
    with pytest.raises(FileExistsError, match=r"rounds\.csv.*overwrite=True"):
        run_interactive_evaluation(cases, adapter, CentreOfErrorClickRobot(), 2, tmp_path, progress=False)
    assert adapter.calls == 0  # refused before doing any work
    assert (tmp_path / "rounds.csv").read_text() == before
    run_interactive_evaluation(cases, adapter, CentreOfErrorClickRobot(), 2, tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "rounds.csv").read_text() != before


def test_one_existing_file_is_enough_to_refuse(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    cases = _cases()[:1]
    with pytest.raises(FileExistsError, match=r"summary\.json"):
        run_interactive_evaluation(cases, OracleAdapter(cases, 1), CentreOfErrorClickRobot(), 1, tmp_path)


class _BadAdapter:
    name = "bad"

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, image: np.ndarray, state: InteractionState, case: CaseInfo) -> Any:
        if self.kind == "shape":
            return np.zeros((1, *image.shape), np.uint8)
        if self.kind == "soft":
            return np.full(image.shape, 0.5, np.float32)
        if self.kind == "nan":
            return np.full(image.shape, np.nan, np.float32)
        if self.kind == "list":
            return [[0]]
        if self.kind == "str":
            return np.full(image.shape, "a")
        raise AssertionError(self.kind)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("shape", r"returned shape \(1, 24, 24, 24\); expected \(24, 24, 24\)"),
        ("soft", "non-binary"),
        ("nan", "NaN"),
        ("list", "returned list"),
        ("str", "dtype"),
    ],
)
def test_adapter_output_validation(kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        run_interactive_evaluation(_cases(), _BadAdapter(kind), CentreOfErrorClickRobot(), 2, progress=False)
    assert "adapter 'bad' on case phantom_000 structure 'liver' round 1" in str(info.value)


def test_torch_and_bool_outputs_accepted() -> None:
    cases = _cases()[:1]
    labels = {c.case_id: c.label for c in cases}

    def torch_adapter(image: np.ndarray, state: InteractionState, case: CaseInfo) -> np.ndarray:
        return torch.as_tensor(labels[case.case_id] > 0)  # type: ignore[return-value]

    adapter: ModelAdapter = torch_adapter
    assert isinstance(adapter, ModelAdapter)
    result = run_interactive_evaluation(cases, adapter, CentreOfErrorClickRobot(), 1, progress=False)
    assert result.records[0].dice == 1.0


class _StuckRobot(RobotUser):
    def next_interaction(
        self, label: np.ndarray, prediction: np.ndarray, state: InteractionState
    ) -> InteractionState | None:
        return state.copy()


def test_argument_validation() -> None:
    cases = _cases()
    adapter = OracleAdapter(cases, 1)
    robot = CentreOfErrorClickRobot()
    with pytest.raises(ValueError, match="n_rounds"):
        run_interactive_evaluation(cases, adapter, robot, 0)
    with pytest.raises(ValueError, match="n_rounds"):
        run_interactive_evaluation(cases, adapter, robot, True)
    with pytest.raises(ValueError, match="method"):
        run_interactive_evaluation(cases, adapter, robot, 1, method="")
    with pytest.raises(ValueError, match="no evaluation cases"):
        run_interactive_evaluation([], adapter, robot, 1, progress=False)
    with pytest.raises(ValueError, match="appears twice"):
        run_interactive_evaluation([cases[0], cases[0]], adapter, robot, 1, progress=False)
    with pytest.raises(RuntimeError, match="without a new interaction"):
        run_interactive_evaluation(cases, adapter, _StuckRobot(), 1, progress=False)
