"""Learning-rate factors as a function of training progress ``p`` in [0, 1].

Progress is the fraction of the epoch budget, or of the time budget when one is
given, so the schedule anneals to its end exactly when the budget runs out.
"""

from __future__ import annotations

import math

from medseg.errors import ConfigError

SCHEDULES = ("constant", "cosine", "poly")


def lr_factor(schedule: str, progress: float, warmup: float = 0.0) -> float:
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return max(p / warmup, 0.01)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "poly":
        return (1 - p) ** 0.9
    raise ConfigError(f"unknown LR schedule '{schedule}'", hint=f"choose one of: {', '.join(SCHEDULES)}")


def augment_strength(progress: float, warmup: float = 0.0) -> float:
    """Augmentation strength in [0, 1] at ``progress``: a linear rise over the first ``warmup`` of training."""
    if warmup <= 0:
        return 1.0
    return min(max(progress, 0.0) / warmup, 1.0)
