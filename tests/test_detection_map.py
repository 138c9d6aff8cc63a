"""DetectionEvaluation against pycocotools run directly on hand-written COCO files."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from runtime.tasks import detection_data, detection_map
from runtime.tasks.detection_map import DetectionEvaluation

CLASSES = ["cat", "dog", "bird", "fish"]  # fish: never in the ground truth, one false positive

# Five images as a COCO file: 1 has a difficult dog (iscrowd), 2 a crowd of birds,
# 3 nothing at all, 4 only a false positive, 5 a dog nobody finds.
GROUND_TRUTH = """{
  "images": [{"id": 101}, {"id": 102}, {"id": 103}, {"id": 104}, {"id": 105}],
  "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"},
                 {"id": 4, "name": "fish"}],
  "annotations": [
    {"id": 1, "image_id": 101, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
    {"id": 2, "image_id": 101, "category_id": 2, "bbox": [60, 10, 30, 30], "area": 900, "iscrowd": 0},
    {"id": 3, "image_id": 101, "category_id": 2, "bbox": [5, 60, 20, 20], "area": 400, "iscrowd": 1},
    {"id": 4, "image_id": 102, "category_id": 3, "bbox": [20, 20, 20, 40], "area": 800, "iscrowd": 0},
    {"id": 5, "image_id": 102, "category_id": 1, "bbox": [50, 50, 30, 40], "area": 1200, "iscrowd": 0},
    {"id": 6, "image_id": 102, "category_id": 3, "bbox": [0, 70, 100, 30], "area": 3000, "iscrowd": 1},
    {"id": 7, "image_id": 105, "category_id": 2, "bbox": [10, 10, 20.5, 30.5], "area": 625.25, "iscrowd": 0}
  ]
}"""

RESULTS = """[
  {"image_id": 101, "category_id": 1, "bbox": [12, 11, 38, 41], "score": 0.95},
  {"image_id": 101, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.5},
  {"image_id": 101, "category_id": 2, "bbox": [62, 12, 30, 32], "score": 0.8},
  {"image_id": 101, "category_id": 2, "bbox": [6, 61, 19, 19], "score": 0.7},
  {"image_id": 101, "category_id": 4, "bbox": [0, 0, 10, 10], "score": 0.6},
  {"image_id": 102, "category_id": 3, "bbox": [22, 25, 19, 33], "score": 0.85},
  {"image_id": 102, "category_id": 3, "bbox": [10, 75, 20, 20], "score": 0.65},
  {"image_id": 102, "category_id": 1, "bbox": [55, 45, 30, 40], "score": 0.75},
  {"image_id": 102, "category_id": 2, "bbox": [50, 50, 30, 40], "score": 0.55},
  {"image_id": 104, "category_id": 3, "bbox": [30, 30, 30, 30], "score": 0.9}
]"""


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def box_tensor(rows):
    return t(rows).reshape(-1, 4)


# The same five images as the evaluator takes them: XYXY boxes, labels 1..4.
TARGETS = [
    dict(boxes=box_tensor([[10, 10, 50, 50], [60, 10, 90, 40], [5, 60, 25, 80]]), labels=t([1, 2, 2], torch.int64),
         difficult=t([False, False, True], torch.bool)),
    dict(boxes=box_tensor([[20, 20, 40, 60], [50, 50, 80, 90], [0, 70, 100, 100]]), labels=t([3, 1, 3], torch.int64),
         crowd=t([False, False, True], torch.bool)),
    dict(boxes=box_tensor([]), labels=t([], torch.int64), difficult=t([], torch.bool)),
    dict(boxes=box_tensor([]), labels=t([], torch.int64), crowd=t([], torch.bool)),
    dict(boxes=box_tensor([[10, 10, 30.5, 40.5]]), labels=t([2], torch.int64), difficult=t([False], torch.bool)),
]  # fmt: skip

DETECTIONS = [
    dict(boxes=box_tensor([[12, 11, 50, 52], [10, 10, 30, 30], [62, 12, 92, 44], [6, 61, 25, 80], [0, 0, 10, 10]]),
         scores=t([0.95, 0.5, 0.8, 0.7, 0.6]), labels=t([1, 1, 2, 2, 4], torch.int64)),
    dict(boxes=box_tensor([[22, 25, 41, 58], [10, 75, 30, 95], [55, 45, 85, 85], [50, 50, 80, 90]]),
         scores=t([0.85, 0.65, 0.75, 0.55]), labels=t([3, 3, 1, 2], torch.int64)),
    dict(boxes=box_tensor([]), scores=t([]), labels=t([], torch.int64)),
    dict(boxes=box_tensor([[30, 30, 60, 60]]), scores=t([0.9]), labels=t([3], torch.int64)),
    dict(boxes=box_tensor([]), scores=t([]), labels=t([], torch.int64)),
]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """pycocotools on the two files: (stats, precision)."""
    folder = tmp_path_factory.mktemp("coco")
    (folder / "gt.json").write_text(GROUND_TRUTH)
    (folder / "results.json").write_text(RESULTS)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(folder / "gt.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(folder / "results.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats, evaluation.eval["precision"]


def evaluated(detections=DETECTIONS, targets=TARGETS, batch=2) -> DetectionEvaluation:
    evaluation = DetectionEvaluation(CLASSES)
    for start in range(0, len(targets), batch):
        evaluation.update(detections[start : start + batch], targets[start : start + batch])
    return evaluation


def test_the_fixture_is_the_same_data_in_both_forms():
    truth, results = json.loads(GROUND_TRUTH)["annotations"], json.loads(RESULTS)
    flat = [
        (i, b, lab)
        for i, tg in enumerate(TARGETS)
        for b, lab in zip(tg["boxes"].tolist(), tg["labels"].tolist(), strict=True)
    ]
    assert [(a["image_id"] - 101, a["category_id"]) for a in truth] == [(i, lab) for i, _, lab in flat]
    assert [a["bbox"] for a in truth] == [[x1, y1, x2 - x1, y2 - y1] for _, (x1, y1, x2, y2), _ in flat]
    found = [(i, b) for i, d in enumerate(DETECTIONS) for b in d["boxes"].tolist()]
    assert [r["bbox"] for r in results] == [[x1, y1, x2 - x1, y2 - y1] for _, (x1, y1, x2, y2) in found]


def test_map_equals_pycocotools_on_the_hand_written_files(reference):
    stats, _ = reference
    result = evaluated().result()
    assert set(result) == {"val_map", "val_map50", "val_map75"}
    ours = np.array([result["val_map"], result["val_map50"], result["val_map75"]])
    assert np.abs(ours - stats[:3]).max() <= 1e-12
    # the fixture is not trivial: misses, false positives and loose boxes all cost
    assert 0.3 < stats[0] < stats[1] < 1.0


def test_per_class_ap_equals_pycocotools_and_a_class_without_boxes_is_none(reference):
    _, precision = reference
    per_class = evaluated().per_class()
    assert list(per_class) == CLASSES
    assert per_class["fish"] == {"ap": None, "ap50": None}
    for k, name in enumerate(CLASSES[:3]):
        curve = precision[:, :, k, 0, -1]
        assert abs(per_class[name]["ap"] - curve.mean()) <= 1e-12
        assert abs(per_class[name]["ap50"] - curve[0].mean()) <= 1e-12
    # mAP is the mean over the three classes with boxes
    assert np.mean([per_class[n]["ap"] for n in CLASSES[:3]]) == pytest.approx(evaluated().result()["val_map"], 1e-12)


def test_detections_on_difficult_and_crowd_boxes_count_for_nothing():
    # image 1's detection of the difficult dog and image 2's bird inside the crowd
    without = [dict(d) for d in DETECTIONS]
    for image, drop in ((0, 3), (1, 1)):
        keep = [i for i in range(len(DETECTIONS[image]["scores"])) if i != drop]
        without[image] = {key: value[keep] for key, value in DETECTIONS[image].items()}
    assert evaluated(without).result() == evaluated().result()


def test_perfect_detections_give_one_and_none_give_zero():
    perfect = [
        dict(boxes=tg["boxes"], scores=torch.linspace(0.9, 0.5, len(tg["labels"])), labels=tg["labels"])
        for tg in TARGETS
    ]
    assert evaluated(perfect).result() == {"val_map": 1.0, "val_map50": 1.0, "val_map75": 1.0}
    nothing = [dict(boxes=box_tensor([]), scores=t([]), labels=t([], torch.int64)) for _ in TARGETS]
    assert evaluated(nothing).result() == {"val_map": 0.0, "val_map50": 0.0, "val_map75": 0.0}
    assert evaluated(nothing).per_class()["cat"] == {"ap": 0.0, "ap50": 0.0}


def test_states_of_several_processes_merge_into_the_whole(reference):
    first, second = evaluated(DETECTIONS[:3], TARGETS[:3]), evaluated(DETECTIONS[3:], TARGETS[3:])
    states = [pickle.loads(pickle.dumps(e.state())) for e in (first, second)]  # as all_gather_object sends them
    first.merge(states)
    assert first.result() == evaluated().result()
    assert first.per_class() == evaluated().per_class()


def test_bad_input_is_refused_with_what_is_wrong():
    evaluation = DetectionEvaluation(CLASSES)
    with pytest.raises(ValueError, match=r"labels must lie in 1\.\.4 \(0 is the background\), got \[0\]"):
        evaluation.update([DETECTIONS[2]], [dict(boxes=box_tensor([[0, 0, 5, 5]]), labels=t([0], torch.int64))])
    with pytest.raises(ValueError, match="2 detections for 1 targets"):
        evaluation.update(DETECTIONS[:2], TARGETS[:1])
    with pytest.raises(ValueError, match="no images were evaluated"):
        DetectionEvaluation(CLASSES).result()
    evaluation.update([DETECTIONS[3]], [TARGETS[3]])
    with pytest.raises(ValueError, match="the ground truth has no box that counts"):
        evaluation.result()


def test_the_data_and_map_modules_import_pycocotools_only_when_evaluating():
    for module in (detection_data, detection_map):
        tree = ast.parse(Path(module.__file__).read_text())
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
        names += [alias.name for node in top if isinstance(node, ast.Import) for alias in node.names]
        assert not [name for name in names if name.startswith("pycocotools")], module.__name__


def test_image_errors_count_missed_boxes_and_false_detections():
    import numpy as np

    from runtime.tasks.detection import image_errors

    image = {
        "gt_boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float),
        "gt_labels": np.array([1, 2, 1]),
        "gt_ignored": np.array([False, False, True]),
        "dt_boxes": np.array([[0, 0, 10, 11], [0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [40, 40, 50, 50]]),
        "dt_scores": np.array([0.9, 0.85, 0.8, 0.3, 0.95]),
        "dt_labels": np.array([1, 1, 1, 2, 1]),
    }
    # the 0.9 box finds box 0; the 0.85 one finds nothing left (false), the 0.8 one nothing
    # at all (false); box 1 is found only below the threshold (missed); the difficult box
    # 2's detection counts neither way
    assert image_errors(image, 0.5) == (1, 2)
    assert image_errors(image, 0.2) == (0, 2)
