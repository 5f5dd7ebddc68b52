"""Slice montages of a 3D image with a colour overlay of a label map (and optional prediction contours).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global state), so it is safe in servers and workers.

Display orientation: slice ``k`` along ``axis`` is shown with the first remaining array axis horizontal and the second
vertical, both increasing towards the viewer's left / top. For RAS+ stored volumes (axis 0 towards the patient's
right, axis 1 anterior, axis 2 superior) this is the radiological convention in all three views: axial
(``axis=2``: patient right on the viewer's left, anterior up), coronal (``axis=1``: right on the left, superior up)
and sagittal (``axis=0``: anterior on the left, superior up).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["LABEL_COLOURS", "label_colour", "montage_slices", "save_label_montage"]

logger = logging.getLogger(__name__)

#: RGB colours of label values 1, 2, ... (cycled); chosen to stay distinct on a grey CT background.
LABEL_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10),  # red
    (0.10, 0.75, 0.20),  # green
    (0.15, 0.45, 1.00),  # blue
    (1.00, 0.85, 0.10),  # yellow
    (0.00, 0.85, 0.85),  # cyan
    (0.95, 0.20, 0.85),  # magenta
    (1.00, 0.50, 0.00),  # orange
    (0.60, 1.00, 0.30),  # lime
    (0.55, 0.30, 0.95),  # violet
    (1.00, 0.55, 0.65),  # pink
    (0.65, 0.40, 0.15),  # brown
    (0.10, 0.55, 0.50),  # teal
)


def label_colour(value: int) -> tuple[float, float, float]:
    """RGB colour (0..1) of label ``value`` (>= 1) in montages."""
    return LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]


def montage_slices(mask: np.ndarray, n_slices: int, axis: int = 2) -> list[int]:
    """Up to ``n_slices`` evenly spaced slice indices along ``axis`` through the extent of ``mask != 0``.

    Args:
        mask: 3D array; the whole axis is used when it has no non-zero voxel.
        n_slices: wanted number of slices (>= 1); fewer are returned when the extent is shorter.
        axis: slice axis (0, 1 or 2).

    Returns:
        Sorted, distinct slice indices, first and last non-empty slice included.
    """
    other = tuple(a for a in range(3) if a != axis)
    present = np.nonzero(np.any(mask != 0, axis=other))[0]
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, mask.shape[axis] - 1)
    return sorted({round(float(x)) for x in np.linspace(lo, hi, min(n_slices, hi - lo + 1))})


def _display(slice2d: np.ndarray) -> np.ndarray:
    """Array ``(a, b)`` -> image rows ``b`` (shown bottom-up with origin="lower"), columns ``a`` reversed."""
    return np.ascontiguousarray(slice2d.T[:, ::-1])


def _check(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray | None,
    n_slices: int,
    axis: int,
    window: Sequence[float],
    spacing: Sequence[float] | None,
    out_png: Path,
) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (H, W, D), got shape {image.shape}")
    if label.shape != image.shape:
        raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
    if prediction is not None and prediction.shape != image.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from image shape {image.shape}")
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    if len(window) != 2 or not float(window[0]) < float(window[1]):
        raise ValueError(f"window must be (low, high) with low < high, got {window!r}")
    if spacing is not None and (len(spacing) != 3 or any(not float(s) > 0 for s in spacing)):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}")
    if out_png.suffix.lower() != ".png":
        raise ValueError(f"out_png must end with .png, got {out_png}")


def save_label_montage(
    image: np.ndarray,
    label: np.ndarray,
    out_png: str | Path,
    n_slices: int = 12,
    axis: int = 2,
    window: tuple[float, float] = (-200.0, 300.0),
    label_names: Mapping[int, str] | None = None,
    prediction: np.ndarray | None = None,
    prediction_colour: str | tuple[float, float, float] | None = None,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    alpha: float = 0.4,
    panel_inches: float = 2.6,
    dpi: int = 100,
) -> Path:
    """Save a grid of slices through the labelled extent with a semi-transparent label overlay and a legend.

    Args:
        image: ``(H, W, D)`` intensities (e.g. HU).
        label: ``(H, W, D)`` integer label map, 0 = background; each value gets :func:`label_colour`.
        out_png: output ``.png`` path (parent folders are created).
        n_slices: number of panels (fewer if the labelled extent is shorter); the slices span the extent of
            ``label != 0`` (or of ``prediction != 0`` when the label is empty) along ``axis``.
        axis: slice axis (2 = axial for our volumes).
        window: display intensity range ``(low, high)``.
        label_names: optional ``{value: name}`` for the legend (background entries are ignored).
        prediction: optional ``(H, W, D)`` integer/bool map drawn as contours, one per value.
        prediction_colour: one colour for all prediction contours; default: the colour of each value.
        spacing: voxel size in mm ``(sx, sy, sz)`` for the pixel aspect ratio; ``None`` for square pixels.
        title: optional figure title.
        alpha: overlay opacity.
        panel_inches: size of one panel.
        dpi: resolution.

    Returns:
        The written PNG path.

    Raises:
        ValueError: wrong dimensions or shapes, bad ``n_slices``, ``axis``, ``window``, ``spacing`` or suffix.
    """
    out = Path(out_png)
    image, label = np.asarray(image), np.asarray(label)
    pred = None if prediction is None else np.asarray(prediction)
    _check(image, label, pred, n_slices, axis, window, spacing, out)
    selector = label if np.any(label) or pred is None else pred
    slices = montage_slices(selector, n_slices, axis)
    names = {int(k): str(v) for k, v in (label_names or {}).items() if int(k) != 0}
    values = [int(v) for v in np.unique(label) if v != 0]
    pred_values = [] if pred is None else [int(v) for v in np.unique(pred) if v != 0]
    a_ax, b_ax = (a for a in range(3) if a != axis)
    aspect = 1.0 if spacing is None else float(spacing[b_ax]) / float(spacing[a_ax])

    cols = int(np.ceil(np.sqrt(len(slices))))
    rows = int(np.ceil(len(slices) / cols))
    panel_h = panel_inches * min(max(aspect * image.shape[b_ax] / image.shape[a_ax], 0.3), 3.0)
    legend_h = 0.3 * int(np.ceil((len(values) + bool(pred_values)) / 5)) + 0.15
    fig = Figure(figsize=(cols * panel_inches, rows * panel_h + legend_h + (0.4 if title else 0.0)), facecolor="black")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, k in zip(axes, slices, strict=False):
        ax.imshow(
            _display(np.take(image, k, axis=axis)),
            cmap="gray",
            vmin=window[0],
            vmax=window[1],
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        lab = _display(np.take(label, k, axis=axis))
        rgba = np.zeros((*lab.shape, 4), dtype=np.float32)
        for v in values:
            rgba[lab == v, :3] = label_colour(v)
        rgba[lab != 0, 3] = alpha
        ax.imshow(rgba, origin="lower", aspect=aspect, interpolation="nearest")
        if pred is not None:
            pr = _display(np.take(pred, k, axis=axis))
            for v in pred_values:
                m = (pr == v).astype(np.float32)
                if m.any() and not m.all():
                    ax.contour(m, levels=[0.5], colors=[prediction_colour or label_colour(v)], linewidths=1.0)
        ax.set_title(f"{'ijk'[axis]} = {k}", color="white", fontsize=8, pad=2)
    handles: list[Patch | Line2D] = [
        Patch(facecolor=label_colour(v), label=f"{v} {names.get(v, '')}".strip()) for v in values
    ]
    if pred_values:
        handles.append(
            Line2D(
                [],
                [],
                color=prediction_colour or "white",
                label="prediction (contour)" if prediction_colour else "prediction (contour, label colours)",
            )
        )
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 5),
            fontsize=8,
            frameon=False,
            labelcolor="white",
        )
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    total_h = fig.get_figheight()
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        wspace=0.03,
        hspace=0.12,
        bottom=(legend_h + 0.05) / total_h,
        top=1.0 - ((0.45 if title else 0.0) + 0.2) / total_h,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="black")
    logger.debug("wrote montage %s (%s slices along axis %d)", out, slices, axis)
    return out
