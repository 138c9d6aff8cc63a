"""`ftr suggest lr RECIPE`: a learning-rate range test of the recipe's own training at
one epoch, written back as the recipe's `lr` line.

The test trains a copy of the run's model (built as `ftr run` builds it, in the
phase of epoch N: what trains then, BatchNorm as the plan sets it) with the plan's
optimizer and its groups, one train batch a step (`accumulate` batches where the
recipe accumulates), cycling the train loader. Every group's rate is the rate
the plan gives it at the first step of epoch N times one common multiplier, so
the ratios between groups stay those of the recipe; the multiplier ramps
exponentially so that the largest group's rate goes from 1e-7 to 10 over at most
100 steps (`--steps`) (lr_range.py: smoothing, stop and the suggestion rule). The steps run
in fp32.

The suggested multiplier is the suggested rate over the largest group's rate at
epoch N; every rate of the `lr` line is multiplied by it and rounded to 2
significant digits. The schedule and thaw warmups act on the new rates as they
did on the old ones, so the largest group trains at the suggested rate at epoch N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import recipe_lang
from recipe_lang.nodes import Kwarg, Num, Plain
from recipe_lang.resolve import resolve

from ..model import enter_phase, train_mode
from ..optim import Rates, steps_per_epoch
from . import lr_curve
from .lr_range import BETA, DIVERGE, FIRST, LAST, STEPS, Sweep, ramp, sweep
from .measuring import Setup, SuggestError, setup
from .recipe_edit import check_writable, replace_in_train, train_statements, write_recipe


@dataclass
class LrRequest:
    recipe: str
    output: str | None = None  # the recipe to write; None: the caller prints it
    epoch: int = 1
    steps: int = STEPS  # of the ramp
    plot: str | None = None  # the PNG; default: beside the output, or the recipe's name in the working folder
    device: str = "cpu"


@dataclass
class LrSuggestion:
    text: str  # the new recipe
    sweep: Sweep
    suggested: int  # the index of the suggested step
    largest: float  # the largest group's rate at the epoch, as the recipe has it
    multiplier: float
    old: str  # the `lr` line before
    new: str  # and after
    plot: str | None  # the PNG written
    plot_note: str | None  # why no PNG was written

    def summary(self, output: str | None) -> list[str]:
        measured = self.sweep
        stop = f"stopped at step {measured.stop_step} ({measured.stop})" if measured.stop else "no divergence"
        lines = [
            f"range test of {measured.planned} steps, {stop}: x{self.multiplier:.2g} of the rates",
            f"{self.old} -> {self.new}",
        ]
        lines.append(f"the curve: {self.plot}" if self.plot else f"no curve: {self.plot_note}")
        return lines + ([f"wrote {output}"] if output else [])


def suggest_lr(request: LrRequest) -> LrSuggestion:
    """Raises RecipeError (the recipe) or SuggestError (the measurement)."""
    recipe = recipe_lang.load(request.recipe)
    plan = resolve(recipe)
    if request.output:
        check_writable(request.output, "-o")
    if not lr_curve.missing_matplotlib():
        check_writable(default_plot(request), "--plot")
    if not 1 <= request.epoch <= plan.epochs:
        raise SuggestError(f"--epoch {request.epoch}: the recipe trains epochs 1 to {plan.epochs}")
    measured, largest = range_test(setup(plan, request.device), request.epoch, request.steps)
    if len(measured.rates) < 2:
        raise SuggestError(
            f"the range test stopped at its first steps ({measured.stop} at rate {rate_text(measured.stop_rate)}): "
            "check that the recipe trains with `ftr run` first"
        )
    suggested = measured.suggestion()
    multiplier = measured.rates[suggested] / largest
    statement = _lr_statement(recipe)
    old, new = _rates_line(statement, 1.0), _rates_line(statement, multiplier)
    plot, note = _draw(request, measured, suggested, new)
    evidence = _evidence(request.epoch, plan.train.accumulate, measured, suggested, multiplier, old)
    evidence[-1] += f"; the curve: {plot or f'not drawn ({note})'}"
    text = replace_in_train(recipe.source, recipe.filename, lambda s: s.keyword == "lr", [new], evidence, "lr")
    if request.output:
        write_recipe(request.output, text)
    return LrSuggestion(text, measured, suggested, largest, multiplier, old, new, plot, note)


def range_test(s: Setup, epoch: int, steps: int) -> tuple[Sweep, float]:
    """The sweep over the span of `epoch`, and the largest group's rate there."""
    plan = s.plan
    phase = plan.phase_of(epoch)
    enter_phase(s.model, phase)
    train_mode(s.model, phase)
    accumulate = plan.train.accumulate
    per_epoch = steps_per_epoch(len(s.loader), accumulate)
    Rates(plan, s.optimizer, per_epoch).set((epoch - 1) * per_epoch)
    groups = s.optimizer.param_groups
    largest = max(g["lr"] for g in groups if any(p.requires_grad for p in g["params"]))
    ratios = [g["lr"] / largest for g in groups]
    batches = s.batches()
    clip = plan.train.clip_grad_norm

    def step(rate: float) -> float:
        for group, ratio in zip(groups, ratios, strict=True):
            group["lr"] = rate * ratio
        total = 0.0
        for _ in range(accumulate):
            loss = s.loss(*next(batches))
            if not torch.isfinite(loss):
                return loss.item()
            (loss / accumulate).backward()
            total += loss.item()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in s.model.parameters() if p.grad is not None], clip)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        return total / accumulate

    return sweep(step, ramp(FIRST, LAST, steps)), largest


