"""Graph-cut CRF: the binary labelling of minimum energy by a minimum s-t cut, 2D and 3D.

BIFSeg (Wang et al., "Interactive Medical Image Segmentation Using Deep Learning With Image-Specific Fine Tuning",
IEEE TMI 2018, Eqs. 1 to 6) updates its labels by minimising, over ``y`` in ``{0, 1}`` per voxel,

    E(y) = sum_i phi_i(y_i) + lam * sum_{(i, j) neighbours} [y_i != y_j] * exp(-(I_i - I_j)^2 / (2 sigma^2)) / d_ij

with the unary ``phi_i(1) = -log p_i``, ``phi_i(0) = -log(1 - p_i)`` (``p`` the network's foreground probability,
clipped to ``[EPS, 1 - EPS]``), ``I`` the image (one channel; BIFSeg's ``sigma = 0.1`` is on the scale of the image
z-scored inside the box) and ``d_ij`` the Euclidean distance in mm between the voxel centres (spacing-aware).
Neighbourhoods: ``"face"`` (4 in 2D, 6 in 3D) or ``"full"`` (8 in 2D, 26 in 3D). Each unordered pair is one term.

**Scribbles are hard constraints**: ``y_i = 1`` on foreground seeds and ``y_i = 0`` on background seeds, i.e. an
infinite cost for the label that disagrees with the seed and no cost for the one that agrees. (The paper's Eq. 6
prints the two cases swapped, +inf when the label *equals* the scribble; that cannot be meant and is not what is
implemented.) A voxel in both seed masks is an error.

Solver. The energy is submodular and is minimised exactly by a minimum cut: voxel ``i`` is a node, the source is
the foreground terminal, the sink the background terminal; only ``phi_i(0) - phi_i(1)`` matters per voxel (the rest
is a constant), giving one terminal edge per voxel, and each neighbour pair gives two opposite edges of capacity
``w_ij``. A seed's terminal edge gets a capacity larger than the sum of all other edges at that voxel, so cutting it
never pays: the constraint holds exactly, without an overflow-prone "infinity".

**Quantisation** (the max-flow solvers need integer capacities, SciPy's fit in int32): every capacity is
``rint(Q * cost)`` with ``Q = 2**29 / M``, ``M`` the largest per-voxel sum of the absolute unary difference and the
incident pairwise weights. So every capacity and every per-voxel sum stays below ``2**29`` (SciPy needs < 2**31),
the resolution is ``1 / Q`` energy units (``M = 300``, a 26-neighbourhood with ``lam = 10``: 5.6e-7), and the cut is
exact for the quantised energy; its real energy exceeds the real minimum by at most ``(voxels + pairs) / Q`` (every
rounding at its worst: e.g. 1.9 for an 80 x 80 x 40 box with 26 neighbours and ``M = 300``, against energies of
order 1e5). Pairwise weights that round to 0 are dropped from the graph.

**Ties and determinism**: the returned foreground is the set of voxels reachable from the source in the residual
graph of a maximum flow. That set does not depend on which maximum flow the solver found: it is the *smallest*
minimum cut (the intersection of the foregrounds of all minimum-energy labellings of the quantised energy). Ties go
to background (e.g. ``p = 0.5`` with ``lam = 0`` gives background, so ``lam = 0`` is exactly ``p > 0.5``), the same
input always gives the same output, and every backend gives the same labelling.

Backends (:func:`available_backends`):

- ``"scipy"`` (always available, BSD): :func:`scipy.sparse.csgraph.maximum_flow` with Dinic's algorithm, then a
  breadth-first search of the residual graph. Edmonds-Karp, the other method SciPy offers, was measured 190 times
  slower (60 s against 0.31 s on a 32^3 noise volume with 26 neighbours), so it is not used.
- ``"pymaxflow"``: Boykov-Kolmogorov through PyMaxflow (``import maxflow``), **GPL-3.0, never required**: an optional
  extra that users install themselves (``pip install PyMaxflow``). It is fed the same integer capacities (as exact
  doubles) with the terminals swapped, so that its sink tree is exactly SciPy's source set: the labellings are
  identical (tested), only the speed differs.
- ``"auto"``: ``"scipy"``. Both backends give identical labellings; on realistic BIFSeg-sized inputs
  (``bench/graphcut.py``) Boykov-Kolmogorov is 1.3 to 2.3 times faster in 2D (0.13 s against SciPy's 0.21 s at
  512^2) and no faster in 3D (0.33 s against SciPy's 0.31 s at 80 x 80 x 40), while its adversarial worst cases are
  several times slower (ramp probabilities with a noisy image, 48^3, 26 neighbours: 62 s against 17 s). So the
  default does not change with what happens to be installed; pass ``backend="pymaxflow"`` to use it.

**Time guard** (``max_seconds``). Neither solver can be interrupted in-process, and adversarial inputs (random
probabilities, strong pairwise terms) take far longer than realistic ones of the same size (PyMaxflow took 243 s on a
128^3 noise volume). Before solving, :func:`worst_case_seconds` estimates the worst-case solve time from the number
of pairs, a conservative power law over the slowest adversarial inputs measured on a 2-core AMD EPYC virtual
machine (``bench/graphcut.py --worst``). If the estimate is within ``max_seconds`` the cut runs in-process (with the
default 30 s: up to about 580 000 pairs, e.g. 256 x 256 with 8 neighbours or 36^3 with 26). Otherwise, on Linux,
it runs in a forked child process (copy-on-write: the graph is not copied or pickled; only the bit-packed labels come
back through a pipe) that is killed when ``max_seconds`` have passed, and :class:`GraphCutTimeout` is raised;
elsewhere (no safe ``fork``) :class:`GraphCutTimeout` is raised before solving. So with ``max_seconds`` set, the
in-process path is bounded by measurement (only an input much worse than the measured adversarial ones, or a much
slower machine, could exceed it) and the child path by a hard kill. ``max_seconds=None`` disables the guard (no
estimate, no child process, no bound).

Conventions: arrays are indexed ``[i, j(, k)]`` as stored, ``spacing`` is the voxel size in mm along each array
axis, flat voxel indices are C order (``np.ravel_multi_index``).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import numbers
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

__all__ = [
    "EPS",
    "Backend",
    "Connectivity",
    "GraphCutTimeout",
    "GridEdges",
    "available_backends",
    "contrast_weights",
    "graph_cut",
    "graph_cut_energy",
    "grid_edges",
    "labelling_energy",
    "min_cut",
    "probability_costs",
    "worst_case_seconds",
]

Connectivity = Literal["face", "full"]
Backend = Literal["auto", "scipy", "pymaxflow"]

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before the log (unary costs at most ``-log(EPS)`` = 13.8).
EPS = 1e-6
#: Upper bound of every capacity and of every per-voxel sum of capacities after quantisation.
_CAPACITY_LIMIT = 2**29
#: SciPy's max-flow method: Dinic (Edmonds-Karp measured 190x slower on a 32^3 noise volume).
_SCIPY_METHOD = "dinic"
#: Worst-case solve seconds ``c * pairs ** p`` per backend: the envelope of the slowest adversarial inputs measured
#: with ``bench/graphcut.py --worst`` (see :func:`worst_case_seconds`); PyMaxflow's worst was 3.6x SciPy's.
_WORST_CASE_MODEL: dict[str, tuple[float, float]] = {"scipy": (4.5e-8, 1.5), "pymaxflow": (1.8e-7, 1.5)}
#: Safety factor applied on top of the envelope.
_SAFETY = 1.5


class GraphCutTimeout(RuntimeError):  # noqa: N818 - the name the project asked for
    """The graph cut would take, or took, longer than ``max_seconds``."""


@dataclass(frozen=True)
class GridEdges:
    """The neighbour pairs of a regular grid, each unordered pair once.

    Attributes:
        shape: the grid shape ``(H, W)`` or ``(H, W, D)``.
        first: int64 ``(E,)`` flat C-order index of the first voxel of each pair.
        second: int64 ``(E,)`` flat index of the second voxel (``second > first``).
        length: float64 ``(E,)`` distance in mm between the two voxel centres.
    """

    shape: tuple[int, ...]
    first: np.ndarray
    second: np.ndarray
    length: np.ndarray

    @property
    def n_voxels(self) -> int:
        """Number of voxels of the grid."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        return int(self.first.size)


