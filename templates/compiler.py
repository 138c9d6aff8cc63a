"""`ftr compile`: a resolved plan rendered through the templates into one script.

The compiler decides nothing about training: every choice comes from the plan.
It only chooses how to write it down: parameter lists as the fewest module
names that cover them (checked to expand back to exactly the plan's lists),
calls without the arguments that equal torchvision's defaults, and only the
helpers a recipe uses.

What differs per task (model, data, loss, metrics) is written by the task's
package, templates/tasks/<task>/ (see templates/tasks/__init__.py); this
module and the shared templates know no task.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import jinja2
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from recipe_lang import __version__
from recipe_lang.resolve.plan import Plan
from recipe_lang.resolve.resolver import BATCHNORM_TYPES
from recipe_lang.resolve.table import plan_table

from . import tasks
from .code import Call, Code, CompileError, render
from .imports import import_block
from .literals import comment, identifier, py

TEMPLATES = Path(__file__).parent

__all__ = ["CompileError", "compile_plan"]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = py
    env.filters["identifier"] = identifier
    env.filters["comment"] = comment
    env.globals["render"] = render
    return env


def compile_plan(plan: Plan, source: str, filename: str, overrides: tuple[str, ...] = ()) -> str:
    """The standalone script of a plan; `source` is the recipe text it was resolved from.

    The shared parts' context is built here; the task's module (templates/tasks/)
    builds what its own template parts read, as `task`."""
    task_module = tasks.task_module(plan)
    model = task_module.meta_model(plan)
    task = task_module.context(plan, model)
    train = train_context(plan, model)
    weights = weights_context(plan)
    weights["frozen_batchnorm"] = any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    context = {
        "header": header(plan, source, filename, overrides),
        "plan": plan,
        "version": __version__,
        "digest": plan.digest(),
        "recipe_lines": recipe_copy(source, overrides),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": weights,
        "data": data_context(plan),
        "train": train,
        "evaluate": evaluate_context(plan),
        "task": task,
        "imports": imports(plan, train, task),
    }
    script = environment().get_template("train.py.jinja").render(context).rstrip("\n") + "\n"
    try:
        ast.parse(script)
    except SyntaxError as error:
        raise CompileError(f"the generated script does not parse: {error}") from error
    return script


# --- the header ----------------------------------------------------------------


def header(plan: Plan, source: str, filename: str, overrides) -> str:
    lines = [
        f"{plan.name}: compiled by ftr {__version__} from {filename}",
        f"recipe sha256 {hashlib.sha256(source.encode()).hexdigest()}",
    ]
    lines += [f"with --set {o}" for o in overrides]
    lines += ["", "The recipe:", ""] + ["    " + line for line in source.splitlines()]
    lines += ["", "The plan (ftr plan): what trains in each span of epochs, and how fast.", ""]
    lines += ["    " + line for line in plan_table(plan).splitlines()]
    return "\n".join(line.rstrip() for line in lines)


def recipe_copy(source: str, overrides) -> list[str]:
    """recipe.ftr as the run folder keeps it: the source, with the overrides it was compiled with."""
    text = "".join(f"# ftr compile --set {o}\n" for o in overrides) + source
    return text.splitlines(keepends=True)


# --- shared parts of the model and the data ------------------------------------


def weights_context(plan: Plan) -> dict:
    """A weights file, or a finished run's model: loaded the same way whatever the task."""
    spec = plan.weights.spec
    return {
        "file": spec if spec.kind == "file" else None,
        "file_literal": spec.model_dump(exclude={"kind"}) if spec.kind == "file" else None,
        "run_file": plan.weights.file if spec.kind == "run" else None,
    }


def data_context(plan: Plan) -> dict:
    data = plan.data
    return {
        "spec": data,
        "train_source": data.train.model_dump(),
        "val_source": data.val.model_dump() if data.val is not None else None,
        "eval_batch_size": data.eval_batch_size or data.batch_size,
    }


# --- parameters, groups and phases ------------------------------------------------


def covering(chosen: list[str], universe: list[str]) -> list[str]:
    """The fewest dotted names that cover exactly `chosen` among `universe`: a name
    covers itself and every name under it ("layer4" covers "layer4.0.conv1.weight")."""
    picked = set(chosen)
    total: dict[str, int] = {}
    inside: dict[str, int] = {}
    for name in universe:
        for prefix in _prefixes(name):
            total[prefix] = total.get(prefix, 0) + 1
            inside[prefix] = inside.get(prefix, 0) + (name in picked)
    out: list[str] = []
    for name in universe:
        if name in picked:
            top = next(p for p in _prefixes(name) if inside[p] == total[p])
            if not out or out[-1] != top:
                out.append(top)
    return out


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def expand(names: list[str], universe: list[str]) -> list[str]:
    """What the script's `covered` selects: the members of universe under any of names, in order."""
    return [u for u in universe if any(u == n or u.startswith(n + ".") for n in names)]


