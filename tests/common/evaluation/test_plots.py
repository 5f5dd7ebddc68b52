"""Tests for common.evaluation.plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from common.evaluation.plots import make_metric_figure, plot_metric_curves
from common.evaluation.records import RoundRecord, summarise


def _data(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _records(method: str = "m", offset: float = 0.0) -> list[RoundRecord]:
    out = []
    for case, group, base in (("c0", "seen", 0.5), ("c1", "seen", 0.7), ("c2", "unseen", 0.3)):
        for rnd in (1, 2, 3):
            hd = math.inf if (case == "c2" and rnd == 1) else 10.0 / rnd
            out.append(
                RoundRecord(
                    method, case, 1, "liver", group, rnd, rnd, base + 0.1 * rnd + offset, hd, hd / 2, 0.1, False
                )
            )
    return out


def test_lines_follow_summary_means() -> None:
    fig = make_metric_figure(_records(), metrics=("dice", "hd95"), title="t")
    dice_ax, hd_ax = fig.axes[:2]
    lines = {ln.get_label(): ln for ln in dice_ax.get_lines()}
    assert set(lines) == {"seen", "unseen"}
    np.testing.assert_allclose(_data(lines["seen"].get_xdata()), [1, 2, 3])
    np.testing.assert_allclose(_data(lines["seen"].get_ydata()), [0.7, 0.8, 0.9])
    np.testing.assert_allclose(_data(lines["unseen"].get_ydata()), [0.4, 0.5, 0.6])
    assert lines["seen"].get_color() != lines["unseen"].get_color()
    legend = dice_ax.get_legend()
    assert legend is not None
    assert "interquartile" in legend.get_title().get_text()
    # HD95: the undefined distance is excluded from the mean and announced on the axes
    hd_lines = {ln.get_label(): ln for ln in hd_ax.get_lines()}
    np.testing.assert_allclose(_data(hd_lines["unseen"].get_xdata()), [2, 3])
    assert any("1 undefined" in t.get_text() for t in hd_ax.texts)
    assert not any("undefined" in t.get_text() for t in dice_ax.texts)


def test_several_methods_use_line_styles(tmp_path: Path) -> None:
    summaries = [summarise(_records("ours")), summarise(_records("baseline", offset=-0.2))]
    fig = make_metric_figure(summaries, metrics="dice", spread="std", groups=["seen"])
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"ours · seen", "baseline · seen"}
    assert lines["ours · seen"].get_linestyle() != lines["baseline · seen"].get_linestyle()
    np.testing.assert_allclose(_data(lines["baseline · seen"].get_ydata()), [0.5, 0.6, 0.7])
    legend = ax.get_legend()
    assert legend is not None
    assert "std" in legend.get_title().get_text()
    with pytest.raises(ValueError, match="more than one summary"):
        make_metric_figure([summaries[0], summaries[0]])


def test_png_written(tmp_path: Path) -> None:
    out = plot_metric_curves(summarise(_records()), tmp_path / "curves.png", title="demo")
    assert out == tmp_path / "curves.png"
    img = imread(out)
    assert img.ndim == 3
    assert img.shape[1] > img.shape[0] > 100


def test_only_all_group_when_single_group() -> None:
    recs = [r for r in _records() if r.group == "seen"]
    fig = make_metric_figure(recs, metrics="dice", groups=["all"])
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["all"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": "iou"}, "unknown metrics"),
        ({"metrics": []}, "unknown metrics"),
        ({"spread": "minmax"}, "spread"),
        ({"groups": ["train"]}, "not in the data"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_metric_figure(_records(), **kwargs)  # type: ignore[arg-type]


def test_invalid_data() -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        make_metric_figure([])
    with pytest.raises(ValueError, match="'methods'"):
        make_metric_figure({"foo": 1})
