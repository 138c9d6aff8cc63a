"""Detection sources (VOC, COCO), the box-aware pipeline, collation, and the digits VOC maker."""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from recipe_lang import recipe as r
from recipe_lang.resolve.problem import Problem
from runtime.data import Batch, RgbLoader, Unreadable
from runtime.tasks.detection_data import (
    CocoDetection,
    TransformedDetection,
    VocDetection,
    coco_classes,
    collate_detection,
    detection_pipeline,
    voc_classes,
)

MAKER = Path(__file__).resolve().parents[1] / "recipes" / "detection" / "make_digits_voc.py"


def load_maker():
    spec = importlib.util.spec_from_file_location("make_digits_voc", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_image(path: Path, width: int = 20, height: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 20, 200)).save(path)


def obj(name: str, box, difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def write_voc(root: Path, annotations: dict[str, str], splits: dict[str, list[str]] | None = None) -> Path:
    """root as a VOC folder: a 20x10 JPEG and Annotations/<id>.xml (<annotation> + the
    text given) for each id; ImageSets/Main/<split>.txt (default: train, every id)."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id, body in annotations.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    for split, ids in (splits or {"train": list(annotations)}).items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def problem(fn, *args) -> str:
    with pytest.raises(Problem) as info:
        fn(*args)
    return str(info.value)


# --- VOC -------------------------------------------------------------------------


def test_voc_items_have_zero_based_boxes_labels_from_sorted_names_and_difficult_flags(tmp_path):
    root = write_voc(tmp_path, {"a": obj("dog", (1, 2, 10, 8)) + obj("cat", (5, 1, 20, 10), difficult=1), "b": ""})
    dataset = VocDetection(str(root), "train", None, RgbLoader())
    assert dataset.classes == ["cat", "dog"] == voc_classes(str(root), "train")
    image, target = dataset[0]
    assert image.size == (20, 10)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].canvas_size == (10, 20)
    # VOC's pixel columns 1..10 are the span [0, 10)
    assert target["boxes"].tolist() == [[0, 1, 10, 8], [4, 0, 20, 10]]
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 0
    _, empty = dataset[1]  # an image without objects is kept
    assert empty["boxes"].shape == (0, 4) and empty["labels"].tolist() == [] and empty["image_id"] == 1


def test_voc_classes_given_fix_the_labels_and_a_name_outside_them_is_a_problem(tmp_path):
    root = write_voc(tmp_path, {"a": obj("dog", (1, 1, 5, 5)) + obj("cat", (2, 2, 6, 6))})
    dataset = VocDetection(str(root), "train", ["dog", "cat", "bird"], RgbLoader())
    assert dataset[0][1]["labels"].tolist() == [1, 2]
    message = problem(VocDetection, str(root), "train", ["dog"], RgbLoader())
    assert message == f"'{root / 'Annotations' / 'a.xml'}': object[2] is a 'cat', which is not one of the classes"


def test_voc_classes_are_those_of_the_split(tmp_path):
    root = write_voc(
        tmp_path, {"a": obj("dog", (1, 1, 5, 5)), "b": obj("cat", (1, 1, 5, 5))}, {"train": ["a"], "val": ["b"]}
    )
    assert voc_classes(str(root), "train") == ["dog"] and voc_classes(str(root), "val") == ["cat"]


@pytest.mark.parametrize(
    "body, says",
    [
        (obj("dog", (1, 1, 5, 5)) + "<object><name>cat</name></object>", "object[2] has no <bndbox>"),
        (obj("dog", (1, 1, 5, 5)) + obj("cat", (1, "x", 5, 5)), "object[2]: <ymin> is 'x', not a number"),
        ("<object><bndbox><xmin>1</xmin></bndbox></object>", "object[1] has no <name>"),
        (obj("cat", (1, 1, 5, 5)).replace("<ymax>5</ymax>", ""), "object[1] has no <ymax>"),
    ],
)
def test_a_malformed_voc_object_is_named_by_file_and_index(tmp_path, body, says):
    root = write_voc(tmp_path, {"a": obj("dog", (2, 2, 4, 4)), "b": body})
    assert problem(VocDetection, str(root), "train", None, RgbLoader()) == f"'{root / 'Annotations' / 'b.xml'}': {says}"


def test_voc_file_problems_name_the_file(tmp_path):
    root = write_voc(tmp_path, {"a": obj("dog", (1, 1, 5, 5)), "b": obj("dog", (1, 1, 5, 5))})
    split = root / "ImageSets" / "Main" / "train.txt"

    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    assert re.fullmatch(rf"annotation '{re.escape(str(root / 'Annotations' / 'b.xml'))}' is not valid XML \(.+\)",
                        problem(voc_classes, str(root), "train"))  # fmt: skip

    (root / "Annotations" / "b.xml").unlink()
    assert problem(voc_classes, str(root), "train") == (
        f"annotation '{root / 'Annotations' / 'b.xml'}' of 'b' in '{split}' does not exist"
    )

    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(Problem) as info:
        VocDetection(str(root), "train", None, RgbLoader())
    assert str(info.value) == f"image '{root / 'JPEGImages' / 'a.jpg'}' of 'a' in '{split}' does not exist"
    assert info.value.hint.startswith("looked for a.jpg, a.jpeg, a.png, a.bmp, ") and "JPEGImages" in info.value.hint

    with pytest.raises(Problem) as info:
        voc_classes(str(root), "test")
    assert str(info.value) == f"VOC split file '{root / 'ImageSets' / 'Main' / 'test.txt'}' does not exist"
    assert info.value.hint == "splits here: train"

    assert (
        problem(voc_classes, str(tmp_path / "nowhere"), "train")
        == f"VOC folder '{tmp_path / 'nowhere'}' does not exist"
    )


def test_voc_finds_the_image_the_annotation_names(tmp_path):
    root = write_voc(tmp_path, {"a": "<filename>pic.png</filename>" + obj("dog", (1, 1, 5, 5))})
    (root / "JPEGImages" / "a.jpg").unlink()
    write_image(root / "JPEGImages" / "pic.png", 7, 9)
    assert VocDetection(str(root), "train", None, RgbLoader())[0][1]["boxes"].canvas_size == (9, 7)


# --- COCO ------------------------------------------------------------------------


def write_coco(tmp_path: Path, annotations: list[dict], categories=None) -> tuple[str, str]:
    images = tmp_path / "images"
    for name in ("one.jpg", "two.jpg", "three.jpg"):
        write_image(images / name, 40, 30)
    data = {
        "images": [
            {"id": 7, "file_name": "one.jpg", "height": 30, "width": 40},
            {"id": 8, "file_name": "two.jpg", "height": 30, "width": 40},
            {"id": 9, "file_name": "three.jpg", "height": 30, "width": 40},
        ],
        "categories": categories or [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 90, "name": "bird"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return str(path), str(images)


def test_coco_categories_become_labels_in_the_files_order_and_boxes_xyxy(tmp_path):
    path, images = write_coco(
        tmp_path,
        [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0.5, 0, 20, 30], "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 17, "bbox": [4, 4, 4, 4]},
        ],
    )
    dataset = CocoDetection(path, images, RgbLoader())
    assert dataset.classes == ["dog", "cat", "bird"] == coco_classes(path)
    assert len(dataset) == 3
    _, first = dataset[0]
    assert first["boxes"].tolist() == [[1, 2, 11, 7], [0.5, 0, 20.5, 30]] and first["boxes"].canvas_size == (30, 40)
    assert first["labels"].tolist() == [3, 2] and first["crowd"].tolist() == [False, True]
    assert first["image_id"] == 7
    _, second = dataset[1]  # no annotations: kept, with no boxes
    assert second["boxes"].shape == (0, 4) and second["image_id"] == 8
    assert dataset[2][1]["labels"].tolist() == [1]


@pytest.mark.parametrize(
    "annotation, says",
    [
        ({"id": 12, "image_id": 7, "category_id": 3}, "annotations[1] (id 12) has no 'bbox'"),
        ({"id": 12, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3]},
         "annotations[1] (id 12): bbox is [1, 2, 3], not four numbers [x, y, width, height]"),
        ({"image_id": 7, "category_id": 4, "bbox": [1, 2, 3, 4]}, "annotations[1]: category_id 4 is not in categories"),
        ({"id": 12, "image_id": 70, "category_id": 3, "bbox": [1, 2, 3, 4]},
         "annotations[1] (id 12): image_id 70 is not in images"),
    ],
)  # fmt: skip
def test_a_malformed_coco_annotation_is_named_by_file_and_index(tmp_path, annotation, says):
    good = {"id": 11, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4]}
    path, images = write_coco(tmp_path, [good, annotation])
    assert problem(CocoDetection, path, images, RgbLoader()) == f"'{path}': {says}"


def test_coco_file_problems_name_the_file(tmp_path):
    path, images = write_coco(tmp_path, [])
    Path(images, "two.jpg").unlink()
    assert problem(CocoDetection, path, images, RgbLoader()) == (
        f"image '{Path(images, 'two.jpg')}' (images[1] of '{path}') does not exist"
    )
    write_image(Path(images, "two.jpg"))
    data = json.loads(Path(path).read_text())
    data["images"][2]["id"] = 7
    Path(path).write_text(json.dumps(data))
    assert problem(CocoDetection, path, images, RgbLoader()) == f"'{path}': images[2] repeats the id 7"
    Path(path).write_text("{")
    assert problem(coco_classes, path).startswith(f"COCO annotation file '{path}' is not valid JSON (")
    assert problem(coco_classes, str(tmp_path / "none.json")) == (
        f"COCO annotation file '{tmp_path / 'none.json'}' does not exist"
    )


# --- the pipeline ----------------------------------------------------------------


def sample(boxes, labels, **flags):
    image = Image.new("RGB", (40, 20))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(20, 40)
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        **{key: torch.tensor(value, dtype=torch.bool) for key, value in flags.items()},
        "image_id": 3,
    }
    return image, target


def test_boxes_follow_a_flip_and_a_resize():
    image, target = sample([[2, 4, 10, 12], [30, 0, 40, 20]], [1, 2], difficult=[False, True])
    out, moved = detection_pipeline([r.HFlip(p=1.0), r.Resize(size=[10, 80])], train=True)(image, target)
    assert out.shape == (3, 10, 80) and out.dtype == torch.float32 and type(out) is torch.Tensor
    # flipped in a width of 40: x -> 40 - x; then x doubles and y halves
    assert moved["boxes"].tolist() == [[60, 2, 76, 6], [0, 0, 20, 10]]
    assert moved["labels"].tolist() == [1, 2] and moved["difficult"].tolist() == [False, True]
    assert moved["image_id"] == 3


def test_degenerate_boxes_go_with_their_labels_and_flags_and_a_box_over_the_edge_is_cut():
    boxes = [[5, 5, 5, 9], [1, 1, 8, 8], [9, 9, 3, 12], [30, 10, 50, 25], [2, 3, 6, 3.5]]
    image, target = sample(boxes, [1, 2, 3, 4, 5], crowd=[True, False, True, False, True])
    _, kept = detection_pipeline([], train=False)(image, target)
    assert kept["boxes"].tolist() == [[1, 1, 8, 8], [30, 10, 40, 20]]
    assert kept["labels"].tolist() == [2, 4] and kept["crowd"].tolist() == [False, False]


def test_training_leaves_crowd_boxes_out_and_evaluation_keeps_them():
    image, target = sample([[1, 1, 8, 8], [10, 2, 30, 18], [2, 2, 5, 5]], [1, 2, 3], crowd=[False, True, False])
    _, evaluated = detection_pipeline([], train=False)(image, target)
    assert evaluated["labels"].tolist() == [1, 2, 3] and evaluated["crowd"].tolist() == [False, True, False]
    _, trained = pickle.loads(pickle.dumps(detection_pipeline([], train=True)))(image, target)  # as workers get it
    assert trained["boxes"].tolist() == [[1, 1, 8, 8], [2, 2, 5, 5]] and trained["labels"].tolist() == [1, 3]
    assert trained["crowd"].tolist() == [False, False]


def test_an_image_without_boxes_goes_through_the_pipeline():
    image, target = sample([], [], difficult=[])
    out, empty = detection_pipeline([r.HFlip(p=1.0), r.Resize(size=10)], train=True)(image, target)
    assert out.shape == (3, 10, 20) and empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


# --- batches ---------------------------------------------------------------------


def test_collate_gives_lists_and_leaves_unreadable_images_out(tmp_path):
    root = write_voc(tmp_path, {"a": obj("dog", (1, 1, 5, 5)), "b": obj("cat", (2, 2, 9, 9))})
    (root / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg")
    dataset = TransformedDetection(
        VocDetection(str(root), "train", None, RgbLoader(mark=True)), detection_pipeline([], train=False)
    )
    assert isinstance(dataset[1], Unreadable)
    batch = collate_detection([dataset[0], dataset[1]])
    assert isinstance(batch, Batch)
    images, targets = batch
    assert [tuple(i.shape) for i in images] == [(3, 10, 20)] and targets[0]["labels"].tolist() == [2]
    assert [u.path for u in batch.skipped] == [str(root / "JPEGImages" / "b.jpg")]
    nothing = collate_detection([dataset[1]])
    assert nothing[0] is None and nothing[1] is None and len(nothing.skipped) == 1


# --- the digits VOC maker --------------------------------------------------------


def test_digits_voc_is_deterministic_and_every_split_holds_every_class(tmp_path):
    maker = load_maker()
    splits = maker.make(tmp_path / "a", digits=[1, 4, 7], images=12, size=40, seed=5, val=0.25)
    assert {name: len(ids) for name, ids in splits.items()} == {"train": 9, "val": 3, "trainval": 12}
    maker.make(tmp_path / "b", digits=[1, 4, 7], images=12, size=40, seed=5, val=0.25)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        names = sorted(p.name for p in (tmp_path / "a" / folder).iterdir())
        assert [(tmp_path / "a" / folder / n).read_bytes() for n in names] == [
            (tmp_path / "b" / folder / n).read_bytes() for n in names
        ]
    for split in ("train", "val"):
        assert voc_classes(str(tmp_path / "a"), split) == ["d1", "d4", "d7"]


def test_digits_voc_boxes_hold_the_ink_of_their_digit(tmp_path):
    load_maker().make(tmp_path, digits=[0, 8], images=6, size=40, seed=1, val=0.5)
    dataset = VocDetection(str(tmp_path), "trainval", None, RgbLoader())
    for index in range(len(dataset)):
        image, target = dataset[index]
        pixels = np.asarray(image)[:, :, 0].astype(int)
        assert image.size == (40, 40) and len(target["labels"]) >= 1
        for x1, y1, x2, y2 in target["boxes"].int().tolist():
            inside = pixels[y1:y2, x1:x2]
            assert 0 < x2 - x1 <= 32 and 0 < y2 - y1 <= 32  # a digit's ink within 8x8, at most 4 times larger
            assert inside.max() > 100  # ink, above the background noise (< 48)
            # the box is tight: its border rows and columns touch ink
            assert min(inside[0].max(), inside[-1].max(), inside[:, 0].max(), inside[:, -1].max()) >= 63


def test_digits_voc_command_line(tmp_path, capsys):
    load_maker().main(["--out", str(tmp_path / "d"), "--digits", "2-3", "--images", "4", "--size", "32"])
    assert capsys.readouterr().out == f"train: 3, val: 1, trainval: 4 images in {tmp_path / 'd'}\n"
    names = {e.findtext("name") for p in (tmp_path / "d" / "Annotations").iterdir() for e in ET.parse(p).iter("object")}
    assert names == {"d2", "d3"}