def _written(chosen: list[str], universe: list[str], what: str) -> list[str]:
    names = covering(chosen, universe)
    if expand(names, universe) != list(chosen):
        raise CompileError(f"the names written for {what} do not expand to the plan's list")
    return names


def train_context(plan: Plan, model: nn.Module) -> dict:
    params = [name for name, _ in model.named_parameters()]
    batchnorms = [name for name, m in model.named_modules() if name and isinstance(m, BATCHNORM_TYPES)]
    groups = {g.name: {"lr": g.lr, "params": _written(g.params, params, f"group {g.name}")} for g in plan.groups}
    optimizer_groups = [
        {
            "group": og.group,
            "params": _written(og.params, params, f"an optimizer group of {og.group}"),
            "weight_decay": og.weight_decay,
            "warmups": [list(w) for w in og.warmups],
        }
        for og in plan.optimizer_groups
    ]
    cache = any(ph.cache for ph in plan.phases)
    phases = [
        {
            "first": ph.first,
            "last": ph.last,
            "trainable": _written(ph.trainable, params, f"epochs {ph.first}-{ph.last}"),
            "batchnorm_eval": _written(ph.bn_eval, batchnorms, f"BatchNorm of epochs {ph.first}-{ph.last}"),
            **({"cache": ph.cache} if cache else {}),
        }
        for ph in plan.phases
    ]
    return {
        "spec": plan.train,
        "groups": groups,
        "optimizer_groups": optimizer_groups,
        "phases": phases,
        "optimizer": optimizer_call(plan),
        "schedule": plan.schedule,
        "warmups": any(og.warmups for og in plan.optimizer_groups),
        "reported": plan.reported_rates(),
        "cache": cache,
        "probe": plan.head_init == "probe",
        "pseudo": _pseudo_label(plan),
        "features": cache or plan.head_init == "probe",  # the FeatureCache class is in the script
    }


def _pseudo_label(plan: Plan) -> dict | None:
    """PSEUDO_LABEL of the script: the unlabeled folder and pseudo_label's options."""
    spec, source = plan.train.pseudo_label, plan.data.unlabeled
    if spec is None or source is None:
        return None
    options = {"path": source.path, "threshold": spec.threshold, "weight": spec.weight, "start": spec.start}
    if spec.balanced:  # left out at its default: the scripts of earlier recipes are unchanged
        options["balanced"] = True
    return options


def optimizer_call(plan: Plan) -> Call:
    spec = plan.optimizer
    first = {"lr": Code('groups[0]["lr"]')}
    if spec.kind == "sgd":
        return Call("torch.optim.SGD", Code("groups"), **first, momentum=spec.momentum, nesterov=spec.nesterov)
    if spec.kind in ("adam", "adamw"):
        name = "Adam" if spec.kind == "adam" else "AdamW"
        return Call(f"torch.optim.{name}", Code("groups"), **first, betas=tuple(spec.betas), eps=spec.eps)
    if spec.kind == "rmsprop":
        return Call(
            "torch.optim.RMSprop", Code("groups"), **first, alpha=spec.alpha, momentum=spec.momentum, eps=spec.eps
        )
    raise CompileError(f"no code for optimizer '{spec.kind}'")


# --- evaluation ----------------------------------------------------------------


def evaluate_context(plan: Plan) -> dict:
    keys = ["loss"] + [k for k in dict.fromkeys(plan.evaluate.metric_keys) if k != "loss"]
    early = plan.evaluate.early_stop
    return {
        "spec": plan.evaluate,
        "metrics": keys,
        "early_stop": (
            {"metric": plan.evaluate.stop_metric, "patience": early.patience, "min_delta": early.min_delta}
            if early
            else None
        ),
    }


# --- imports -------------------------------------------------------------------

SHARED_IMPORTS = (
    "import argparse",
    "import errno",
    "import json",
    "import math",
    "import os",
    "import pickle",
    "import random",
    "import shutil",
    "import sys",
    "import tempfile",
    "import time",
    "from pathlib import Path",
    "import torch",
    "import torch.distributed as dist",
    "from torch import nn",
    "from torch.nn.parallel import DistributedDataParallel",
    "from torch.utils.data import DataLoader, Subset",
    "from torch.utils.data.distributed import DistributedSampler",
)
CACHE_IMPORTS = ("from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset",)


def imports(plan: Plan, train: dict, task: dict) -> str:
    """The import block: the shared parts' imports and the task's."""
    statements = list(SHARED_IMPORTS) + list(task["imports"])
    if plan.train.compile:
        statements.append("import torch._inductor.config")
    if train["features"]:
        statements += CACHE_IMPORTS
    return import_block(statements)
