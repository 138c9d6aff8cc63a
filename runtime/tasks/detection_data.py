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

import json
import math
import os
import xml.etree.ElementTree as ET

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from recipe_lang.resolve import data_check
from recipe_lang.resolve.problem import Problem
from runtime.data import Batch, Unreadable, transforms_of

FLAGS = ("difficult", "crowd")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


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


class VocRecord:
    """One image of a VOC split: its files, size and objects, as the XML says."""

    def __init__(self, image: str, annotation: str, size: tuple[int, int], objects: list[tuple]):
        self.image = image
        self.annotation = annotation
        self.size = size  # (H, W); (0, 0) when the XML has no <size>
        self.objects = objects  # (name, (x1, y1, x2, y2), difficult)


def _split_ids(root: str, split: str) -> list[str]:
    data_check._require_folder("VOC folder", root)
    for part in ("Annotations", "JPEGImages"):
        folder = os.path.join(root, part)
        if not os.path.isdir(folder):
            raise Problem(f"VOC folder '{root}' has no {part} folder", hint=f"expected '{folder}'")
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise Problem(f"VOC split file '{path}' does not exist", hint=_known_splits(root))
    with open(path, encoding="utf-8") as file:
        ids = [line.split()[0] for line in file if line.strip()]
    if not ids:
        raise Problem(f"VOC split file '{path}' lists no images")
    return ids


def _known_splits(root: str) -> str | None:
    folder = os.path.join(root, "ImageSets", "Main")
    if not os.path.isdir(folder):
        return None
    # VOC's per-class files are <class>_<split>.txt
    names = sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".txt") and "_" not in n)
    return f"splits here: {', '.join(names)}" if names else None


def _number(element, tag: str, where: str) -> float:
    child = element.find(tag)
    if child is None or child.text is None:
        raise Problem(f"{where} has no <{tag}>")
    try:
        value = float(child.text)
    except ValueError:
        raise Problem(f"{where}: <{tag}> is '{child.text.strip()}', not a number") from None
    if not math.isfinite(value):
        raise Problem(f"{where}: <{tag}> is '{child.text.strip()}', not a finite number")
    return value


