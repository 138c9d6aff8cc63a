"""`teacher { run "runs/big" }`: the finished run `distill` learns from.

The folder is checked as `weights run(...)` checks it (resolve/from_run.py); its
recipe must be a classification and its classes, in index order, the student's
(each logit of the teacher is compared with the student's logit of the same index).
"""

from __future__ import annotations

from ..recipe import RunWeights
from ..tasks import DISTILLED
from . import from_run
from .plan import Teacher
from .problem import Problem


def unopened(spec: RunWeights) -> Teacher:
    """The teacher as the plan names it without opening its folder (ftr predict of a student run)."""
    return Teacher(
        run=spec.path, model=spec.model, file=from_run.model_file(spec), backbone=None, head=None, classes=None
    )


def opened(spec: RunWeights, weights_file: bool = True) -> Teacher:
    """The folder checked and read: a finished run of a classification, with its classes;
    with weights_file=False, whether it holds its model file is not checked."""
    if weights_file:
        from_run.check_folder(spec)
    run = from_run.run_recipe(spec.path)
    if run.task not in DISTILLED:
        tasks = " or ".join(DISTILLED)
        raise Problem(
            f"run '{spec.path}' is a {run.task} run; a teacher gives class logits (task {tasks})",
            hint=f"give a run of task {tasks}",
        )
    return Teacher(
        run=spec.path,
        model=spec.model,
        file=from_run.model_file(spec),
        backbone=from_run._backbone(run),
        head=from_run._head(run),
        classes=from_run.run_classes(spec.path),
    )


def compare_classes(teacher: Teacher, classes: list[str] | None, head_classes: int | None) -> None:
    """The teacher's classes are the student's data's, in the same order; where the data
    is not read, as many as the student's head has."""
    learned = teacher.classes
    if learned is None:
        return
    hint = "distill from a run trained on the same classes (the same class folders)"
    if classes is not None and learned != classes:
        notes = [f"the teacher: {_listed(learned)}", f"the student's data: {_listed(classes)}"]
        if sorted(learned) == sorted(classes):
            notes.append("the same names in another order: each logit would mean another class")
        raise Problem(
            f"the teacher '{teacher.run}' learned other classes than the student's data holds", notes=notes, hint=hint
        )
    if classes is None and head_classes is not None and len(learned) != head_classes:
        raise Problem(
            f"the teacher '{teacher.run}' learned {len(learned)} classes, the student's head has {head_classes}",
            notes=(f"the teacher: {_listed(learned)}",),
            hint=hint,
        )


def _listed(classes: list[str]) -> str:
    return f"{len(classes)} ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
