"""COCO mean average precision of detections, computed by pycocotools itself.

`DetectionEvaluation` keeps each image's ground truth and detections on the CPU
and, when asked for its result, writes them as an in-memory COCO data set and
results list and runs the reference evaluation (COCOeval, "bbox") on them: the
numbers are pycocotools' numbers, not a re-implementation's.

What that means, in pycocotools' terms:
- image ids are the order in which images were added (1, 2, ...), category ids
  are the labels 1..N, annotation ids start at 1 (COCOeval reads an id of 0 as
  "unmatched");
- boxes go from XYXY to COCO's [x, y, width, height]; areas are width x height
  (no +1), which only decides the small/medium/large figures, not mAP;
- a box flagged `difficult` (VOC) or `crowd` (COCO) is an iscrowd box: a
  detection matched to it is ignored, and missing it costs nothing;
- mAP is the mean over the classes that have at least one box not ignored;
  a class without one gets -1 from pycocotools, which is left out of that mean
  and reported here as None.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

FLAGS = ("difficult", "crowd")


def _array(value, shape_tail=()) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1, *shape_tail)


def _ignored(target: dict, count: int) -> np.ndarray:
    ignored = np.zeros(count, dtype=bool)
    for key in FLAGS:
        if key in target:
            ignored |= _array(target[key]).astype(bool)
    return ignored


class DetectionEvaluation:
    """Accumulates one evaluation pass; `result()` gives val_map, val_map50, val_map75.

    For several processes: each sends `state()` (picklable) to rank 0, for
    instance with torch.distributed.all_gather_object, and rank 0 calls
    `merge(states)` with all of them, its own included."""

    def __init__(self, class_names: list[str]):
        if not class_names:
            raise ValueError("class_names is empty")
        self.class_names = list(class_names)
        self.images: list[dict[str, np.ndarray]] = []
        self._summary = None

    def update(self, detections: list[dict], targets: list[dict]) -> None:
        """Add a batch: per image, detections dict(boxes XYXY, scores, labels) and
        the target dict(boxes XYXY, labels, and `difficult` or `crowd` flags)."""
        if len(detections) != len(targets):
            raise ValueError(f"{len(detections)} detections for {len(targets)} targets: one per image each")
        for found, truth in zip(detections, targets, strict=True):
            image = {
                "gt_boxes": _array(truth["boxes"], (4,)),
                "gt_labels": _array(truth["labels"]).astype(np.int64),
                "dt_boxes": _array(found["boxes"], (4,)),
                "dt_scores": _array(found["scores"]),
                "dt_labels": _array(found["labels"]).astype(np.int64),
            }
            image["gt_ignored"] = _ignored(truth, len(image["gt_boxes"]))
            self._check(image)
            self.images.append(image)
        self._summary = None

    def _check(self, image: dict) -> None:
        n = len(self.class_names)
        if len(image["gt_labels"]) != len(image["gt_boxes"]) or len(image["gt_ignored"]) != len(image["gt_boxes"]):
            raise ValueError("a target has a different number of boxes, labels and flags")
        if not len(image["dt_boxes"]) == len(image["dt_scores"]) == len(image["dt_labels"]):
            raise ValueError("a detection has a different number of boxes, scores and labels")
        for key in ("gt_labels", "dt_labels"):
            labels = image[key]
            if len(labels) and (labels.min() < 1 or labels.max() > n):
                raise ValueError(f"labels must lie in 1..{n} (0 is the background), got {labels.tolist()}")

    def state(self) -> list[dict[str, np.ndarray]]:
        return self.images

    def merge(self, states: list) -> None:
        """Hold the images of every state, in order, in place of this one's own
        (which `states` holds already when it comes from all_gather_object)."""
        self.images = [image for state in states for image in state]
        self._summary = None

    def result(self) -> dict[str, float]:
        stats = self._evaluated()["stats"]
        return {"val_map": float(stats[0]), "val_map50": float(stats[1]), "val_map75": float(stats[2])}

    def per_class(self) -> dict[str, dict[str, float | None]]:
        """{name: {"ap": AP over IoU 0.50:0.95, "ap50": AP at IoU 0.5}}; None for a
        class with no box to find (pycocotools' -1)."""
        precision = self._evaluated()["precision"]  # [IoU, recall, class, area, max dets]
        out = {}
        for k, name in enumerate(self.class_names):
            curve = precision[:, :, k, 0, -1]  # every area, 100 detections
            missing = bool((curve == -1).any())
            out[name] = {
                "ap": None if missing else float(curve.mean()),
                "ap50": None if missing else float(curve[0].mean()),
            }
        return out

    def _evaluated(self) -> dict:
        if self._summary is None:
            self._summary = self._run_cocoeval()
        return self._summary

    def _run_cocoeval(self) -> dict:
        if not self.images:
            raise ValueError("no images were evaluated")
        if not any((~image["gt_ignored"]).any() for image in self.images):
            raise ValueError("the ground truth has no box that counts (none, or all difficult/crowd): mAP is undefined")
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            truth = COCO()
            truth.dataset = self._ground_truth()
            truth.createIndex()
            found = self._results()
            results = truth.loadRes(found) if found else _empty_results(truth)
            evaluation = COCOeval(truth, results, "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {"stats": evaluation.stats, "precision": evaluation.eval["precision"]}

    def _ground_truth(self) -> dict:
        annotations = []
        for image_id, image in enumerate(self.images, start=1):
            for box, label, ignored in zip(image["gt_boxes"], image["gt_labels"], image["gt_ignored"], strict=True):
                xywh = _xywh(box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label),
                        "bbox": xywh,
                        "area": xywh[2] * xywh[3],
                        "iscrowd": int(ignored),
                    }
                )
        return {
            "images": [{"id": i} for i in range(1, len(self.images) + 1)],
            "categories": [{"id": k, "name": name} for k, name in enumerate(self.class_names, start=1)],
            "annotations": annotations,
        }

    def _results(self) -> list[dict]:
        return [
            {"image_id": image_id, "category_id": int(label), "bbox": _xywh(box), "score": float(score)}
            for image_id, image in enumerate(self.images, start=1)
            for box, score, label in zip(image["dt_boxes"], image["dt_scores"], image["dt_labels"], strict=True)
        ]


def _xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _empty_results(truth):
    """What loadRes would make of no detections (it fails on an empty list)."""
    from pycocotools.coco import COCO

    results = COCO()
    results.dataset = {"images": list(truth.dataset["images"]), "categories": truth.dataset["categories"]}
    results.dataset["annotations"] = []
    results.createIndex()
    return results
