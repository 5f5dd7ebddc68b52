"""Tests of the label montage (rendered PNGs are read back and inspected)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from common.visualization.montage import LABEL_COLOURS, label_colour, montage_slices, save_label_montage

SHAPE = (40, 40, 24)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """Air image with a soft-tissue block; label 1 at large i (patient right) and large j (anterior), z 8..15."""
    image = np.full(SHAPE, -1000.0, dtype=np.float32)
    image[5:35, 5:35, :] = 40.0
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[28:36, 28:36, 8:16] = 1
    return image, label


def _mask(pixels: np.ndarray, rgb: tuple[float, float, float], tol: float = 0.12) -> np.ndarray:
    return np.all(np.abs(pixels[..., :3] - np.asarray(rgb)) < tol, axis=-1)


def test_montage_slices_span_the_labelled_extent() -> None:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, :, 5:17] = True
    assert montage_slices(mask, 4) == [5, 9, 12, 16]
    assert montage_slices(mask, 50) == list(range(5, 17))
    assert montage_slices(mask, 1) == [5]
    assert montage_slices(np.zeros(SHAPE), 3) == [0, 12, 23]  # empty: the whole axis
    assert montage_slices(mask, 3, axis=0) == [0, 20, 39]


def test_label_colours_cycle() -> None:
    assert label_colour(1) == LABEL_COLOURS[0]
    assert label_colour(len(LABEL_COLOURS) + 1) == LABEL_COLOURS[0]
    assert len(set(LABEL_COLOURS)) == len(LABEL_COLOURS)


def test_overlay_colour_position_and_legend(tmp_path: Path) -> None:
    image, label = _volume()
    out = save_label_montage(image, label, tmp_path / "sub" / "m.png", n_slices=1, label_names={0: "bg", 1: "organ"})
    assert out == tmp_path / "sub" / "m.png"
    assert out.is_file()
    pixels = mpimg.imread(out)
    assert pixels.ndim == 3
    assert pixels.shape[2] in (3, 4)
    # the overlay blends label 1's colour into the grey image: reddish pixels where R dominates
    red = (pixels[..., 0] > pixels[..., 1] + 0.2) & (pixels[..., 0] > pixels[..., 2] + 0.2)
    assert red.sum() > 50
    rows, cols = np.nonzero(red[: int(0.8 * pixels.shape[0])])  # panel area (the legend is at the bottom)
    # radiological display: large i (patient right) on the viewer's left, large j (anterior) at the top
    assert cols.mean() < pixels.shape[1] / 2
    assert rows.mean() < 0.4 * pixels.shape[0]
    plain = mpimg.imread(save_label_montage(image, np.zeros_like(label), tmp_path / "plain.png", n_slices=1))
    plain_red = (plain[..., 0] > plain[..., 1] + 0.2) & (plain[..., 0] > plain[..., 2] + 0.2)
    assert plain_red.sum() == 0


def test_prediction_contours_are_drawn(tmp_path: Path) -> None:
    image, label = _volume()
    prediction = np.zeros(SHAPE, dtype=np.uint8)
    prediction[10:20, 10:20, 8:16] = 1
    with_pred = mpimg.imread(
        save_label_montage(
            image, label, tmp_path / "p.png", n_slices=2, prediction=prediction, prediction_colour=(1.0, 1.0, 0.0)
        )
    )
    without = mpimg.imread(save_label_montage(image, label, tmp_path / "n.png", n_slices=2))
    assert _mask(with_pred, (1.0, 1.0, 0.0)).sum() > 20
    assert _mask(without, (1.0, 1.0, 0.0)).sum() == 0


def test_empty_label_uses_the_prediction_extent(tmp_path: Path) -> None:
    image, _ = _volume()
    empty = np.zeros(SHAPE, dtype=np.uint8)
    prediction = empty.copy()
    prediction[10:20, 10:20, 3:5] = 2
    two = mpimg.imread(save_label_montage(image, empty, tmp_path / "p.png", prediction=prediction, dpi=50))
    twelve = mpimg.imread(save_label_montage(image, empty, tmp_path / "e.png", dpi=50))
    assert two.shape[1] == 2 * 2.6 * 50  # 2 slices (z 3, 4) -> 2 columns of 2.6 inch panels
    assert twelve.shape[1] == 4 * 2.6 * 50  # whole axis, 12 slices -> 4 columns


def test_spacing_sets_the_pixel_aspect(tmp_path: Path) -> None:
    image, label = _volume()
    square = mpimg.imread(save_label_montage(image, label, tmp_path / "a.png", n_slices=1, axis=1))
    tall = mpimg.imread(
        save_label_montage(image, label, tmp_path / "b.png", n_slices=1, axis=1, spacing=(1.0, 1.0, 4.0))
    )
    assert tall.shape[0] > 1.5 * square.shape[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 4))}, "3D"),
        ({"label": np.zeros((40, 40, 23))}, "label shape"),
        ({"prediction": np.zeros((40, 40, 23))}, "prediction shape"),
        ({"n_slices": 0}, "n_slices"),
        ({"axis": 3}, "axis"),
        ({"window": (300.0, -200.0)}, "window"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"out_png": "x.jpg"}, ".png"),
    ],
)
def test_bad_input_raises(kwargs: dict[str, object], match: str, tmp_path: Path) -> None:
    image, label = _volume()
    args: dict[str, object] = {"image": image, "label": label, "out_png": tmp_path / "m.png"}
    if kwargs.get("out_png") == "x.jpg":
        kwargs = {"out_png": tmp_path / "x.jpg"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        save_label_montage(**args)  # type: ignore[arg-type]
    assert not (tmp_path / "m.png").exists()
