"""The timm backbones of `backbone timm("name")`: building them, their classifier
as timm names it, their pretrained weights and the preprocessing those expect.

timm is an optional extra: it is imported here, on the timm path only, and its
absence is a Problem that names the extra."""

from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from ..diagnostics import did_you_mean
from . import architectures
from .architectures import ClassifierSpot
from .problem import Problem

INSTALL_HINT = "pip install 'ftr[timm]' (or timm)"
EVAL_CROP_MODE = "center"  # the only crop of timm's eval transforms that Resize and CenterCrop write


def timm():
    """The timm package, or a Problem saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ModuleNotFoundError as error:
        if error.name != "timm":
            raise
        raise Problem("backbone timm(...) needs timm, which is not installed", hint=INSTALL_HINT) from None


def check_name(name: str) -> None:
    """`name` is a timm architecture, with or without a pretrained tag ("convnext_tiny.fb_in1k")."""
    library = timm()
    architecture, tag = library.models.split_model_name_tag(name)
    if not library.is_model(architecture):
        raise Problem(f"timm has no model '{architecture}'", hint=did_you_mean(architecture, library.list_models()))
    if tag and not library.is_model_pretrained(name):
        tags = library.list_pretrained(f"{architecture}.*")
        raise Problem(
            f"timm has no pretrained tag '{tag}' for {architecture}",
            hint=did_you_mean(name, tags),
            notes=(f"tags: {', '.join(t.partition('.')[2] for t in tags)}",) if tags else (),
        )


def build(name: str, device="meta", pretrained: bool = False) -> nn.Module:
    """timm.create_model(name, pretrained=...) on `device`; on "meta" it takes no
    memory and downloads nothing."""
    check_name(name)
    create = timm().create_model
    try:
        with torch.device(device):
            return create(name, pretrained=pretrained)
    except NotImplementedError:  # an architecture that reads tensor values while it is built
        with architectures.moved_when_registered(device):
            return create(name, pretrained=pretrained)


def pretrained_name(name: str) -> str:
    """The weights `weights default` loads, tag included ("convnext_tiny.in12k_ft_in1k"):
    the plan pins it, so that a newer timm with another default tag changes nothing."""
    check_name(name)
    library = timm()
    if not library.is_model_pretrained(name):
        raise Problem(f"timm has no pretrained weights for {name}", hint="use weights none, or file(...)")
    architecture, tag = library.models.split_model_name_tag(name)
    return f"{architecture}.{tag or library.models.get_pretrained_cfg(architecture).tag}"


def created_name(plan) -> str:
    """The name both back ends give timm.create_model: with weights default, the pinned tag."""
    return plan.weights.enum or plan.backbone


def no_enum(name: str, member: str) -> Problem:
    """`weights "MEMBER"` on a timm backbone: timm names its weights by a tag of the model name."""
    architecture = timm().models.split_model_name_tag(name)[0]
    tagged = f"{architecture}.{member}"
    hint = (
        f'write backbone timm("{tagged}") and weights default'
        if timm().is_model_pretrained(tagged)
        else f'name the pretrained tag in the model, e.g. backbone timm("{pretrained_name(architecture)}")'
    )
    return Problem("a timm model has no weights enum: its pretrained tag is part of its name", hint=hint)


def find_classifier(model: nn.Module) -> ClassifierSpot:
    """The module timm's pretrained configuration names as the classifier (the
    keys its pretrained weights have for it): convnext's `head.fc`, after the
    head's pooling and norm, which stay."""
    path = model.pretrained_cfg.get("classifier")
    if isinstance(path, (list, tuple)):
        raise Problem(
            f"{type(model).__name__} combines {len(path)} classifiers ({', '.join(path)}); a new head replaces one",
            hint="choose a timm model with one classifier (no distillation or auxiliary head)",
        )
    if not path or path not in dict(model.named_modules()):
        return architectures.find_classifier(model)
    return architectures.spot_at(model, path)


def preset(model: nn.Module) -> dict:
    """The eval preprocessing of the model's pretrained configuration, as timm's
    eval transforms do it: resize the shorter side to floor(size / crop_pct),
    center-crop `size`, normalize with the configuration's mean and std."""
    config = timm().data.resolve_data_config({}, model=model)
    _, height, width = config["input_size"]
    mode = config.get("crop_mode") or EVAL_CROP_MODE
    if height != width or mode != EVAL_CROP_MODE:
        raise Problem(
            f"timm's eval preprocessing of this model ({height}x{width}, crop mode '{mode}') is no resize and "
            "center crop",
            hint=f"write the transforms out, e.g. eval_transforms resize({height}), center_crop({height})",
        )
    if config["interpolation"] not in ("bilinear", "bicubic", "nearest"):
        raise Problem(f"timm's eval preprocessing uses '{config['interpolation']}' interpolation, which ftr lacks")
    return {
        "resize": math.floor(height / config["crop_pct"]),
        "crop": height,
        "interpolation": config["interpolation"],
        "mean": [float(x) for x in config["mean"]],
        "std": [float(x) for x in config["std"]],
    }


def input_side(model: nn.Module) -> int | None:
    """The image side of the model's pretrained configuration (a ViT takes only that one)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    size = config.get("input_size")
    return int(size[-1]) if size else None
