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
TEXT = "text_classification"
CHECKED_TASKS = (CLASSIFICATION, DETECTION, TEXT)

LABELS = (CLASSIFICATION, TEXT)  # one label out of a head on a vector
IMAGES = (CLASSIFICATION, DETECTION)
PRESETS = (CLASSIFICATION,)  # the tasks whose inputs may follow the weights' preset (`... weights`)
DISTILLED = (CLASSIFICATION,)  # the tasks `distill` takes: a teacher's run must be of one too

HEAD_TASK = {"linear": LABELS, "mlp": LABELS, "detection": (DETECTION,)}
SOURCE_TASK = {
    "imagefolder": (CLASSIFICATION,),
    "csv": (CLASSIFICATION,),  # csv(..., text=...) is TEXT's: see _source_owners
    "jsonl": (TEXT,),
    "synthetic": (CLASSIFICATION,),
    "torchvision": (CLASSIFICATION,),
    "voc": (DETECTION,),
    "coco": (DETECTION,),
}
BACKBONE_TASK = {"torchvision": IMAGES, "timm": (CLASSIFICATION,), "hf": (TEXT,)}
METRIC_TASK = {
    "accuracy": LABELS,
    "top_k": LABELS,
    "macro_f1": LABELS,
    "map": (DETECTION,),
    "map50": (DETECTION,),
    "map75": (DETECTION,),
}
TRANSFORM_TASK = {
    "random_erasing": (CLASSIFICATION,),
    "trivial_augment": (CLASSIFICATION,),
    "rand_augment": (CLASSIFICATION,),
}
# statements (by their path in the Recipe) that only some tasks may write
STATEMENT_TASK = {
    ("model", "min_size"): (DETECTION,),
    ("model", "max_size"): (DETECTION,),
    ("model", "pool"): (TEXT,),
    ("model", "head_init"): (CLASSIFICATION,),
    ("data", "normalize"): PRESETS,
    ("data", "train_transforms"): IMAGES,
    ("data", "eval_transforms"): IMAGES,
    ("data", "skip_bad_images"): IMAGES,
    ("data", "max_length"): (TEXT,),
    ("data", "group_by_length"): (TEXT,),
    ("train", "label_smoothing"): LABELS,
    ("train", "channels_last"): IMAGES,
    ("data", "unlabeled"): (CLASSIFICATION,),
    ("train", "pseudo_label"): (CLASSIFICATION,),
    ("train", "distill"): DISTILLED,
}

# how to put right, in a recipe of a task, what belongs to others
_HINTS = {
    DETECTION: {
        "head": "write head detection(classes=N)",
        "source": "write voc(...) or coco(...)",
        "metric": "detection measures loss, map, map50 and map75",
        "transform": "boxes do not follow it: remove it",
        "normalize": "remove it: the detector normalizes its inputs itself",
        "label_smoothing": "remove it: the detector's losses are its own",
        "eval_transforms weights": (
            "remove it: the detector resizes its inputs itself; set min_size and max_size in model"
        ),
        "backbone": "write a torchvision.models.detection builder, e.g. fasterrcnn_resnet50_fpn",
        "distill": "remove it and the teacher block: a detector's outputs are not class logits",
    },
    CLASSIFICATION: {
        "head": 'add "task detection" below the recipe line, or write head linear(classes=N)',
        "min_size": 'add "task detection" below the recipe line, or resize with transforms',
        "max_size": 'add "task detection" below the recipe line, or resize with transforms',
    },
    TEXT: {
        "source": 'write csv("file.csv", text="column", label="column") or jsonl("file.jsonl")',
        "backbone": 'write backbone hf("model-folder")',
        "transform": "texts take no image transforms: remove it",
        "train_transforms": "texts take no image transforms: remove it",
        "eval_transforms": "texts take no image transforms: remove it",
        "eval_transforms weights": "texts take no image transforms: remove it",
        "normalize": "remove it: a text has no pixels to normalize",
        "skip_bad_images": "remove it: a text recipe reads no images",
        "channels_last": "remove it: a text recipe has no image layout",
        "distill": "remove it and the teacher block: ftr distills image classifiers only",
    },
}
_ADD_TASK = {
    DETECTION: 'add "task detection" below the recipe line',
    TEXT: 'add "task text_classification" below the recipe line',
}


