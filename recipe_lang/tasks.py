"""What belongs to which task: the heads, data sources, metrics, transforms and
statements that only one task takes, and the errors of a recipe that mixes them.

Anything not named here (`loss`, `split(...)`, `hflip()`, `lr`, ...) belongs to
every task.
"""

from __future__ import annotations

from .diagnostics import Diagnostic
from .recipe import Recipe
from .validation_errors import span_for

CLASSIFICATION = "classification"
DETECTION = "detection"
CHECKED_TASKS = (CLASSIFICATION, DETECTION)

HEAD_TASK = {"linear": CLASSIFICATION, "mlp": CLASSIFICATION, "detection": DETECTION}
SOURCE_TASK = {
    "imagefolder": CLASSIFICATION,
    "csv": CLASSIFICATION,
    "synthetic": CLASSIFICATION,
    "torchvision": CLASSIFICATION,
    "voc": DETECTION,
    "coco": DETECTION,
}
METRIC_TASK = {
    "accuracy": CLASSIFICATION,
    "top_k": CLASSIFICATION,
    "macro_f1": CLASSIFICATION,
    "map": DETECTION,
    "map50": DETECTION,
    "map75": DETECTION,
}
TRANSFORM_TASK = {"random_erasing": CLASSIFICATION, "trivial_augment": CLASSIFICATION, "rand_augment": CLASSIFICATION}
# statements (by their path in the Recipe) that only one task may write
STATEMENT_TASK = {
    ("model", "min_size"): DETECTION,
    ("model", "max_size"): DETECTION,
    ("data", "normalize"): CLASSIFICATION,
    ("train", "label_smoothing"): CLASSIFICATION,
}

# how to put right, in a detection recipe, what belongs to classification
_IN_DETECTION = {
    "head": "write head detection(classes=N)",
    "source": "write voc(...) or coco(...)",
    "metric": "detection measures loss, map, map50 and map75",
    "transform": "boxes do not follow it: remove it",
    "normalize": "remove it: the detector normalizes its inputs itself",
    "label_smoothing": "remove it: the detector's losses are its own",
    "eval_transforms weights": "remove it: the detector resizes its inputs itself; set min_size and max_size in model",
}
# ... and in a classification recipe, what belongs to detection
_IN_CLASSIFICATION = {
    "head": 'add "task detection" below the recipe line, or write head linear(classes=N)',
    "min_size": 'add "task detection" below the recipe line, or resize with transforms',
    "max_size": 'add "task detection" below the recipe line, or resize with transforms',
}
_ADD_DETECTION = 'add "task detection" below the recipe line'


def task_diagnostics(recipe: Recipe) -> list[Diagnostic]:
    """An error for every head, source, metric, transform and statement of the
    recipe that belongs to another task than the recipe's."""
    if recipe.task not in CHECKED_TASKS:
        return []
    found = [*_head(recipe), *_sources(recipe), *_metrics(recipe), *_transforms(recipe), *_statements(recipe)]
    return [d for d in found if d is not None]


def _foreign(recipe: Recipe, what: str, owner: str | None, span, topic: str) -> Diagnostic | None:
    """`what` belongs to task `owner`: an error unless that is the recipe's task."""
    if owner is None or owner == recipe.task:
        return None
    hints = _IN_DETECTION if recipe.task == DETECTION else _IN_CLASSIFICATION
    hint = hints.get(topic, _ADD_DETECTION if owner == DETECTION else None)
    return Diagnostic(f"{what} belongs to task {owner}, not {recipe.task}", span, hint=hint)


def _at(recipe: Recipe, *loc):
    return span_for(tuple(loc), recipe.spans)


def _keyword_at(recipe: Recipe, *loc):
    return recipe.keyword_spans.get(tuple(loc)) or _at(recipe, *loc)


def _head(recipe: Recipe):
    head = recipe.model.head
    if head is not None:
        yield _foreign(recipe, f"head {head.kind}(...)", HEAD_TASK.get(head.kind), _at(recipe, "model", "head"), "head")


def _sources(recipe: Recipe):
    for field in ("train", "val"):
        source = getattr(recipe.data, field)
        if source is not None:
            owner = SOURCE_TASK.get(source.kind)
            yield _foreign(recipe, f"{source.kind}(...)", owner, _at(recipe, "data", field), "source")


def _metrics(recipe: Recipe):
    for i, metric in enumerate(recipe.evaluate.metrics):
        name = f"top_k({metric.k})" if metric.kind == "top_k" else metric.kind
        owner = METRIC_TASK.get(metric.kind)
        yield _foreign(recipe, f"metric {name}", owner, _at(recipe, "evaluate", "metrics", i), "metric")


def _transforms(recipe: Recipe):
    for field in ("train_transforms", "eval_transforms"):
        transforms = getattr(recipe.data, field)
        for i, transform in enumerate(transforms if isinstance(transforms, list) else []):
            owner = TRANSFORM_TASK.get(transform.kind)
            span = _at(recipe, "data", field, i)
            yield _foreign(recipe, f"transform {transform.kind}", owner, span, "transform")
    if recipe.data.eval_transforms == "weights":
        span = _keyword_at(recipe, "data", "eval_transforms")
        yield _foreign(recipe, "eval_transforms weights", CLASSIFICATION, span, "eval_transforms weights")


def _statements(recipe: Recipe):
    for (block, field), owner in STATEMENT_TASK.items():
        if field in getattr(recipe, block).model_fields_set:
            yield _foreign(recipe, field, owner, _keyword_at(recipe, block, field), field)
