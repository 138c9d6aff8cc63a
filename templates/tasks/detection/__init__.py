"""Object detection in the compiled script: a torchvision detector built as the
runtime builds it (recipe_lang/resolve/detectors.py), its new class-dependent
layers, Pascal VOC and COCO sources through box-aware v2 transforms, the sum of
the detector's losses, and COCO mAP by pycocotools: the context its template
parts (beside this file) read; the code they write mirrors
runtime/tasks/detection*.py."""

from __future__ import annotations

import torch
from torch import nn

from recipe_lang.resolve import detectors
from recipe_lang.resolve.plan import Plan

from ...code import Call, Code, CompileError
from ...literals import identifier
from ...transforms import transform_call, transform_imports


def meta_model(plan: Plan) -> nn.Module:
    model = detectors.build(plan.backbone, plan.weights.spec.kind != "none", plan.builder_kwargs, "meta")
    with torch.device("meta"):
        module = detectors.new_predictor(model, plan.backbone, plan.head.classes)
    detectors.replace_predictor(model, plan.backbone, module, plan.head.classes)
    return model


def context(plan: Plan, model: nn.Module) -> dict:
    keys = plan.evaluate.metric_keys
    per_class = any(key != "loss" for key in keys)  # COCO mAP: its per-class AP goes to per_class.jsonl
    task = {
        "model": model_context(plan),
        "data": data_context(plan),
        "background": detectors.background_slot(plan.backbone),
        "requires": "torch, torchvision and pycocotools" if per_class else "torch and torchvision",
        "described": f"torchvision's {identifier(plan.backbone)}",
        "per_class": per_class,
    }
    task["imports"] = imports(task)
    return task


# --- the model -----------------------------------------------------------------


def model_context(plan: Plan) -> dict:
    name = plan.backbone
    family = detectors.family(name)
    builder = Call(f"torchvision.models.detection.{identifier(name)}", weights=None, **plan.builder_kwargs)
    enum = None
    if plan.weights.enum:
        enum = Code("torchvision.models.detection." + ".".join(map(identifier, plan.weights.enum.split("."))))
    return {
        "builder": builder,
        "frozen_batchnorm": plan.weights.spec.kind != "none" and name in detectors.FROZEN_BN_WHEN_TRAINED,
        "enum": enum,
        "family": family,
        "predictor": predictor_call(plan),
        "outputs": detectors.outputs_for(name, plan.head.classes),
    }


def predictor_call(plan: Plan) -> Call:
    """detectors.new_predictor as a call: the class-dependent layers for the recipe's
    classes, their sizes read from the builder's own layers (a fresh build on the
    meta device). RetinaNet's and FCOS's convolution is made by the script's
    new_predictor(), which initialises it as torchvision does."""
    name = plan.backbone
    family = detectors.family(name)
    model = detectors.build(name, False, plan.builder_kwargs, "meta")
    old = model.get_submodule(detectors.PREDICTORS[family])
    outputs = detectors.outputs_for(name, plan.head.classes)
    if family == "rcnn":
        return Call("FastRCNNPredictor", old.cls_score.in_features, outputs)
    if family in ("retinanet", "fcos"):
        head = model.get_submodule(detectors.PREDICTORS[family].rsplit(".", 1)[0])
        anchors = old.out_channels // head.num_classes
        return Call("nn.Conv2d", old.in_channels, anchors * outputs, kernel_size=3, stride=1, padding=1)
    channels = detectors._ssd_in_channels(old, family)
    anchors = [detectors._out_channels(block, family) // old.num_columns for block in old.module_list]
    if family == "ssd":
        return Call("SSDClassificationHead", channels, anchors, outputs)
    if family == "ssdlite":
        norm = Call("partial", Code("nn.BatchNorm2d"), eps=0.001, momentum=0.03)
        return Call("SSDLiteClassificationHead", channels, anchors, outputs, norm)
    raise CompileError(f"no code for the predictor of '{name}'")


# --- data ----------------------------------------------------------------------


def data_context(plan: Plan) -> dict:
    data, pre = plan.data, plan.preprocess
    sources = [data.train] + ([data.val] if data.val is not None else [])
    return {
        "kinds": {s.kind for s in sources},
        "train_transforms": [transform_call(t) for t in pre.train],
        "eval_transforms": [transform_call(t) for t in pre.eval],
    }


def imports(task: dict) -> list[str]:
    data, model = task["data"], task["model"]
    statements = [
        "import torchvision",
        "from PIL import Image, UnidentifiedImageError",
        "from torch.utils.data import Dataset",
        "from torchvision import tv_tensors",
        *transform_imports(data["train_transforms"] + data["eval_transforms"]),
    ]
    if "voc" in data["kinds"]:
        statements.append("import xml.etree.ElementTree as ET")
    statements += model_imports(model)
    if task["per_class"]:
        statements += [
            "import contextlib",
            "import io",
            "from pycocotools.coco import COCO",
            "from pycocotools.cocoeval import COCOeval",
        ]
    return statements


# --- predict.py of an exported model (ftr export) ------------------------------------


def model_imports(model: dict) -> list[str]:
    """What build_model's code needs: frozen BatchNorm, the family's predictor class."""
    statements = ["from torchvision.ops.misc import FrozenBatchNorm2d"] if model["frozen_batchnorm"] else []
    family = model["family"]
    if family == "rcnn":
        statements.append("from torchvision.models.detection.faster_rcnn import FastRCNNPredictor")
    elif family == "ssd":
        statements.append("from torchvision.models.detection.ssd import SSDClassificationHead")
    elif family == "ssdlite":
        statements += [
            "from functools import partial",
            "from torchvision.models.detection.ssdlite import SSDLiteClassificationHead",
        ]
    return statements


# --- predict.py of an exported model (ftr export) ------------------------------------


def export_context(plan: Plan) -> dict:
    """What predict.py's parts read: build_model's context without the weights enum
    (model.safetensors fills the detector), and the eval transforms."""
    model = {**model_context(plan), "enum": None}
    eval_transforms = [transform_call(t) for t in plan.preprocess.eval]
    return {
        "model": model,
        "data": {"eval_transforms": eval_transforms},
        "background": detectors.background_slot(plan.backbone),
        "requires": "torch, torchvision and safetensors",
        "imports": [
            "import torchvision",
            "from PIL import Image, UnidentifiedImageError",
            "from torchvision.datasets.folder import IMG_EXTENSIONS",
            *transform_imports(eval_transforms),
            *model_imports(model),
        ],
    }
