"""The modules of a recipe's model, kept for completion and hover: built on the
meta device as the resolver builds it (the new head in place) and the recipe's
groups matched, so that a selector's coverage can be told without resolving
again. Imports torch: load it only where a model check runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..recipe import Recipe, Selector
from ..resolve import architectures
from ..resolve.problem import Problem
from ..resolve.selectors import RESERVED, ModelIndex, SelectorResolver
from ..resolve.tasks.classification import backbone_family


@dataclass(frozen=True)
class Coverage:
    params: int  # tensors
    numel: int  # values
    modules: list[str]  # the outermost modules covered whole


@dataclass
class ModelOutline:
    key: tuple
    index: ModelIndex
    groups: dict[str, set[str]]

    @property
    def names(self) -> list[str]:
        """The names a selector may use besides module paths."""
        return list(self.groups) + [name for name in RESERVED if name not in self.groups]

    def children(self, parent: str) -> list[str]:
        """Module paths one level below parent ("" for the top level)."""
        depth = parent.count(".") + 1 if parent else 0
        prefix = parent + "." if parent else ""
        return [p for p in self.index.modules if p.startswith(prefix) and p.count(".") == depth and p]

    def module_type(self, path: str) -> str | None:
        module = self.index.modules.get(path)
        return type(module).__name__ if module is not None else None

    def coverage(self, selector: Selector) -> Coverage | None:
        """What a selector covers, or None where it matches nothing."""
        try:
            params = SelectorResolver(self.index, dict(self.groups)).one(selector)
        except Problem:
            return None
        return Coverage(len(params), sum(self.index.numel[p] for p in params), self._outermost(params))

    def _outermost(self, params: set[str]) -> list[str]:
        whole = [p for p in self.index.modules if p and self.index.under(p) and self.index.under(p) <= params]
        return [p for p in whole if not any(p.startswith(q + ".") for q in whole)]


def outline_key(recipe: Recipe) -> tuple:
    groups = tuple((name, str(selectors)) for name, selectors in recipe.groups.items())
    head = recipe.model.head.model_dump_json() if recipe.model.head else None
    return recipe.model.backbone, head, groups


def build_outline(recipe: Recipe) -> ModelOutline | None:
    """The recipe's model with its head and groups; None where the model cannot be built."""
    try:
        backbone = backbone_family(recipe.model)
        model = backbone.build()
        head = recipe.model.head
        if head is not None and head.at is not None:
            spot = architectures.spot_at(model, head.at)
        else:
            spot = backbone.find_classifier(model)
        if head is not None:
            with torch.device("meta"):
                new_head = architectures.new_head(head, spot.in_features, spot.adapter)
            architectures.replace_module(model, spot.path, new_head)
    except Problem:
        return None
    index = ModelIndex(model, spot.path)
    return ModelOutline(outline_key(recipe), index, _groups(recipe, index))


def _groups(recipe: Recipe, index: ModelIndex) -> dict[str, set[str]]:
    """Every group's parameters as the resolver assigns them (first group wins), and rest."""
    resolver = SelectorResolver(index)
    owned = set(index.head)
    for name, selectors in recipe.groups.items():
        params = set()
        for selector in selectors.include:
            params |= _quietly(resolver, selector)
        for selector in selectors.exclude:
            params -= _quietly(resolver, selector)
        resolver.groups[name] = params
        owned |= params
    resolver.groups["rest"] = {p for p in index.params if p not in owned}
    return resolver.groups


def _quietly(resolver: SelectorResolver, selector: Selector) -> set[str]:
    try:
        return resolver.one(selector)
    except Problem:
        return set()
