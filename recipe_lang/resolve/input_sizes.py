"""The image sizes a recipe feeds its model, and the recipe position that sets each.

A size comes from the last transform that sets one (resize, center_crop,
random_resized_crop), else from the data itself: `synthetic(size=...)`, or the
first image of a source when the data may be opened. Unknown sizes are left out.
"""

from __future__ import annotations

import csv
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

SIZE_SETTERS = ("resize", "center_crop", "random_resized_crop")


@dataclass(frozen=True)
class InputSize:
    height: int
    width: int
    loc: tuple  # recipe path of the transform or source that sets it
    train: bool  # fed in train mode (the train size) or eval mode

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


def fed(recipe, train_transforms: list, eval_transforms: list, open_data: bool) -> list[InputSize]:
    """The distinct sizes of the train and eval images, the train size first.

    eval_transforms is the resolved list: `eval_transforms weights` already made
    into the preset's resize and crop, which point at `weights`."""
    data = recipe.data
    if data.val is not None and data.val.kind != "split":
        eval_source, eval_loc = data.val, ("data", "val")
    else:
        eval_source, eval_loc = data.train, ("data", "train")
    if data.eval_transforms == "weights":
        eval_locs = [("data", "eval_transforms")] * len(eval_transforms)
    else:
        eval_locs = [("data", "eval_transforms", i) for i in range(len(eval_transforms))]
    train_locs = [("data", "train_transforms", i) for i in range(len(train_transforms))]
    sizes = [
        after(train_transforms, train_locs, True, lambda: source_size(data.train, ("data", "train"), open_data)),
        after(eval_transforms, eval_locs, False, lambda: source_size(eval_source, eval_loc, open_data)),
    ]
    distinct: dict[tuple[int, int], InputSize] = {}
    for size in sizes:
        if size is not None:
            distinct.setdefault((size.height, size.width), size)
    return list(distinct.values())


def after(transforms: list, locs: list[tuple], train: bool, start: Callable) -> InputSize | None:
    """The size after the transforms (locs: the recipe path of each). start()
    gives the data's own (height, width, loc) or None, asked only when the
    transforms leave the size to it."""
    size = start() if _keeps_input_size(transforms) else None
    height_width = size[:2] if size else None
    loc = size[2] if size else None
    for transform, transform_loc in zip(transforms, locs, strict=True):
        if transform.kind in SIZE_SETTERS:
            height_width, loc = _output(transform, height_width), transform_loc
    return None if height_width is None else InputSize(*height_width, loc, train)


def _keeps_input_size(transforms: list) -> bool:
    """Whether the input size reaches the output: only resize(n), which keeps
    the aspect ratio, or no size-setting transform at all."""
    return not any(t.kind in SIZE_SETTERS and (t.kind != "resize" or isinstance(t.size, list)) for t in transforms)


def _output(transform, size: tuple[int, int] | None) -> tuple[int, int]:
    if isinstance(transform.size, list):
        return transform.size[0], transform.size[1]
    n = transform.size
    if transform.kind != "resize" or size is None:
        return n, n  # an image of unknown size is taken to be square
    # torchvision's Resize(n): the shorter side becomes n, the longer keeps the aspect ratio
    height, width = size
    short, long = sorted(size)
    longer = int(n * long / short)
    return (n, longer) if height <= width else (longer, n)


# --- the data's own size ----------------------------------------------------------


def source_size(source, loc: tuple, open_data: bool) -> tuple[int, int, tuple] | None:
    """(height, width, loc) of the source's images, None when unknown."""
    if source.kind == "synthetic":
        return source.size, source.size, loc
    if not open_data:
        return None
    width_height = _first_image_size(source)
    if width_height is None:
        return None
    return width_height[1], width_height[0], loc


def _first_image_size(source) -> tuple[int, int] | None:
    """(width, height) of the source's first image; None when it cannot be read
    (the data checks report a missing source)."""
    try:
        if source.kind == "torchvision":
            return _torchvision_first(source)
        path = _first_file(source)
        return None if path is None else _pil_size(path)
    except Exception:  # an unreadable image or dataset: the run's own checks say so
        return None


def _pil_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        return image.size


def _first_file(source) -> str | None:
    if source.kind == "imagefolder":
        return _first_in_folder(source.path)
    with open(source.path, newline="", encoding="utf-8-sig") as f:
        row = next(csv.DictReader(f), None)
    if row is None:
        return None
    return os.path.join(source.root, row[source.image]) if source.root else row[source.image]


def _first_in_folder(path: str) -> str | None:
    """The first image in torchvision ImageFolder's order."""
    classes, _ = find_classes(path)
    for root, _, names in sorted(os.walk(os.path.join(path, classes[0]), followlinks=True)):
        for name in sorted(names):
            if has_file_allowed_extension(name, IMG_EXTENSIONS):
                return os.path.join(root, name)
    return None


def _torchvision_first(source) -> tuple[int, int] | None:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, source.name)
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in (("train", True), ("download", False)) if k in params}
    image = cls(source.root, **kwargs)[0][0]
    return getattr(image, "size", None)
