"""Image classification: images in, one label out, cross entropy, accuracy and friends."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from recipe_lang.resolve import architectures, timm_models

from ..data import Datasets, datasets
from ..metrics import Evaluation
from ..model import load_file_weights, load_run_weights


class Task:
    collate = None

    def __init__(self, plan):
        self.plan = plan
        self.criterion = nn.CrossEntropyLoss(label_smoothing=plan.train.label_smoothing)

    def build_model(self) -> nn.Module:
        """Backbone (its init draws from the global RNG), then its weights, then the new
        head (draws again): the order of reference/seed_loop.py. A run's weights, head
        included, replace everything last."""
        plan = self.plan
        model = timm_backbone(plan) if plan.library == "timm" else torchvision_backbone(plan)
        if plan.weights.spec.kind == "file":
            load_file_weights(model, plan)
        if plan.head is not None:
            module = architectures.new_head(plan.head, plan.classifier.in_features, plan.classifier.adapter)
            architectures.replace_module(model, plan.classifier.path, module)
        if plan.weights.spec.kind == "run":  # after the head, whose init still spends the seed
            load_run_weights(model, plan)
        return model

    def datasets(self) -> Datasets:
        return datasets(self.plan)

    def to_device(self, batch, device: torch.device, layout) -> tuple:
        """Images in the model's memory layout; cached features (2-D) as they are."""
        inputs, labels = batch
        if inputs.dim() == 4:
            return inputs.to(device, memory_format=layout), labels.to(device)
        return inputs.to(device), labels.to(device)

    def count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, forward, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(forward(inputs), labels)

    def evaluation(self, classes: list[str]) -> Evaluation:
        return Evaluation(self.plan.evaluate.metric_keys, len(classes))

    def evaluate_batch(self, model, forward, inputs, labels, evaluation: Evaluation, autocast) -> float:
        with autocast():
            logits = forward(inputs)
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, labels)
        evaluation.update(logits, labels, loss.item() * len(labels))
        return loss.item()


def torchvision_backbone(plan) -> nn.Module:
    """The builder with its weights enum member, without auxiliary classifiers."""
    enum = torchvision.models.get_weight(plan.weights.enum) if plan.weights.enum else None
    model = torchvision.models.get_model_builder(plan.backbone)(weights=enum, **plan.builder_kwargs)
    architectures.drop_aux_heads(model)
    return model


def timm_backbone(plan) -> nn.Module:
    """timm.create_model under the plan's name; with weights default, timm loads the pinned
    pretrained weights (downloading them from the Hugging Face hub unless cached)."""
    name = timm_models.created_name(plan)
    return timm_models.timm().create_model(name, pretrained=plan.weights.enum is not None)
