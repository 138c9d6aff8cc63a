"""Cheap checks that a recipe's data is where it says, and what its classes are.

Nothing here opens an image or downloads anything.
"""

from __future__ import annotations

import csv
import inspect
import os

import torchvision.datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from ..diagnostics import did_you_mean
from .problem import Problem

IMAGE_EXTENSIONS = IMG_EXTENSIONS
CSV_ROWS_CHECKED = 20


def _relative_note(path: str) -> str | None:
    if os.path.isabs(path):
        return None
    return f"paths in a recipe are relative to the working directory (now '{os.getcwd()}')"


def _missing(what: str, path: str) -> Problem:
    return Problem(f"{what} '{path}' does not exist", hint=_relative_note(path))


def _require_folder(what: str, path: str) -> None:
    if not os.path.exists(path):
        raise _missing(what, path)
    if not os.path.isdir(path):
        raise Problem(f"{what} '{path}' is a file")


def _has_image(folder: str) -> bool:
    # the same walk ImageFolder makes: nested folders count, symlinks are followed
    return any(
        has_file_allowed_extension(name, IMAGE_EXTENSIONS)
        for _, _, files in os.walk(folder, followlinks=True)
        for name in files
    )


def unlabeled_files(path: str) -> list[str]:
    """`unlabeled images(path)`: every image file under the folder, at any depth, in
    depth-first order, names sorted (the compiled script lists them the same way)."""
    found = []
    for folder, subfolders, files in os.walk(path, followlinks=True):
        subfolders.sort()
        images = [name for name in sorted(files) if has_file_allowed_extension(name, IMAGE_EXTENSIONS)]
        found += [os.path.join(folder, name) for name in images]
    return found


def unlabeled_images(path: str) -> int:
    """The number of images `unlabeled images(path)` finds; a missing or empty folder is a Problem."""
    _require_folder("unlabeled folder", path)
    _no_link_back(path)
    count = len(unlabeled_files(path))
    if not count:
        raise Problem(f"unlabeled folder '{path}' has no images", hint=f"images end in {', '.join(IMAGE_EXTENSIONS)}")
    return count


def imagefolder_classes(path: str) -> list[str]:
    """The classes torchvision's ImageFolder would find in path/<class>/<image>."""
    _require_folder("data folder", path)
    try:
        classes, _ = find_classes(path)
    except FileNotFoundError:
        raise Problem(
            f"data folder '{path}' is empty",
            hint=f"expected one folder per class: {os.path.join(path, '<class>', '<image>')}",
        ) from None
    _no_link_back(path)
    empty = [os.path.join(path, c) for c in classes if not _has_image(os.path.join(path, c))]
    if empty:
        notes = [f"no images in '{folder}'" for folder in empty[1:5]]
        if len(empty) > 5:
            notes.append(f"... and {len(empty) - 5} more")
        raise Problem(
            f"class folder '{empty[0]}' has no images",
            hint=f"images end in {', '.join(IMAGE_EXTENSIONS)}",
            notes=notes,
        )
    return classes


def _no_link_back(path: str) -> None:
    """No folder is reached twice through symbolic links (ImageFolder follows them): a
    link back up the tree would have every image under it read again, tens of times."""
    seen = set()
    for folder, subfolders, _ in os.walk(path, followlinks=True):
        seen.add(os.path.realpath(folder))
        for name in subfolders:
            link = os.path.join(folder, name)
            if os.path.realpath(link) in seen:
                raise Problem(
                    f"'{link}' leads back to '{os.path.realpath(link)}', a folder already read: a symbolic link loop",
                    hint="remove the link, or point it outside the data folder: its images would be read again",
                )


def csv_classes(path: str, root: str | None, image: str = "file", label: str = "label") -> list[str]:
    """The distinct labels of a csv of (image, label) rows, sorted.

    Image paths are joined to root when it is given, else used as written.
    Only the first rows' images are looked for, and none is opened.
    """
    if not os.path.exists(path):
        raise _missing("csv file", path)
    if root is not None:
        _require_folder("image root", root)
    labels = set()
    # utf-8-sig: spreadsheet exports often start with a byte-order mark
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in (image, label):
            if column not in columns:
                raise Problem(
                    f"csv file '{path}' has no column '{column}'",
                    hint=did_you_mean(column, columns),
                    notes=(f"columns: {', '.join(columns)}",),
                )
        for n, row in enumerate(reader):
            line = reader.line_num
            for column in (image, label):
                if not row[column]:
                    raise Problem(f"line {line} of '{path}' has no {column}")
            if n < CSV_ROWS_CHECKED:
                file = os.path.join(root, row[image]) if root else row[image]
                if not os.path.isfile(file):
                    raise Problem(
                        f"image '{file}' on line {line} of '{path}' does not exist",
                        hint=None if root else "set root to the folder the image paths are relative to",
                    )
            labels.add(row[label])
    if not labels:
        raise Problem(f"csv file '{path}' has no rows")
    return sorted(labels)


def _dataset_names() -> list[str]:
    return [n for n in torchvision.datasets.__all__ if inspect.isclass(getattr(torchvision.datasets, n))]


def _class_name(c) -> str:
    # ImageNet's classes are tuples of synonyms
    return str(c[0]) if isinstance(c, (tuple, list)) else str(c)


def torchvision_classes(name: str, root: str, download: bool = False) -> list[str] | None:
    """The classes of torchvision.datasets.<name> stored at root, or None when
    that cannot be known before a download or without more arguments."""
    names = _dataset_names()
    if name not in names:
        raise Problem(f"unknown torchvision dataset '{name}'", hint=did_you_mean(name, names))
    cls = getattr(torchvision.datasets, name)
    params = inspect.signature(cls).parameters
    required = [p for p in params.values() if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if "root" not in params or any(p.name != "root" for p in required):
        return None
    if not os.path.exists(root):
        if download:
            return None
        raise Problem(
            f"dataset root '{root}' does not exist",
            hint="nothing is downloaded unless download=true",
            notes=[n for n in (_relative_note(root),) if n],
        )
    kwargs = {k: v for k, v in (("train", True), ("download", False)) if k in params}
    try:
        dataset = cls(root, **kwargs)
    except ImportError as e:
        raise Problem(f"torchvision dataset {name} needs a package that is not installed", notes=(str(e),)) from None
    except Exception as e:  # the library's own "Dataset not found or corrupted" etc.
        if download:
            return None
        raise Problem(
            f"torchvision dataset {name} is not in '{root}'",
            hint="set download=true, or root to the folder that holds it",
            notes=(str(e),),
        ) from None
    classes = getattr(dataset, "classes", None)
    return [_class_name(c) for c in classes] if classes is not None else None


def class_difference(train: list[str], val: list[str], hint: str) -> Problem | None:
    """val's classes are not train's: which are only in one of them."""
    if val == train:
        return None
    missing, extra = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    notes = [f"only in train: {', '.join(missing[:5])}"] if missing else []
    notes += [f"only in val: {', '.join(extra[:5])}"] if extra else []
    return Problem("val has other classes than train", notes=notes, hint=hint)


def count_mismatch(data_classes: list[str], head_classes: int) -> Problem | None:
    """A Problem when the data's class count differs from the head's."""
    n = len(data_classes)
    if n == head_classes:
        return None
    shown = ", ".join(data_classes[:5]) + (f", ... ({n} in all)" if n > 5 else "")
    return Problem(
        f"the data has {n} classes but the head has {head_classes}",
        hint=f"set classes={n}",
        notes=(f"classes: {shown}",),
    )
