"""Resolving text classification: a Hugging Face encoder built from its config on
the meta device, ftr's head on its pooled token states, labelled texts from a CSV
or JSON-lines file, and the token budget of each text."""

from __future__ import annotations

from torch import nn

from .. import architectures, encoders, texts
from ..plan import Classifier, Preprocess, ResolvedWeights
from ..problem import Problem
from ..selectors import ModelIndex
from . import train_classes

NO_PREPROCESS = Preprocess(train=[], eval=[], mean=None, std=None)
# tokenizers that know no limit report this sentinel (transformers' VERY_LARGE_INTEGER)
UNBOUNDED = 10**12


class TaskResolver:
    def __init__(self, resolution):
        self.res = resolution
        self.path = resolution.recipe.model.backbone_name

    def build(self) -> nn.Module:
        weights = self.res.recipe.model.weights.kind
        encoder = encoders.build(self.path, weights, on_meta=True)
        self.width = encoders.hidden_size(encoder)
        self.positions = _positions(encoder.config)
        return encoders.TextClassifier(encoder, nn.Identity(), self.res.recipe.model.pool)

    def builder_kwargs(self) -> dict:
        return {}

    def pretrained(self, spec) -> ResolvedWeights:
        if spec.kind == "enum":
            self.res.report(
                Problem(
                    "a Hugging Face encoder has no named weights",
                    hint="write weights default (the folder's own), none, or file(...)",
                ),
                "model",
                "weights",
            )
        return ResolvedWeights(spec=spec)

    def plan_fields(self) -> dict:
        return {"pool": self.res.recipe.model.pool, "max_length": self.tokens}

    def max_length(self) -> int | None:
        """The recipe's, else the tokenizer's own limit, never more than the encoder's positions."""
        written = self.res.recipe.data.max_length
        if written is not None:
            if self.positions is not None and written > self.positions:
                self.res.report(
                    Problem(
                        f"max_length {written} is more than the {self.positions} positions the encoder has",
                        hint=f"write max_length {self.positions} or less",
                    ),
                    "data",
                    "max_length",
                )
            return written
        tokenizer = self.res.attempt(("model", "backbone"), encoders.tokenizer, self.path)
        own = getattr(tokenizer, "model_max_length", None)
        limits = [n for n in (own, self.positions) if isinstance(n, int) and n < UNBOUNDED]
        return min(limits) if limits else None

    def head(self, model: nn.Module) -> Classifier | None:
        head = self.res.recipe.model.head
        if head is None:
            self.res.report(
                Problem(
                    "a text classification recipe needs a head",
                    hint="add head linear(classes=N) to model: the encoder has no classifier of its own",
                ),
                "model",
                "backbone",
            )
            return None
        device = next(model.parameters()).device  # meta, as the encoder
        model.head = architectures.new_head(head, self.width, "none").to(device)
        return Classifier(path="head", in_features=self.width, out_features=head.classes, adapter="none", replaced=True)

    def data_classes(self, classifier: Classifier) -> list[str] | None:
        return train_classes(self, "both must hold the same labels", self.res.recipe.model.head.classes)

    def source_classes(self, source, loc: tuple) -> list[str] | None:
        read = self.res.attempt(loc, texts.read, source)
        return read.classes if read is not None else None

    def preprocess(self, resolved: ResolvedWeights) -> Preprocess:
        return NO_PREPROCESS

    def check_inputs(self, model: nn.Module, preprocess: Preprocess) -> None:
        """Texts of any length fit: they are cut to max_length, which the positions bound."""
        self.tokens = self.max_length()

    def cache_blockers(self, preprocess: Preprocess, index: ModelIndex) -> list[str]:
        from .. import cache

        recipe = self.res.recipe
        return cache.blockers(recipe.train, recipe.data, preprocess, index)


def _positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
