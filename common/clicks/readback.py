"""Read a small device result on the host without draining the device's queue of work."""

from __future__ import annotations

import torch

__all__ = ["DeviceReadback"]


class DeviceReadback:
    """A non-blocking copy of a small tensor to the host; :meth:`value` waits for that copy only.

    ``bool(t)`` or ``t.item()`` on a CUDA tensor waits until the device has finished *all* work queued so far, so
    the device idles while the host queues the next kernels. Here the copy goes into pinned host memory right
    behind the work that computes ``tensor``, a CUDA event marks it, and :meth:`value` waits for that event: work
    queued after the copy (the next forward pass, say) keeps the device busy while the host reads. On the CPU the
    value is available at once.

    Args:
        tensor: a small tensor (a few numbers) on any device.
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        self._event: torch.cuda.Event | None = None
        if tensor.is_cuda:
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor.detach(), non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = tensor.detach().clone()

    def value(self) -> torch.Tensor:
        """The tensor's values on the host (waits until the device has copied them)."""
        if self._event is not None:
            self._event.synchronize()
        return self._host
