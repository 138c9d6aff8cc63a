"""The feature cache: when the frozen part of a model can run once per span.

A span of epochs trains the head on features computed once, at its start,
when that gives the numbers of running the whole model every step:

- only the head's parameters train in the span (and some do);
- every BatchNorm outside the head is kept in eval mode in the span;
- no module outside the head draws random numbers in train mode (a Dropout,
  a StochasticDepth or an attention dropout with p > 0);
- no train or eval transform draws random numbers: only resize, center_crop,
  grayscale and an all-zero color_jitter (an Identity) are allowed;
- unreadable images are not skipped (skipping changes which images share a batch);
- the recipe does not say `cache false`.

The back ends compute the head's input for every train and val image once per
span (in eval mode, without gradients), then train the head on those tensors,
batched and shuffled exactly as the images would be. The numbers equal an
uncached run's up to float rounding (a convolution's result can depend on the
batch it is computed in).
"""

from __future__ import annotations

from torch import nn

from ..recipe import DataSpec, TrainSpec
from .plan import Phase, Preprocess
from .selectors import ModelIndex

FIXED_TRANSFORMS = ("resize", "center_crop", "grayscale")


def blockers(train: TrainSpec, data: DataSpec, preprocess: Preprocess, index: ModelIndex) -> list[str]:
    """Why no span can be cached, whatever trains: empty when some may be."""
    if not train.cache:
        return ["cache false"]
    reasons = []
    for stage, transforms in (("train", preprocess.train), ("eval", preprocess.eval)):
        random = [t.kind for t in transforms if not _fixed(t)]
        if random:
            reasons.append(f"{stage} transforms draw random numbers ({', '.join(dict.fromkeys(random))})")
    if data.skip_bad_images:
        reasons.append("skip_bad_images changes which images share a batch")
    if train.pseudo_label is not None:
        reasons.append("pseudo_label trains on unlabeled images through the whole model")
    noisy = _random_modules(index)
    if noisy:
        more = f" and {len(noisy) - 3} more" if len(noisy) > 3 else ""
        reasons.append(f"{', '.join(noisy[:3])}{more} draw random numbers in train mode")
    return reasons


def cached(phase: Phase, index: ModelIndex, blocked: list[str]) -> bool:
    """Whether a span trains on cached features."""
    if blocked or not phase.trainable or not set(phase.trainable) <= index.head:
        return False
    batchnorms = [p for p, m in index.modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return {p for p in batchnorms if not _in_head(p, index)} <= set(phase.bn_eval)


def _fixed(transform) -> bool:
    if transform.kind == "color_jitter":
        return not any((transform.brightness, transform.contrast, transform.saturation, transform.hue))
    return transform.kind in FIXED_TRANSFORMS


def _in_head(path: str, index: ModelIndex) -> bool:
    return path == index.head_path or path.startswith(index.head_path + ".")


def _random_modules(index: ModelIndex) -> list[str]:
    """Modules outside the head that draw random numbers in train mode, described."""
    found = []
    for path, module in index.modules.items():
        if not path or _in_head(path, index):
            continue
        p = _random_p(module)
        if p:
            found.append(f"{path} ({type(module).__name__} p={p:g})")
    return found


def _random_p(module: nn.Module) -> float:
    if isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ == "StochasticDepth":
        return float(module.p)
    if type(module).__name__ in ("DropPath", "DropBlock2d"):  # timm's stochastic depth and DropBlock
        return float(getattr(module, "drop_prob", 0.0))
    # nn.MultiheadAttention and torchvision's attention blocks keep their dropout as a number
    for name in ("dropout", "attention_dropout"):
        value = getattr(module, name, None)
        if isinstance(value, float) and value > 0:
            return value
    return 0.0
