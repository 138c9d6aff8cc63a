"""What resolving a recipe does differently per task: build the model and put its
head in place, read the data's classes, set the input pipeline. One module per
task, each with a `TaskResolver(resolution)` that reports through the resolution
(`attempt`, `report`); everything else in resolver.py knows no task."""

from __future__ import annotations

import importlib


def task_resolver(task: str, resolution):
    return importlib.import_module(f"{__name__}.{task}").TaskResolver(resolution)


def train_classes(resolver, val_hint: str, head_classes: int | None = None) -> list[str] | None:
    """The train source's classes (None when unreadable: reported), after checking that
    a val source other than a split has the same ones and, given the head's class count,
    that it is theirs. `resolver` is a TaskResolver: its `source_classes(source, loc)`
    reads a source, its `res` reports."""
    from .. import data_check

    data = resolver.res.recipe.data
    train = resolver.source_classes(data.train, ("data", "train"))
    if data.val is not None and data.val.kind != "split":
        val = resolver.source_classes(data.val, ("data", "val"))
        difference = data_check.class_difference(train, val, val_hint) if train and val else None
        if difference:
            resolver.res.report(difference, "data", "val")
    mismatch = data_check.count_mismatch(train, head_classes) if train and head_classes is not None else None
    if mismatch:
        resolver.res.report(mismatch, "model", "head", "classes")
    return train
