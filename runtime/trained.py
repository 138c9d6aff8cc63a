"""A finished run, opened for use: its plan, its classes and its trained model.

What predict, evaluate and export start from. The run's recipe.ftr (with the --set
options noted at its top) is resolved again without opening data or weight files, so
the plan is the one the run trained with; the model is built as the run built it
(torchvision's, timm's or Hugging Face's architecture, the head, frozen BatchNorm where
the run had it), without reading pretrained weights, and given the run's model.pt or
best.pt. Run folders of compiled scripts hold the same files and open the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from recipe_lang.diagnostics import RecipeError
from recipe_lang.recipe import RunWeights
from recipe_lang.resolve import from_run
from recipe_lang.resolve.plan import Plan
from recipe_lang.resolve.problem import Problem

from .run_files import RunFileError, read_tensors


class RunOpenError(Exception):
    """A folder that cannot be used as a trained run: what is wrong, and what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f"; {hint}" if hint else ""))


@dataclass
class TrainedRun:
    folder: str
    which: str  # "best" or "final"
    plan: Plan
    classes: list[str]
    task: object  # runtime.tasks.<task>.Task
    model: nn.Module  # in eval mode, on the CPU

    @property
    def model_file(self) -> str:
        return os.path.join(self.folder, from_run.MODEL_FILES[self.which])


def default_model(folder: str) -> str:
    """best.pt when the run kept one, else model.pt."""
    return "best" if os.path.isfile(os.path.join(folder, "best.pt")) else "final"


def open_run(folder: str, which: str | None = None) -> TrainedRun:
    """The run in `folder` with its `which` model ("best", "final"; default: best if kept)."""
    folder = os.path.normpath(folder)
    which = which or default_model(folder)
    spec = RunWeights(path=folder, model=which)
    try:
        from_run.check_folder(spec)
        recipe = from_run.run_recipe(folder)
        classes = from_run.run_classes(folder)
    except Problem as problem:
        raise RunOpenError(_problem_text(problem), problem.hint or "") from None
    plan = _plan(folder, recipe)
    from .tasks import runtime_task

    task = runtime_task(plan)
    try:
        state = read_tensors(from_run.model_file(spec))
        model = task.trained_model(state)
    except RunFileError as error:
        raise RunOpenError(f"{error.path} {error.problem}", "copy the run folder again, or train it again") from None
    except RuntimeError as error:  # load_state_dict: keys or shapes differ
        first = str(error).strip().splitlines()[0]
        raise RunOpenError(
            f"{from_run.model_file(spec)} does not fit the model of {folder}/recipe.ftr ({first})",
            "the folder mixes files of different runs: train it again",
        ) from None
    return TrainedRun(folder, which, plan, classes, task, model.eval())


def _problem_text(problem: Problem) -> str:
    if problem.severity == "warning":  # run_recipe: the recipe no longer checks
        return f"{problem.message}: {'; '.join(problem.notes)}"
    return problem.message


def _plan(folder: str, recipe) -> Plan:
    from recipe_lang.resolve import resolve

    try:
        return resolve(recipe, data=False, weights_file=False)
    except RecipeError as error:
        first = error.diagnostics[0].message if error.diagnostics else "it does not resolve"
        raise RunOpenError(
            f"the recipe of run '{folder}' does not resolve any more: {first}",
            f"run `ftr check {folder}/recipe.ftr` for every problem",
        ) from None