def task_diagnostics(recipe: Recipe) -> list[Diagnostic]:
    """An error for every backbone, head, source, metric, transform and statement of
    the recipe that belongs to other tasks than the recipe's."""
    if recipe.task not in CHECKED_TASKS:
        return []
    found = [
        *_backbone(recipe),
        *_head(recipe),
        *_sources(recipe),
        *_metrics(recipe),
        *_transforms(recipe),
        *_statements(recipe),
    ]
    return [d for d in found if d is not None]


def _foreign(recipe: Recipe, what: str, owners: tuple | None, span, topic: str) -> Diagnostic | None:
    """`what` belongs to the tasks `owners`: an error unless the recipe's task is one."""
    if owners is None or recipe.task in owners:
        return None
    hint = _HINTS[recipe.task].get(topic) or (_ADD_TASK.get(owners[0]) if len(owners) == 1 else None)
    whose = f"task {owners[0]}" if len(owners) == 1 else f"tasks {' and '.join(owners)}"
    return Diagnostic(f"{what} belongs to {whose}, not {recipe.task}", span, hint=hint)


def _at(recipe: Recipe, *loc):
    return span_for(tuple(loc), recipe.spans)


def _keyword_at(recipe: Recipe, *loc):
    return recipe.keyword_spans.get(tuple(loc)) or _at(recipe, *loc)


def _backbone(recipe: Recipe):
    model = recipe.model
    what = f"backbone {model.backbone_name}" if model.library == "torchvision" else f"backbone {model.library}(...)"
    yield _foreign(recipe, what, BACKBONE_TASK[model.library], _at(recipe, "model", "backbone"), "backbone")


def _head(recipe: Recipe):
    head = recipe.model.head
    if head is not None:
        yield _foreign(recipe, f"head {head.kind}(...)", HEAD_TASK.get(head.kind), _at(recipe, "model", "head"), "head")


def _sources(recipe: Recipe):
    for field in ("train", "val"):
        source = getattr(recipe.data, field)
        if source is not None:
            owners = (TEXT,) if getattr(source, "text", None) is not None else SOURCE_TASK.get(source.kind)
            what = (
                f"{source.kind}(..., text=...)" if owners == (TEXT,) and source.kind == "csv" else f"{source.kind}(...)"
            )
            yield _foreign(recipe, what, owners, _at(recipe, "data", field), "source")


def _metrics(recipe: Recipe):
    for i, metric in enumerate(recipe.evaluate.metrics):
        name = f"top_k({metric.k})" if metric.kind == "top_k" else metric.kind
        owner = METRIC_TASK.get(metric.kind)
        yield _foreign(recipe, f"metric {name}", owner, _at(recipe, "evaluate", "metrics", i), "metric")


def _transforms(recipe: Recipe):
    if recipe.task not in IMAGES:
        return  # the statements themselves are foreign there
    for field in ("train_transforms", "eval_transforms"):
        transforms = getattr(recipe.data, field)
        for i, transform in enumerate(transforms if isinstance(transforms, list) else []):
            owner = TRANSFORM_TASK.get(transform.kind)
            span = _at(recipe, "data", field, i)
            yield _foreign(recipe, f"transform {transform.kind}", owner, span, "transform")
    if recipe.data.eval_transforms == "weights":
        span = _keyword_at(recipe, "data", "eval_transforms")
        yield _foreign(recipe, "eval_transforms weights", PRESETS, span, "eval_transforms weights")


def _statements(recipe: Recipe):
    for (block, field), owner in STATEMENT_TASK.items():
        if field in getattr(recipe, block).model_fields_set:
            yield _foreign(recipe, field, owner, _keyword_at(recipe, block, field), field)