def available_backends() -> tuple[str, ...]:
    """The max-flow backends usable here: always ``"scipy"``, plus ``"pymaxflow"`` if ``import maxflow`` works."""
    try:
        importlib.import_module("maxflow")
    except ImportError:
        return ("scipy",)
    return ("scipy", "pymaxflow")


def _is_real(value: object) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _check_connectivity(connectivity: str) -> None:
    if connectivity not in ("face", "full"):
        raise ValueError(f"connectivity must be 'face' or 'full', got {connectivity!r}.")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        out = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing must be a sequence of {ndim} positive numbers, got {spacing!r}.") from exc
    if len(out) != ndim or not all(math.isfinite(s) and s > 0 for s in out):
        raise ValueError(f"spacing must be {ndim} finite positive numbers (mm per array axis), got {spacing!r}.")
    return out


def _offsets(ndim: int, connectivity: str) -> list[tuple[int, ...]]:
    """Half of the neighbourhood: the offsets whose first non-zero component is +1 (each pair once)."""
    out = []
    for off in itertools.product((-1, 0, 1), repeat=ndim):
        nonzero = [v for v in off if v != 0]
        if not nonzero or nonzero[0] < 0 or (connectivity == "face" and len(nonzero) != 1):
            continue
        out.append(off)
    return out


