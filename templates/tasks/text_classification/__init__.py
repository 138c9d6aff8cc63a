"""Text classification in the compiled script: a Hugging Face encoder loaded as the
runtime loads it (recipe_lang/resolve/encoders.py), ftr's head on its pooled token
states, texts from csv/jsonl tokenized once and padded per batch, cross entropy,
accuracy, top-k and macro F1: the context its template parts (beside this file)
read; the code they write mirrors runtime/tasks/text_*.py."""

from __future__ import annotations

import torch
from torch import nn

from recipe_lang.resolve import architectures, encoders
from recipe_lang.resolve.plan import Plan

from ..classification import head_call, metrics_context


def meta_model(plan: Plan) -> nn.Module:
    encoder = encoders.build(plan.backbone, plan.weights.spec.kind, on_meta=True)
    model = encoders.TextClassifier(encoder, nn.Identity(), plan.pool)
    with torch.device("meta"):
        model.head = architectures.new_head(plan.head, plan.classifier.in_features, "none")
    return model


def context(plan: Plan, model: nn.Module) -> dict:
    kinds = {plan.data.train.kind} | ({plan.data.val.kind} if plan.data.val is not None else set())
    task = {
        "model": {"head": head_call(plan), "pretrained": plan.weights.spec.kind == "default"},
        "data": {"kinds": kinds},
        "metrics": metrics_context(plan),
        "requires": "torch and transformers",
        "described": f"the Hugging Face encoder {plan.backbone}",
        "per_class": False,
        "dict_inputs": True,
        "teacher": None,  # distill is image classification's (checks.py refuses it here)
    }
    task["imports"] = imports(kinds, plan.data.group_by_length)
    return task


def imports(kinds: set[str], grouped: bool) -> list[str]:
    statements = ["import transformers", "from torch.utils.data import Dataset"]
    if grouped:
        statements.append("from torch.utils.data import Sampler")
    if "csv" in kinds:
        statements.append("import csv")
    if "jsonl" in kinds:
        statements.append("import json")
    return statements


# --- predict.py of an exported model (ftr export) ------------------------------------


def export_context(plan: Plan) -> dict:
    """What predict.py's parts read: build_model's context for an encoder built from its
    config (model.safetensors fills it), the token budget, pooling and text column."""
    return {
        "model": {"head": head_call(plan), "pretrained": False},
        "encoder": encoders.EXPORT_FOLDER,
        "column": getattr(plan.data.train, "text", None) or "text",
        "requires": "torch, transformers and safetensors",
        "imports": ["import csv", "import json", "import transformers"],
    }
