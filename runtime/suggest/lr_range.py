"""The learning-rate range test (Smith 2015, "Cyclical learning rates"; fastai's
`lr_find`) and its suggestion rule, on any training step.

`sweep` calls `step(rate)` once per rate of an exponential ramp; the step trains
one batch at that rate and returns the batch's loss. The losses are smoothed as
fastai smooths them (an exponential moving average with bias correction, beta
0.98), and the sweep stops when the smoothed loss exceeds 4x the lowest seen or a
loss is not finite: past that point the rates only diverge.

The suggestion is fastai's `valley`: on the smoothed curve, less its first tenth
of the planned steps and its last five points (the noisy start and the blow-up),
the longest stretch over which the loss keeps falling (its longest strictly
decreasing subsequence), and the rate halfway along it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

FIRST, LAST = 1e-7, 10.0  # the ramp of the largest group's rate
STEPS = 100
BETA = 0.98  # smoothing of the loss
DIVERGE = 4.0  # stop once the smoothed loss exceeds this times the lowest
SKIP_END = 5  # points before the stop that the rule leaves out


@dataclass
class Sweep:
    rates: list[float]  # the rate of each step taken
    losses: list[float]  # each step's batch loss
    smoothed: list[float]
    planned: int  # steps the ramp had
    stop: str  # why it ended: "diverged", "non-finite loss" or "" (the ramp's end)
    stop_rate: float | None  # the rate at which it stopped early, if it did

    @property
    def stop_step(self) -> int:
        """The step (from 1) at which the sweep stopped: the last it recorded, or the
        one after it whose loss was not finite."""
        return len(self.rates) + (self.stop == "non-finite loss")

    def suggestion(self) -> int:
        """The index of the suggested step (fastai's valley)."""
        skip = self.planned // 10
        last = len(self.smoothed) - SKIP_END
        if last - skip < 3:  # too short a curve to trim
            skip, last = 0, len(self.smoothed)
        return skip + valley(self.smoothed[skip:last])


def ramp(first: float, last: float, steps: int) -> list[float]:
    """`steps` rates from first to last, evenly spaced on a log scale."""
    if steps < 2:
        raise ValueError(f"a ramp needs at least 2 steps, got {steps}")
    ratio = last / first
    return [first * ratio ** (k / (steps - 1)) for k in range(steps)]


def sweep(step: Callable[[float], float], rates: list[float], beta: float = BETA, diverge: float = DIVERGE) -> Sweep:
    """Train one step at each rate until the smoothed loss diverges."""
    taken, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    for rate in rates:
        loss = step(rate)
        if not math.isfinite(loss):
            return Sweep(taken, losses, smoothed, len(rates), "non-finite loss", rate)
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (len(losses) + 1))
        taken.append(rate)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge * best:
            return Sweep(taken, losses, smoothed, len(rates), "diverged", rate)
    return Sweep(taken, losses, smoothed, len(rates), "", None)


def valley(losses: list[float]) -> int:
    """fastai's valley: the middle of the longest decreasing run of `losses`, as an index."""
    if not losses:
        raise ValueError("no loss to choose from")
    lengths = [1] * len(losses)  # of the longest decreasing subsequence ending at each point
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
        if lengths[i] > lengths[end]:
            end = i
    start = max(end - lengths[end], 0)  # fastai's own estimate of where the run starts
    third = (end - start) / 3
    return start + int(third) + int(third / 2)