def _voc_object(element, where: str) -> tuple:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise Problem(f"{where} has no <name>")
    box = element.find("bndbox")
    if box is None:
        raise Problem(f"{where} has no <bndbox>")
    x1, y1, x2, y2 = (_number(box, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    difficult = element.find("difficult")
    flag = 0.0 if difficult is None or not (difficult.text or "").strip() else _number(element, "difficult", where)
    # VOC counts pixels from 1, both ends included: pixel columns xmin..xmax are
    # the span [xmin - 1, xmax) in the 0-based coordinates torchvision uses
    return name, (x1 - 1, y1 - 1, x2, y2), bool(flag)


def _image_file(root: str, image_id: str, tree, split_file: str) -> str:
    """JPEGImages/<the annotation's filename>, else JPEGImages/<id>.jpg, .png, ..."""
    folder = os.path.join(root, "JPEGImages")
    named = (tree.findtext("filename") or "").strip()
    candidates = ([named] if named else []) + [image_id + suffix for suffix in IMAGE_SUFFIXES]
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise Problem(
        f"image '{os.path.join(folder, candidates[0])}' of '{image_id}' in '{split_file}' does not exist",
        hint=f"looked for {', '.join(dict.fromkeys(candidates))} in '{folder}'",
    )


def _size(tree) -> tuple[int, int]:
    """(H, W) from <size>, (0, 0) when it is missing or unreadable: only an
    unreadable image's target uses it."""
    try:
        return int(float(tree.findtext("size/height"))), int(float(tree.findtext("size/width")))
    except (TypeError, ValueError):
        return 0, 0


def _voc_record(root: str, image_id: str, split_file: str) -> VocRecord:
    annotation = os.path.join(root, "Annotations", f"{image_id}.xml")
    if not os.path.isfile(annotation):
        raise Problem(f"annotation '{annotation}' of '{image_id}' in '{split_file}' does not exist")
    try:
        tree = ET.parse(annotation).getroot()
    except ET.ParseError as error:
        raise Problem(f"annotation '{annotation}' is not valid XML ({error})") from None
    image = _image_file(root, image_id, tree, split_file)
    objects = [
        _voc_object(element, f"'{annotation}': object[{n}]")  # XPath's numbering: the first is object[1]
        for n, element in enumerate(tree.findall("object"), start=1)
    ]
    return VocRecord(image, annotation, _size(tree), objects)


def read_voc(root: str, split: str) -> list[VocRecord]:
    """Every image of a VOC split with its objects; a Problem names the first bad file."""
    split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    return [_voc_record(root, image_id, split_file) for image_id in _split_ids(root, split)]


def voc_classes(root: str, split: str) -> list[str]:
    """The sorted names of the objects in a VOC split's annotations."""
    return voc_classes_of(read_voc(root, split))


def voc_classes_of(records: list[VocRecord]) -> list[str]:
    return sorted({name for record in records for name, _, _ in record.objects})


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


def _load_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise data_check._missing("COCO annotation file", path)
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise Problem(f"COCO annotation file '{path}' is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise Problem(f"COCO annotation file '{path}' holds a {type(data).__name__}, not an object")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise Problem(f"COCO annotation file '{path}' has no '{key}' list")
    return data


def _categories(data: dict, path: str) -> tuple[list[str], dict[int, int]]:
    """(names, {category id: label 1..N}) in the file's order of categories."""
    names, labels = [], {}
    for n, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise Problem(f"'{path}': categories[{n}] needs an 'id' and a 'name'")
        if category["id"] in labels:
            raise Problem(f"'{path}': categories[{n}] repeats the id {category['id']}")
        labels[category["id"]] = len(names) + 1
        names.append(str(category["name"]))
    if not names:
        raise Problem(f"COCO annotation file '{path}' has no categories")
    return names, labels


def coco_classes(path: str) -> list[str]:
    """The category names of a COCO detection file, in the file's order."""
    return _categories(_load_json(path), path)[0]


def _coco_box(annotation, n: int, path: str) -> tuple:
    where = f"'{path}': annotations[{n}]"
    if not isinstance(annotation, dict):
        raise Problem(f"{where} is not an object")
    if "id" in annotation:
        where += f" (id {annotation['id']})"
    for key in ("image_id", "category_id", "bbox"):
        if key not in annotation:
            raise Problem(f"{where} has no '{key}'")
    box = annotation["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
        raise Problem(f"{where}: bbox is {box!r}, not four numbers [x, y, width, height]")
    x, y, w, h = (float(v) for v in box)
    return where, (x, y, x + w, y + h)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class CocoDetection(Dataset):
    """A COCO detection file: categories become labels 1..N in the file's order,
    images without annotations are kept, crowd boxes are flagged `crowd`."""

    def __init__(self, annotations_json: str, images_dir: str, loader):
        data = _load_json(annotations_json)
        self.classes, label_of = _categories(data, annotations_json)
        data_check._require_folder("COCO image folder", images_dir)
        self.loader = loader
        self.images, row_of = [], {}
        for n, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise Problem(f"'{annotations_json}': images[{n}] needs an 'id' and a 'file_name'")
            if image["id"] in row_of:
                raise Problem(f"'{annotations_json}': images[{n}] repeats the id {image['id']!r}")
            path = os.path.join(images_dir, image["file_name"])
            if not os.path.isfile(path):
                raise Problem(f"image '{path}' (images[{n}] of '{annotations_json}') does not exist")
            row_of[image["id"]] = len(self.images)
            size = (int(image.get("height", 0)), int(image.get("width", 0)))
            self.images.append((path, image["id"], size, []))
        for n, annotation in enumerate(data.get("annotations", [])):
            where, box = _coco_box(annotation, n, annotations_json)
            if annotation["image_id"] not in row_of:
                raise Problem(f"{where}: image_id {annotation['image_id']!r} is not in images")
            if annotation["category_id"] not in label_of:
                raise Problem(f"{where}: category_id {annotation['category_id']!r} is not in categories")
            objects = self.images[row_of[annotation["image_id"]]][3]
            objects.append((box, label_of[annotation["category_id"]], bool(annotation.get("iscrowd", 0))))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path, image_id, size, objects = self.images[index]
        image = self.loader(path)
        boxes, labels, crowd = [o[0] for o in objects], [o[1] for o in objects], [o[2] for o in objects]
        return image, _target(boxes, labels, "crowd", crowd, image_id, _canvas(image, size))


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
