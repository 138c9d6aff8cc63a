"""Data for a plan: sources, image pipelines, the hold-out split, loaders.

Parity with `reference/seed_loop.py` is the contract (design.md), and it is a
contract about randomness:

- the image pipeline is decode to RGB PIL -> v2.ToImage() -> the recipe's
  transforms in the order written -> v2.ToDtype(float32, scale=True) ->
  v2.Normalize(mean, std);
- random transforms draw from the global torch generator (in the main process
  with workers=0, from each worker's own generator otherwise);
- the train loader shuffles with its own `torch.Generator().manual_seed(seed)`;
  the val loader has no generator, so each pass over it draws one number from
  the global generator (DataLoader's base seed), exactly as seed_loop's does;
- nothing else here draws from the global generator: building the datasets,
  the seeded split and the synthetic images all use private generators.

Unreadable images: with `skip_bad_images`, the dataset yields an `Unreadable`
marker in place of the item, the collate function leaves it out of the batch,
and each batch is a `Batch`: the tuple (inputs, labels) that the loop unpacks as
usual, carrying the files it left out in `.skipped`. The loader (`CheckedLoader`)
adds those to `Datasets.skipped` in the main process. The count has to travel
with the batch: a counter kept in the dataset would be incremented in a worker's
copy and never seen when workers > 0.

Without it, an unreadable image raises `BadImage` naming the file. With
workers=0 the image loader raises it; with workers > 0 the workers mark it as
above and the loader raises it in the main process, at the batch that holds it:
an exception raised inside a worker makes DataLoader's shutdown wait 5 s per
worker for workers that do not exit, and reaches the main process as text.
"""

from __future__ import annotations

import csv
import inspect
import os
import random
import re
import sys
from dataclasses import dataclass, field

import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from recipe_lang.resolve import data_check

SKIP_HINT = "set skip_bad_images true in data to skip and count unreadable images"


class BadImage(Exception):
    """An image file that cannot be read or decoded."""

    # The message carries the path, so that the exception can be rebuilt from its
    # text: raised inside a DataLoader worker, it reaches the main process as
    # BadImage("Caught BadImage in DataLoader worker process 0 ... <traceback>").
    # loaders() never lets that happen; a loader built elsewhere may.
    _TEXT = re.compile(r"cannot read image '(?P<path>.*?)' \((?P<reason>.*)\): " + re.escape(SKIP_HINT))

    def __init__(self, path: str, reason: str | None = None):
        if reason is None:
            # the last match: the exception that ended the worker's traceback
            match = ([None] + list(self._TEXT.finditer(str(path))))[-1]
            path, reason = (match["path"], match["reason"]) if match else (str(path), "unreadable")
        self.path = path
        self.reason = " ".join(str(reason).split())
        super().__init__(path, self.reason)

    def __str__(self) -> str:
        return f"cannot read image '{self.path}' ({self.reason}): {SKIP_HINT}"


@dataclass(frozen=True)
class Unreadable:
    """Stands for an image that could not be read (with skip_bad_images, or workers > 0)."""

    path: str
    reason: str


class RgbLoader:
    """Open an image file as RGB PIL (torchvision's pil_loader), or fail clearly:
    raise BadImage, or with `mark` return an Unreadable in its place."""

    def __init__(self, mark: bool = False):
        self.mark = mark

    def __call__(self, path: str):
        try:
            with open(path, "rb") as file:
                image = Image.open(file)
                return image.convert("RGB")  # decodes; a truncated file fails here
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
            # SyntaxError: PIL's plugins raise it for some malformed headers
            if isinstance(error, UnidentifiedImageError):
                reason = "not an image format PIL can read"
            else:
                reason = str(error) or type(error).__name__
            if self.mark:
                return Unreadable(str(path), reason)
            raise BadImage(str(path), reason) from None


# --- transforms ----------------------------------------------------------------


def _size(size):
    return list(size) if isinstance(size, (list, tuple)) else size


def _mode(name: str) -> InterpolationMode:
    return InterpolationMode[name.upper()]


