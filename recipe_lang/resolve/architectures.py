"""The torchvision classification backbones: building them, finding their
classifier and putting a new head in its place."""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_hooks

from recipe_lang.diagnostics import did_you_mean, one_of
from recipe_lang.resolve.problem import Problem

HEAD_KINDS = ("linear", "mlp")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
ADAPTERS = ("none", "pool_flatten")


@dataclass(frozen=True)
class ClassifierSpot:
    path: str  # dotted path of the module a new head replaces
    in_features: int  # width of the features that reach it
    out_features: int  # the builder's own class count
    adapter: str  # "none", or "pool_flatten" when it sees 4-D feature maps


def backbone_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def builder_kwargs(name: str) -> dict:
    """Extra keyword arguments ftr passes to the builder, with or without weights.

    googlenet and inception_v3 warn unless init_weights is given. Their builders
    reject init_weights=True and aux_logits=False together with weights
    (torchvision forces False and True), so False is the one value valid both
    ways; with weights it is what torchvision uses anyway. The auxiliary heads
    are removed after building instead, by drop_aux_heads.
    """
    return {"init_weights": False} if name in ("googlenet", "inception_v3") else {}


def drop_aux_heads(model: nn.Module) -> None:
    """Remove googlenet's / inception_v3's auxiliary classifiers, as torchvision
    does itself after loading weights into a model built without them.

    ftr never fine-tunes them: they only add a training-time loss, and with
    them the model returns a tuple instead of logits in train mode.
    """
    names = aux_heads(model)
    if names:
        model.aux_logits = False
    for name in names:
        setattr(model, name, None)


def aux_heads(model: nn.Module) -> list[str]:
    """The auxiliary classifiers of a model built with them (googlenet: aux1, aux2)."""
    if not getattr(model, "aux_logits", False):
        return []
    return [name for name in ("aux1", "aux2", "AuxLogits") if getattr(model, name, None) is not None]


def weights_kwargs(name: str, enum: str) -> dict:
    """The architecture torchvision's builder takes from weights (e.g.
    "ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1"): a ViT is built for their image size."""
    if not name.startswith("vit_"):
        return {}
    return {"image_size": torchvision.models.get_weight(enum).meta["min_size"][0]}


def pretrained_kwargs(name: str, enum: str) -> dict:
    """What torchvision's builder sets itself when given `enum`: built with weights=None
    and these, a model has the architecture and forward of the pretrained one."""
    kwargs = {"num_classes": len(torchvision.models.get_weight(enum).meta["categories"])}
    if name in ("googlenet", "inception_v3"):
        kwargs["transform_input"] = True
    return kwargs | weights_kwargs(name, enum)


def build(name: str, device="meta", keep_aux: bool = False, kwargs: dict | None = None) -> nn.Module:
    """builder(weights=None, **builder_kwargs(name), **kwargs) on `device`, without
    its auxiliary heads unless keep_aux; on "meta" it takes no memory for weights."""
    if name not in backbone_names():
        raise Problem(f"unknown backbone '{name}'", hint=did_you_mean(name, backbone_names()))
    builder = torchvision.models.get_model_builder(name)
    kwargs = {**builder_kwargs(name), **(kwargs or {})}
    try:
        with torch.device(device):
            model = builder(weights=None, **kwargs)
    except NotImplementedError:
        # regnet computes its stage widths with tensor ops and .tolist() while
        # building, which meta tensors cannot answer.
        with moved_when_registered(device):
            model = builder(weights=None, **kwargs)
    if not keep_aux:
        drop_aux_heads(model)
    return model