def grid_edges(shape: Sequence[int], spacing: Sequence[float] | None = None, connectivity: str = "full") -> GridEdges:
    """All neighbour pairs of a 2D or 3D grid, built with array slicing (no loop over voxels).

    Args:
        shape: ``(H, W)`` or ``(H, W, D)``, every size >= 1.
        spacing: voxel size in mm per array axis (default 1 mm); sets :attr:`GridEdges.length`.
        connectivity: ``"face"`` (4 / 6 neighbours) or ``"full"`` (8 / 26 neighbours).

    Returns:
        :class:`GridEdges`, pairs grouped by offset in a fixed order (deterministic).

    Raises:
        ValueError: bad shape, spacing or connectivity.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2D or 3D with sizes >= 1, got {shape}.")
    _check_connectivity(connectivity)
    sp = _check_spacing(spacing, len(shape))
    index = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    first, second, length = [], [], []
    for off in _offsets(len(shape), connectivity):
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(off, shape, strict=True))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(off, shape, strict=True))
        a = index[src].ravel()
        if a.size == 0:
            continue
        first.append(a)
        second.append(index[dst].ravel())
        dist = math.sqrt(sum((o * s) ** 2 for o, s in zip(off, sp, strict=True)))
        length.append(np.full(a.size, dist))
    if not first:
        empty = np.zeros(0, dtype=np.int64)
        return GridEdges(shape, empty, empty.copy(), np.zeros(0))
    return GridEdges(shape, np.concatenate(first), np.concatenate(second), np.concatenate(length))


def contrast_weights(image: np.ndarray, edges: GridEdges, sigma: float) -> np.ndarray:
    """BIFSeg's pairwise weights without ``lam``: ``exp(-(I_i - I_j)^2 / (2 sigma^2)) / d_ij`` per pair, float64.

    GrabCut's ``exp(-beta (I_i - I_j)^2) / d_ij`` is the same with ``sigma = sqrt(1 / (2 beta))``.

    Raises:
        ValueError: ``image.shape != edges.shape``, non-finite values, ``sigma <= 0``.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != edges.shape:
        raise ValueError(f"image shape {img.shape} differs from the grid shape {edges.shape}.")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or inf.")
    if not (_is_real(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}.")
    flat = img.ravel()
    diff = flat[edges.first] - flat[edges.second]
    return np.exp(-(diff * diff) / (2.0 * sigma * sigma)) / edges.length


def probability_costs(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unary costs ``(phi(1), phi(0)) = (-log p, -log(1 - p))`` of a foreground probability, ``p`` clipped to
    ``[EPS, 1 - EPS]``; float64 arrays of ``prob.shape``."""
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1.0 - EPS)
    return -np.log(p), -np.log1p(-p)


def _seed_mask(seeds: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if seeds is None:
        return None
    arr = np.asarray(seeds)
    if arr.shape != shape:
        raise ValueError(f"{name} shape {arr.shape} differs from the grid shape {shape}.")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be a bool mask (or 0/1 integers), got dtype {arr.dtype}.")
        arr = arr.astype(bool)
    return arr


def _check_seeds(
    fg_seeds: np.ndarray | None, bg_seeds: np.ndarray | None, shape: tuple[int, ...]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    fg = _seed_mask(fg_seeds, shape, "fg_seeds")
    bg = _seed_mask(bg_seeds, shape, "bg_seeds")
    if fg is not None and bg is not None and (fg & bg).any():
        raise ValueError(f"{int((fg & bg).sum())} voxel(s) are both foreground and background seeds.")
    return fg, bg


def _check_costs(
    cost_fg: np.ndarray, cost_bg: np.ndarray, edges: GridEdges, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cf = np.asarray(cost_fg, dtype=np.float64)
    cb = np.asarray(cost_bg, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if cf.shape != edges.shape or cb.shape != edges.shape:
        raise ValueError(f"cost shapes {cf.shape} and {cb.shape} must both equal the grid shape {edges.shape}.")
    if w.shape != (len(edges),):
        raise ValueError(f"weights must have shape ({len(edges)},) (one per pair), got {w.shape}.")
    if not (np.isfinite(cf).all() and np.isfinite(cb).all()):
        raise ValueError("unary costs contain NaN or inf (use fg_seeds / bg_seeds for hard constraints).")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("pairwise weights must be finite and >= 0.")
    return cf, cb, w


def labelling_energy(
    labels: np.ndarray,
    cost_fg: np.ndarray,
    cost_bg: np.ndarray,
    edges: GridEdges,
    weights: np.ndarray,
    *,
    fg_seeds: np.ndarray | None = None,
    bg_seeds: np.ndarray | None = None,
) -> float:
    """Energy ``sum_i cost(y_i) + sum_pairs w [y_i != y_j]`` of a labelling, in float64 (not quantised).

    Args:
        labels: bool array of the grid shape (True = foreground).
        cost_fg, cost_bg: unary cost of foreground / background per voxel, grid shape.
        edges: the pairs; weights: ``(E,)`` pairwise weight per pair.
        fg_seeds, bg_seeds: hard constraints; a labelling that breaks one has energy ``inf``.

    Raises:
        ValueError: shape mismatch, non-finite costs.
    """
    cf, cb, w = _check_costs(cost_fg, cost_bg, edges, weights)
    y = np.asarray(labels)
    if y.shape != edges.shape:
        raise ValueError(f"labels shape {y.shape} differs from the grid shape {edges.shape}.")
    y = y.astype(bool)
    fg, bg = _check_seeds(fg_seeds, bg_seeds, edges.shape)
    if (fg is not None and not y[fg].all()) or (bg is not None and y[bg].any()):
        return math.inf
    flat = y.ravel()
    unary = float(np.where(y, cf, cb).sum())
    return unary + float(w[flat[edges.first] != flat[edges.second]].sum())


# --- time guard --------------------------------------------------------------------------------------------------


def worst_case_seconds(n_pairs: int, backend: str = "scipy") -> float:
    """Estimated worst-case solve time in seconds of a graph with ``n_pairs`` neighbour pairs (non-zero weights).

    ``1.5 * c * n_pairs ** 1.5`` with ``c = 4.5e-8`` (SciPy) or ``1.8e-7`` (PyMaxflow): the envelope, over graph
    sizes, of the slowest of the adversarial inputs of ``bench/graphcut.py --worst`` (random probabilities on
    constant or noisy images, linear-ramp probabilities with image noise, ``lam`` 1 to 10, ``sigma`` 0.1, 4/8 and
    6/26 neighbours, 128^2 to 512^2 and 32^3 to 64^3) on a 2-core AMD EPYC virtual machine shared with other jobs.
    Measured worst cases: 11 s for 512 x 512 with 8 neighbours (1.0 M pairs), 17 s for 48^3 and 22 s for 64^3 with
    26 neighbours (1.4 M, 3.3 M pairs); realistic inputs (a smooth blob probability) solve 50 to 150 times
    faster.
    The power law is conservative for large 3D graphs (e.g. 390 s for 80 x 80 x 40 with 26 neighbours, 3.2 M
    pairs, against about 22 s measured): above ``max_seconds`` a graph is only solved in a child process under a
    hard limit, or refused where that is not possible.
    """
    c, p = _WORST_CASE_MODEL["pymaxflow" if backend == "pymaxflow" else "scipy"]
    return _SAFETY * c * float(max(n_pairs, 1)) ** p


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _run_isolated(solve: Callable[[], np.ndarray], n: int, seconds: float) -> np.ndarray:
    """Run ``solve`` (returning a bool ``(n,)`` array) in a forked child; kill it after ``seconds``.

    Raises:
        GraphCutTimeout: the child did not finish in time (it is killed).
        RuntimeError: the child failed.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its coverage is not recorded
        status = 1
        try:
            os.close(read_fd)
            payload = np.packbits(solve()).tobytes()
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    finished = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                raise GraphCutTimeout(
                    f"the graph cut did not finish within max_seconds={seconds:g} s and was stopped. Use a smaller "
                    "crop, connectivity='face' (3x fewer pairs in 3D), a larger lam or a more confident probability "
                    "map, or raise max_seconds (None: no limit)."
                )
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        finished = True
    finally:
        os.close(read_fd)
        if not finished:  # timeout, or an exception (e.g. KeyboardInterrupt) in this process: stop the child
            _kill(pid)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    expected = (n + 7) // 8
    if status != 0 or len(data) != expected:
        raise RuntimeError(f"the graph-cut solver process failed (wait status {status}, {len(data)} of {expected} B).")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)


# --- solvers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Capacities:
    """The integer s-t graph: ``source[i]`` (cost of background), ``sink[i]`` (cost of foreground), pair capacities."""

    n: int
    source: np.ndarray  # int64 (n,)
    sink: np.ndarray  # int64 (n,)
    first: np.ndarray  # int64 (m,)
    second: np.ndarray  # int64 (m,)
    pair: np.ndarray  # int64 (m,)


def _quantise(
    cf: np.ndarray, cb: np.ndarray, edges: GridEdges, w: np.ndarray, fg: np.ndarray | None, bg: np.ndarray | None
) -> _Capacities:
    n = edges.n_voxels
    diff = (cb - cf).ravel()  # > 0: background costs more -> edge from the source
    incident = np.bincount(edges.first, w, n) + np.bincount(edges.second, w, n)
    peak = float((np.abs(diff) + incident).max()) if n else 0.0
    scale = _CAPACITY_LIMIT / peak if peak > 0 else 1.0
    dq = np.rint(diff * scale).astype(np.int64)
    wq = np.rint(w * scale).astype(np.int64)
    keep = wq > 0
    first, second, wq = edges.first[keep], edges.second[keep], wq[keep]
    source = np.maximum(dq, 0)
    sink = np.maximum(-dq, 0)
    if fg is not None or bg is not None:
        # A seed's terminal edge outweighs everything else at the voxel: cutting it never pays.
        big = np.bincount(first, wq, n).astype(np.int64) + np.bincount(second, wq, n).astype(np.int64) + 1
        for mask, hard, free in ((fg, source, sink), (bg, sink, source)):
            if mask is not None:
                idx = np.flatnonzero(mask.ravel())
                hard[idx] = big[idx]
                free[idx] = 0
    return _Capacities(n, source, sink, first, second, wq)


def _solve_scipy(cap: _Capacities) -> np.ndarray:
    n = cap.n
    s, t = n, n + 1
    src = np.flatnonzero(cap.source)
    snk = np.flatnonzero(cap.sink)
    rows = np.concatenate([cap.first, cap.second, np.full(src.size, s), snk]).astype(np.int32)
    cols = np.concatenate([cap.second, cap.first, src, np.full(snk.size, t)]).astype(np.int32)
    data = np.concatenate([cap.pair, cap.pair, cap.source[src], cap.sink[snk]]).astype(np.int32)
    graph = sparse.csr_array((data, (rows, cols)), shape=(n + 2, n + 2))
    graph.sort_indices()
    flow = maximum_flow(graph, s, t, method=_SCIPY_METHOD).flow
    residual = sparse.csr_array(graph - flow)
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    labels = np.zeros(n + 2, dtype=bool)
    labels[reached] = True
    return labels[:n]


def _solve_pymaxflow(cap: _Capacities) -> np.ndarray:
    maxflow: Any = importlib.import_module("maxflow")
    graph = maxflow.GraphFloat()
    nodes = graph.add_nodes(cap.n)
    if cap.pair.size:
        pair = cap.pair.astype(np.float64)
        graph.add_edges(cap.first + nodes[0], cap.second + nodes[0], pair, pair)
    # Terminals swapped (PyMaxflow's source = background), so that its sink tree, the voxels that reach the
    # foreground terminal in the residual graph, is exactly the smallest minimum cut that the scipy backend returns.
    ids = np.arange(cap.n, dtype=np.int64) + nodes[0]
    graph.add_grid_tedges(ids, cap.sink.astype(np.float64), cap.source.astype(np.float64))
    graph.maxflow()
    return np.asarray(graph.get_grid_segments(ids), dtype=bool)


def min_cut(
    cost_fg: np.ndarray,
    cost_bg: np.ndarray,
    edges: GridEdges,
    weights: np.ndarray,
    *,
    fg_seeds: np.ndarray | None = None,
    bg_seeds: np.ndarray | None = None,
    backend: str = "auto",
    max_seconds: float | None = 30.0,
) -> np.ndarray:
    """The labelling of minimum ``sum_i cost(y_i) + sum_pairs weights [y_i != y_j]`` under hard seed constraints.

    The building block of :func:`graph_cut` and of :func:`common.refinement.grabcut.grabcut`; see the module
    docstring for the quantisation, the tie rule (smallest foreground) and the time guard.

    Args:
        cost_fg: float ``edges.shape``: cost of labelling each voxel foreground (finite).
        cost_bg: float ``edges.shape``: cost of background (finite).
        edges: the neighbour pairs (:func:`grid_edges`).
        weights: float ``(len(edges),)``: cost of cutting each pair, finite and >= 0.
        fg_seeds, bg_seeds: optional bool masks of ``edges.shape``: voxels forced to foreground / background.
        backend: ``"auto"`` (= ``"scipy"``), ``"scipy"`` or ``"pymaxflow"`` (optional, GPL-3.0).
        max_seconds: time limit (see the module docstring); ``None`` for none.

    Returns:
        bool array of ``edges.shape``, True = foreground.

    Raises:
        ValueError: bad shapes or values, a voxel in both seed masks, an unknown or unavailable backend,
            ``max_seconds <= 0``.
        GraphCutTimeout: the solve would exceed, or exceeded, ``max_seconds``.
    """
    cf, cb, w = _check_costs(cost_fg, cost_bg, edges, weights)
    fg, bg = _check_seeds(fg_seeds, bg_seeds, edges.shape)
    if backend not in ("auto", "scipy", "pymaxflow"):
        raise ValueError(f"backend must be 'auto', 'scipy' or 'pymaxflow', got {backend!r}.")
    if backend == "pymaxflow" and "pymaxflow" not in available_backends():
        raise ValueError("backend='pymaxflow' needs PyMaxflow (GPL-3.0, optional): pip install PyMaxflow.")
    if max_seconds is not None and not (_is_real(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}.")
    solver = _solve_pymaxflow if backend == "pymaxflow" else _solve_scipy
    cap = _quantise(cf, cb, edges, w, fg, bg)

    def solve() -> np.ndarray:
        return solver(cap)

    if max_seconds is None or worst_case_seconds(cap.pair.size, backend) <= max_seconds:
        flat = solve()
    elif _can_fork():
        flat = _run_isolated(solve, cap.n, float(max_seconds))
    else:
        raise GraphCutTimeout(
            f"a graph of {cap.n} voxels and {cap.pair.size} pairs may take up to "
            f"{worst_case_seconds(cap.pair.size, backend):.0f} s (measured worst case), more than "
            f"max_seconds={max_seconds:g}, and this platform cannot stop the solver. Use a smaller crop, "
            "connectivity='face', or max_seconds=None to accept the risk."
        )
    return flat.reshape(edges.shape)


# --- BIFSeg's energy ----------------------------------------------------------------------------------------------


def _check_inputs(prob: np.ndarray, image: np.ndarray, lam: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob)
    img = np.asarray(image)
    if p.ndim not in (2, 3):
        raise ValueError(f"prob must be 2D (H, W) or 3D (H, W, D), got shape {p.shape}.")
    if img.shape != p.shape:
        raise ValueError(f"image shape {img.shape} differs from prob shape {p.shape} (one channel expected).")
    if p.size == 0:
        raise ValueError(f"prob is empty (shape {p.shape}).")
    if not (np.issubdtype(p.dtype, np.number) and np.issubdtype(img.dtype, np.number)):
        raise ValueError(f"prob and image must be numeric, got {p.dtype} and {img.dtype}.")
    p = p.astype(np.float64, copy=False)
    img = img.astype(np.float64, copy=False)
    if not np.isfinite(p).all():
        raise ValueError("prob contains NaN or inf.")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or inf.")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"prob must lie in [0, 1], got values in [{p.min():g}, {p.max():g}].")
    if not (_is_real(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}.")
    if not (_is_real(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}.")
    return p, img


def graph_cut(
    prob: np.ndarray,
    image: np.ndarray,
    *,
    lam: float,
    sigma: float,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    fg_seeds: np.ndarray | None = None,
    bg_seeds: np.ndarray | None = None,
    backend: str = "auto",
    max_seconds: float | None = 30.0,
) -> np.ndarray:
    """BIFSeg's label update: the exact minimum of the module's energy ``E(y)`` under the seed constraints.

    Args:
        prob: foreground probability, ``(H, W)`` or ``(H, W, D)``, values in ``[0, 1]``.
        image: the intensities of the pairwise term, same shape, one channel (e.g. z-scored inside the box).
        lam: weight of the pairwise term, >= 0 (0: ``prob > 0.5`` with the seeds imposed).
        sigma: intensity scale of the pairwise term, > 0 (on the scale of ``image``).
        spacing: voxel size in mm per array axis (default 1); ``d_ij`` is the distance in mm.
        connectivity: ``"face"`` (4 / 6 neighbours) or ``"full"`` (8 / 26).
        fg_seeds, bg_seeds: bool masks of ``prob.shape`` (foreground / background scribbles), hard constraints.
        backend: ``"auto"`` (= ``"scipy"``), ``"scipy"`` or ``"pymaxflow"`` (optional GPL-3.0 extra).
        max_seconds: time limit (module docstring); ``None`` for none.

    Returns:
        bool array of ``prob.shape``, True = foreground; ties (equal energy, after quantisation) go to background.

    Raises:
        ValueError: NaN / inf, ``prob`` outside ``[0, 1]``, shape mismatches, ``ndim`` not 2 or 3, ``lam < 0``,
            ``sigma <= 0``, bad spacing / connectivity / backend, a voxel in both seed masks.
        GraphCutTimeout: the cut would take, or took, longer than ``max_seconds``.
    """
    p, img = _check_inputs(prob, image, lam, sigma)
    edges = grid_edges(p.shape, spacing, connectivity)
    cost_fg, cost_bg = probability_costs(p)
    weights = lam * contrast_weights(img, edges, sigma) if lam > 0 else np.zeros(len(edges))
    return min_cut(
        cost_fg,
        cost_bg,
        edges,
        weights,
        fg_seeds=fg_seeds,
        bg_seeds=bg_seeds,
        backend=backend,
        max_seconds=max_seconds,
    )


def graph_cut_energy(
    labels: np.ndarray,
    prob: np.ndarray,
    image: np.ndarray,
    *,
    lam: float,
    sigma: float,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    fg_seeds: np.ndarray | None = None,
    bg_seeds: np.ndarray | None = None,
) -> float:
    """``E(labels)`` of the module's energy in float64 (``inf`` if a seed is contradicted); for checks and benches.

    Raises:
        ValueError: as :func:`graph_cut`, or a ``labels`` shape mismatch.
    """
    p, img = _check_inputs(prob, image, lam, sigma)
    edges = grid_edges(p.shape, spacing, connectivity)
    cost_fg, cost_bg = probability_costs(p)
    weights = lam * contrast_weights(img, edges, sigma) if lam > 0 else np.zeros(len(edges))
    return labelling_energy(labels, cost_fg, cost_bg, edges, weights, fg_seeds=fg_seeds, bg_seeds=bg_seeds)
