"""Montage of domain-randomised synthetic images (:mod:`common.transforms.synthesis`) of one label map, for the docs.

Command line (phantom case 0 of seed 0 on the default grid, i.e. ``data/Phantoms/*/phantom_000.nii.gz``; its middle
axial slice: label map, CT-like phantom image, then synthetic images of seeds 0-7 made, as in the training configs,
from the structures plus the HU tissue classes of the unlabelled voxels; same command -> same bytes)::

    python -m common.transforms.synthesis_montage --out bundles/deepgrow_clicks/docs/results/synthetic_samples.png

Not imported by :mod:`common.transforms` (so that ``python -m`` runs it cleanly); import it from here.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.transforms.synthesis import synthesize_image
from common.transforms.synthesis_generation import hu_tissue_classes

__all__ = ["main", "synthesis_montage"]


def _display(slice2d: np.ndarray) -> np.ndarray:
    """Array ``(a, b)`` -> image rows ``b`` (bottom-up with origin="lower"), columns ``a`` reversed (radiological)."""
    return np.ascontiguousarray(slice2d.T[:, ::-1])


def synthesis_montage(
    label: np.ndarray,
    path: str | Path,
    seeds: Sequence[int] = tuple(range(8)),
    image: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    axis: int = 2,
    index: int | None = None,
    window: tuple[float, float] = (-200.0, 300.0),
    columns: int = 5,
    panel_inches: float = 1.9,
    dpi: int = 80,
    tissue_classes: bool = True,
    **options: Any,
) -> Path:
    """Save a PNG grid: the label map (colours), optionally the original image, and synthetic images of ``seeds``.

    The synthetic images are made from the whole 3D label (so the resolution simulation may act along ``axis``) and
    one slice is shown, each panel scaled to its own 1st-99th percentile.

    Args:
        label: ``(H, W, D)`` integer label map (no channel axis).
        path: output ``.png`` path (parent folders are created).
        seeds: seeds of :func:`synthesize_image`.
        image: optional ``(H, W, D)`` original image (e.g. the phantom's CT-like HU), shown with ``window``.
        spacing: voxel size (mm) for the synthesis and the pixel aspect ratio; ``None`` = 1 mm.
        axis: slice axis (2 = axial).
        index: slice index; ``None`` = the middle slice.
        window: display range of ``image``.
        columns: panels per row.
        panel_inches: size of a panel.
        dpi: resolution.
        tissue_classes: with an ``image`` in HU, synthesise from the generation labels of the training configs (the
            unlabelled voxels split into air, fat, soft tissue and bone, :func:`hu_tissue_classes`); else from
            ``label`` alone.
        options: keyword options of :func:`synthetic_image_transforms`.

    Returns:
        The written PNG path.

    Raises:
        ValueError: a label that is not 3D, an ``image`` of another shape, a bad ``axis``/``index`` or suffix.
    """
    import PIL.Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from common.visualization.montage import LABEL_COLOURS, label_colour

    out = Path(path)
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label must be a 3D (H, W, D) map, got shape {label.shape}")
    if image is not None and np.shape(image) != label.shape:
        raise ValueError(f"image shape {np.shape(image)} differs from label shape {label.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    k = label.shape[axis] // 2 if index is None else int(index)
    if not 0 <= k < label.shape[axis]:
        raise ValueError(f"index {index!r} outside [0, {label.shape[axis]})")
    if out.suffix.lower() != ".png":
        raise ValueError(f"path must end with .png, got {out}")
    mm = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    a_ax, b_ax = (a for a in range(3) if a != axis)
    aspect = mm[b_ax] / mm[a_ax]

    lab = _display(np.take(label, k, axis=axis))
    rgb = np.zeros((*lab.shape, 3), dtype=np.float32)
    for v in np.unique(lab):
        if v != 0:
            rgb[lab == v] = label_colour(int(v))
    panels: list[tuple[str, np.ndarray, tuple[float, float] | None]] = [("label map", rgb, None)]
    if image is not None:
        panels.append(("phantom (CT-like)", _display(np.take(np.asarray(image), k, axis=axis)), window))
    generation = hu_tissue_classes(image, label) if image is not None and tissue_classes else label
    tensor = torch.as_tensor(np.asarray(generation)[None].astype(np.int64))
    for seed in seeds:
        synthetic = synthesize_image(tensor, int(seed), spacing=mm, **options)[0].numpy()
        shown = _display(np.take(synthetic, k, axis=axis))
        low, high = np.percentile(shown, [1.0, 99.0])
        panels.append((f"seed {int(seed)}", shown, (float(low), float(high) if high > low else float(low) + 1.0)))

    rows = -(-len(panels) // columns)
    panel_h = panel_inches * min(max(aspect * lab.shape[0] / lab.shape[1], 0.3), 3.0)
    fig = Figure(figsize=(columns * panel_inches, rows * (panel_h + 0.25)), facecolor="black")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, data, vrange) in zip(axes, panels, strict=False):
        if vrange is None:
            ax.imshow(data, origin="lower", aspect=aspect, interpolation="nearest")
        else:
            ax.imshow(data, cmap="gray", vmin=vrange[0], vmax=vrange[1], origin="lower", aspect=aspect)
        ax.set_title(title, color="white", fontsize=8, pad=2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.03, hspace=0.12)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="black")
    # grey panels + the label colours: a fixed 8-bit palette keeps the file small (noise compresses badly in RGB)
    colours = [round(255 * c) for rgb in LABEL_COLOURS for c in rgb]
    greys = [round(255 * g / 127) for g in range(128) for _ in range(3)]
    palette = PIL.Image.new("P", (1, 1))
    palette.putpalette(colours + greys + [0] * (768 - len(colours) - len(greys)))
    quantised = PIL.Image.open(buffer).convert("RGB").quantize(palette=palette, dither=PIL.Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantised.save(out, format="PNG", optimize=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m common.transforms.synthesis_montage --out OUT.png [--seeds 8]``; returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m common.transforms.synthesis_montage",
        description="Montage of domain-randomised synthetic images of phantom case 0 (seed 0, default grid)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output PNG path")
    parser.add_argument("--seeds", type=int, default=8, help="number of synthetic samples (seeds 0..N-1)")
    parser.add_argument(
        "--label-only", action="store_true", help="synthesise from the label map alone (no HU tissue classes)"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    from common.data.phantoms import DEFAULT_SHAPE, DEFAULT_SPACING, case_rng, generate_case

    # Case 0 of seed 0 on the default grid: byte-identical to data/Phantoms/*/phantom_000.nii.gz.
    image, label = generate_case(case_rng(0, 0), DEFAULT_SHAPE, DEFAULT_SPACING)
    path = synthesis_montage(
        label, args.out, range(args.seeds), image=image, spacing=DEFAULT_SPACING, tissue_classes=not args.label_only
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
