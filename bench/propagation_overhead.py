"""Micro-benchmark: slice-propagation time vs the network's forward time alone on the same slices (CPU).

The propagation runs :class:`common.propagation.SlicePropagationInferer` on a random ``(1, 2, S, S, D)`` input with
a ``monai.networks.nets.BasicUNet`` (randomly initialised, eval mode) and ``max_empty_slices=None`` so that every
slice is predicted whatever the untrained network outputs. The batches the network received are recorded in a
first (warm-up) run; "forward alone" then times the network on exactly those batches. The overhead ratio is
``propagation time / forward time`` (target <= 1.2). As this difference is noisy on a loaded machine, the
propagation with a null network (pure engine + inferer overhead) is timed as well: ``(forward + null) / forward``
is a more stable estimate of the same ratio.

Run from the repository root::

    python bench/propagation_overhead.py                     # 256 x 256 x 64, one user slice in the middle
    python bench/propagation_overhead.py --user-slices 3     # 3 user slices -> up to 6 fronts batched per call
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from monai.networks.nets import BasicUNet

from common.propagation import SlicePropagationInferer

__all__ = ["main"]


def _best_times(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Best wall time of each function over ``repeats`` rounds, the functions interleaved within each round (so
    that load from other processes affects them alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _null_network(x: torch.Tensor) -> torch.Tensor:
    """Costs (almost) nothing: copies the prior channel to the foreground logit, so only the propagation's own
    work (validation, stacking, padding, softmax, thresholding, host syncs, merging) is timed."""
    return torch.cat((torch.zeros_like(x[:, 1:]), 10 * x[:, 1:] - 5), dim=1)


def main(argv: list[str] | None = None) -> float:
    """Run the benchmark; print a summary and return the overhead ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="in-plane size S")
    parser.add_argument("--depth", type=int, default=64, help="number of slices D")
    parser.add_argument("--user-slices", type=int, default=1, help="number of evenly spaced user slices")
    parser.add_argument("--merge", default="nearest", choices=["nearest", "overwrite", "fusion"])
    parser.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16], help="BasicUNet features")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    device = torch.device(args.device)
    net = BasicUNet(spatial_dims=2, in_channels=2, out_channels=2, features=tuple(args.features)).to(device).eval()
    size, depth = args.size, args.depth
    image = torch.randn(1, 1, size, size, depth)
    annotation = torch.zeros_like(image)
    disk = (torch.arange(size).view(-1, 1) - size / 2) ** 2 + (torch.arange(size).view(1, -1) - size / 2) ** 2
    user = [round((i + 1) * depth / (args.user_slices + 1)) for i in range(args.user_slices)]
    for k in user:
        annotation[0, 0, ..., k] = (disk < (size / 5) ** 2).float()
    inputs = torch.cat([image, annotation], dim=1).to(device)
    inferer = SlicePropagationInferer(max_empty_slices=None, merge=args.merge, divisible_by=16)

    batches: list[torch.Tensor] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        batches.append(x.clone())
        return net(x)

    with torch.no_grad():
        inferer(inputs, recording)  # warm-up + record the network's inputs
        n_slices = sum(int(x.shape[0]) for x in batches)
        runs: list[Callable[[], object]] = [
            lambda: inferer(inputs, net),
            lambda: [net(x) for x in batches],
            lambda: inferer(inputs, _null_network),
        ]
        t_prop, t_fwd, t_null = _best_times(runs, args.repeats, device)
    ratio = t_prop / t_fwd
    print(
        f"{size}x{size}x{depth} on {device} ({torch.get_num_threads()} threads), user slices {user}, "
        f"merge {args.merge}: "
        f"{n_slices} slices in {len(batches)} network calls; propagation {1000 * t_prop / n_slices:.1f} ms/slice, "
        f"forward alone {1000 * t_fwd / n_slices:.1f} ms/slice, overhead ratio {ratio:.3f}; "
        f"with a null network {1000 * t_null / n_slices:.2f} ms/slice, i.e. ratio (t_fwd + t_null) / t_fwd "
        f"{(t_fwd + t_null) / t_fwd:.3f}"
    )
    return ratio


if __name__ == "__main__":
    main()
