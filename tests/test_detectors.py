"""The torchvision detectors as ftr builds them: torchvision's modules, new class layers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from recipe_lang.resolve import detectors
from recipe_lang.resolve.problem import Problem


def module_types(model: nn.Module) -> list[tuple[str, str]]:
    return [(name, type(module).__name__) for name, module in model.named_modules()]


@pytest.mark.parametrize("name", sorted(detectors.FAMILIES))
def test_a_pretrained_build_has_the_modules_torchvision_gives_its_weights(name, monkeypatch):
    """torchvision puts FrozenBatchNorm2d in a backbone only when it loads weights;
    ftr builds without them (no download) and must end with the same modules."""
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, *a, **k: {})
    monkeypatch.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
    builder = torchvision.models.get_model_builder(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    with torch.device("meta"):
        theirs = builder(weights=weights, weights_backbone=None)
    ours = detectors.build(name, True, {"weights_backbone": None}, "meta")
    assert module_types(ours) == module_types(theirs)


def test_without_weights_the_backbone_keeps_ordinary_batchnorm():
    model = detectors.build("fasterrcnn_resnet50_fpn", False, {"weights_backbone": None}, "meta")
    kinds = {type(m).__name__ for m in model.backbone.body.modules()}
    assert "BatchNorm2d" in kinds and "FrozenBatchNorm2d" not in kinds


@pytest.mark.parametrize(
    "name, path, outputs",
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "roi_heads.box_predictor.cls_score", 4),  # background + 3
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "roi_heads.box_predictor.bbox_pred", 16),  # 4 boxes each
        ("retinanet_resnet50_fpn", "head.classification_head.cls_logits", 9 * 3),  # 9 anchors, no background
        ("fcos_resnet50_fpn", "head.classification_head.cls_logits", 3),
        ("ssd300_vgg16", "head.classification_head.module_list.0", 4 * 4),  # 4 boxes per place, background + 3
        ("ssdlite320_mobilenet_v3_large", "head.classification_head.module_list.0.1", 6 * 4),
    ],
)
def test_the_new_class_layers_score_the_recipe_classes(name, path, outputs):
    model = detectors.build(name, True, {"weights_backbone": None}, "meta")
    with torch.device("meta"):
        module = detectors.new_predictor(model, name, 3)
    detectors.replace_predictor(model, name, module, 3)
    layer = model.get_submodule(path)
    assert (layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features) == outputs


def test_a_sigmoid_detector_trains_and_detects_with_the_new_layers():
    """RetinaNet with 2 classes: its classification head's own count follows the swap."""
    torch.manual_seed(0)
    name = "retinanet_resnet50_fpn"
    model = detectors.build(name, False, detectors.builder_kwargs(name, 64, 64))
    detectors.replace_predictor(model, name, detectors.new_predictor(model, name, 2), 2)
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"} and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        (detections,) = model(images)
    assert detections["labels"].numel() == 0 or int(detections["labels"].max()) < 2


@pytest.mark.parametrize(
    "name, message",
    [
        ("maskrcnn_resnet50_fpn", "Mask R-CNN ('maskrcnn_resnet50_fpn') is not supported yet"),
        ("fasterrcnn_resnet18", "unknown detector 'fasterrcnn_resnet18'"),
    ],
)
def test_refused_and_unknown_detectors_are_named(name, message):
    with pytest.raises(Problem, match=message.replace("(", r"\(").replace(")", r"\)")):
        detectors.family(name)


def test_a_file_from_a_run_with_trained_batchnorm_fits_a_pretrained_detector():
    """A source run trained its BatchNorm layers (weights none); the target builds
    FrozenBatchNorm2d there, which keeps no step counter: the counters are not errors."""
    from recipe_lang.resolve.weights import compare_keys

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    source = detectors.build(name, False, {"weights_backbone": None}, "meta").state_dict()
    target = detectors.build(name, True, {"weights_backbone": None}, "meta").state_dict()
    counters = [k for k in source if k.endswith("num_batches_tracked")]
    assert counters and not any(k in target for k in counters)
    diff = compare_keys({k: tuple(v.shape) for k, v in target.items()}, source, "roi_heads.box_predictor.")
    assert diff.unexpected == [] and diff.missing == [] and diff.misshapen == []
