"""Reading Pascal VOC and COCO detection annotations: every file checked, a bad one
named (with the object in it) as a Problem. No torch: `ftr check` reads them with
these, and the runtime's detection datasets are made from what they return."""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from . import data_check
from .problem import Problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


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


@dataclass
class CocoImage:
    path: str
    image_id: object  # the file's own id
    size: tuple[int, int]  # (H, W) as the file says; (0, 0) when it does not
    objects: list  # ((x1, y1, x2, y2), label 1..N, crowd)


def read_coco(annotations_json: str, images_dir: str) -> tuple[list[str], list[CocoImage]]:
    """(category names, images with their objects): categories become labels 1..N
    in the file's order, images without annotations are kept."""
    data = _load_json(annotations_json)
    classes, label_of = _categories(data, annotations_json)
    data_check._require_folder("COCO image folder", images_dir)
    images, row_of = [], {}
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise Problem(f"'{annotations_json}': images[{n}] needs an 'id' and a 'file_name'")
        if image["id"] in row_of:
            raise Problem(f"'{annotations_json}': images[{n}] repeats the id {image['id']!r}")
        path = os.path.join(images_dir, image["file_name"])
        if not os.path.isfile(path):
            raise Problem(f"image '{path}' (images[{n}] of '{annotations_json}') does not exist")
        row_of[image["id"]] = len(images)
        size = (int(image.get("height", 0)), int(image.get("width", 0)))
        images.append(CocoImage(path, image["id"], size, []))
    for n, annotation in enumerate(data.get("annotations", [])):
        where, box = _coco_box(annotation, n, annotations_json)
        if annotation["image_id"] not in row_of:
            raise Problem(f"{where}: image_id {annotation['image_id']!r} is not in images")
        if annotation["category_id"] not in label_of:
            raise Problem(f"{where}: category_id {annotation['category_id']!r} is not in categories")
        objects = images[row_of[annotation["image_id"]]].objects
        objects.append((box, label_of[annotation["category_id"]], bool(annotation.get("iscrowd", 0))))
    return classes, images
