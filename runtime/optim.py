"""The optimizer and its per-step rates, exactly as the plan laid them out.

Parameter groups are fixed at step 0 (design.md, "Decisions already taken"):
`build_optimizer` makes one torch param group per `plan.optimizer_groups` entry,
in the plan's order, and nothing here ever adds, removes or rebuilds one.
Freezing is `requires_grad=False` on the parameter: its `.grad` stays None
(the loop zeroes gradients with `optimizer.zero_grad(set_to_none=True)`, which
this relies on), and every torch optimizer used here skips a
parameter whose gradient is None: no update, no weight decay, no state. A
parameter that has never trained therefore has no state when it thaws; one
that trained, froze and thaws again still carries its old state, which
`clear_state` drops (language.md: "Optimizer state of a parameter that thaws
starts empty").

`Rates` sets every group's rate before each optimizer step from the one
definition of the schedule and of thaw warmups (recipe_lang/resolve/schedule.py):

    lr = base_lr * schedule_factor(plan.schedule, t, epochs, dt) * warmup_factor(warmups, t, dt)

with t = step / steps_per_epoch and dt = 1 / steps_per_epoch, evaluated in
that order (left to right) so that the compiled script, writing the same
expression, gets the same floats. A constant schedule without warmup gives
exactly base_lr (x * 1.0 * 1.0 == x in IEEE arithmetic); every rate is computed
from the base rate, never from the previous step's, so nothing drifts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from recipe_lang.resolve.schedule import schedule_factor, warmup_factor

GROUP_KEY = "ftr_group"  # the recipe group (head, a user group, rest) an optimizer group belongs to


def build_optimizer(plan, model: nn.Module) -> torch.optim.Optimizer:
    """The plan's optimizer over `model`, one param group per plan optimizer group.

    Each group dict carries "lr" (the recipe group's base rate), "weight_decay",
    and the extra keys "ftr_group", "base_lr" and "warmups" (a list of
    [epoch, epochs] pairs). The extra keys are saved and restored by the
    optimizer's own state_dict / load_state_dict, so a checkpoint carries them."""
    named = dict(model.named_parameters())
    missing = [p for og in plan.optimizer_groups for p in og.params if p not in named]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"the model has no parameter {shown}: it is not the model the plan was resolved against")
    if not plan.optimizer_groups:
        raise ValueError("the plan has no optimizer group: nothing ever trains")
    groups = []
    for og in plan.optimizer_groups:
        base_lr = plan.group(og.group).lr
        if base_lr is None:  # the resolver leaves such groups out; guard against a hand-made plan
            raise ValueError(f"group '{og.group}' has optimizer parameters but no rate")
        groups.append(
            {
                "params": [named[p] for p in og.params],
                "lr": base_lr,
                "weight_decay": og.weight_decay,
                GROUP_KEY: og.group,
                "base_lr": base_lr,
                "warmups": [[epoch, length] for epoch, length in og.warmups],
            }
        )
    spec = plan.optimizer
    kind = spec.kind
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=spec.momentum, nesterov=spec.nesterov)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=groups[0]["lr"], betas=tuple(spec.betas), eps=spec.eps)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=tuple(spec.betas), eps=spec.eps)
    if kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=groups[0]["lr"], alpha=spec.alpha, momentum=spec.momentum, eps=spec.eps)
    raise ValueError(f"unknown optimizer {kind}")


def clear_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> int:
    """Forget the optimizer state (momentum buffer, Adam moments and step, ...)
    of `params`; returns how many had state. The loop calls it with the
    parameters that thaw at a phase boundary, so that a part that trained,
    froze and thaws again starts afresh like one that never trained."""
    dropped = 0
    for p in params:
        if optimizer.state.pop(p, None) is not None:
            dropped += 1
    return dropped


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of `batches` batches with gradient accumulation
    over `accumulate` batches: the last, shorter accumulation still steps."""
    if batches < 1 or accumulate < 1:
        raise ValueError(f"need at least one batch and accumulate >= 1, got {batches} and {accumulate}")
    return math.ceil(batches / accumulate)


class Rates:
    """Sets every param group's rate for a global optimizer step.

    `set(step)` returns {recipe group: rate} for logging as lr/<group>. A recipe
    group split into several optimizer groups (by weight decay and by thaw
    warmup) reports the rate of its first optimizer group that has no thaw
    warmup, which is the group's scheduled rate; when all of them ramp, the
    first one's (ramp included). Every group with a rate is reported, frozen
    or not: which of them a log shows is the loop's choice. Note that
    schedule.py's thaw ramp counts from the end of each step, so at the last
    step before a thaw epoch a ramping group's rate reads 0 (its parameters are
    still frozen then, so nothing depends on it; a log of the rate at an
    epoch's first step never shows it)."""

    def __init__(self, plan, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.schedule = plan.schedule
        self.epochs = plan.epochs
        self.optimizer = optimizer
        self.steps_per_epoch = steps_per_epoch
        self.reported = plan.reported_rates()  # recipe group -> index of the optimizer group its rate is read from

    def set(self, step: int) -> dict[str, float]:
        """Set the rates for global optimizer step `step` (0-based, counted over
        the whole run) and return {recipe group: rate}."""
        t = step / self.steps_per_epoch
        dt = 1 / self.steps_per_epoch
        factor = schedule_factor(self.schedule, t, self.epochs, dt)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor * warmup_factor(group["warmups"], t, dt)
        groups = self.optimizer.param_groups
        return {name: groups[i]["lr"] for name, i in self.reported.items()}
