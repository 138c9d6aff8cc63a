"""Pretrained weights: torchvision's enums and the user's own checkpoint files.

Everything here is offline: the enums' metadata and transforms need no
download, and a checkpoint file is only ever read with `weights_only=True`.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field

import torch
import torchvision.models

from ..diagnostics import did_you_mean
from .problem import Problem


def _weights_enum(backbone: str):
    try:
        return torchvision.models.get_model_weights(backbone)
    except ValueError:
        raise Problem(
            f"unknown backbone '{backbone}'",
            hint=did_you_mean(backbone, torchvision.models.list_models()),
        ) from None


def _weights(backbone: str, member: str):
    enum = _weights_enum(backbone)
    names = list(enum.__members__)
    key = "DEFAULT" if member == "default" else member
    if key not in names:
        raise Problem(
            f"unknown weights '{member}' for {backbone}",
            hint=did_you_mean(member.upper(), names),
            notes=(f"valid: {', '.join(names)}",),
        )
    return enum[key]


def enum_member(backbone: str, member: str) -> str:
    """The full enum name, e.g. 'ResNet50_Weights.IMAGENET1K_V2'; 'default'
    becomes the member DEFAULT stands for."""
    weights = _weights(backbone, member)
    return f"{type(weights).__name__}.{weights.name}"


def preset(backbone: str, member: str) -> dict:
    """The weights' own eval preprocessing, as plain JSON-ready values."""
    weights = _weights(backbone, member)
    t = weights.transforms()
    if not all(hasattr(t, a) for a in ("resize_size", "crop_size", "mean", "std", "interpolation")):
        raise Problem(f"weights '{enum_member(backbone, member)}' have no image classification preprocessing")
    return {
        "resize": int(t.resize_size[0]),
        "crop": int(t.crop_size[0]),
        "interpolation": t.interpolation.value,
        "mean": [float(x) for x in t.mean],
        "std": [float(x) for x in t.std],
    }


_SAVE_HINT = "save `model.state_dict()` with `torch.save`; ftr never unpickles arbitrary objects"


def _load(path: str):
    # mmap needs the zip format torch.save writes since 1.6; the legacy
    # format can only be read whole.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # weights_only names the first global it refused, e.g. `GLOBAL __main__.Net`
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        notes = (f"it refers to '{refused.group(1)}'",) if refused else ()
        raise Problem(f"'{path}' is not a plain tensor checkpoint", hint=_SAVE_HINT, notes=notes) from None
    except OSError as e:
        raise Problem(f"cannot read weights file '{path}'", notes=(e.strerror or str(e),)) from None
    except Exception as e:  # a corrupt file raises RuntimeError, EOFError, KeyError...
        first_line = str(e).strip().splitlines()[:1]
        raise Problem(f"'{path}' is not a torch checkpoint", hint=_SAVE_HINT, notes=first_line) from None


def load_state_file(path: str, key: str | None = None, strip: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors by name: `key` picks a sub-dict, `strip` drops
    a prefix (e.g. 'module.') from the names that have it."""
    if not os.path.exists(path):
        raise Problem(f"weights file '{path}' does not exist")
    if not os.path.isfile(path):
        raise Problem(f"weights file '{path}' is not a file")
    state = _load(path)
    if not isinstance(state, dict):
        raise Problem(
            f"'{path}' is not a dict of tensors",
            hint=_SAVE_HINT,
            notes=(f"found: {type(state).__name__}",),
        )
    if key is not None:
        if key not in state:
            raise Problem(
                f"'{path}' has no key '{key}'",
                hint=did_you_mean(key, [str(k) for k in state]),
                notes=(f"keys: {', '.join(map(str, list(state)[:20]))}",),
            )
        state = state[key]
        if not isinstance(state, dict):
            raise Problem(
                f"'{key}' in '{path}' is not a dict of tensors",
                notes=(f"found: {type(state).__name__}",),
            )
    if strip:
        state = {k[len(strip) :] if k.startswith(strip) else k: v for k, v in state.items()}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            nested = [str(k) for k, v in state.items() if isinstance(v, dict)]
            raise Problem(
                f"'{name}' in '{path}' is not a tensor",
                notes=(f"found: {type(value).__name__}",),
                hint=f"pick the tensors with key='{nested[0]}'" if key is None and nested else None,
            )
    return state


def _shape(shape) -> str:
    return str(list(shape))


@dataclass
class KeyDiff:
    """How a checkpoint's names and shapes differ from the model's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file, model)
    dropped_classifier: list[str] = field(default_factory=list)  # replaced by the new head
    # BatchNorm step counters of the file where the model has a FrozenBatchNorm2d,
    # which keeps none (it drops the key on load, as torchvision's does)
    counters: list[str] = field(default_factory=list)

    def is_clean(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)

    def render(self, limit: int = 10) -> list[str]:
        groups = [
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            (
                "misshapen",
                [f"{k}: file {_shape(f)}, model {_shape(m)}" for k, f, m in self.misshapen],
            ),
        ]
        lines = []
        for label, items in groups:
            lines += [f"{label}: {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"... and {len(items) - limit} more {label}")
        return lines


def compare_keys(model_shapes: dict[str, tuple], file_state: dict, classifier_prefix: str | None) -> KeyDiff:
    """Compare a checkpoint with the backbone's state (taken before the head
    was replaced); keys under `classifier_prefix` are set aside, not errors.

    A detector trained from scratch has BatchNorm2d layers; built to start from
    those weights, it has FrozenBatchNorm2d in their place, which take the same
    tensors but no `num_batches_tracked`: such counters are set aside too."""
    diff = KeyDiff()

    def classifier(k: str) -> bool:
        return bool(classifier_prefix) and k.startswith(classifier_prefix)

    for k, model_shape in model_shapes.items():
        if classifier(k):
            diff.dropped_classifier.append(k)
        elif k not in file_state:
            diff.missing.append(k)
        elif tuple(file_state[k].shape) != tuple(model_shape):
            diff.misshapen.append((k, tuple(file_state[k].shape), tuple(model_shape)))
    for k in file_state:
        if classifier(k):
            if k not in model_shapes:
                diff.dropped_classifier.append(k)
        elif k in model_shapes:
            continue
        elif _frozen_counter(k, model_shapes):
            diff.counters.append(k)
        else:
            diff.unexpected.append(k)
    return diff


def _frozen_counter(key: str, model_shapes: dict) -> bool:
    """`key` is a BatchNorm's step counter, and the model's layer there has running
    statistics but no counter (a FrozenBatchNorm2d)."""
    layer, _, name = key.rpartition(".")
    return name == "num_batches_tracked" and f"{layer}.running_mean" in model_shapes
