"""Resolving image classification: a torchvision or timm classifier, its new head,
class folders or CSV labels, and an ImageNet-style input pipeline."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ...recipe import CenterCrop, ModelSpec, Normalize, Resize
from .. import architectures, cache, data_check, input_sizes, meta_forward, timm_models, weights
from ..architectures import ClassifierSpot
from ..plan import IMAGENET, Classifier, Preprocess, ResolvedWeights
from ..problem import Problem
from ..selectors import ModelIndex
from . import train_classes


class TorchvisionBackbone:
    """`backbone NAME`: a builder of torchvision.models."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = spec.backbone

    def build(self) -> nn.Module:
        return architectures.build(self.name, "meta", False, self.sized_for())

    def builder_kwargs(self) -> dict:
        return architectures.builder_kwargs(self.name)

    def find_classifier(self, model: nn.Module) -> ClassifierSpot:
        return architectures.find_classifier(model)

    def pretrained(self, member: str) -> str:
        """The weights enum member, e.g. 'ResNet50_Weights.IMAGENET1K_V2'."""
        return weights.enum_member(self.name, member)

    def preset(self, enum: str, model: nn.Module) -> dict:
        return weights.preset(self.name, enum.split(".", 1)[1])

    def sized_for(self) -> dict:
        """The builder arguments torchvision takes from the recipe's weights (a
        ViT's image size): the model is built without them, as ftr run builds it with them."""
        spec = self.spec.weights
        if spec.kind not in ("default", "enum"):
            return {}
        try:
            enum = self.pretrained("default" if spec.kind == "default" else spec.member)
        except Problem:
            return {}  # reported when the weights are resolved
        return architectures.weights_kwargs(self.name, enum)


class TimmBackbone:
    """`backbone timm("name")`: a model of timm.create_model."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = spec.backbone.name

    def build(self) -> nn.Module:
        """Built under the name ftr run builds: with weights default, the pinned pretrained tag,
        whose configuration may set the architecture (a ViT's image size)."""
        name = self.name
        if self.spec.weights.kind == "default":
            with contextlib.suppress(Problem):  # reported when the weights are resolved
                name = timm_models.pretrained_name(self.name)
        return timm_models.build(name, "meta")

    def builder_kwargs(self) -> dict:
        return {}

    def find_classifier(self, model: nn.Module) -> ClassifierSpot:
        return timm_models.find_classifier(model)

    def pretrained(self, member: str) -> str:
        """timm's model name with the pretrained tag, e.g. 'convnext_tiny.in12k_ft_in1k'."""
        if member != "default":
            raise timm_models.no_enum(self.name, member)
        return timm_models.pretrained_name(self.name)

    def preset(self, pretrained: str, model: nn.Module) -> dict:
        return timm_models.preset(model)


def backbone_family(spec: ModelSpec):
    """Who builds the backbone: torchvision's builders or timm's create_model."""
    return TimmBackbone(spec) if spec.library == "timm" else TorchvisionBackbone(spec)


class TaskResolver:
    def __init__(self, resolution):
        self.res = resolution
        self.backbone = backbone_family(resolution.recipe.model)
        self.model: nn.Module | None = None

    def build(self) -> nn.Module:
        self.model = self.backbone.build()
        return self.model

    def builder_kwargs(self) -> dict:
        return self.backbone.builder_kwargs()

    def pretrained(self, spec) -> ResolvedWeights:
        return self.res.enum_weights(spec, self.backbone.pretrained)

    def plan_fields(self) -> dict:
        return {}

    def cache_blockers(self, preprocess: Preprocess, index: ModelIndex) -> list[str]:
        recipe = self.res.recipe
        return cache.blockers(recipe.train, recipe.data, preprocess, index)

    def head(self, model: nn.Module) -> Classifier | None:
        head = self.res.recipe.model.head
        if head is not None and head.at is not None:
            spot = self.res.attempt(("model", "head", "at"), architectures.spot_at, model, head.at)
        else:
            spot = self.res.attempt(("model", "head" if head else "backbone"), self.backbone.find_classifier, model)
        if spot is None:
            return None
        if head is not None:
            with torch.device("meta"):
                module = architectures.new_head(head, spot.in_features, spot.adapter)
            architectures.replace_module(model, spot.path, module)
        return Classifier(
            path=spot.path,
            in_features=spot.in_features,
            out_features=spot.out_features,
            adapter=spot.adapter,
            replaced=head is not None,
        )

    def check_inputs(self, model: nn.Module, preprocess: Preprocess) -> None:
        """The model run at every image size the recipe feeds it, the new head in place."""
        sizes = input_sizes.fed(self.res.recipe, preprocess.train, preprocess.eval, self.res.check_data)
        for problem, loc in meta_forward.check(model, sizes, self.res.recipe):
            self.res.report(problem, *loc)

    def data_classes(self, classifier: Classifier) -> list[str] | None:
        train = train_classes(self, "both must hold the same class folders or labels")
        if train is None:
            return None
        head = self.res.recipe.model.head
        expected = head.classes if head else classifier.out_features
        mismatch = data_check.count_mismatch(train, expected)
        if mismatch:
            if head is None:
                mismatch.hint = f"add head linear(classes={len(train)}) to model"
            self.res.report(mismatch, *(("model", "head", "classes") if head else ("data", "train")))
        return train

    def source_classes(self, source, loc: tuple) -> list[str] | None:
        if source.kind == "imagefolder":
            return self.res.attempt(loc, data_check.imagefolder_classes, source.path)
        if source.kind == "csv":
            return self.res.attempt(loc, data_check.csv_classes, source.path, source.root, source.image, source.label)
        if source.kind == "torchvision":
            return self.res.attempt(loc, data_check.torchvision_classes, source.name, source.root, source.download)
        return [str(i) for i in range(source.classes)]

    def preprocess(self, resolved: ResolvedWeights) -> Preprocess:
        data = self.res.recipe.data
        preset = None
        if resolved.enum is not None:
            preset = self.res.attempt(("model", "weights"), self.backbone.preset, resolved.enum, self.model)
        if preset is None and "weights" in (data.eval_transforms, data.normalize):
            return None  # the weights could not be resolved: already reported
        eval_transforms = data.eval_transforms
        if eval_transforms == "weights":
            resize = Resize(size=preset["resize"], interpolation=preset["interpolation"])
            eval_transforms = [resize, CenterCrop(size=preset["crop"])]
        normalize = data.normalize
        if normalize == "none":
            mean = std = None
        else:
            if normalize == "weights":
                normalize = Normalize(mean=preset["mean"], std=preset["std"])
            elif normalize == "imagenet":
                normalize = IMAGENET
            mean, std = list(normalize.mean), list(normalize.std)
        return Preprocess(train=data.train_transforms, eval=eval_transforms, mean=mean, std=std)
