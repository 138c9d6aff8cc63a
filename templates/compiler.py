"""`ftr compile`: a resolved plan rendered through the templates into one script.

The compiler decides nothing about training: every choice comes from the plan.
It only chooses how to write it down: parameter lists as the fewest module
names that cover them (checked to expand back to exactly the plan's lists),
calls without the arguments that equal torchvision's defaults, and only the
helpers a recipe uses.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path

import jinja2
import torch
import torchvision
from torch import nn

from recipe_lang import __version__
from recipe_lang.resolve import architectures
from recipe_lang.resolve.plan import Plan
from recipe_lang.resolve.resolver import BATCHNORM_TYPES
from recipe_lang.resolve.table import plan_table

from .code import Call, Code, render
from .literals import comment, identifier, py

TEMPLATES = Path(__file__).parent


class CompileError(Exception):
    """A plan the compiler cannot write down faithfully (a bug, never a recipe mistake)."""


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
    """The standalone script of a plan; `source` is the recipe text it was resolved from."""
    model = meta_model(plan)
    context = {
        "header": header(plan, source, filename, overrides),
        "plan": plan,
        "version": __version__,
        "digest": plan.digest(),
        "recipe_lines": recipe_copy(source, overrides),
        "model": model_context(plan, model),
        "data": data_context(plan),
        "train": train_context(plan, model),
        "evaluate": evaluate_context(plan),
    }
    context["imports"] = imports(context)
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


# --- the model -----------------------------------------------------------------


def meta_model(plan: Plan) -> nn.Module:
    """The plan's model on the meta device: the names the script's lists are written against."""
    model = architectures.build(plan.backbone)
    if plan.head is not None:
        with torch.device("meta"):
            head = architectures.new_head(plan.head, plan.classifier.in_features, plan.classifier.adapter)
        architectures.replace_module(model, plan.classifier.path, head)
    return model


def model_context(plan: Plan, model: nn.Module) -> dict:
    weights = plan.weights
    kwargs = dict(plan.builder_kwargs)
    if weights.enum:
        kwargs["weights"] = Code("torchvision.models." + ".".join(map(identifier, weights.enum.split("."))))
    return {
        "builder": Call(f"torchvision.models.{identifier(plan.backbone)}", **kwargs),
        "aux_heads": architectures.aux_heads(architectures.build(plan.backbone, keep_aux=True)),
        "file": weights.spec if weights.spec.kind == "file" else None,
        "weights_file": weights.spec.model_dump(exclude={"kind"}) if weights.spec.kind == "file" else None,
        "run_file": weights.file if weights.spec.kind == "run" else None,
        "head": head_call(plan) if plan.head is not None else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def head_call(plan: Plan) -> Call:
    head, width = plan.head, plan.classifier.in_features
    if head.kind == "linear":
        layer = Call("nn.Linear", width, head.classes)
        call = Call("nn.Sequential", Call("nn.Dropout", head.dropout), layer) if head.dropout else layer
    else:
        activation = architectures.ACTIVATIONS[head.activation].__name__
        layers = []
        for width_in, width_out in zip([width, *head.hidden_sizes[:-1]], head.hidden_sizes, strict=True):
            layers += [Call("nn.Linear", width_in, width_out), Call(f"nn.{activation}")]
            if head.dropout:
                layers.append(Call("nn.Dropout", head.dropout))
        call = Call("nn.Sequential", *layers, Call("nn.Linear", head.hidden_sizes[-1], head.classes))
    if plan.classifier.adapter == "pool_flatten":
        call = Call("nn.Sequential", Call("nn.AdaptiveAvgPool2d", 1), Call("nn.Flatten", 1), call)
    return call


# --- data ----------------------------------------------------------------------

_DEFAULTS = {
    "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3], "interpolation": "bilinear"},
    "resize": {"interpolation": "bilinear"},
    "hflip": {"p": 0.5},
    "vflip": {"p": 0.5},
    "rand_augment": {"n": 2, "m": 9},
    "random_erasing": {"p": 0.5},
}


def transform_call(spec) -> Call:
    """The torchvision v2 transform of a recipe transform (the runtime's, in data.py), without the
    arguments that equal torchvision's defaults."""
    kind = spec.kind
    defaults = _DEFAULTS.get(kind, {})
    given = {k: v for k, v in spec.model_dump(exclude={"kind"}).items() if k not in defaults or defaults[k] != v}
    options = {}
    if "interpolation" in given:
        options["interpolation"] = Code(f"InterpolationMode.{identifier(given['interpolation'].upper())}")
    if kind == "resize":
        return Call("v2.Resize", spec.size, **options)
    if kind == "center_crop":
        return Call("v2.CenterCrop", spec.size)
    if kind == "random_resized_crop":
        extra = {k: tuple(given[k]) for k in ("scale", "ratio") if k in given}
        return Call("v2.RandomResizedCrop", spec.size, **extra, **options)
    if kind in ("hflip", "vflip"):
        name = "v2.RandomHorizontalFlip" if kind == "hflip" else "v2.RandomVerticalFlip"
        return Call(name, **given)
    if kind == "rotate":
        return Call("v2.RandomRotation", spec.degrees)
    if kind == "color_jitter":
        factors = {k: v for k, v in given.items() if v}
        # all zero: the runtime's Identity (v2.ColorJitter would still draw a random order)
        return Call("v2.ColorJitter", **factors) if factors else Call("v2.Identity")
    if kind == "grayscale":
        return Call("v2.Grayscale", num_output_channels=spec.channels)
    if kind == "trivial_augment":
        return Call("v2.TrivialAugmentWide")
    if kind == "rand_augment":
        names = {"n": "num_ops", "m": "magnitude"}
        return Call("v2.RandAugment", **{names[k]: v for k, v in given.items()})
    if kind == "random_erasing":
        return Call("v2.RandomErasing", **given)
    raise CompileError(f"no code for transform '{kind}'")


def source_literal(source) -> dict | None:
    if source is None:
        return None
    return source.model_dump()


def torchvision_call(source) -> Call:
    cls = getattr(torchvision.datasets, identifier(source.name))
    params = inspect.signature(cls).parameters
    kwargs = {}
    if "train" in params:
        kwargs["train"] = Code("train")
    if "download" in params:
        kwargs["download"] = Code('spec["download"]')
    return Call(f"torchvision.datasets.{source.name}", Code("path"), **kwargs)


def data_context(plan: Plan) -> dict:
    data, pre = plan.data, plan.preprocess
    sources = [data.train] + ([data.val] if data.val is not None else [])
    kinds = {s.kind for s in sources}
    named = [s for s in sources if s.kind == "torchvision"]
    return {
        "spec": data,
        "train_source": source_literal(data.train),
        "val_source": source_literal(data.val),
        "kinds": kinds,
        "torchvision": {s.name: torchvision_call(s) for s in named},
        "train_transforms": [transform_call(t) for t in pre.train],
        "eval_transforms": [transform_call(t) for t in pre.eval],
        "mean": pre.mean,
        "std": pre.std,
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
    }


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
    top = sorted({int(k[3:]) for k in keys if k.startswith("top")})
    early = plan.evaluate.early_stop
    return {
        "spec": plan.evaluate,
        "metrics": keys,
        "top": top,
        "macro_f1": "macro_f1" in keys,
        "early_stop": (
            {"metric": plan.evaluate.stop_metric, "patience": early.patience, "min_delta": early.min_delta}
            if early
            else None
        ),
    }


def imports(context: dict) -> dict:
    data = context["data"]
    calls = data["train_transforms"] + data["eval_transforms"]
    return {
        "csv": "csv" in data["kinds"],
        "functional": "synthetic" in data["kinds"],
        "interpolation": any("interpolation" in c.kwargs for c in calls),
    }
