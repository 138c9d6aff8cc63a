"""The blocks of a backbone and their relative gradient norm (RGN), the measure of
Auto-RGN (Lee et al., ICLR 2023, "Surgical fine-tuning improves adaptation to
distribution shifts").

Blocks are found generically: the model's top-level children that hold
parameters, less the one that holds the head; where a single child is left (a
`features` or `backbone` container) its children are taken instead, and so on.
Consecutive blocks that are single layers (a conv, a norm: no children of their
own) are one block, the stem: for a resnet `conv1, bn1`, then `layer1` to
`layer4`. Parameters of the model itself (outside any child) are not measured.

A block's RGN is ||g|| / ||w||: the norm of the gradient of the training loss,
averaged over a few train batches with every parameter trainable and the model
in train mode, over the norm of the block's weights; both norms are taken over
all the block's parameters together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from .measuring import Setup


@dataclass
class Block:
    modules: list[str]  # module paths, in model order
    params: list[str]  # parameter names
    numel: int

    @property
    def name(self) -> str:
        return ", ".join(self.modules)

    @classmethod
    def of(cls, module: nn.Module, path: str) -> Block:
        named = list(module.named_parameters(path))
        return cls([path], [name for name, _ in named], sum(p.numel() for _, p in named))

    def join(self, other: Block) -> None:
        self.modules += other.modules
        self.params += other.params
        self.numel += other.numel


def backbone_blocks(model: nn.Module, head_path: str) -> list[Block]:
    children = _parametered_children(model, "", head_path)
    while len(children) == 1 and _parametered_children(children[0][1], children[0][0], head_path):
        children = _parametered_children(children[0][1], children[0][0], head_path)
    blocks: list[Block] = []
    previous_single = False
    for path, module in children:
        single = not _parametered_children(module, path, head_path)
        if single and previous_single:
            blocks[-1].join(Block.of(module, path))
        else:
            blocks.append(Block.of(module, path))
        previous_single = single
    return blocks


def _parametered_children(module: nn.Module, prefix: str, head_path: str) -> list[tuple[str, nn.Module]]:
    """(path, child) of the children that hold parameters and are not (and do not hold) the head."""
    out = []
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        holds_head = head_path == path or head_path.startswith(path + ".")
        if not holds_head and any(True for _ in child.parameters()):
            out.append((path, child))
    return out


def relative_gradient_norms(s: Setup, blocks: list[Block], batches: int) -> list[float]:
    """||g|| / ||w|| of each block, the gradient averaged over `batches` train batches."""
    model = s.model
    for param in model.parameters():
        param.requires_grad_(True)
    model.train()
    model.zero_grad(set_to_none=True)
    for inputs, targets in islice(s.batches(), batches):
        (s.loss(inputs, targets) / batches).backward()
    named = dict(model.named_parameters())
    return [_ratio([named[name] for name in block.params]) for block in blocks]


def _ratio(params: list[torch.Tensor]) -> float:
    with torch.no_grad():
        grad = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))
        weight = math.sqrt(sum(float(p.double().pow(2).sum()) for p in params))
    return grad / weight if weight > 0 else 0.0