def default_plot(request: LrRequest) -> Path:
    if request.plot:
        return Path(request.plot)
    if request.output:
        output = Path(request.output)
        return output.parent / f"{output.stem}.lr.png"
    return Path(f"{Path(request.recipe).stem}.lr.png")


def _draw(request: LrRequest, measured: Sweep, suggested: int, new: str) -> tuple[str | None, str | None]:
    note = lr_curve.missing_matplotlib()
    if note:
        return None, note
    path = default_plot(request)
    lr_curve.draw_curve(measured, suggested, path, f"{Path(request.recipe).name}, epoch {request.epoch}: {new}")
    return str(path), None


def _lr_statement(recipe) -> Plain:
    """The `lr` statement of the train block (a recipe that trains anything has one)."""
    for statement in train_statements(recipe.source, recipe.filename):
        if statement.keyword == "lr" and isinstance(statement, Plain):
            return statement
    raise SuggestError("the recipe's train block has no `lr` line: give it one (e.g. lr 1e-3) to scale")


def _rates_line(statement: Plain, multiplier: float) -> str:
    """The `lr` line with every rate times `multiplier` (1: as written)."""
    return "lr " + ", ".join(_arg_text(arg, multiplier) for arg in statement.args)


def _arg_text(arg, multiplier: float) -> str:
    if isinstance(arg, Kwarg):
        return f"{arg.name}={_arg_text(arg.value, multiplier)}"
    if isinstance(arg, Num):
        return arg.text if multiplier == 1.0 else rate_text(arg.value * multiplier)
    raise SuggestError(f"the `lr` line holds {arg!r}, not rates")  # the recipe's checks refuse it first


def rate_text(rate: float) -> str:
    """A rate rounded to 2 significant digits, as recipes write rates: 3e-4, 0.012, 2.5."""
    mantissa, exponent = f"{rate:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    if -2 <= int(exponent) < 3:
        return f"{float(f'{mantissa}e{exponent}'):g}"
    return f"{mantissa}e{int(exponent)}"


def _evidence(epoch: int, accumulate: int, measured: Sweep, suggested: int, multiplier: float, old: str) -> list[str]:
    stop = f"stopped at step {measured.stop_step}: {_why(measured)}" if measured.stop else "no divergence"
    batches = "one train batch" if accumulate == 1 else f"{accumulate} train batches"
    rate = rate_text(measured.rates[suggested])
    return [
        f"a learning-rate range test at epoch {epoch}: the largest group's rate from {rate_text(FIRST)} to "
        f"{rate_text(LAST)}",
        f"over up to {measured.planned} steps, {batches} each; {stop}",
        f"rule: fastai's valley on the smoothed loss (EMA {BETA:g}, bias-corrected): {rate} at step {suggested + 1}",
        f"x{multiplier:.2g} of every rate of `{old}`",
    ]


def _why(measured: Sweep) -> str:
    return f"the smoothed loss passed {DIVERGE:g}x its lowest" if measured.stop == "diverged" else "a non-finite loss"
