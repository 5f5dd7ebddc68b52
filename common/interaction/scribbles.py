"""Stroke geometry of a simulated scribble: a thin curve drawn along the middle of a 2D region.

A user correcting a segmentation drags the mouse through the middle of the wrong region on the slice they see: a
thin, connected curve of limited length, not a filled blob. :func:`stroke_in_region` simulates that on a binary 2D
region: the region is eroded (so the stroke keeps >= 1 pixel away from the region's border when the region is thick
enough), skeletonised (its medial axis), the longest geodesic path along the skeleton is taken
(:func:`longest_skeleton_path`; across the region instead where the skeleton of a blob shrinks to a point) and cut
to at most ``max_length`` pixels around its middle (:func:`truncate_path`). The result is a 1-pixel-wide
8-connected simple curve inside the region; a tiny region gets one or two pixels.

Pure functions of 2D arrays indexed ``[i, j]`` as stored; lengths are in pixels (the number of pixels a stroke
covers is the user's cost), not mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_array
from scipy.sparse.csgraph import shortest_path
from skimage.morphology import skeletonize

__all__ = ["largest_component", "longest_skeleton_path", "stroke_in_region", "stroke_path_in_region", "truncate_path"]

#: A skeleton path shorter than this fraction of the region's longest geodesic is replaced by that geodesic.
_MIN_SKELETON_FRACTION = 0.5
#: Pixel offsets of the four "forward" 8-neighbours (the other four are their negatives).
_FORWARD_OFFSETS = ((0, 1), (1, -1), (1, 0), (1, 1))


def _as_2d_mask(region: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(region)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be a 2D (H, W) mask, got shape {mask.shape}.")
    return mask > 0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (full connectivity: 8 in 2D, 26 in 3D).

    Ties in size go to the component whose first voxel comes first in C order.

    Args:
        mask: binary array of any dimensionality (values > 0 are foreground).

    Returns:
        bool array of the same shape; all ``False`` if ``mask`` is empty.
    """
    binary = np.asarray(mask) > 0
    labels, n = ndimage.label(binary, structure=np.ones((3,) * binary.ndim, dtype=bool))
    if n <= 1:
        return binary.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return np.asarray(labels == int(np.argmax(sizes)) + 1)


def longest_skeleton_path(skeleton: np.ndarray) -> np.ndarray:
    """The longest geodesic path along a thin 2D curve network (e.g. a skeleton), as ordered pixel coordinates.

    Any binary mask is accepted: on a thick region the result is a long geodesic across it (a straight line through
    the middle of a convex region).

    Pixels are graph nodes joined to their 8-neighbours by edges of their Euclidean length (1 or sqrt(2) pixels,
    so that the shortest path between two pixels of a straight line is that line). Double sweep: from the first
    pixel in C order of the largest 8-connected component of ``skeleton``, the farthest pixel ``a`` is found, then
    the pixel ``b`` farthest from ``a``; the path is a shortest path ``a -> b``. On a tree (the usual skeleton)
    this is the exact longest path; on a network with loops it is a long geodesic. A shortest path never holds two
    non-consecutive pixels that are 8-neighbours (the direct step would be shorter), so the path is a
    1-pixel-wide 8-connected simple curve. Ties go to the first pixel in C order, so the result is deterministic.

    Args:
        skeleton: binary ``(H, W)`` mask.

    Returns:
        ``(N, 2)`` int64 coordinates ``(i, j)`` in path order, consecutive rows 8-neighbours; ``(0, 2)`` if the
        mask is empty.

    Raises:
        ValueError: ``skeleton`` is not 2D.
    """
    mask = largest_component(_as_2d_mask(skeleton, "skeleton"))
    coords = np.argwhere(mask)
    n = len(coords)
    if n <= 1:
        return coords.astype(np.int64)
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[tuple(coords.T)] = np.arange(n)
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols, lengths = [], [], []
    for di, dj in _FORWARD_OFFSETS:
        neighbour = padded[1 + coords[:, 0] + di, 1 + coords[:, 1] + dj]
        keep = neighbour >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(neighbour[keep])
        lengths.append(np.full(int(keep.sum()), float(np.hypot(di, dj))))
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_array((np.concatenate(lengths), (r, c)), shape=(n, n)).tocsr()

    def farthest(source: int) -> tuple[int, np.ndarray]:
        dist, pred = shortest_path(graph, method="D", directed=False, indices=source, return_predecessors=True)
        return int(np.argmax(np.where(np.isfinite(dist), dist, -1.0))), pred

    a, _ = farthest(0)
    b, pred = farthest(a)
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return coords[np.asarray(path[::-1])].astype(np.int64)


