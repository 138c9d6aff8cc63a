"""Knowledge distillation (Hinton et al. 2015): the student learns from a teacher's
logits (a finished run's model, or one given as in `model`) as well as from the labels.

The trainer calls one thing, `training_loss(plan, task, device)`: the task's own loss
without a teacher, else a `Distillation` that computes, on the same augmented batch,

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * the task's loss

(KL summed over the classes, averaged over the batch). The teacher is the run's model
as `ftr predict` opens it (runtime/trained.py), or the plan's TeacherModel built as a
trained run's model is (tasks/classification.trained_classifier): frozen, in eval mode, run without
gradients, and built without spending the seed, so that with alpha=0 a run is the
plain run number for number.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from recipe_lang.resolve.problem import Problem

from .trained import RunOpenError, open_run


class TeacherError(Exception):
    """A teacher run folder that cannot be opened (changed since the recipe was checked)."""


def training_loss(plan, task, device: torch.device):
    """loss(forward, inputs, targets) of a training batch."""
    if plan.teacher is None:
        return task.loss
    return Distillation(plan, task, device)


def distillation_loss(student, teacher, labels, criterion, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * criterion(student, labels).

    The compiled script writes the same expression (templates/tasks/classification/_distill.py.jinja)."""
    soft = F.kl_div(
        F.log_softmax(student.float() / temperature, dim=1),
        F.log_softmax(teacher.float() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature * temperature * soft + (1 - alpha) * criterion(student, labels)


def load_teacher(plan, device: torch.device) -> nn.Module:
    """The run's model, or the model given as in `model` (built as a trained run's model
    is, holding its weights file, strict), on the device: frozen, in eval mode. Building it
    spends nothing of the global generator (its initial weights are replaced by the file's)."""
    spec = plan.teacher
    with torch.random.fork_rng(devices=[]):
        if spec.architecture is not None:
            model = _built(spec.architecture)
        else:
            try:
                model = open_run(spec.run, spec.model).model
            except RunOpenError as error:
                raise TeacherError(f"teacher: {error}") from None
    model = model.to(device)
    model.requires_grad_(False)
    return model.eval()


def _built(architecture) -> nn.Module:
    """A teacher given as in model: the plan's builder, head and weights file (file(...)
    with its key= and strip=, or a run's model file)."""
    from recipe_lang.resolve import weights

    from .tasks.classification import trained_classifier

    spec = architecture.weights.spec
    try:
        if spec.kind == "file":
            state = weights.load_state_file(spec.path, spec.key, spec.strip)
        else:
            state = weights.load_state_file(architecture.weights.file)
        return trained_classifier(architecture, state)
    except Problem as problem:
        raise TeacherError(f"teacher: {problem.message}") from None
    except RuntimeError as error:  # load_state_dict: keys or shapes differ
        first = str(error).strip().splitlines()[0]
        raise TeacherError(f"teacher: {architecture.weights.file} does not fit the teacher ({first})") from None


class Distillation:
    def __init__(self, plan, task, device: torch.device):
        self.teacher = load_teacher(plan, device)
        self.criterion = task.criterion
        self.temperature = plan.train.distill.temperature
        self.alpha = plan.train.distill.alpha

    def __call__(self, forward, inputs, labels) -> torch.Tensor:
        logits = forward(inputs)
        with torch.no_grad():
            taught = self.teacher(inputs)
        return distillation_loss(logits, taught, labels, self.criterion, self.temperature, self.alpha)