def transforms_of(specs: list) -> list:
    """The torchvision v2 transform of each recipe transform, in the same order.

    With default arguments they equal what seed_loop.py builds
    (`random_resized_crop(32)` is `v2.RandomResizedCrop(32)`, `hflip()` is
    `v2.RandomHorizontalFlip()`, ...), so they draw the same random numbers.
    """
    out = []
    for spec in specs:
        kind = spec.kind
        if kind == "resize":
            out.append(v2.Resize(_size(spec.size), interpolation=_mode(spec.interpolation), antialias=True))
        elif kind == "center_crop":
            out.append(v2.CenterCrop(_size(spec.size)))
        elif kind == "random_resized_crop":
            out.append(
                v2.RandomResizedCrop(
                    _size(spec.size),
                    scale=tuple(spec.scale),
                    ratio=tuple(spec.ratio),
                    interpolation=_mode(spec.interpolation),
                    antialias=True,
                )
            )
        elif kind == "hflip":
            out.append(v2.RandomHorizontalFlip(spec.p))
        elif kind == "vflip":
            out.append(v2.RandomVerticalFlip(spec.p))
        elif kind == "rotate":
            out.append(v2.RandomRotation(spec.degrees))
        elif kind == "color_jitter":
            # v2.ColorJitter treats 0 and None alike (no factor is drawn for that
            # property), but it still draws torch.randperm(4) for the order of the
            # adjustments on every call, even when all four are off. An all-zero
            # jitter changes nothing, so it becomes Identity and draws nothing.
            values = (spec.brightness, spec.contrast, spec.saturation, spec.hue)
            if not any(values):
                out.append(v2.Identity())
            else:
                out.append(v2.ColorJitter(*(value or None for value in values)))
        elif kind == "grayscale":
            out.append(v2.Grayscale(num_output_channels=spec.channels))
        elif kind == "trivial_augment":
            out.append(v2.TrivialAugmentWide())
        elif kind == "rand_augment":
            out.append(v2.RandAugment(num_ops=spec.n, magnitude=spec.m))
        elif kind == "random_erasing":
            out.append(v2.RandomErasing(p=spec.p))
        else:
            raise ValueError(f"unknown transform '{kind}'")
    return out


def pipeline(steps: list, mean, std) -> v2.Compose:
    """seed_loop's pipeline: ToImage -> steps -> ToDtype(float32, scale) -> Normalize.

    Every step runs on an image tensor (uint8) in the order the recipe writes
    it, random_erasing included: it needs a tensor, and it has one, since
    ToImage comes first (on a PIL image v2.RandomErasing would silently do
    nothing). Erasing fills with 0, which is 0.0 after ToDtype, so erasing
    before ToDtype gives the same tensor as erasing after it. No Normalize
    when mean is None (`normalize none`).
    """
    tail = [v2.Normalize(list(mean), list(std))] if mean is not None else []
    return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), *tail])


# --- sources -------------------------------------------------------------------


class CsvImages(Dataset):
    """Rows of a csv file: an image path column and a label column.

    Items are (PIL image, class index); classes are the distinct labels, sorted."""

    def __init__(self, path: str, root: str | None, image: str, label: str, loader):
        self.classes = data_check.csv_classes(path, root, image, label)  # checks columns, rows, first images
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.loader = loader
        self.samples = []
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                file = os.path.join(root, row[image]) if root else row[image]
                self.samples.append((file, self.class_to_idx[row[label]]))
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        return self.loader(path), target


class ImageFiles(Dataset):
    """Image files to predict: items (PIL image, item index), an Unreadable in place of
    the image that cannot be read."""

    def __init__(self, files: list[str]):
        self.files = files
        self.loader = RgbLoader(mark=True)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        return self.loader(self.files[index]), index


class SyntheticImages(Dataset):
    """`count` random RGB images of size x size; item i has class i % classes.

    Deterministic and independent of the global generator: a private generator
    seeded with `seed` draws one seed per item, and item i's pixels are drawn
    from a generator seeded with that. Items are made when asked for, so memory
    does not grow with count."""

    def __init__(self, classes: int, count: int, size: int, seed: int):
        self.classes = [str(c) for c in range(classes)]
        self.size = size
        generator = torch.Generator().manual_seed(seed)
        self.seeds = torch.randint(0, 2**62, (count,), generator=generator).tolist()
        self.targets = [i % classes for i in range(count)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(self.seeds[index])
        pixels = torch.randint(0, 256, (3, self.size, self.size), dtype=torch.uint8, generator=generator)
        return F.to_pil_image(pixels), self.targets[index]


class Transformed(Dataset):
    """A dataset (or the items `indices` of it) with an image pipeline applied.

    The base yields (image, target); the image is transformed here, so one base
    can serve a train subset and a val subset with different pipelines. An
    `Unreadable` image is passed on as it is, for the collate function to drop."""

    def __init__(self, base, transform, indices: list[int] | None = None):
        self.base = base
        self.transform = transform
        self.indices = indices

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, index):
        image, target = self.base[index if self.indices is None else self.indices[index]]
        if isinstance(image, Unreadable):
            return image
        return self.transform(image), target

    @property
    def targets(self) -> list[int]:
        targets = targets_of(self.base)
        return targets if self.indices is None else [targets[i] for i in self.indices]


def targets_of(dataset) -> list[int]:
    """The class index of every item, without reading images where the dataset knows them."""
    for name in ("targets", "_labels", "labels"):
        targets = getattr(dataset, name, None)
        if targets is not None:
            return [int(t) for t in targets]
    return [int(dataset[i][1]) for i in range(len(dataset))]  # reads every image once