def truncate_path(path: np.ndarray, max_length: int) -> np.ndarray:
    """The middle ``max_length`` points of an ordered path (all of it if it is not longer).

    Args:
        path: ``(N, d)`` ordered coordinates.
        max_length: maximum number of points kept, >= 1.

    Returns:
        ``path[s : s + max_length]`` with ``s = (N - max_length) // 2`` (the central part), or ``path``.

    Raises:
        ValueError: ``max_length`` is not an int >= 1.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int | np.integer) or max_length < 1:
        raise ValueError(f"max_length must be an int >= 1, got {max_length!r}.")
    pts = np.asarray(path)
    if len(pts) <= max_length:
        return pts
    start = (len(pts) - int(max_length)) // 2
    return pts[start : start + int(max_length)]


def stroke_path_in_region(region: np.ndarray, max_length: int = 20) -> np.ndarray:
    """The ordered pixels of a simulated scribble in a 2D region (see :func:`stroke_in_region`).

    Steps, on the largest 8-connected component of ``region``:

    1. erosion with the 4-neighbour cross (the array's outside counts as outside the region); if anything is left,
       its largest 8-connected component is used, so the stroke keeps >= 1 pixel from the region border; a region
       too thin to survive the erosion (<= 2 pixels thick) is used as it is;
    2. :func:`skimage.morphology.skeletonize` of that, Lee's method (the default Zhang method reduces a diagonal
       staircase band to a single pixel);
    3. :func:`longest_skeleton_path` of the skeleton; if that is shorter than half the longest geodesic path
       across the region of step 1 itself (:func:`longest_skeleton_path` of the region: a straight line through
       the middle of a convex region), that path is used instead, because the skeleton of a disk or square is a
       point (or a few pixels) while a user would draw a line across it;
    4. :func:`truncate_path` to ``max_length`` pixels around the middle.

    A tiny region gets a stroke of one or two pixels (a 3 x 3 square: its centre, the only pixel left by the
    erosion; a single pixel: itself).

    Args:
        region: binary ``(H, W)`` mask, not empty.
        max_length: maximum stroke length in pixels, >= 1.

    Returns:
        ``(N, 2)`` int64 pixel coordinates in drawing order, ``1 <= N <= max_length``, all inside ``region``,
        consecutive ones 8-neighbours, non-consecutive ones never 8-neighbours.

    Raises:
        ValueError: ``region`` is not 2D or is empty, or ``max_length`` is not an int >= 1.
    """
    mask = _as_2d_mask(region, "region")
    truncate_path(np.zeros((0, 2)), max_length)  # validates max_length
    if not mask.any():
        raise ValueError("region is empty: there is nowhere to draw a stroke.")
    mask = largest_component(mask)
    cross = ndimage.generate_binary_structure(2, 1)
    eroded = ndimage.binary_erosion(mask, structure=cross, border_value=0)
    core = largest_component(eroded) if eroded.any() else mask
    path = longest_skeleton_path(skeletonize(core, method="lee"))
    across = longest_skeleton_path(core)
    if len(path) < _MIN_SKELETON_FRACTION * len(across):  # a blob: its skeleton shrinks to a point
        path = across
    return np.asarray(truncate_path(path, max_length), dtype=np.int64)


def stroke_in_region(region: np.ndarray, max_length: int = 20) -> np.ndarray:
    """A simulated scribble in a 2D region, as a mask: a 1-pixel-wide 8-connected curve of at most ``max_length``
    pixels along the middle of the region's largest part (see :func:`stroke_path_in_region` for the steps).

    Args:
        region: binary ``(H, W)`` mask, not empty.
        max_length: maximum stroke length in pixels, >= 1.

    Returns:
        bool ``(H, W)`` mask of the stroke, a subset of ``region`` with 1 to ``max_length`` pixels.

    Raises:
        ValueError: ``region`` is not 2D or is empty, or ``max_length`` is not an int >= 1.

    Example:
        >>> region = np.zeros((9, 40), bool); region[1:8, 2:38] = True
        >>> stroke = stroke_in_region(region, max_length=20)
        >>> int(stroke.sum()), np.flatnonzero(stroke.any(axis=1)).tolist()  # a straight line on the middle row
        (20, [4])
    """
    path = stroke_path_in_region(region, max_length)
    out = np.zeros(np.shape(region), dtype=bool)
    out[tuple(path.T)] = True
    return out
