"""Learning-rate schedules that stay meaningful for any run length, for the bundles' ``train.json``.

The bundles decay the learning rate with ``torch.optim.lr_scheduler.MultiStepLR`` at fixed *fractions* of the run
(e.g. 1/3, 2/3 and 5/6 of ``max_epochs``) so that the schedule follows ``--max_epochs``. Rounding those fractions
for a short run gives repeated milestones (``[1, 1, 1]`` for one epoch), and ``MultiStepLR`` applies a repeated
milestone once per repetition: the learning rate would fall by ``gamma ** 3`` at once. :func:`step_milestones` gives
sorted, distinct milestones strictly inside the run instead.

Config use (``train.json``, with ``"$import common"`` in ``"imports"``)::

    "milestones": "$common.training.step_milestones(@max_epochs, @lr_milestone_fractions)"
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

__all__ = ["step_milestones"]


def step_milestones(max_epochs: int, fractions: Sequence[float]) -> list[int]:
    """Epoch milestones of ``MultiStepLR`` at the given fractions of a run of ``max_epochs`` epochs.

    Milestone ``m`` means: the learning rate is decayed when ``m`` epochs are complete (the scheduler is stepped
    once per epoch, e.g. by MONAI's ``LrScheduleHandler``), so epochs ``m + 1, m + 2, ...`` use the lower rate.
    Each fraction ``f`` gives ``floor(max_epochs * f + 0.5)`` (rounded half up); milestones that would fall on
    epoch 0 (decay before any training) or on ``max_epochs`` (decay after the last epoch, used by no epoch) are
    dropped, and repeated ones are merged, so a short run never decays more often than it has epochs to use the
    rates: one epoch gives ``[]`` (no decay), two epochs with fractions ``(1/3, 2/3, 5/6)`` give ``[1]``.

    Args:
        max_epochs: number of training epochs, ``>= 1``.
        fractions: fractions of the run at which to decay, each in the open interval ``(0, 1)``; any order.

    Returns:
        Sorted, distinct integer milestones ``m`` with ``0 < m < max_epochs``.

    Raises:
        ValueError: ``max_epochs`` not an integer ``>= 1``, ``fractions`` not a sequence of numbers, or a fraction
            that is not finite or not in ``(0, 1)``.

    Example:
        >>> step_milestones(30, [0.3333333, 0.6666667, 0.8333333])
        [10, 20, 25]
        >>> step_milestones(1, [0.3333333, 0.6666667, 0.8333333])
        []
        >>> step_milestones(3, [0.3333333, 0.6666667, 0.8333333])
        [1, 2]
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, numbers.Integral):
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs}")
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise ValueError(f"fractions must be a sequence of numbers in (0, 1), got {fractions!r}")
    milestones: set[int] = set()
    for i, f in enumerate(fractions):
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise ValueError(f"fractions[{i}] must be a number in (0, 1), got {f!r}")
        if not (math.isfinite(float(f)) and 0.0 < float(f) < 1.0):
            raise ValueError(
                f"fractions[{i}] must be in the open interval (0, 1) (a fraction of the run), got {f!r}; "
                f"fractions={list(fractions)!r}"
            )
        m = math.floor(int(max_epochs) * float(f) + 0.5)
        if 0 < m < max_epochs:
            milestones.add(m)
    return sorted(milestones)
