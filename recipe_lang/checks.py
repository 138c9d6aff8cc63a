"""Checks that need the whole recipe but no model: references between
statements, epochs in range, metrics that exist."""

from __future__ import annotations

from .diagnostics import Diagnostic, RecipeError, did_you_mean
from .recipe import Recipe
from .validation_errors import span_for

RESERVED_GROUPS = ("head", "rest", "backbone", "all")


def check_recipe(recipe: Recipe) -> list[Diagnostic]:
    """Raise RecipeError if anything is wrong; return the warnings."""
    found: list[Diagnostic] = []
    for check in (_groups, _rates, _events, _gradually, _metrics, _validation, _presets):
        found += check(recipe)
    errors = [d for d in found if d.is_error]
    if errors:
        raise RecipeError(found, recipe.source, recipe.filename)
    recipe._warnings = found
    return found


def _at(recipe: Recipe, *loc) -> object:
    return span_for(tuple(loc), recipe.spans)


def _groups(recipe: Recipe):
    for name in recipe.groups:
        if name in RESERVED_GROUPS:
            yield Diagnostic(
                f"'{name}' is a reserved group name",
                _at(recipe, "groups", name),
                hint="choose another name; head, rest, backbone and all always exist",
            )


def group_names(recipe: Recipe) -> list[str]:
    return ["head", *recipe.groups, "rest"]


def _rates(recipe: Recipe):
    if recipe.train.lr is None:
        yield Diagnostic(
            "missing statement 'lr' in train",
            _at(recipe, "train"),
            hint="add lr 1e-3 (one rate) or lr head=1e-3, rest=1e-4 (per group)",
        )
        return
    names = group_names(recipe)
    for name in recipe.train.lr.groups:
        if name not in names:
            yield Diagnostic(
                f"'lr' names an unknown group '{name}'",
                _at(recipe, "train", "lr", "groups", name),
                hint=did_you_mean(name, names) or f"groups are: {', '.join(names)}",
            )


def _events(recipe: Recipe):
    epochs = recipe.train.epochs
    for i, event in enumerate(recipe.train.events):
        if event.epoch > epochs:
            yield Diagnostic(
                f"epoch {event.epoch} is past the last epoch ({epochs})",
                _at(recipe, "train", "events", i, "epoch"),
                hint=f"use an epoch from 1 to {epochs}, or raise epochs",
            )
        elif event.epoch == 1 and event.action == "unfreeze":
            yield Diagnostic(
                "'at epoch 1 unfreeze' thaws before anything has trained",
                _at(recipe, "train", "events", i, "epoch"),
                severity="warning",
                hint="leave it out of freeze instead",
            )


def _gradually(recipe: Recipe):
    gradual = recipe.train.gradually
    if gradual is None:
        return
    epochs = recipe.train.epochs
    last = gradual.start + gradual.every * (len(gradual.stages) - 1)
    if last > epochs:
        stage = gradual.stages[-1]
        yield Diagnostic(
            f"the last stage '{stage}' would thaw at epoch {last}, past the last epoch ({epochs})",
            _at(recipe, "train", "gradually", "stages", len(gradual.stages) - 1),
            hint="start earlier, thaw more often or raise epochs",
        )


def _metrics(recipe: Recipe):
    evaluate = recipe.evaluate
    keys = evaluate.metric_keys
    seen = set()
    for i, key in enumerate(keys):
        if key in seen:
            yield Diagnostic(f"metric '{key}' given twice", _at(recipe, "evaluate", "metrics", i))
        seen.add(key)
    available = set(keys) | {"loss"}  # val_loss is always logged
    if evaluate.best is not None and evaluate.best not in available:
        yield Diagnostic(
            f"'best' names a metric that is not measured: '{evaluate.best}'",
            _at(recipe, "evaluate", "best"),
            hint=did_you_mean(evaluate.best, available) or f"add it to metrics ({', '.join(keys)})",
        )
    stop = evaluate.early_stop
    if stop is None:
        return
    metric = stop.metric or evaluate.best
    if metric is None:
        yield Diagnostic(
            "'early_stop' needs a metric",
            _at(recipe, "evaluate", "early_stop"),
            hint="set best METRIC, or early_stop patience=N, metric=NAME",
        )
    elif stop.metric is not None and stop.metric not in available:
        yield Diagnostic(
            f"'early_stop' names a metric that is not measured: '{stop.metric}'",
            _at(recipe, "evaluate", "early_stop", "metric"),
            hint=did_you_mean(stop.metric, available) or f"add it to metrics ({', '.join(keys)})",
        )


def _validation(recipe: Recipe):
    if recipe.data.val is not None:
        return
    evaluate = recipe.evaluate
    for field in ("best", "early_stop"):
        if getattr(evaluate, field) is not None:
            yield Diagnostic(
                f"'{field}' needs validation data",
                _at(recipe, "evaluate", field),
                hint="add val split(0.1) or val imagefolder(...) to data",
            )
    yield Diagnostic(
        "no validation data: only train_loss is logged",
        _at(recipe, "data"),
        severity="warning",
        hint="add val split(0.1) or val imagefolder(...) to data",
    )


def _presets(recipe: Recipe):
    kind = recipe.model.weights.kind
    if kind in ("default", "enum"):
        return
    data = recipe.data
    uses = [("eval_transforms", data.eval_transforms == "weights"), ("normalize", data.normalize == "weights")]
    for field, used in uses:
        if used:
            yield Diagnostic(
                f"'{field} weights' needs torchvision weights",
                _at(recipe, "data", field),
                hint="set weights default or a weights enum member, or write the transforms out",
            )
