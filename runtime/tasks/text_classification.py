"""Text classification: texts in, one label out, through a Hugging Face encoder
and ftr's head on its pooled token states; cross entropy, accuracy and friends."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.data import Subset

from recipe_lang.resolve import architectures, encoders

from ..data import Datasets, split_indices
from ..metrics import Evaluation
from ..model import load_file_weights, load_run_weights
from .text_data import pad_batch, read_source


class Task:
    def __init__(self, plan):
        self.plan = plan
        self.criterion = nn.CrossEntropyLoss(label_smoothing=plan.train.label_smoothing)
        self.tokenizer = encoders.tokenizer(plan.backbone)
        self.collate = partial(pad_batch, pad_id=self.tokenizer.pad_token_id)

    def build_model(self) -> nn.Module:
        """Encoder (pretrained, or its init draws from the global RNG), a weights file
        over it, then the new head (draws again); a run's weights replace everything last."""
        plan = self.plan
        encoder = encoders.build(plan.backbone, plan.weights.spec.kind)
        head = nn.Identity()
        model = encoders.TextClassifier(encoder, head, plan.pool)
        if plan.weights.spec.kind == "file":
            load_file_weights(model, plan)
        model.head = architectures.new_head(plan.head, plan.classifier.in_features, "none")
        if plan.weights.spec.kind == "run":
            load_run_weights(model, plan)
        return model

    def datasets(self) -> Datasets:
        plan = self.plan
        data = plan.data
        train, classes = read_source(data.train, self.tokenizer, plan.max_length)
        if data.val is None:
            return Datasets(train, None, classes)
        if data.val.kind == "split":
            train_idx, val_idx = split_indices(train.targets, data.val.fraction, plan.seed)
            return Datasets(Subset(train, train_idx), Subset(train, val_idx), classes)
        val, _ = read_source(data.val, self.tokenizer, plan.max_length, classes)
        return Datasets(train, val, classes)

    def to_device(self, batch, device: torch.device, layout) -> tuple:
        """Token ids and masks; cached features (2-D) as they are."""
        inputs, labels = batch
        if isinstance(inputs, dict):
            return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)
        return inputs.to(device), labels.to(device)

    def count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, forward, inputs, labels: torch.Tensor) -> torch.Tensor:
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
