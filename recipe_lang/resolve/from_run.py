"""`weights run("runs/x")`: a finished run's weights, head included.

A run folder is what `ftr run` and a compiled script write alike: recipe.ftr,
classes.json, model.pt, best.pt (with `best`), summary.json. Each check here
raises a Problem that says what is missing or differs and what to write instead.
"""

from __future__ import annotations

import json
import os
import re

from ..diagnostics import RecipeError
from ..recipe import Recipe, RunWeights
from .problem import Problem

MODEL_FILES = {"final": "model.pt", "best": "best.pt"}
_OVERRIDE = re.compile(r"# ftr (?:run|compile) --set (.+)")


def model_file(spec: RunWeights) -> str:
    """The file the plan loads: decided by `model=`, never by what the folder holds."""
    return os.path.join(spec.path, MODEL_FILES[spec.model])


def backbone_only_hint(spec: RunWeights) -> str:
    return f'to take only its backbone and train a new head, write weights file("{model_file(spec)}")'


def check_folder(spec: RunWeights) -> None:
    """The folder is a finished run that holds the file `model=` asks for."""
    folder = spec.path
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise Problem(f"run folder '{folder}' {what}", hint="give the folder `ftr run` wrote (its --out)")
    has = set(os.listdir(folder))
    if "recipe.ftr" not in has or "classes.json" not in has:
        missing = [name for name in ("recipe.ftr", "classes.json") if name not in has]
        raise Problem(
            f"'{folder}' is not a run folder: it has no {' and no '.join(missing)}",
            hint="give a folder written by `ftr run` or by a compiled script",
        )
    if spec.model == "final" and "model.pt" not in has:
        hint = "finish it with `ftr run ... --resume`"
        hint += ", or start from its best epoch with model=best" if "best.pt" in has else ""
        raise Problem(f"run '{folder}' is unfinished: it has no model.pt", hint=hint)
    if spec.model == "best" and "best.pt" not in has:
        raise Problem(
            f"run '{folder}' has no best.pt",
            hint="its recipe keeps no best model (`best` in evaluate); use model=final",
        )


def run_recipe(folder: str) -> Recipe:
    """The run's recipe as it ran: recipe.ftr with the --set options noted at its top."""
    path = os.path.join(folder, "recipe.ftr")
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror or str(error)
        raise Problem(
            f"cannot read '{path}': {reason}",
            hint="give a run folder whose files are whole (copy it again), or start from weights file(...)",
        ) from None
    try:
        from .. import parse

        return parse(source, path, recorded_overrides(source))
    except RecipeError as error:
        first = error.diagnostics[0].message if error.diagnostics else "it does not parse"
        raise Problem(
            f"the recipe of run '{folder}' does not check any more",
            severity="warning",
            notes=(first, "only the names and shapes of its tensors are compared"),
        ) from None


def recorded_overrides(source: str) -> list[str]:
    """The --set options a run folder's recipe.ftr notes at its top, in order."""
    return [m.group(1) for m in map(_OVERRIDE.fullmatch, source.splitlines()) if m]


def _head(recipe: Recipe) -> str:
    head = recipe.model.head
    if head is None:
        return "the builder's own classifier"
    shape = f"classes={head.classes}" + (f", hidden={head.hidden}" if head.kind == "mlp" else "")
    return f"{head.kind}({shape})"


def _backbone(recipe: Recipe) -> str:
    """The backbone as a recipe writes it: `resnet18`, `timm("convnext_tiny")`."""
    model = recipe.model
    return model.backbone_name if model.library == "torchvision" else f'{model.library}("{model.backbone_name}")'


def compare_models(spec: RunWeights, run: Recipe, recipe: Recipe) -> None:
    """Same backbone builder; same head kind, classes and hidden widths."""
    if run.model.backbone != recipe.model.backbone:
        trained, wanted = _backbone(run), _backbone(recipe)
        raise Problem(
            f"run '{spec.path}' trained {trained}, not {wanted}",
            hint=f"start from a run of {wanted}, or write backbone {trained}",
        )
    if _head(run) != _head(recipe):
        raise Problem(
            f"run '{spec.path}' has the head {_head(run)}, this recipe {_head(recipe)}",
            hint=backbone_only_hint(spec),
        )


def run_classes(folder: str) -> list[str]:
    """classes.json ({name: index}) as the list of names in index order."""
    path = os.path.join(folder, "classes.json")
    try:
        with open(path, encoding="utf-8") as file:
            index = json.load(file)
        return [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise Problem(f"cannot read '{path}'", notes=(str(error),)) from None


def _listed(classes: list[str]) -> str:
    return f"{len(classes)} ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})"


def compare_classes(spec: RunWeights, learned: list[str], data: list[str]) -> None:
    if learned == data:
        return
    notes = []
    if sorted(learned) == sorted(data):
        notes.append("the same names in another order: each output would mean another class")
    raise Problem(
        f"run '{spec.path}' learned other classes than this recipe's data holds",
        notes=(f"the run: {_listed(learned)}", f"the data: {_listed(data)}", *notes),
        hint=backbone_only_hint(spec),
    )


def origin(spec: RunWeights) -> str | None:
    """What summary.json says of the file: its epoch and, for best.pt, the metric."""
    try:
        with open(os.path.join(spec.path, "summary.json"), encoding="utf-8") as file:
            summary = json.load(file)
        if spec.model == "best":
            best = summary["best"]
            return f"epoch {best['epoch']}, val_{best['metric']} {best['value']:.4g}"
        return f"epoch {summary['epochs']} of {summary['of_epochs']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
