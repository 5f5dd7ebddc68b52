"""Continuity filter of slice propagation: keep only the predicted components that connect to the prior.

A propagated structure continues from one slice to the next: what the network predicts on slice ``k + d`` must touch
the mask of slice ``k`` (the *prior*) or it belongs to something else (a neighbouring organ the front ran onto, an
island of noise). :func:`connected_to_prior` keeps, in each predicted slice, exactly the in-plane connected components
of the binary prediction that overlap the prior dilated by ``tolerance`` pixels, and drops every other component.

Conventions: masks are bool ``(B, H, W)`` tensors (a batch of slices, one per propagation front), compared sample by
sample (component labelling never crosses from one sample to another). Components are 8-connected (two foreground
pixels sharing an edge or a corner belong together) by default, 4-connected (edges only) with ``connectivity=4``. The
dilation is square (chessboard distance): a component is kept when one of its pixels lies within ``tolerance`` pixels
along each axis of a prior pixel (``tolerance=0``: it overlaps the prior itself).

Two interchangeable implementations, with identical results (tested against each other):

- ``"scipy"``: :func:`scipy.ndimage.label` on the host (one call for the batch) and a lookup of the labels under the
  seeds; the fastest on the CPU, where the tensors already are.
- ``"flood"``: torch only, on the tensors' device: a flood fill from the seeds (the foreground pixels within the
  dilated prior), one ``max_pool2d`` dilation masked by the foreground per iteration, until nothing changes. The
  pixels reached are exactly those of the components that contain a seed. Convergence is read back to the host after
  8, 16, 32, ... iterations (a handful of synchronisations per call, one when the seeds already cover the
  components, the usual case), never per pixel.

``method="auto"`` picks ``"scipy"`` for CPU tensors and ``"flood"`` otherwise (e.g. CUDA).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["Connectivity", "ContinuityMethod", "components_touching", "connected_to_prior", "dilate"]

Connectivity = Literal[4, 8]
ContinuityMethod = Literal["auto", "scipy", "flood"]

#: First number of flood-fill iterations between two convergence checks (doubled after each check, up to the cap).
_FIRST_CHECK = 8
_MAX_CHECK = 128


def _check_masks(mask: torch.Tensor, name: str) -> None:
    if mask.dtype != torch.bool or mask.ndim != 3:
        raise ValueError(f"{name} must be a bool (B, H, W) tensor, got {mask.dtype} of shape {tuple(mask.shape)}.")


def _check_connectivity(connectivity: int) -> None:
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}.")


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a bool ``(B, H, W)`` mask by ``radius`` pixels (a ``(2 radius + 1)``-wide square), in-plane.

    ``radius=0`` returns ``mask`` itself. Pixels beyond the border count as background.
    """
    _check_masks(mask, "mask")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius!r}.")
    if radius == 0:
        return mask
    x = mask.unsqueeze(1).to(torch.float32 if mask.device.type == "cpu" else torch.float16)
    return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def _grow(x: torch.Tensor, connectivity: int) -> torch.Tensor:
    """One-pixel dilation of a float ``(B, 1, H, W)`` 0/1 map with the 3x3 square (8) or cross (4) neighbourhood."""
    if connectivity == 8:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return torch.maximum(
        F.max_pool2d(x, kernel_size=(3, 1), stride=1, padding=(1, 0)),
        F.max_pool2d(x, kernel_size=(1, 3), stride=1, padding=(0, 1)),
    )


def _flood(mask: torch.Tensor, seed: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Components of ``mask`` containing a pixel of ``seed`` (a subset of ``mask``), by iterative masked dilation."""
    inside = mask.unsqueeze(1)
    x = seed.unsqueeze(1).to(torch.float32 if mask.device.type == "cpu" else torch.float16)
    # a geodesic path inside a component visits each pixel at most once: H * W iterations always suffice
    budget = mask.shape[-1] * mask.shape[-2]
    chunk = _FIRST_CHECK
    done = 0
    while done < budget:
        for _ in range(min(chunk, budget - done) - 1):
            x = _grow(x, connectivity).mul_(inside)
        previous = x
        x = _grow(x, connectivity).mul_(inside)
        done += min(chunk, budget - done)
        if torch.equal(previous, x):  # the one host read of a chunk: nothing grew in its last iteration
            break
        chunk = min(2 * chunk, _MAX_CHECK)
    return x[:, 0] > 0


def _scipy_components(mask: torch.Tensor, seed: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Components of ``mask`` containing a pixel of ``seed``, labelled with :func:`scipy.ndimage.label` on the host."""
    m = mask.detach().cpu().numpy()
    s = seed.detach().cpu().numpy()
    structure = np.zeros((3, 3, 3), dtype=bool)  # no connection between the samples of the batch
    structure[1] = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, n = ndimage.label(m, structure=structure)
    keep = np.zeros(n + 1, dtype=bool)
    keep[labels[s]] = True
    keep[0] = False
    return torch.from_numpy(keep[labels]).to(mask.device)


def components_touching(
    mask: torch.Tensor, seed: torch.Tensor, connectivity: Connectivity = 8, method: ContinuityMethod = "auto"
) -> torch.Tensor:
    """The connected components of ``mask`` that contain at least one pixel of ``seed``, per sample.

    Args:
        mask: bool ``(B, H, W)``; components are labelled within each ``(H, W)`` sample.
        seed: bool ``(B, H, W)``, same shape and device; seed pixels outside ``mask`` are ignored.
        connectivity: 8 (edges and corners) or 4 (edges only).
        method: ``"scipy"``, ``"flood"`` or ``"auto"`` (see the module docstring); all give the same result.

    Returns:
        A new bool ``(B, H, W)`` tensor on ``mask``'s device, a subset of ``mask``.

    Raises:
        ValueError: masks not bool ``(B, H, W)`` of one shape and device; bad ``connectivity`` or ``method``.
    """
    _check_masks(mask, "mask")
    _check_masks(seed, "seed")
    if seed.shape != mask.shape or seed.device != mask.device:
        raise ValueError(
            f"seed {tuple(seed.shape)} on {seed.device} must match mask {tuple(mask.shape)} on {mask.device}."
        )
    _check_connectivity(connectivity)
    if method not in ("auto", "scipy", "flood"):
        raise ValueError(f"method must be 'auto', 'scipy' or 'flood', got {method!r}.")
    if mask.numel() == 0:
        return mask.clone()
    if method == "scipy" or (method == "auto" and mask.device.type == "cpu"):
        return _scipy_components(mask, seed, connectivity)
    return _flood(mask, seed & mask, connectivity)


def connected_to_prior(
    foreground: torch.Tensor,
    prior: torch.Tensor,
    tolerance: int = 0,
    connectivity: Connectivity = 8,
    method: ContinuityMethod = "auto",
) -> torch.Tensor:
    """Keep the components of each predicted slice that overlap its prior dilated by ``tolerance`` pixels.

    Args:
        foreground: bool ``(B, H, W)`` binarised predictions (one slice per front).
        prior: bool ``(B, H, W)`` the mask each prediction was made from (the previous slice of the same front).
        tolerance: dilation radius of the prior in pixels (square); 0 = the component must overlap the prior itself.
        connectivity, method: as for :func:`components_touching`.

    Returns:
        A new bool ``(B, H, W)`` tensor: ``foreground`` without the components that do not reach the dilated prior
        (all of them where the prior is empty).
    """
    return components_touching(foreground, dilate(prior, tolerance) & foreground, connectivity, method)