@contextlib.contextmanager
def moved_when_registered(device):
    """Tensors are created on the CPU, but every parameter and buffer moves to
    `device` as soon as a module registers it, before it is initialised.
    The registration hooks are process-wide (every thread) while it runs."""

    def move_parameter(module, name, param):
        return nn.Parameter(param.to(device), requires_grad=param.requires_grad)

    def move_buffer(module, name, buffer):
        return None if buffer is None else buffer.to(device)

    handles = [
        module_hooks.register_module_parameter_registration_hook(move_parameter),
        module_hooks.register_module_buffer_registration_hook(move_buffer),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def find_classifier(model: nn.Module) -> ClassifierSpot:
    """The last nn.Linear; in a model without one (squeezenet), a final 1x1
    Conv2d, together with the block that holds it if it is followed there."""
    modules = _named_modules(model)
    linears = [path for path, module in modules.items() if isinstance(module, nn.Linear)]
    if linears:
        return spot_at(model, linears[-1])
    convs = [path for path, module in modules.items() if isinstance(module, nn.Conv2d)]
    if convs and _is_pointwise_conv(modules[convs[-1]]):
        path = convs[-1]
        if _followers(model, path):
            path = path.rpartition(".")[0]
        return spot_at(model, path)
    raise Problem(
        f"cannot tell where the classifier of this {type(model).__name__} is",
        hint='name it: write `head ... at "module.path"`',
    )


def spot_at(model: nn.Module, path: str) -> ClassifierSpot:
    """The spot named by `head ... at "path"`: an nn.Linear, a 1x1 Conv2d, or a
    block whose only layer with weights is a 1x1 Conv2d (squeezenet's classifier)."""
    modules = _named_modules(model)
    if path not in modules:
        raise Problem(f"this model has no module '{path}'", hint=_closest_paths(path, modules))
    module = modules[path]
    if isinstance(module, nn.Linear):
        return ClassifierSpot(path, module.in_features, module.out_features, "none")
    conv = module if _is_pointwise_conv(module) else _only_conv_of_block(module)
    if conv is None:
        raise Problem(
            f"'{path}' is {_describe(module)}, which a head cannot replace",
            hint="a head replaces an nn.Linear, a 1x1 nn.Conv2d, or a block whose only layer with weights is one",
        )
    followers = _followers(model, path) if conv is module else []
    if followers:
        parent = path.rpartition(".")[0]
        raise Problem(
            f"'{path}' is a 1x1 Conv2d followed in '{parent}' by "
            f"{', '.join(type(m).__name__ for m in followers)}, which need its 4-D output",
            hint=f'replace the whole block: write `head ... at "{parent}"`',
        )
    return ClassifierSpot(path, conv.in_channels, conv.out_channels, "pool_flatten")


def make_head(
    kind: str,
    classes: int,
    in_features: int,
    *,
    hidden: list[int] = (),
    dropout: float = 0.0,
    activation: str = "relu",
    adapter: str = "none",
) -> nn.Module:
    """A new head; its modules are created (and initialised from the global
    torch RNG) in the order they run."""
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}")
    adapter_layers = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)] if adapter == "pool_flatten" else []
    if kind == "linear":
        head = _linear_head(classes, in_features, dropout)
    elif kind == "mlp":
        head = _mlp_head(classes, in_features, list(hidden), dropout, activation)
    else:
        raise Problem(f"unknown head kind '{kind}'", hint=did_you_mean(kind, HEAD_KINDS))
    return nn.Sequential(*adapter_layers, head) if adapter_layers else head


def _linear_head(classes: int, in_features: int, dropout: float) -> nn.Module:
    if dropout == 0:
        return nn.Linear(in_features, classes)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, classes))


def _mlp_head(classes: int, in_features: int, hidden: list[int], dropout: float, activation: str) -> nn.Module:
    if activation not in ACTIVATIONS:
        raise Problem(f"unknown activation '{activation}'", hint=did_you_mean(activation, ACTIVATIONS))
    if not hidden:
        raise Problem("an mlp head needs at least one hidden width", hint="use a linear head for none")
    layers = []
    for width_in, width_out in zip([in_features, *hidden[:-1]], hidden, strict=True):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden[-1], classes))
    return nn.Sequential(*layers)


def new_head(head, in_features: int, adapter: str) -> nn.Module:
    """The module of a recipe's `head` (a LinearHead or MlpHead) for features of that width."""
    return make_head(
        head.kind,
        head.classes,
        in_features,
        hidden=head.hidden_sizes if head.kind == "mlp" else [],
        dropout=head.dropout,
        activation=getattr(head, "activation", "relu"),
        adapter=adapter,
    )


def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module but the model itself, by dotted path."""
    return {path: module for path, module in model.named_modules() if path}


def _is_pointwise_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)


def _only_conv_of_block(module: nn.Module) -> nn.Conv2d | None:
    """The 1x1 Conv2d of a block in which no other layer has weights."""
    weighted = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(weighted) == 1 and weighted[0] is not module and _is_pointwise_conv(weighted[0]):
        return weighted[0]
    return None


def _followers(model: nn.Module, path: str) -> list[nn.Module]:
    """The modules after `path` in the nn.Sequential that holds it."""
    parent_path, _, name = path.rpartition(".")
    if not parent_path:
        return []
    parent = model.get_submodule(parent_path)
    if not isinstance(parent, nn.Sequential):
        return []
    names = list(parent._modules)
    return [parent._modules[n] for n in names[names.index(name) + 1 :]]


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"a Conv2d with a {'x'.join(map(str, module.kernel_size))} kernel"
    name = type(module).__name__
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def _closest_paths(path: str, modules: dict[str, nn.Module]) -> str:
    close = difflib.get_close_matches(path, list(modules), n=3, cutoff=0.5)
    if close:
        return f"did you mean {one_of(close)}?"
    top = [p for p in modules if "." not in p]
    return f"its top-level modules are {one_of(top)}"
