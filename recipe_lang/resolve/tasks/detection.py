"""Resolving object detection: a torchvision detector, new class-dependent layers,
VOC or COCO annotations, and transforms that the detector's own resize follows."""

from __future__ import annotations

import importlib.util

from torch import nn

from .. import detectors
from ..annotations import read_coco, read_voc, voc_classes_of
from ..plan import Classifier, Preprocess, ResolvedWeights
from ..problem import Problem
from ..selectors import ModelIndex
from . import train_classes

CACHE_BLOCKER = "a detector trains on whole images and their boxes, never on cached features"


class TaskResolver:
    def __init__(self, resolution):
        self.res = resolution
        self.name = resolution.recipe.model.backbone

    def build(self) -> nn.Module:
        detectors.family(self.name)
        self._check_sizes()
        self.check_evaluator()
        pretrained = self.res.recipe.model.weights.kind != "none"
        return detectors.build(self.name, pretrained, self.builder_kwargs(), "meta")

    def _check_sizes(self) -> None:
        spec, kind = self.res.recipe.model, detectors.FAMILIES[self.name]
        if kind not in detectors.FIXED_SIZE:
            return
        for field in ("min_size", "max_size"):
            if getattr(spec, field) is not None:
                size = detectors.FIXED_SIZE[kind]
                self.res.report(
                    Problem(
                        f"{self.name} resizes every image to {size}x{size}: {field} does not apply",
                        hint=f"remove {field}",
                    ),
                    "model",
                    field,
                )

    def builder_kwargs(self) -> dict:
        spec = self.res.recipe.model
        if detectors.FAMILIES[self.name] in detectors.FIXED_SIZE:
            return detectors.builder_kwargs(self.name, None, None)
        return detectors.builder_kwargs(self.name, spec.min_size, spec.max_size)

    def pretrained(self, spec) -> ResolvedWeights:
        return self.res.enum_weights(spec)

    def plan_fields(self) -> dict:
        return {}

    def head(self, model: nn.Module) -> Classifier | None:
        head = self.res.recipe.model.head
        if head is None:
            self.res.report(
                Problem(
                    "a detection recipe needs head detection(classes=N)",
                    hint="N: the number of object classes in the data; ftr adds the background itself",
                ),
                "model",
                "backbone",
            )
            return None
        spot = detectors.find_predictor(model, self.name)
        module = detectors.new_predictor(model, self.name, head.classes)
        detectors.replace_predictor(model, self.name, module, head.classes)
        return Classifier(
            path=spot.path, in_features=spot.in_features, out_features=spot.outputs, adapter="none", replaced=True
        )

    def data_classes(self, classifier: Classifier) -> list[str] | None:
        return train_classes(
            self,
            "give both the same classes=[...] (voc), or the same categories (coco)",
            self.res.recipe.model.head.classes,
        )

    def source_classes(self, source, loc: tuple) -> list[str] | None:
        if source.kind == "voc":
            return self.res.attempt(loc, _voc_classes, source.path, source.split, source.classes)
        return self.res.attempt(loc, _coco_classes, source.path, source.images)

    def check_evaluator(self) -> None:
        """mAP is pycocotools' evaluation: without it a run would fail at its first evaluation."""
        keys = self.res.recipe.evaluate.metric_keys
        if importlib.util.find_spec("pycocotools") is not None:
            return
        for i, key in enumerate(keys):
            if key.startswith("map"):
                self.res.report(
                    Problem(
                        f"metric {key} needs pycocotools, which is not installed",
                        hint="pip install 'ftr[detection]' (or pycocotools), or measure loss only",
                    ),
                    "evaluate",
                    "metrics",
                    i,
                )
                return

    def preprocess(self, resolved: ResolvedWeights) -> Preprocess:
        data = self.res.recipe.data
        return Preprocess(train=data.train_transforms, eval=data.eval_transforms, mean=None, std=None)

    def check_inputs(self, model: nn.Module, preprocess: Preprocess) -> None:
        """Nothing to check: the detector resizes whatever it is given."""

    def cache_blockers(self, preprocess: Preprocess, index: ModelIndex) -> list[str]:
        return [CACHE_BLOCKER]


def _voc_classes(path: str, split: str, given: list[str] | None) -> list[str]:
    """The split's class names (every annotation read: a malformed one is named), or
    the given ones when every name in the annotations is among them."""
    found = voc_classes_of(read_voc(path, split))
    if given is None:
        return found
    unknown = [name for name in found if name not in given]
    if unknown:
        raise Problem(
            f"the annotations of '{path}' ({split}) name classes that classes=[...] lacks: {', '.join(unknown[:8])}",
            hint="add them to classes=[...], or leave classes out to take the names the annotations use",
        )
    return list(given)


def _coco_classes(path: str, images: str) -> list[str]:
    return read_coco(path, images)[0]
