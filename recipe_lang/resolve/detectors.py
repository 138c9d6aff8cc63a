"""The torchvision detectors: building them as their pretrained weights expect,
and putting new class-dependent layers in place of the old ones.

Shared by the resolver (on the meta device) and the runtime, so that the plan's
model and the trained one are the same modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from recipe_lang.diagnostics import did_you_mean
from recipe_lang.resolve.problem import Problem

# builder -> family; a family says where the class-dependent layers are and
# whether the scores are a softmax with a background slot (rcnn, ssd, ssdlite)
# or sigmoids without one (retinanet, fcos)
FAMILIES = {
    "fasterrcnn_resnet50_fpn": "rcnn",
    "fasterrcnn_resnet50_fpn_v2": "rcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "rcnn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "rcnn",
    "retinanet_resnet50_fpn": "retinanet",
    "retinanet_resnet50_fpn_v2": "retinanet",
    "fcos_resnet50_fpn": "fcos",
    "ssd300_vgg16": "ssd",
    "ssdlite320_mobilenet_v3_large": "ssdlite",
}
REFUSED = {
    "maskrcnn_resnet50_fpn": "Mask R-CNN",
    "maskrcnn_resnet50_fpn_v2": "Mask R-CNN",
    "keypointrcnn_resnet50_fpn": "Keypoint R-CNN",
}
# the builders that put FrozenBatchNorm2d in their backbone when given weights
# (torchvision's `is_trained`); ftr does the same for every pretrained source
FROZEN_BN_WHEN_TRAINED = {
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
}
FIXED_SIZE = {"ssd": 300, "ssdlite": 320}
PREDICTORS = {
    "rcnn": "roi_heads.box_predictor",
    "retinanet": "head.classification_head.cls_logits",
    "fcos": "head.classification_head.cls_logits",
    "ssd": "head.classification_head",
    "ssdlite": "head.classification_head",
}
PRIOR = 0.01  # RetinaNet's and FCOS's initial foreground probability


@dataclass(frozen=True)
class PredictorSpot:
    path: str
    in_features: int  # channels (or features, for R-CNN) reaching it
    outputs: int  # the builder's own class count, background slot included where there is one


def detector_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def family(name: str) -> str:
    if name in REFUSED:
        raise Problem(
            f"{REFUSED[name]} ('{name}') is not supported yet: it needs masks or keypoints in the data",
            hint=f"use one of {', '.join(sorted(FAMILIES))}",
        )
    if name not in FAMILIES:
        raise Problem(f"unknown detector '{name}'", hint=did_you_mean(name, sorted(FAMILIES)))
    return FAMILIES[name]


def background_slot(name: str) -> bool:
    """Whether label 0 is a background class of the scores (softmax) or absent (sigmoid)."""
    return FAMILIES[name] in ("rcnn", "ssd", "ssdlite")


def outputs_for(name: str, classes: int) -> int:
    return classes + 1 if background_slot(name) else classes


def builder_kwargs(name: str, min_size: int | None, max_size: int | None) -> dict:
    """No backbone download ever (weights_backbone=None); the recipe's input sizes."""
    kwargs: dict = {"weights_backbone": None}
    if min_size is not None:
        kwargs["min_size"] = min_size
    if max_size is not None:
        kwargs["max_size"] = max_size
    return kwargs


def build(name: str, pretrained: bool, kwargs: dict, device="cpu") -> nn.Module:
    """builder(weights=None) with torchvision's modules of a pretrained detector
    when `pretrained` (FrozenBatchNorm2d in the backbone where torchvision puts it):
    its weights, from its enum or a file, are loaded by the caller."""
    family(name)
    builder = torchvision.models.get_model_builder(name)
    with torch.device(device):
        model = builder(weights=None, **kwargs)
    if pretrained and name in FROZEN_BN_WHEN_TRAINED:
        freeze_batchnorm(model.backbone.body)
    return model


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm2d under `module` replaced by a FrozenBatchNorm2d, as torchvision
    builds it (its own eps, not the BatchNorm's)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features)
            frozen.to(child.weight.device)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


def find_predictor(model: nn.Module, name: str) -> PredictorSpot:
    kind = FAMILIES[name]
    path = PREDICTORS[kind]
    module = model.get_submodule(path)
    if kind == "rcnn":
        return PredictorSpot(path, module.cls_score.in_features, module.cls_score.out_features)
    if kind in ("retinanet", "fcos"):
        head = model.get_submodule(path.rsplit(".", 1)[0])
        return PredictorSpot(path, module.in_channels, head.num_classes)
    return PredictorSpot(path, _ssd_in_channels(module, kind)[0], module.num_columns)


def new_predictor(model: nn.Module, name: str, classes: int) -> nn.Module:
    """The class-dependent layers for `classes` foreground classes, initialised as
    torchvision initialises them; the caller puts them in place (replace_predictor)."""
    kind = FAMILIES[name]
    outputs = outputs_for(name, classes)
    old = model.get_submodule(PREDICTORS[kind])
    if kind == "rcnn":
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        return FastRCNNPredictor(old.cls_score.in_features, outputs)
    if kind in ("retinanet", "fcos"):
        anchors = old.out_channels // model.get_submodule(PREDICTORS[kind].rsplit(".", 1)[0]).num_classes
        conv = nn.Conv2d(old.in_channels, anchors * outputs, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.constant_(conv.bias, -math.log((1 - PRIOR) / PRIOR))
        return conv
    channels = _ssd_in_channels(old, kind)
    anchors = [_out_channels(block, kind) // old.num_columns for block in old.module_list]
    if kind == "ssd":
        from torchvision.models.detection.ssd import SSDClassificationHead

        return SSDClassificationHead(channels, anchors, outputs)
    from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

    return SSDLiteClassificationHead(channels, anchors, outputs, partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))


def replace_predictor(model: nn.Module, name: str, module: nn.Module, classes: int) -> None:
    """Put new class-dependent layers in place, and tell their owner the new class count."""
    kind = FAMILIES[name]
    parent_path, _, child = PREDICTORS[kind].rpartition(".")
    parent = model.get_submodule(parent_path)
    setattr(parent, child, module)
    if kind in ("retinanet", "fcos"):
        parent.num_classes = outputs_for(name, classes)


def _ssd_in_channels(head: nn.Module, kind: str) -> list[int]:
    if kind == "ssd":
        return [conv.in_channels for conv in head.module_list]
    return [block[0][0].in_channels for block in head.module_list]


def _out_channels(block: nn.Module, kind: str) -> int:
    return block.out_channels if kind == "ssd" else block[1].out_channels
