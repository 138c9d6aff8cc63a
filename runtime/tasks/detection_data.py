"""Detection data: Pascal VOC and COCO sources, the box-aware pipeline, the collate function.

An item is (image, target): the image as the loader returns it (RGB PIL, or an
`Unreadable` marker), and target = dict(boxes=BoundingBoxes XYXY with
canvas_size (H, W), labels=int64 1..N (0 is the detector's background),
image_id=int, and a bool flag per box: `difficult` (VOC) or `crowd` (COCO)).

Flagged boxes stay in the target so that evaluation can ignore them
(neither a hit nor a miss). Training keeps difficult boxes, as Detectron2 does
for VOC, and drops crowd boxes, as torchvision's COCO references do: a crowd
box covers many objects, and a detector must not learn to draw one box around
them (see `detection_pipeline`).

Every annotation is read when a dataset is made, so a malformed one is reported
before training, as a `Problem` naming the file (and the object in it).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from recipe_lang.resolve.annotations import VocRecord, read_coco, read_voc, voc_classes_of
from recipe_lang.resolve.problem import Problem
from runtime.data import Batch, RgbLoader, Unreadable, transforms_of

FLAGS = ("difficult", "crowd")


def _target(boxes, labels, flag_name: str, flags, image_id: int, canvas_size) -> dict:
    return {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=canvas_size
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        flag_name: torch.tensor(flags, dtype=torch.bool),
        "image_id": image_id,
    }


def _canvas(image, fallback: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of a decoded image; the annotation's size for an unreadable one."""
    return fallback if isinstance(image, Unreadable) else (image.height, image.width)


# --- Pascal VOC ----------------------------------------------------------------


class VocDetection(Dataset):
    """A Pascal VOC split; label = index in `classes` + 1.

    `classes` (default: the split's names, sorted) fixes the label order, and an
    object named otherwise is a Problem rather than silently left out."""

    def __init__(self, root: str, split: str, classes: list[str] | None, loader):
        self.records = read_voc(root, split)
        self.classes = list(classes) if classes is not None else voc_classes_of(self.records)
        self.loader = loader
        index = {name: i + 1 for i, name in enumerate(self.classes)}
        self.labels = []
        for record in self.records:
            self.labels.append([_label(index, name, record, n) for n, (name, _, _) in enumerate(record.objects, 1)])

    def __len__(self) -> int:
        return len(self.records)

    def image_file(self, index: int) -> str:
        return self.records[index].image

    def __getitem__(self, index: int):
        record = self.records[index]
        image = self.loader(record.image)
        boxes = [box for _, box, _ in record.objects]
        difficult = [flag for _, _, flag in record.objects]
        target = _target(boxes, self.labels[index], "difficult", difficult, index, _canvas(image, record.size))
        return image, target


def _label(index: dict[str, int], name: str, record: VocRecord, n: int) -> int:
    if name not in index:
        raise Problem(
            f"'{record.annotation}': object[{n}] is a '{name}', which is not one of the classes",
            hint=f"add '{name}' to classes, or leave classes out to take the names the annotations use",
        )
    return index[name]


# --- COCO ----------------------------------------------------------------------


class CocoDetection(Dataset):
    """A COCO detection file: categories become labels 1..N in the file's order,
    images without annotations are kept, crowd boxes are flagged `crowd`."""

    def __init__(self, annotations_json: str, images_dir: str, loader):
        self.classes, self.images = read_coco(annotations_json, images_dir)
        self.loader = loader

    def __len__(self) -> int:
        return len(self.images)

    def image_file(self, index: int) -> str:
        return self.images[index].path

    def __getitem__(self, index: int):
        record = self.images[index]
        image = self.loader(record.path)
        objects = record.objects
        boxes, labels, crowd = [o[0] for o in objects], [o[1] for o in objects], [o[2] for o in objects]
        return image, _target(boxes, labels, "crowd", crowd, record.image_id, _canvas(image, record.size))


# --- transforms and batches ----------------------------------------------------


def boxes_and_their_rows(inputs) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes's labels_getter: labels and the flags, so that a box
    dropped takes its label and flags with it."""
    target = inputs[1]
    return tuple(target[key] for key in ("labels", *FLAGS) if key in target)


class DropCrowd:
    """Leaves crowd boxes (and their labels) out of a training target."""

    def __call__(self, image, target):
        if "crowd" not in target or not target["crowd"].any():
            return image, target
        keep = ~target["crowd"]
        kept = {key: value[keep] for key, value in target.items() if key in ("boxes", "labels", "crowd")}
        kept["boxes"] = tv_tensors.wrap(kept["boxes"], like=target["boxes"])
        return image, {**target, **kept}


def detection_pipeline(steps: list, train: bool) -> v2.Compose:
    """ToImage -> the recipe's transforms (boxes follow) -> ToDtype(float32, scale)
    -> clamp boxes to the image -> drop degenerate boxes with their labels and
    flags -> (train) drop crowd boxes -> plain tensors.

    No Normalize: torchvision's detectors normalize their inputs themselves.
    Boxes are clamped before sanitizing because SanitizeBoundingBoxes drops a
    box that pokes out of the image rather than cutting it."""
    tail = [DropCrowd()] if train else []
    return v2.Compose(
        [
            v2.ToImage(),
            *transforms_of(steps),
            v2.ToDtype(torch.float32, scale=True),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(labels_getter=boxes_and_their_rows),
            *tail,
            v2.ToPureTensor(),
        ]
    )


class TransformedDetection(Dataset):
    """A detection dataset (or the items `indices` of it) with a pipeline applied
    to (image, target); an `Unreadable` image is passed on alone, for the collate
    function to leave out."""

    def __init__(self, base, transform, indices: list[int] | None = None):
        self.base = base
        self.transform = transform
        self.indices = indices

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, index: int):
        image, target = self.base[index if self.indices is None else self.indices[index]]
        if isinstance(image, Unreadable):
            return image
        return self.transform(image, target)


class ImagesToDetect(Dataset):
    """Image files to predict: items (image through the eval transforms, {index, scale}),
    scale being (original / transformed) width and height, which takes the detector's
    boxes back to the file's pixels; an Unreadable in place of an unreadable file."""

    def __init__(self, files: list[str], steps: list):
        self.files = files
        self.loader = RgbLoader(mark=True)
        self.transform = v2.Compose(
            [v2.ToImage(), *transforms_of(steps), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = self.loader(self.files[index])
        if isinstance(image, Unreadable):
            return image
        width, height = image.size
        tensor = self.transform(image)
        return tensor, {"index": index, "scale": (width / tensor.shape[-1], height / tensor.shape[-2])}


def _unreadable(item) -> Unreadable | None:
    if isinstance(item, Unreadable):
        return item
    return item[0] if isinstance(item[0], Unreadable) else None


def collate_detection(items) -> Batch:
    """(images, targets) as two lists (detectors take images of different sizes),
    leaving out unreadable images; an all-unreadable batch has images None."""
    bad = [u for u in map(_unreadable, items) if u is not None]
    good = [item for item in items if _unreadable(item) is None]
    if not good:
        return Batch(None, None, bad)
    return Batch([image for image, _ in good], [target for _, target in good], bad)