def _at(root: str, path: str) -> str:
    return path if root in ("", ".") else os.path.join(root, path)


def source_dataset(source, root: str, train: bool, seed: int, mark: bool):
    """(dataset of (PIL image, class index), class names) for a recipe source.

    `train` picks the training or test part of a torchvision dataset and the
    stream of synthetic images (seed for train, seed + 1 for val)."""
    loader = RgbLoader(mark)
    if source.kind == "imagefolder":
        path = _at(root, source.path)
        data_check.imagefolder_classes(path)  # the clear message when the folder is missing or empty
        dataset = torchvision.datasets.ImageFolder(path, loader=loader)
        return dataset, list(dataset.classes)
    if source.kind == "csv":
        images = _at(root, source.root) if source.root is not None else (None if root in ("", ".") else root)
        dataset = CsvImages(_at(root, source.path), images, source.image, source.label, loader)
        return dataset, list(dataset.classes)
    if source.kind == "synthetic":
        dataset = SyntheticImages(source.classes, source.count, source.size, seed if train else seed + 1)
        return dataset, list(dataset.classes)
    if source.kind == "torchvision":
        cls = getattr(torchvision.datasets, source.name, None)
        if not inspect.isclass(cls):
            raise ValueError(f"unknown torchvision dataset '{source.name}'")
        params = inspect.signature(cls).parameters
        kwargs = {k: v for k, v in (("train", train), ("download", source.download)) if k in params}
        dataset = cls(_at(root, source.root), **kwargs)
        classes = getattr(dataset, "classes", None)
        if classes is None:
            raise ValueError(f"torchvision dataset {source.name} does not list its classes")
        return dataset, [data_check._class_name(c) for c in classes]
    raise ValueError(f"unknown data source '{source.kind}'")


