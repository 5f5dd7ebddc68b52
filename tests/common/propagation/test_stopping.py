from __future__ import annotations

import pytest

from common.propagation.stopping import StepOutcome, StopRule


def _rule(max_empty: int | None = 2, filtered: bool = True, lo: float | None = 0.2, hi: float | None = 3.0) -> StopRule:
    return StopRule(max_empty_slices=max_empty, filtered=filtered, min_area_ratio=lo, max_area_ratio=hi)


@pytest.mark.parametrize(
    ("rule", "step", "expected"),
    [
        # (raw_nonempty, area_new, area_prior, empty_run) -> (stop, keep, empty_run)
        (_rule(), (True, 100, 100, 0), (None, True, 0)),
        (_rule(), (True, 20, 100, 0), (None, True, 0)),  # exactly 0.2 x: not below
        (_rule(), (True, 19, 100, 0), ("area_collapse", False, 0)),
        (_rule(), (True, 300, 100, 0), (None, True, 0)),  # exactly 3 x: not above
        (_rule(), (True, 301, 100, 0), ("area_explosion", False, 0)),
        (_rule(lo=None, hi=None), (True, 1, 100, 0), (None, True, 0)),
        (_rule(lo=None, hi=None), (True, 10_000, 100, 0), (None, True, 0)),
        # with the filter, the first empty slice stops: disconnected if something was predicted, else empty
        (_rule(), (True, 0, 100, 0), ("disconnected", True, 1)),
        (_rule(), (False, 0, 100, 0), ("empty", True, 1)),
        (_rule(max_empty=None), (False, 0, 100, 0), ("empty", True, 1)),
        # without it, the legacy count of consecutive empty slices; an empty slice is never an area collapse
        (_rule(filtered=False), (False, 0, 100, 0), (None, True, 1)),
        (_rule(filtered=False), (False, 0, 0, 1), ("empty", True, 2)),
        (_rule(filtered=False, max_empty=None), (False, 0, 0, 7), (None, True, 8)),
        (_rule(filtered=False), (True, 50, 0, 1), (None, True, 0)),  # after an empty prior: no ratio, run reset
    ],
)
def test_decide(rule: StopRule, step: tuple[bool, int, int, int], expected: tuple[str | None, bool, int]) -> None:
    assert rule.decide(*step) == StepOutcome(*expected)  # type: ignore[arg-type]


def test_readback_only_when_a_rule_needs_it() -> None:
    assert not _rule(max_empty=None, filtered=False, lo=None, hi=None).needs_readback
    assert _rule(max_empty=1, filtered=False, lo=None, hi=None).needs_readback
    assert _rule(max_empty=None, filtered=True, lo=None, hi=None).needs_readback
    assert _rule(max_empty=None, filtered=False, lo=0.1, hi=None).needs_readback
    assert _rule(max_empty=None, filtered=False, lo=None, hi=2.0).needs_readback


def test_intensity_shift_stops_and_drops_the_slice() -> None:
    rule = StopRule(None, True, None, None, max_intensity_shift=0.06)
    assert rule.needs_readback
    assert rule.decide(True, 50, 50, 0, intensity_shift=0.05) == StepOutcome(None, True, 0)
    assert rule.decide(True, 50, 50, 0, intensity_shift=0.07) == StepOutcome("intensity_shift", False, 0)
    assert rule.decide(True, 50, 50, 0, intensity_shift=None) == StepOutcome(None, True, 0)  # not measured
    # emptiness is decided first
    assert rule.decide(False, 0, 50, 0, intensity_shift=None).stop == "empty"
    assert not StopRule(None, False, None, None).needs_readback
