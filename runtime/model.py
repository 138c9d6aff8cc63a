"""The model of a plan: built, given its weights and head, and set for each epoch span."""

from __future__ import annotations

import torchvision
from torch import nn

from recipe_lang.resolve import architectures, weights
from recipe_lang.resolve.plan import Phase, Plan


def build_model(plan: Plan) -> nn.Module:
    """Backbone (its init draws from the global RNG), then its weights, then the new
    head (draws again): the order of reference/seed_loop.py. A run's weights, head
    included, replace everything last."""
    spec = plan.weights.spec
    enum = torchvision.models.get_weight(plan.weights.enum) if plan.weights.enum else None
    builder = torchvision.models.get_model_builder(plan.backbone)
    model = builder(weights=enum, **plan.builder_kwargs)
    architectures.drop_aux_heads(model)
    if spec.kind == "file":
        state = weights.load_state_file(spec.path, spec.key, spec.strip)
        ignored = set(plan.weights.ignored_keys)
        own = model.state_dict()
        # the resolver compared the keys already: strict recipes fit exactly, strict=false ones
        # load what fits (load_state_dict raises on a misshapen tensor even with strict=False)
        fits = {k: v for k, v in state.items() if k not in ignored and k in own and v.shape == own[k].shape}
        model.load_state_dict(fits, strict=False)
    if plan.head is not None:
        module = architectures.new_head(plan.head, plan.classifier.in_features, plan.classifier.adapter)
        architectures.replace_module(model, plan.classifier.path, module)
    if spec.kind == "run":  # after the head, whose init still spends the seed: then all is overwritten
        model.load_state_dict(weights.load_state_file(plan.weights.file), strict=True)
    return model


def enter_phase(model: nn.Module, phase: Phase) -> None:
    """What trains in this span: requires_grad on exactly the plan's trainable set."""
    trainable = set(phase.trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def train_mode(model: nn.Module, phase: Phase) -> None:
    """model.train(), except the BatchNorm layers the plan keeps in eval mode."""
    model.train()
    for path in phase.bn_eval:
        model.get_submodule(path).eval()
