"""The model of a plan, whatever its task: built, given its weights and head, and
set for each epoch span."""

from __future__ import annotations

from torch import nn

from recipe_lang.resolve import weights
from recipe_lang.resolve.plan import Phase, Plan


def build_model(plan: Plan) -> nn.Module:
    from .tasks import runtime_task

    return runtime_task(plan).build_model()


def load_file_weights(model: nn.Module, plan: Plan) -> None:
    """A `weights file(...)`: the resolver compared the keys already: strict recipes fit
    exactly, strict=false ones load what fits (load_state_dict raises on a misshapen
    tensor even with strict=False)."""
    spec = plan.weights.spec
    state = weights.load_state_file(spec.path, spec.key, spec.strip)
    ignored = set(plan.weights.ignored_keys)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k not in ignored and k in own and v.shape == own[k].shape}
    model.load_state_dict(fits, strict=False)


def load_run_weights(model: nn.Module, plan: Plan) -> None:
    """A `weights run(...)`: the run's model, head included, replaces everything."""
    model.load_state_dict(weights.load_state_file(plan.weights.file), strict=True)


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
