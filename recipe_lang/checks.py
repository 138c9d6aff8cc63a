"""Checks that need the whole recipe but no model: references between
statements, epochs in range, metrics that exist."""

from __future__ import annotations

from .diagnostics import Diagnostic, RecipeError, did_you_mean
from .recipe import Recipe
from .tasks import PRESETS, task_diagnostics
from .validation_errors import span_for

RESERVED_GROUPS = ("head", "rest", "backbone", "all")


def check_recipe(recipe: Recipe) -> list[Diagnostic]:
    """Raise RecipeError if anything is wrong; return the warnings."""
    found: list[Diagnostic] = []
    for check in CHECKS:
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
        if event.action == "freeze" and event.warmup > 0:
            yield Diagnostic(
                "'warmup' applies to what thaws, not to what freezes",
                _at(recipe, "train", "events", i, "warmup"),
                hint="remove warmup=... from this line",
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
    if evaluate.stop_metric is None:
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
    if kind in ("default", "enum") or recipe.task not in PRESETS:  # elsewhere tasks.py refuses the preset itself
        return
    data = recipe.data
    uses = [("eval_transforms", data.eval_transforms == "weights"), ("normalize", data.normalize == "weights")]
    library = recipe.model.library
    for field, used in uses:
        if used:
            yield Diagnostic(
                f"'{field} weights' needs {library} weights",
                _at(recipe, "data", field),
                hint="set weights default, or write the transforms out"
                if library == "timm"
                else "set weights default or a weights enum member, or write the transforms out",
            )


def _runnable(recipe: Recipe):
    """Settings that every part accepts alone but that cannot run together."""
    optimizer = recipe.train.optimizer
    if optimizer.kind == "sgd" and optimizer.nesterov and optimizer.momentum == 0:
        yield Diagnostic(
            "nesterov needs momentum",
            _at(recipe, "train", "optimizer", "nesterov"),
            hint="add momentum=0.9, or drop nesterov=true",
        )
    for field in ("train_transforms", "eval_transforms"):
        transforms = getattr(recipe.data, field)
        for i, transform in enumerate(transforms if isinstance(transforms, list) else []):
            if transform.kind == "grayscale" and transform.channels == 1:
                yield Diagnostic(
                    "grayscale(channels=1) makes 1-channel images; the backbones take 3",
                    _at(recipe, "data", field, i, "channels"),
                    hint="use grayscale() (3 channels)",
                )
    head = recipe.model.head
    for i, metric in enumerate(recipe.evaluate.metrics):
        if metric.kind == "top_k" and head is not None and metric.k > head.classes:
            yield Diagnostic(
                f"top_k({metric.k}) needs more classes than the head's {head.classes}",
                _at(recipe, "evaluate", "metrics", i, "k"),
                hint=f"use k from 1 to {head.classes}",
            )


def _schedule(recipe: Recipe):
    schedule, epochs = recipe.train.schedule, recipe.train.epochs
    warmup = getattr(schedule, "warmup", 0.0)
    if warmup >= epochs:
        yield Diagnostic(
            f"a warmup of {warmup:g} epochs lasts the whole {epochs}-epoch run",
            _at(recipe, "train", "schedule", "warmup"),
            severity="warning",
            hint="the rate never reaches the one set in lr",
        )
    if schedule.kind == "step" and schedule.every >= epochs:
        yield Diagnostic(
            f"step(every={schedule.every}) never decays in a {epochs}-epoch run",
            _at(recipe, "train", "schedule", "every"),
            severity="warning",
        )


def _sizes(recipe: Recipe):
    model = recipe.model
    if model.min_size is not None and model.max_size is not None and model.min_size > model.max_size:
        yield Diagnostic(
            f"min_size {model.min_size} is larger than max_size {model.max_size}",
            _at(recipe, "model", "min_size"),
            hint="lower min_size or raise max_size",
        )


def _pseudo_label(recipe: Recipe):
    pseudo, unlabeled = recipe.train.pseudo_label, recipe.data.unlabeled
    if pseudo is None:
        if unlabeled is not None:
            yield Diagnostic(
                "the unlabeled images are not used without pseudo_label",
                _at(recipe, "data", "unlabeled"),
                severity="warning",
                hint="add pseudo_label threshold=0.95 to train, or remove this line",
            )
        return
    if unlabeled is None:
        yield Diagnostic(
            "'pseudo_label' needs unlabeled images",
            recipe.keyword_spans.get(("train", "pseudo_label")) or _at(recipe, "train", "pseudo_label"),
            hint='add unlabeled images("folder") to data',
        )
    epochs = recipe.train.epochs
    if pseudo.start > epochs:
        yield Diagnostic(
            f"start={pseudo.start} is past the last epoch ({epochs})",
            _at(recipe, "train", "pseudo_label", "start"),
            hint=f"use a start from 1 to {epochs}, or raise epochs",
        )


def _distill(recipe: Recipe):
    """A teacher and `distill` come together (tasks.STATEMENT_TASK keeps distill to
    classification)."""
    teacher, distill = recipe.teacher, recipe.train.distill
    if teacher is not None and distill is None:
        yield Diagnostic(
            "a teacher without 'distill' teaches nothing",
            _at(recipe, "teacher"),
            hint="add distill temperature=4, alpha=0.5 to train, or remove the teacher block",
        )
    if distill is not None and teacher is None:
        yield Diagnostic(
            "'distill' needs a teacher",
            _at(recipe, "train", "distill"),
            hint='add teacher { run "runs/name" } (a finished run of the same classes)',
        )
    if distill is not None and recipe.train.pseudo_label is not None:
        yield Diagnostic(
            "'distill' and 'pseudo_label' do not work together: "
            "the pseudo-labelled images would have no teacher logits",
            _at(recipe, "train", "distill"),
            hint="keep one of the two",
        )


CHECKS = (
    task_diagnostics,
    _groups,
    _rates,
    _events,
    _gradually,
    _metrics,
    _validation,
    _presets,
    _runnable,
    _schedule,
    _sizes,
    _pseudo_label,
    _distill,
)
