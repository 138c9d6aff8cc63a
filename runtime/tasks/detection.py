"""Object detection: images and boxes in, the detector's own summed losses, COCO mAP.

Labels in the data are 1..N (0 is background). A softmax detector (R-CNN, SSD)
scores N+1 classes, background first; a sigmoid one (RetinaNet, FCOS) scores N,
so its targets are shifted down by one going in and its detections up by one
coming out.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from recipe_lang.resolve import detectors

from ..data import Datasets, RgbLoader, split_indices
from ..evaluation_data import EvaluateError, EvaluationData, no_val
from ..inputs import Inputs, image_files
from ..model import load_file_weights, load_run_weights
from .detection_data import (
    CocoDetection,
    ImagesToDetect,
    TransformedDetection,
    VocDetection,
    collate_detection,
    detection_pipeline,
)
from .detection_map import DetectionEvaluation


class Task:
    collate = staticmethod(collate_detection)

    def __init__(self, plan):
        self.plan = plan
        self.shift = 0 if detectors.background_slot(plan.backbone) else 1

    # --- model -----------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The detector (init draws from the global RNG), its weights, then the new
        class-dependent layers (draw again); a run's weights replace everything last."""
        plan = self.plan
        kind = plan.weights.spec.kind
        model = self._detector()
        if plan.weights.enum:
            weights = torchvision.models.get_weight(plan.weights.enum)
            model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True))
        if kind == "file":
            load_file_weights(model, plan)
        self._attach_predictor(model)
        if kind == "run":
            load_run_weights(model, plan)
        return model

    def trained_model(self, state: dict) -> nn.Module:
        """The detector the run trained (frozen BatchNorm where its weights put it), holding
        the run's state: what predict, evaluate and export use."""
        model = self._detector()
        self._attach_predictor(model)
        model.load_state_dict(state)
        return model

    def _detector(self) -> nn.Module:
        plan = self.plan
        return detectors.build(plan.backbone, plan.weights.spec.kind != "none", plan.builder_kwargs)

    def _attach_predictor(self, model: nn.Module) -> None:
        plan = self.plan
        module = detectors.new_predictor(model, plan.backbone, plan.head.classes)
        detectors.replace_predictor(model, plan.backbone, module, plan.head.classes)

    # --- data ------------------------------------------------------------------

    def datasets(self) -> Datasets:
        plan = self.plan
        data, pre = plan.data, plan.preprocess
        loader = RgbLoader(mark=data.skip_bad_images or data.workers > 0)
        train_tf = detection_pipeline(pre.train, train=True)
        eval_tf = detection_pipeline(pre.eval, train=False)
        base = self._source(data.train, loader)
        classes = list(base.classes)
        if data.val is None:
            return Datasets(TransformedDetection(base, train_tf), None, classes)
        if data.val.kind == "split":  # one seeded draw over the images (an image has many classes)
            train_idx, val_idx = split_indices([0] * len(base), data.val.fraction, plan.seed)
            train, val = TransformedDetection(base, train_tf, train_idx), TransformedDetection(base, eval_tf, val_idx)
            return Datasets(train, val, classes)
        val = self._source(data.val, loader)
        return Datasets(TransformedDetection(base, train_tf), TransformedDetection(val, eval_tf), classes)

    def _source(self, source, loader):
        if source.kind == "voc":
            return VocDetection(source.path, source.split, source.classes, loader)
        return CocoDetection(source.path, source.images, loader)

    def to_device(self, batch, device: torch.device, layout) -> tuple:
        images, targets = batch
        images = [image.to(device) for image in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        return images, targets

    def count(self, targets: list) -> int:
        return len(targets)

    # --- loss and evaluation ---------------------------------------------------

    def loss(self, forward, images: list, targets: list) -> torch.Tensor:
        losses = forward(images, self._model_targets(targets))
        return sum(losses.values())

    def _model_targets(self, targets: list) -> list[dict]:
        """What the detector trains on: boxes and labels (VOC's difficult boxes
        included; COCO's crowd boxes are not, and are left only in val targets)."""
        out = []
        for t in targets:
            keep = ~t["crowd"] if "crowd" in t else slice(None)
            out.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep] - self.shift})
        return out

    def evaluation(self, classes: list[str], confusion: bool = False) -> Evaluation:
        return Evaluation(classes, self.plan.evaluate.metric_keys)

    def evaluate_batch(self, model, forward, images, targets, evaluation, autocast) -> float:
        """The detector's training losses in train mode, BatchNorm statistics untouched
        and the random generators restored (the samplers of R-CNN draw), then its
        detections in eval mode."""
        loss = self._val_loss(model, images, targets, autocast)
        with autocast():
            detections = model(images)
        detections = [{k: v.float() if k != "labels" else v + self.shift for k, v in d.items()} for d in detections]
        evaluation.update(detections, targets, loss)
        return loss

    def _val_loss(self, model: nn.Module, images, targets, autocast) -> float:
        devices = [images[0].device] if images[0].device.type == "cuda" else []
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        with torch.random.fork_rng(devices=devices):
            model.train()
            for m in norms:
                m.eval()
            try:
                with autocast():
                    losses = model(images, self._model_targets(targets))
            finally:
                model.eval()
        return float(sum(v.float() for v in losses.values()))

    # --- prediction ------------------------------------------------------------

    prediction_collate = staticmethod(collate_detection)
    threshold = 0.5  # the lowest score of a box predict reports (ftr predict --threshold)
    default_top = None  # boxes per image: all that pass the threshold

    def prediction_inputs(self, inputs: list[str], column: str | None) -> Inputs:
        return image_files(inputs)

    def prediction_dataset(self, found: Inputs):
        return ImagesToDetect(found.items, self.plan.preprocess.eval)

    def predict_batch(self, model, batch, device: torch.device, top: int | None) -> tuple[list[int], list]:
        """(item indices, per item its boxes [(class index, score, [x1, y1, x2, y2])], best
        first, scored at least `threshold`, at most `top`), in the file's pixels."""
        images, info = batch
        detections = model([image.to(device) for image in images])
        out = []
        for found, meta in zip(detections, info, strict=True):
            sx, sy = meta["scale"]
            boxes = found["boxes"].float().cpu() * torch.tensor([sx, sy, sx, sy])
            labels = (found["labels"].cpu() + self.shift - 1).tolist()  # 0..N-1: an index into classes
            scores = found["scores"].float().cpu().tolist()
            kept = [(c, s, b) for c, s, b in zip(labels, scores, boxes.tolist(), strict=True) if s >= self.threshold]
            out.append(kept[:top] if top else kept)
        return [meta["index"] for meta in info], out

    def draw(self, file: str, prediction: list, classes: list[str], out: str) -> None:
        """A copy of the image with its boxes, labels and scores drawn (PNG)."""
        from PIL import Image
        from torchvision.transforms.v2 import functional as F
        from torchvision.utils import draw_bounding_boxes

        image = F.pil_to_tensor(Image.open(file).convert("RGB"))
        if prediction:
            boxes = torch.tensor([box for _, _, box in prediction])
            labels = [f"{classes[c]} {s:.2f}" for c, s, _ in prediction]
            image = draw_bounding_boxes(image, boxes, labels, colors="red", width=2)
        F.to_pil_image(image).save(out, format="PNG")

    def prediction_rows(self, name: str, prediction: list, classes: list[str]) -> list[dict]:
        """A row per box: input, label, score, x1, y1, x2, y2."""
        return [
            {"input": name, "label": classes[c], "score": s, **dict(zip(("x1", "y1", "x2", "y2"), box, strict=True))}
            for c, s, box in prediction
        ]

    # --- evaluation of a trained run (ftr evaluate) --------------------------------

    evaluation_collate = staticmethod(collate_detection)

    def evaluation_data(self, source, classes: list[str]) -> EvaluationData:
        """`source` through the eval pipeline, labelled by the run's classes; None: the
        run's own val, as it was split off or read."""
        plan = self.plan
        if source is None:
            source = plan.data.val or no_val()
        loader = RgbLoader(mark=True)
        eval_tf = detection_pipeline(plan.preprocess.eval, train=False)
        if source.kind == "split":
            base = self._source(plan.data.train, loader)
            _, indices = split_indices([0] * len(base), source.fraction, plan.seed)
            described = f"the run's val (split({source.fraction}) of {plan.data.train.path!r})"
        else:
            base = self._evaluated_source(source, loader, classes)
            indices = list(range(len(base)))
            described = f"{source.kind}({source.path!r})"
        names = [base.image_file(i) for i in indices]
        return EvaluationData(TransformedDetection(base, eval_tf, indices), names, described)

    def _evaluated_source(self, source, loader, classes: list[str]):
        if source.kind == "voc":
            return VocDetection(source.path, source.split, source.classes or classes, loader)
        base = CocoDetection(source.path, source.images, loader)
        if base.classes != classes:
            raise EvaluateError(
                f"{source.path} names its categories {', '.join(base.classes[:8])}; the run learned "
                f"{', '.join(classes[:8])}",
                "evaluate on a COCO file with the run's categories, in the same order",
            )
        return base

    def per_class(self, evaluation: Evaluation, classes: list[str]) -> list[dict]:
        """AP (IoU 0.50:0.95) and AP50 of each class; None for a class with no box to find."""
        details = evaluation.details()
        if details is None:
            return []
        return [{"class": name, "ap": ap["ap"], "ap50": ap["ap50"]} for name, ap in details["ap"].items()]

    def confusion(self, evaluation: Evaluation) -> None:
        return None

    def mistakes(self, evaluation, records: list, names: list[str], classes: list[str], worst: int) -> list[dict]:
        """The images with the most errors: boxes missed and false detections, each at IoU 0.5
        and a score of at least `threshold` (difficult and crowd boxes count neither way)."""
        kept = [i for indices, _, _ in records for i in indices]
        rows = []
        for index, image in zip(kept, evaluation.map.images, strict=True):
            missed, false = image_errors(image, self.threshold)
            if missed or false:
                rows.append(
                    {
                        "input": names[index],
                        "boxes": int((~image["gt_ignored"]).sum()),
                        "missed": missed,
                        "false_detections": false,
                    }
                )
        rows.sort(key=lambda row: -(row["missed"] + row["false_detections"]))
        return rows[:worst]

    # --- export ----------------------------------------------------------------

    def export_architecture(self) -> dict:
        """config.json's architecture, beyond the plan's: the detector's class layout."""
        plan = self.plan
        family = detectors.family(plan.backbone)
        return {
            "family": family,
            "predictor": detectors.PREDICTORS[family],
            "outputs": detectors.outputs_for(plan.backbone, plan.head.classes),
            "background_slot": detectors.background_slot(plan.backbone),
            "label_shift": self.shift,
            "frozen_batchnorm": plan.weights.spec.kind != "none" and plan.backbone in detectors.FROZEN_BN_WHEN_TRAINED,
        }

    def export_preprocessing(self) -> dict:
        return {
            "inputs": "images",
            "pipeline": "decode to RGB, ToImage, eval_transforms, ToDtype(float32, scale=True); "
            "the detector normalises and resizes them itself",
            "eval_transforms": [t.model_dump() for t in self.plan.preprocess.eval],
            "threshold": self.threshold,
            "boxes": "x1, y1, x2, y2 in the transformed image's pixels (predict.py scales them to the file's)",
        }

    def export_files(self, folder: str) -> None:
        """Nothing beyond the tensors: torchvision builds the detector."""

    def onnx_graph(self, model):
        from ..export_onnx import OnnxGraph

        outputs = ["boxes", "labels", "scores"]
        return OnnxGraph(OneImage(model).eval(), ["image"], outputs, {"image": {1: "height", 2: "width"}})

    def onnx_batches(self, items: list | None, count: int) -> tuple[tuple, list[tuple]]:
        """(the export's example: one image, [each image to check, alone]): the run's
        images, else seeded random ones, through the eval transforms."""
        if items is None:
            from ..export_onnx import noise_images

            steps = ImagesToDetect([], self.plan.preprocess.eval).transform
            items = [(steps(image), None) for image in noise_images(count)]
        images = [item[0] for item in items if torch.is_tensor(item[0])]
        return (images[0],), [(image,) for image in images]

    def onnx_top1(self, outputs: list) -> list[int]:
        """The label of the image's best box (-1 without one)."""
        labels = outputs[1]
        return [int(labels[0]) if len(labels) else -1]


