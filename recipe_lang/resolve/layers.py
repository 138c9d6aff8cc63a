"""Layer-wise rate decay (`layer_decay F, over=MODULE`): the ULMFiT / BERT
fine-tuning habit of training each layer of a stack at a rate a factor below
the one above it, resolved into one group per layer so that the plan, the
optimizer and metrics.jsonl name every layer's rate."""

from __future__ import annotations

from ..diagnostics import did_you_mean
from .plan import Group
from .problem import Problem
from .selectors import ModelIndex


def children(index: ModelIndex, over: str) -> list[str]:
    """The paths of the container's children that hold parameters, in order."""
    if over not in index.modules or not over:
        raise Problem(f"no module '{over}' in the model", hint=did_you_mean(over, index.closest(over)) or None)
    if over == index.head_path or over.startswith(index.head_path + "."):
        raise Problem(f"'{over}' is in the head", hint="decay the rates of the backbone's stack of layers")
    found = _weighted_children(index, over)
    if len(found) < 2:
        below = found and _weighted_children(index, found[0])
        hint = f"write over={found[0]}" if below and len(below) > 1 else "name a container of two layers or more"
        raise Problem(f"'{over}' has {len(found)} child with parameters: nothing to decay across", hint=hint)
    return found


def _weighted_children(index: ModelIndex, path: str) -> list[str]:
    prefix = path + "."
    found = [p for p in index.modules if p.startswith(prefix) and "." not in p[len(prefix) :]]
    return [p for p in found if index.under(p)]


def split(groups: list[Group], layers: list[str], factor: float, index: ModelIndex) -> list[Group]:
    """Each group's parameters in layer i (of n) become the group `<layer path>` (or
    `<group>@<layer path>` when the layer is shared by several groups), with the rate
    group.lr * factor ** (n - 1 - i); the rest stays in its group."""
    where = {p: i for i, layer in enumerate(layers) for p in index.under(layer)}
    owners = {i: {g.name for g in groups for p in g.params if where.get(p) == i} for i in range(len(layers))}
    out = []
    for group in groups:
        kept = [p for p in group.params if p not in where]
        if kept or not any(p in where for p in group.params):
            out.append(_group(group, group.name, group.lr, group.covers, kept, index))
        for i, layer in enumerate(layers):
            params = [p for p in group.params if where.get(p) == i]
            if not params:
                continue
            name = layer if len(owners[i]) == 1 else f"{group.name}@{layer}"
            power = len(layers) - 1 - i
            lr = None if group.lr is None else group.lr * factor**power
            covers = f"{layer} ({group.name} x {factor:g}^{power})"
            out.append(_group(group, name, lr, covers, params, index))
    return out


def _group(group: Group, name: str, lr: float | None, covers: str, params: list[str], index: ModelIndex) -> Group:
    return Group(name=name, lr=lr, covers=covers, params=params, numel=sum(index.numel[p] for p in params))
