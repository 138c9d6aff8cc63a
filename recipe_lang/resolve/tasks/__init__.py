"""What resolving a recipe does differently per task: build the model and put its
head in place, read the data's classes, set the input pipeline. One module per
task, each with a `TaskResolver(resolution)` that reports through the resolution
(`attempt`, `report`); everything else in resolver.py knows no task."""

from __future__ import annotations

import importlib


def task_resolver(task: str, resolution):
    return importlib.import_module(f"{__name__}.{task}").TaskResolver(resolution)