class OneImage(nn.Module):
    """A detector over one image tensor (what an ONNX graph takes), its detections as
    three tensors: boxes, labels, scores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        found = self.model([image])[0]
        return found["boxes"], found["labels"], found["scores"]


def image_errors(image: dict, threshold: float, iou: float = 0.5) -> tuple[int, int]:
    """(boxes no detection of their class found, detections that found no box of their
    class), greedily matched best score first as COCO does, at `iou`."""
    from torchvision.ops import box_iou

    keep = image["dt_scores"] >= threshold
    found = torch.as_tensor(image["dt_boxes"][keep])
    labels, order = image["dt_labels"][keep], (-image["dt_scores"][keep]).argsort(kind="stable")
    truth = torch.as_tensor(image["gt_boxes"])
    overlaps = box_iou(found, truth) if len(found) and len(truth) else torch.zeros(len(found), len(truth))
    taken = set()
    false = 0
    for d in order:
        candidates = [
            g
            for g in range(len(truth))
            if g not in taken and image["gt_labels"][g] == labels[d] and overlaps[d, g] >= iou
        ]
        if candidates:
            best = max(candidates, key=lambda g: overlaps[d, g])
            taken.add(best)
        elif not any(image["gt_ignored"][g] and overlaps[d, g] >= iou for g in range(len(truth))):
            false += 1
    missed = sum(1 for g in range(len(truth)) if g not in taken and not image["gt_ignored"][g])
    return missed, false


class Evaluation:
    """One validation pass: the mean val loss over images, and COCO mAP of the detections."""

    def __init__(self, classes: list[str], metric_keys: list[str]):
        self.keys = ["loss"] + [k for k in dict.fromkeys(metric_keys) if k != "loss"]
        self.map = DetectionEvaluation(classes)
        self.loss_sum, self.seen = 0.0, 0

    def update(self, detections: list[dict], targets: list[dict], loss: float) -> None:
        self.map.update(detections, targets)
        self.loss_sum += loss * len(targets)
        self.seen += len(targets)

    def reduce(self, dist) -> None:
        """Every process's images in one evaluation (mAP is not a sum of parts)."""
        states = dist.gather((self.loss_sum, self.seen, self.map.state()))
        self.loss_sum = sum(s[0] for s in states)
        self.seen = sum(s[1] for s in states)
        self.map.merge([s[2] for s in states])

    def result(self) -> dict[str, float]:
        if self.seen == 0:
            raise ValueError("no samples were evaluated")
        scores = self.map.result() if len(self.keys) > 1 else {}
        out = {"val_loss": self.loss_sum / self.seen}
        out.update({f"val_{k}": scores[f"val_{k}"] for k in self.keys if k != "loss"})
        return out

    def details(self) -> dict | None:
        return {"ap": self.map.per_class()} if len(self.keys) > 1 else None
