"""Text classification: texts in, one label out, through a Hugging Face encoder
and ftr's head on its pooled token states; cross entropy, accuracy and friends."""

from __future__ import annotations

import os
from functools import partial

import torch
from torch import nn
from torch.utils.data import Subset

from recipe_lang.resolve import architectures, encoders
from recipe_lang.resolve import texts as text_sources

from ..data import Datasets, split_indices
from ..evaluation_data import EvaluationData, class_index, no_val
from ..inputs import Inputs, texts
from ..model import load_file_weights, load_run_weights
from . import classification
from .text_data import Tokenized, pad_batch, read_source


class Task(classification.Task):
    """Classification's loss and evaluation, over batches of token ids."""

    def __init__(self, plan):
        super().__init__(plan)
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

    def trained_model(self, state: dict) -> nn.Module:
        """The encoder's architecture (its weights unread) and head, holding the run's state."""
        plan = self.plan
        head = architectures.new_head(plan.head, plan.classifier.in_features, "none")
        model = encoders.TextClassifier(encoders.build(plan.backbone, "none"), head, plan.pool)
        model.load_state_dict(state)
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

    # --- prediction (predict_batch and prediction_rows: classification's) ----------

    @property
    def prediction_collate(self):
        return self.collate

    def prediction_inputs(self, inputs: list[str], column: str | None) -> Inputs:
        """Files of lines, or CSV / JSON-lines files read at `column` (default: the column
        the run's train source names its texts by)."""
        return texts(inputs, column or getattr(self.plan.data.train, "text", None) or "text")

    def prediction_dataset(self, found: Inputs):
        """Items (token ids, item index), tokenized as the run's data was."""
        plan = self.plan
        ids = self.tokenizer(found.items, truncation=plan.max_length is not None, max_length=plan.max_length)
        return Tokenized(ids["input_ids"], list(range(len(found.items))))

    # --- evaluation of a trained run (per class and mistakes: classification's) ----

    @property
    def evaluation_collate(self):
        return self.collate

    def evaluation_data(self, source, classes: list[str]) -> EvaluationData:
        """`source` tokenized as the run's data was, its labels matched to the run's classes
        by name; None: the run's own val."""
        plan = self.plan
        if source is None:
            source = plan.data.val or no_val()
        read_from = plan.data.train if source.kind == "split" else source
        read = text_sources.read(read_from)
        class_index(read.classes, classes)
        dataset, _ = read_source(read_from, self.tokenizer, plan.max_length, classes)
        indices = list(range(len(dataset)))
        described = f"{source.kind}({source.path!r})" if source.kind != "split" else "the run's val"
        if source.kind == "split":
            _, indices = split_indices(dataset.targets, source.fraction, plan.seed)
            described = f"the run's val (split({source.fraction}) of {read_from.path!r})"
        names = [_short(read.texts[i]) for i in indices]
        return EvaluationData(Subset(dataset, indices), names, described)

    # --- export ----------------------------------------------------------------

    def export_architecture(self) -> dict:
        plan = self.plan
        return {
            "encoder": encoders.EXPORT_FOLDER,
            "model_type": encoders.config(plan.backbone).model_type,
            "pool": plan.pool,
            "max_length": plan.max_length,
        }

    def export_preprocessing(self) -> dict:
        plan = self.plan
        return {
            "inputs": "texts",
            "tokenizer": encoders.EXPORT_FOLDER,
            "truncation": plan.max_length is not None,
            "max_length": plan.max_length,
            "padding": "right, to the longest text of the batch (attention_mask 0 there)",
            "column": getattr(plan.data.train, "text", None) or "text",
        }

    def export_files(self, folder: str) -> None:
        """The encoder's config and the tokenizer, in encoders.EXPORT_FOLDER: predict.py builds
        the encoder and tokenizes from them, never from the run's model folder."""
        target = os.path.join(folder, encoders.EXPORT_FOLDER)
        encoders.config(self.plan.backbone).save_pretrained(target)
        self.tokenizer.save_pretrained(target)

    def onnx_graph(self, model):
        from ..export_onnx import OnnxGraph

        axes = {0: "batch", 1: "sequence"}
        return OnnxGraph(
            TokenLogits(model).eval(), ["input_ids", "attention_mask"], ["logits"], {n: axes for n in TOKENS}
        )

    def onnx_batches(self, items: list | None, count: int) -> tuple[tuple, list[tuple]]:
        """(the export's example: 2 texts, [the check's batch: `count` texts]), of the
        run's texts, else of seeded random token ids; padded as in training."""
        if items is None:
            generator = torch.Generator().manual_seed(0)
            lengths = torch.randint(3, 12, (count,), generator=generator).tolist()
            vocab = len(self.tokenizer)
            items = [(torch.randint(0, vocab, (n,), generator=generator).tolist(), 0) for n in lengths]
        batch, _ = pad_batch(items, self.tokenizer.pad_token_id)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        return (ids[:2], mask[:2]), [(ids, mask)]


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


TOKENS = ("input_ids", "attention_mask")


class TokenLogits(nn.Module):
    """The text model over two tensors (what an ONNX graph takes) rather than a dict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})
