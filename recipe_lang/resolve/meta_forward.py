"""The model run on the meta device (shapes only, no memory) at each image size
a recipe feeds it, the new head in place, through the loss; what fails becomes a
Problem at the recipe line that sets the size or places the head."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .input_sizes import InputSize
from .problem import Problem

BATCH = 2
HEAD_LOC = ("model", "head")
HEAD_HINT = "put the head where the classifier is (leave out `at` to let ftr find it)"


def check(model: nn.Module, sizes: list[InputSize], recipe) -> list[tuple[Problem, tuple]]:
    """(problem, recipe path) for every size the model cannot take, or for a head that breaks it."""
    head = recipe.model.head
    placed = head is not None and head.at is not None
    problems = []
    for size in sizes or ([reference(model)] if placed else []):
        error, out = _outcome(model, size, recipe.train.label_smoothing)
        if error is not None and placed and _head_breaks_it(model, size):
            return [(_head_problem(f"the model does not run with a head at '{head.at}'", error), HEAD_LOC)]
        if error is not None:
            problems.append((_size_problem(recipe.model.backbone_name, model, size, error), size.loc))
        elif head is not None and tuple(out.shape) != (BATCH, head.classes):
            where = f"a head at '{head.at}'" if placed else "the new head"
            message = f"with {where} the model outputs shape {tuple(out.shape)}, not (batch, {head.classes})"
            return [(_head_problem(message), HEAD_LOC)]
    return problems


def reference(model: nn.Module) -> InputSize:
    """A size the architecture takes, to tell a head's failure from a size's:
    224x224, which every torchvision classifier takes, or a ViT's own size."""
    side = fixed_side(model) or 224
    return InputSize(side, side, HEAD_LOC, False)


def fixed_side(model: nn.Module) -> int | None:
    """The one image side a model takes, if it takes only one: a torchvision
    VisionTransformer's image_size, or the size of a timm model whose pretrained
    configuration says its input size is fixed."""
    fixed = getattr(model, "image_size", None)
    if isinstance(fixed, int):
        return fixed
    config = getattr(model, "pretrained_cfg", None) or {}
    if config.get("fixed_input_size") and config.get("input_size"):
        return int(config["input_size"][-1])
    return None


def _head_breaks_it(model: nn.Module, failed: InputSize) -> bool:
    """Whether a failure at some size is the head's: the model fails at the reference size too."""
    size = reference(model)
    return (failed.height, failed.width) == (size.height, size.width) or _outcome(model, size, 0.0)[0] is not None


def _head_problem(message: str, error: str | None = None) -> Problem:
    return Problem(message, notes=(error,) if error else (), hint=HEAD_HINT)


def _outcome(model: nn.Module, size: InputSize, label_smoothing: float) -> tuple[str | None, torch.Tensor | None]:
    """(the first line of torch's error, None), or (None, the output)."""
    try:
        return None, _forward(model, size, label_smoothing)
    except Exception as error:  # any failure inside torch or the architecture's own asserts
        text = str(error).strip()
        return (text.splitlines()[0] if text else type(error).__name__), None


def _forward(model: nn.Module, size: InputSize, label_smoothing: float) -> torch.Tensor:
    model.train(size.train)
    # BatchNorm in train mode gives the same shapes (a batch of 2 always has two
    # values per channel) and is many times slower on the meta device.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    images = torch.empty(BATCH, 3, size.height, size.width, device="meta")
    targets = torch.zeros(BATCH, dtype=torch.long, device="meta")
    with torch.no_grad():
        out = model(images)
        nn.functional.cross_entropy(out, targets, label_smoothing=label_smoothing)
    return out


def _size_problem(backbone: str, model: nn.Module, size: InputSize, error: str) -> Problem:
    return Problem(f"{backbone} cannot take {size} images", notes=(error,), hint=_size_hint(backbone, model, size))


def _size_hint(backbone: str, model: nn.Module, size: InputSize) -> str:
    fixed = fixed_side(model)
    if fixed is not None:
        return f"{backbone} takes only {fixed}x{fixed} images: resize or crop to that size"
    smallest = smallest_size(backbone)
    if smallest is None:
        return "resize or crop to the size its weights were trained at"
    height, width = smallest
    if size.height < height or size.width < width:
        return f"the smallest size {backbone} takes is {height}x{width}: resize or crop to at least that"
    return f"{backbone} takes {height}x{width} images, not every larger size: resize or crop to {height}x{width}"


def smallest_size(backbone: str) -> tuple[int, int] | None:
    """torchvision's min_size for the builder's default weights, whatever weights
    a recipe names: the architecture is the same."""
    try:
        meta = torchvision.models.get_model_weights(backbone).DEFAULT.meta
    except (ValueError, AttributeError):
        return None
    size = meta.get("min_size")
    return (int(size[0]), int(size[1])) if size else None
