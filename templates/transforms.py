"""The torchvision v2 transforms of a recipe's image transforms, as calls in the
script: shared by the tasks whose inputs are images."""

from __future__ import annotations

from .code import Call, Code, CompileError
from .literals import identifier

_DEFAULTS = {
    "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3], "interpolation": "bilinear"},
    "resize": {"interpolation": "bilinear"},
    "hflip": {"p": 0.5},
    "vflip": {"p": 0.5},
    "rand_augment": {"n": 2, "m": 9},
    "random_erasing": {"p": 0.5},
}


def transform_call(spec) -> Call:
    """The torchvision v2 transform of a recipe transform (the runtime's, in data.py), without the
    arguments that equal torchvision's defaults."""
    kind = spec.kind
    defaults = _DEFAULTS.get(kind, {})
    given = {k: v for k, v in spec.model_dump(exclude={"kind"}).items() if k not in defaults or defaults[k] != v}
    options = {}
    if "interpolation" in given:
        options["interpolation"] = Code(f"InterpolationMode.{identifier(given['interpolation'].upper())}")
    if kind == "resize":
        return Call("v2.Resize", spec.size, **options)
    if kind == "center_crop":
        return Call("v2.CenterCrop", spec.size)
    if kind == "random_resized_crop":
        extra = {k: tuple(given[k]) for k in ("scale", "ratio") if k in given}
        return Call("v2.RandomResizedCrop", spec.size, **extra, **options)
    if kind in ("hflip", "vflip"):
        name = "v2.RandomHorizontalFlip" if kind == "hflip" else "v2.RandomVerticalFlip"
        return Call(name, **given)
    if kind == "rotate":
        return Call("v2.RandomRotation", spec.degrees)
    if kind == "color_jitter":
        factors = {k: v for k, v in given.items() if v}
        # all zero: the runtime's Identity (v2.ColorJitter would still draw a random order)
        return Call("v2.ColorJitter", **factors) if factors else Call("v2.Identity")
    if kind == "grayscale":
        return Call("v2.Grayscale", num_output_channels=spec.channels)
    if kind == "trivial_augment":
        return Call("v2.TrivialAugmentWide")
    if kind == "rand_augment":
        names = {"n": "num_ops", "m": "magnitude"}
        return Call("v2.RandAugment", **{names[k]: v for k, v in given.items()})
    if kind == "random_erasing":
        return Call("v2.RandomErasing", **given)
    raise CompileError(f"no code for transform '{kind}'")


def transform_imports(calls: list[Call]) -> list[str]:
    """The imports the transform calls need."""
    statements = ["from torchvision.transforms import v2"]
    if any("interpolation" in call.kwargs for call in calls):
        statements.append("from torchvision.transforms import InterpolationMode")
    return statements
