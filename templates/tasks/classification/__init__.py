"""Image classification in the compiled script: a torchvision or timm classifier and its
new head, class folders, csv files, torchvision and synthetic data sets, cross
entropy, accuracy, top-k and macro F1: the context its template parts (beside
this file) read."""

from __future__ import annotations

import inspect

import torch
import torchvision
from torch import nn

from recipe_lang.resolve import architectures, timm_models
from recipe_lang.resolve.plan import Plan

from ...code import Call, Code, CompileError
from ...literals import identifier
from ...transforms import transform_call, transform_imports


def meta_model(plan: Plan) -> nn.Module:
    if plan.library == "timm":
        model = timm_models.build(timm_models.created_name(plan))
    else:
        model = architectures.build(plan.backbone)
    if plan.head is not None:
        with torch.device("meta"):
            head = architectures.new_head(plan.head, plan.classifier.in_features, plan.classifier.adapter)
        architectures.replace_module(model, plan.classifier.path, head)
    return model


def context(plan: Plan, model: nn.Module) -> dict:
    timm = plan.library == "timm"
    task = {
        "model": model_context(plan),
        "data": data_context(plan),
        "metrics": metrics_context(plan),
        "requires": "torch, torchvision and timm" if timm else "torch and torchvision",
        "described": f"timm's {plan.backbone}" if timm else f"torchvision's {identifier(plan.backbone)}",
        "per_class": False,
        "dict_inputs": False,
        "teacher": teacher_context(plan),
    }
    task["imports"] = imports(task)
    return task


def teacher_context(plan: Plan) -> dict | None:
    """distill: the teacher's architecture as its run built it (its recipe resolved again,
    as `ftr predict` opens a run), without its weights, which TEACHER_FILE holds."""
    teacher = plan.teacher
    if teacher is None:
        return None
    shared = {
        "file": teacher.file,
        "described": teacher.described,
        "temperature": plan.train.distill.temperature,
        "alpha": plan.train.distill.alpha,
    }
    if teacher.architecture is not None:  # given as in model: the plan's builder and head for it
        architecture = teacher.architecture
        spec = architecture.weights.spec
        return {
            **shared,
            "model": model_context(architecture),
            "classifier": architecture.classifier.path,
            "as_in_model": True,
            "key": spec.key if spec.kind == "file" else None,
            "strip": spec.strip if spec.kind == "file" else None,
        }
    if teacher.backbone is None:
        raise CompileError(
            f"cannot read the teacher's run folder '{teacher.run}': the script builds the teacher's "
            f"architecture from its recipe.ftr (`ftr check` says what is wrong with the folder)"
        )
    from recipe_lang.resolve import from_run, resolve

    run = from_run.run_recipe(teacher.run)
    taught = resolve(run, data=False, weights_file=False)
    model = export_context(taught)["model"]
    return {
        **shared,
        "model": model,
        "classifier": taught.classifier.path,
        "described": f"run {teacher.run}, {teacher.backbone} with head {teacher.head}",
        "as_in_model": False,
        "key": None,
        "strip": None,
    }


# --- the model -----------------------------------------------------------------


def model_context(plan: Plan) -> dict:
    builder = timm_builder(plan) if plan.library == "timm" else torchvision_builder(plan)
    return {**builder, "library": plan.library, "head": head_call(plan) if plan.head is not None else None}


def torchvision_builder(plan: Plan) -> dict:
    kwargs = dict(plan.builder_kwargs)
    if plan.weights.enum:
        kwargs["weights"] = Code("torchvision.models." + ".".join(map(identifier, plan.weights.enum.split("."))))
    return {
        "builder": Call(f"torchvision.models.{identifier(plan.backbone)}", **kwargs),
        "aux_heads": architectures.aux_heads(architectures.build(plan.backbone, keep_aux=True)),
    }


def timm_builder(plan: Plan) -> dict:
    """timm.create_model(name), with pretrained=True for weights default (a download on the user's machine)."""
    pretrained = {"pretrained": True} if plan.weights.enum else {}
    return {"builder": Call("timm.create_model", timm_models.created_name(plan), **pretrained), "aux_heads": []}


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
    named = [s for s in sources if s.kind == "torchvision"]
    return {
        "kinds": {s.kind for s in sources},
        "torchvision": {s.name: torchvision_call(s) for s in named},
        "train_transforms": [transform_call(t) for t in pre.train],
        "eval_transforms": [transform_call(t) for t in pre.eval],
        "mean": pre.mean,
        "std": pre.std,
    }


# --- metrics -------------------------------------------------------------------


def metrics_context(plan: Plan) -> dict:
    keys = plan.evaluate.metric_keys
    return {
        "top": sorted({int(k[3:]) for k in keys if k.startswith("top")}),
        "macro_f1": "macro_f1" in keys,
    }


def imports(task: dict) -> list[str]:
    data = task["data"]
    statements = [
        *(["import timm"] if "timm" in _libraries(task) else []),
        "import torchvision",
        "from PIL import Image, UnidentifiedImageError",
        "from torch.utils.data import Dataset, default_collate",
        *transform_imports(data["train_transforms"] + data["eval_transforms"]),
    ]
    if "csv" in data["kinds"]:
        statements.append("import csv")
    if "synthetic" in data["kinds"]:
        statements.append("from torchvision.transforms.v2 import functional as F")
    return statements


def _libraries(task: dict) -> set[str]:
    """Who builds the model, and the teacher (distill)."""
    teacher = task.get("teacher")
    return {task["model"]["library"], *([teacher["model"]["library"]] if teacher else [])}


# --- predict.py of an exported model (ftr export) ------------------------------------


def export_context(plan: Plan) -> dict:
    """What predict.py's parts read: build_model's context with a builder that reads no
    weights (the architecture its weights would set; model.safetensors fills it), and
    the eval pipeline."""
    model = model_context(plan)
    builder = model["builder"]
    kwargs = {k: v for k, v in builder.kwargs.items() if k not in ("weights", "pretrained")}
    if plan.library == "torchvision" and plan.weights.enum:
        kwargs |= architectures.pretrained_kwargs(plan.backbone, plan.weights.enum)
    timm = plan.library == "timm"
    eval_transforms = [transform_call(t) for t in plan.preprocess.eval]
    return {
        "model": {**model, "builder": Call(builder.func, *builder.args, **kwargs)},
        "data": {"eval_transforms": eval_transforms, "mean": plan.preprocess.mean, "std": plan.preprocess.std},
        "teacher": None,  # the exported model is the student alone
        "requires": f"torch, torchvision{', timm' if timm else ''} and safetensors",
        "imports": [
            *(["import timm"] if timm else []),
            "import torchvision",
            "from PIL import Image, UnidentifiedImageError",
            "from torchvision.datasets.folder import IMG_EXTENSIONS",
            *transform_imports(eval_transforms),
        ],
    }
