"""Learning-rate factors: the one definition of every schedule and thaw warmup.

A factor is a function of training progress measured in epochs: `t` is
step / steps_per_epoch at the start of a step and `dt` is 1 / steps_per_epoch.
Warmups ramp with the step's end (t + dt), so no step runs at rate zero. Each group's rate at a step is
its base rate x schedule factor x thaw-warmup factor. The runtime evaluates these
functions per step; the compiled script carries the same code; `ftr plan` shows
them at the start of each epoch.
"""

from __future__ import annotations

import math

ONECYCLE_DIV = 25.0  # initial rate = peak / 25, as torch's OneCycleLR
ONECYCLE_FINAL_DIV = 1e4  # final rate = initial / 1e4


def schedule_factor(schedule, t: float, epochs: int, dt: float = 0.0) -> float:
    """The factor of `schedule` (a recipe Schedule) at progress t in [0, epochs)."""
    kind = schedule.kind
    if kind == "constant":
        return 1.0
    if kind == "step":
        return schedule.gamma ** math.floor(t / schedule.every + 1e-9)
    if kind == "cosine":
        if t < schedule.warmup:
            return _warmup(t + dt, schedule.warmup)
        progress = (t - schedule.warmup) / max(epochs - schedule.warmup, 1e-12)
        return schedule.min_lr + (1 - schedule.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if kind == "linear":
        if t < schedule.warmup:
            return _warmup(t + dt, schedule.warmup)
        return max(0.0, (epochs - t) / max(epochs - schedule.warmup, 1e-12))
    if kind == "onecycle":
        return _onecycle(t / epochs, schedule.pct_start)
    raise ValueError(f"unknown schedule {kind}")


def _warmup(t: float, warmup: float) -> float:
    return min(1.0, t / warmup)


def _onecycle(progress: float, pct_start: float) -> float:
    start, end = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
    if progress < pct_start:
        return _cos_between(start, 1.0, progress / pct_start)
    return _cos_between(1.0, end, (progress - pct_start) / (1 - pct_start))


def _cos_between(a: float, b: float, fraction: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def warmup_factor(warmups, t: float, dt: float = 0.0) -> float:
    """Thaw warmups of an optimizer group: (epoch, epochs) pairs; the latest begun applies."""
    factor = 1.0
    for epoch, length in sorted(warmups):
        begun = t + dt - (epoch - 1)
        if begun >= 0 and length > 0:
            factor = min(1.0, begun / length)
    return factor