def split_indices(targets: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices of a stratified hold-out, both in dataset order.

    For each class in index order: its items' indices, shuffled with
    torch.randperm on one private generator seeded with `seed`; the first
    round(fraction * n) go to val (Python's round: halves go to the even
    number), at least one when the class has two items or more, and never all
    of them, so every class keeps an item in train."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    val = []
    for target in sorted(by_class):
        members = by_class[target]
        n = len(members)
        order = torch.randperm(n, generator=generator).tolist()
        take = round(fraction * n)
        if n >= 2:
            take = min(max(take, 1), n - 1)
        else:
            take = 0
        val += [members[i] for i in order[:take]]
    held = set(val)
    return [i for i in range(len(targets)) if i not in held], sorted(val)


class Skipped:
    """The unreadable images left out so far, each counted once however often it is met."""

    def __init__(self):
        self.files: dict[str, str] = {}  # path -> reason

    def add(self, items) -> None:
        for item in items:
            self.files.setdefault(item.path, item.reason)

    @property
    def count(self) -> int:
        return len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __str__(self) -> str:
        n = len(self.files)
        return f"skipped {n} unreadable image{'s' if n != 1 else ''}"


@dataclass
class Datasets:
    train: Dataset
    val: Dataset | None
    classes: list[str]
    skipped: Skipped = field(default_factory=Skipped)


def datasets(plan, root: str = ".") -> Datasets:
    """The train and val datasets of a plan, with their pipelines.

    Recipe paths are relative to `root` (the working directory by default).
    Nothing here draws from the global torch generator. Unreadable images are
    marked rather than raised when the loaders will check batches (see the
    module's docstring): with skip_bad_images, or with workers > 0."""
    data, pre = plan.data, plan.preprocess
    mark = data.skip_bad_images or data.workers > 0
    train_tf = pipeline(transforms_of(pre.train), pre.mean, pre.std)
    eval_tf = pipeline(transforms_of(pre.eval), pre.mean, pre.std)
    base, classes = source_dataset(data.train, root, True, plan.seed, mark)
    if data.val is None:
        return Datasets(Transformed(base, train_tf), None, classes)
    if data.val.kind == "split":
        train_idx, val_idx = split_indices(targets_of(base), data.val.fraction, plan.seed)
        return Datasets(Transformed(base, train_tf, train_idx), Transformed(base, eval_tf, val_idx), classes)
    val_base, val_classes = source_dataset(data.val, root, False, plan.seed, mark)
    if val_classes != classes:
        only_train = [c for c in classes if c not in val_classes]
        only_val = [c for c in val_classes if c not in classes]
        parts = [f"only in train: {', '.join(only_train[:5])}"] if only_train else []
        parts += [f"only in val: {', '.join(only_val[:5])}"] if only_val else []
        if not parts:
            parts = ["the same names in another order"]
        raise ValueError(f"val has other classes than train ({'; '.join(parts)})")
    return Datasets(Transformed(base, train_tf), Transformed(val_base, eval_tf), classes)


# --- loaders -------------------------------------------------------------------


class Batch(tuple):
    """(inputs, labels) of one batch, and `.skipped`: the `Unreadable` images left out.

    A tuple, so `for inputs, labels in loader` reads it as usual; the files it
    left out travel with it from a worker process (the __reduce__ keeps them)."""

    def __new__(cls, inputs, labels, skipped=()):
        batch = super().__new__(cls, (inputs, labels))
        batch.skipped = tuple(skipped)
        return batch

    def __reduce__(self):
        return (Batch, (self[0], self[1], self.skipped))


def collate_skipping(items) -> Batch:
    """default_collate over the readable items; an all-unreadable batch has inputs None."""
    bad = [item for item in items if isinstance(item, Unreadable)]
    good = [item for item in items if not isinstance(item, Unreadable)]
    if not good:
        return Batch(None, None, bad)
    inputs, labels = default_collate(good)
    return Batch(inputs, labels, bad)


class CheckedLoader(DataLoader):
    """A DataLoader whose batches are `Batch`es, checked in the main process.

    With `skip`, it adds their unreadable images to the `Skipped` counter and
    leaves out a batch with no readable image; without it, it raises BadImage
    for the first unreadable image."""

    def __init__(self, *args, skip: bool, skipped: Skipped, collate_fn=collate_skipping, **kwargs):
        super().__init__(*args, collate_fn=collate_fn, **kwargs)
        self.skip = skip
        self.skipped = skipped

    def __iter__(self):
        for batch in super().__iter__():
            if batch.skipped and not self.skip:
                raise BadImage(batch.skipped[0].path, batch.skipped[0].reason)
            self.skipped.add(batch.skipped)
            if batch[0] is not None:
                yield batch


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: python's `random` (and numpy's, when imported) from the worker's torch seed.

    torch.initial_seed() in a worker is the loader's base seed + worker_id, and
    the base seed comes from the train loader's own generator: deterministic."""
    seed = torch.initial_seed()
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def loaders(
    plan, data: Datasets, seed: int, rank: int = 0, world: int = 1, pin_memory: bool = False, collate=None
) -> tuple[DataLoader, DataLoader | None]:
    """The train loader (shuffled with its own generator seeded with `seed`) and the val loader.

    With workers=0 and skip_bad_images false these are exactly seed_loop's
    DataLoaders; otherwise CheckedLoaders (the same batches, as `Batch`es).
    The val loader gets no generator on purpose: as in seed_loop, each pass
    over it then draws its base seed from the global generator, which the
    random transforms of the next epoch see.

    Process `rank` of `world` (runtime/distributed.py) takes batches of
    batch_size // world: of the train items, those a DistributedSampler shuffled
    with `seed` gives it (call `train.sampler.set_epoch(epoch)` every epoch); of
    the val items, `Shard`'s (rank, rank + world, ...); its train loader's own
    generator, which gives worker seeds, is seeded with rank_seed(seed, rank)."""
    spec = plan.data
    extra = {}
    if spec.workers > 0:
        extra = dict(num_workers=spec.workers, worker_init_fn=seed_worker, persistent_workers=False)
    if pin_memory:  # page-locked batches copy to a GPU faster; the numbers do not change
        extra["pin_memory"] = True
    if collate is not None:  # a task's own batches (its collate takes care of unreadable images)
        extra["collate_fn"] = collate
    make = DataLoader
    if spec.skip_bad_images or spec.workers > 0:

        def make(*args, **kwargs):
            return CheckedLoader(*args, skip=spec.skip_bad_images, skipped=data.skipped, **kwargs)

    eval_batch_size = spec.eval_batch_size or spec.batch_size
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        from .distributed import Shard, rank_seed

        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        train = make(
            data.train,
            batch_size=spec.batch_size // world,
            sampler=sampler,
            generator=torch.Generator().manual_seed(rank_seed(seed, rank)),
            **extra,
        )
        val = None
        if data.val is not None:
            shard = Shard(len(data.val), rank, world)
            val = make(data.val, batch_size=-(-eval_batch_size // world), sampler=shard, **extra)
        return train, val
    generator = torch.Generator().manual_seed(seed)
    order = {"shuffle": True}
    if spec.group_by_length:
        from .length_grouped import LengthGrouped

        order = {"sampler": LengthGrouped([len(item[0]) for item in data.train], spec.batch_size, generator)}
    train = make(data.train, batch_size=spec.batch_size, generator=generator, **order, **extra)
    val = None
    if data.val is not None:
        val = make(data.val, batch_size=eval_batch_size, **extra)
    return train, val
