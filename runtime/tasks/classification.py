"""Image classification: images in, one label out, cross entropy, accuracy and friends."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from recipe_lang.resolve import architectures, timm_models

from ..data import (
    Datasets,
    ImageFiles,
    Transformed,
    collate_skipping,
    datasets,
    pipeline,
    source_dataset,
    split_indices,
    targets_of,
    transforms_of,
)
from ..evaluation_data import EvaluationData, Relabeled, no_val, worst_mistakes
from ..inputs import Inputs, image_files
from ..metrics import Evaluation
from ..model import load_file_weights, load_run_weights


class Task:
    collate = None

    def __init__(self, plan):
        self.plan = plan
        self.criterion = nn.CrossEntropyLoss(label_smoothing=plan.train.label_smoothing)

    def build_model(self) -> nn.Module:
        """Backbone (its init draws from the global RNG), then its weights, then the new
        head (draws again): the order of reference/seed_loop.py. A run's weights, head
        included, replace everything last."""
        plan = self.plan
        model = timm_backbone(plan) if plan.library == "timm" else torchvision_backbone(plan)
        if plan.weights.spec.kind == "file":
            load_file_weights(model, plan)
        self._attach_head(model)
        if plan.weights.spec.kind == "run":  # after the head, whose init still spends the seed
            load_run_weights(model, plan)
        return model

    def trained_model(self, state: dict) -> nn.Module:
        """The architecture the run trained (built as with its weights, without reading
        them), holding the run's state: what predict, evaluate and export use."""
        return trained_classifier(self.plan, state)

    def _attach_head(self, model: nn.Module) -> None:
        attach_head(self.plan, model)

    def datasets(self) -> Datasets:
        return datasets(self.plan)

    def probe_dataset(self, data: Datasets):
        """The train images through the eval pipeline: what head_init probe fits on."""
        pre = self.plan.preprocess
        return Transformed(data.train.base, pipeline(transforms_of(pre.eval), pre.mean, pre.std), data.train.indices)

    def to_device(self, batch, device: torch.device, layout) -> tuple:
        """Images in the model's memory layout; cached features (2-D) as they are."""
        inputs, labels = batch
        if inputs.dim() == 4:
            return inputs.to(device, memory_format=layout), labels.to(device)
        return inputs.to(device), labels.to(device)

    def count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, forward, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(forward(inputs), labels)

    def evaluation(self, classes: list[str], confusion: bool = False) -> Evaluation:
        """confusion: keep the confusion matrix whatever the metrics (ftr evaluate's per-class table)."""
        return Evaluation(self.plan.evaluate.metric_keys, len(classes), confusion)

    def evaluate_batch(self, model, forward, inputs, labels, evaluation: Evaluation, autocast) -> float:
        with autocast():
            logits = forward(inputs)
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, labels)
        evaluation.update(logits, labels, loss.item() * len(labels))
        return loss.item()

    # --- prediction ------------------------------------------------------------

    prediction_collate = staticmethod(collate_skipping)
    default_top = 1  # labels per input

    def prediction_inputs(self, inputs: list[str], column: str | None) -> Inputs:
        return image_files(inputs)

    def prediction_dataset(self, found: Inputs):
        """Items (image through the run's eval pipeline, item index), or Unreadable."""
        pre = self.plan.preprocess
        return Transformed(ImageFiles(found.items), pipeline(transforms_of(pre.eval), pre.mean, pre.std))

    def predict_batch(self, model, batch, device: torch.device, top: int) -> tuple[list[int], list]:
        """(item indices, per item its `top` (class index, probability) pairs, best first)."""
        inputs, index = self.to_device(batch, device, torch.contiguous_format)
        probabilities = model(inputs).float().softmax(1)
        scores, labels = probabilities.topk(min(top, probabilities.shape[1]), 1)
        return index.tolist(), [
            list(zip(c.tolist(), s.tolist(), strict=True)) for c, s in zip(labels, scores, strict=True)
        ]

    def prediction_rows(self, name: str, prediction: list, classes: list[str]) -> list[dict]:
        """One row: input, label, score, then label_2, score_2, ... for --top."""
        row = {"input": name}
        for rank, (label, score) in enumerate(prediction, 1):
            suffix = "" if rank == 1 else f"_{rank}"
            row[f"label{suffix}"], row[f"score{suffix}"] = classes[label], score
        return [row]

    # --- evaluation of a trained run (ftr evaluate) --------------------------------

    evaluation_collate = staticmethod(collate_skipping)

    def evaluation_data(self, source, classes: list[str]) -> EvaluationData:
        """`source` (a recipe's data source) through the eval pipeline, its classes matched
        to the run's by name; None: the run's own val, as it was split off or read."""
        plan = self.plan
        pre = plan.preprocess
        eval_tf = pipeline(transforms_of(pre.eval), pre.mean, pre.std)
        if source is None:
            source = plan.data.val or no_val()
        if source.kind == "split":
            base, found = source_dataset(plan.data.train, ".", True, plan.seed, True)
            _, indices = split_indices(targets_of(base), source.fraction, plan.seed)
            described = f"the run's val (split({source.fraction}) of {plan.data.train.kind}(...))"
        else:
            base, found = source_dataset(source, ".", False, plan.seed, True)
            indices = list(range(len(base)))
            described = _described(source)
        names = [_item_name(base, i, source) for i in indices]
        return EvaluationData(Transformed(Relabeled(base, found, classes), eval_tf, indices), names, described)

    def per_class(self, evaluation: Evaluation, classes: list[str]) -> list[dict]:
        """precision, recall, F1 and support of each class, from the confusion matrix."""
        confusion = evaluation.confusion
        rows = []
        for k, name in enumerate(classes):
            hits, predicted, support = int(confusion[k, k]), int(confusion[:, k].sum()), int(confusion[k].sum())
            precision = hits / predicted if predicted else None
            recall = hits / support if support else None
            f1 = 2 * hits / (predicted + support) if predicted + support else None
            rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
        return rows

    def confusion(self, evaluation: Evaluation) -> list[list[int]]:
        return evaluation.confusion.tolist()

    def mistakes(self, evaluation, records: list, names: list[str], classes: list[str], worst: int) -> list[dict]:
        """The wrong predictions made with the highest probability."""
        return worst_mistakes(records, names, classes, worst)

    # --- export ----------------------------------------------------------------

    def export_architecture(self) -> dict:
        """config.json's architecture, beyond the plan's: the builder's arguments that give
        the architecture the run trained (those its pretrained weights set, too)."""
        plan = self.plan
        if plan.library == "timm":
            return {"timm_name": timm_models.created_name(plan)}
        extra = architectures.pretrained_kwargs(plan.backbone, plan.weights.enum) if plan.weights.enum else {}
        return {"builder_kwargs": {**plan.builder_kwargs, **extra}}

    def export_preprocessing(self) -> dict:
        pre = self.plan.preprocess
        return {
            "inputs": "images",
            "pipeline": "decode to RGB, ToImage, eval_transforms, ToDtype(float32, scale=True), Normalize(mean, std)",
            "eval_transforms": [t.model_dump() for t in pre.eval],
            "mean": pre.mean,
            "std": pre.std,
        }

    def export_files(self, folder: str) -> None:
        """Nothing beyond the tensors: torchvision and timm build the architecture."""

    def onnx_graph(self, model):
        from ..export_onnx import OnnxGraph

        return OnnxGraph(model, ["images"], ["logits"], {"images": {0: "batch"}})

    def onnx_batches(self, items: list | None, count: int) -> tuple[tuple, list[tuple]]:
        """(the export's example: 2 images, [the check's batch: `count` images]), from the
        run's items, else from seeded random images, through the eval pipeline."""
        if items is None:
            from ..export_onnx import noise_images

            pre = self.plan.preprocess
            steps = pipeline(transforms_of(pre.eval), pre.mean, pre.std)
            items = [(steps(image), 0) for image in noise_images(count)]
        images = torch.stack([item[0] for item in items if torch.is_tensor(item[0])])
        return (images[:2],), [(images,)]

    def onnx_top1(self, outputs: list) -> list[int]:
        return outputs[0].argmax(1).tolist()


def _described(source) -> str:
    return f"{source.kind}({getattr(source, 'path', None) or getattr(source, 'name', '')!r})"


def _item_name(base, index: int, source) -> str:
    samples = getattr(base, "samples", None)
    return samples[index][0] if samples is not None else f"{source.kind}[{index}]"


def trained_classifier(plan, state: dict) -> nn.Module:
    """The architecture of `plan` (a Plan, or a teacher's TeacherModel: library, backbone,
    builder_kwargs, weights, head, classifier) built without reading its weights, holding
    `state` (strict)."""
    model = timm_backbone(plan, False) if plan.library == "timm" else torchvision_backbone(plan, False)
    attach_head(plan, model)
    model.load_state_dict(state)
    return model


def attach_head(plan, model: nn.Module) -> None:
    if plan.head is not None:
        module = architectures.new_head(plan.head, plan.classifier.in_features, plan.classifier.adapter)
        architectures.replace_module(model, plan.classifier.path, module)


def torchvision_backbone(plan, load: bool = True) -> nn.Module:
    """The builder with its weights enum member, without auxiliary classifiers; with
    load=False, the same architecture (what the builder sets for those weights) unread."""
    if plan.weights.enum and not load:
        kwargs = architectures.pretrained_kwargs(plan.backbone, plan.weights.enum)
        model = torchvision.models.get_model_builder(plan.backbone)(weights=None, **plan.builder_kwargs, **kwargs)
    else:
        enum = torchvision.models.get_weight(plan.weights.enum) if plan.weights.enum else None
        model = torchvision.models.get_model_builder(plan.backbone)(weights=enum, **plan.builder_kwargs)
    architectures.drop_aux_heads(model)
    return model


def timm_backbone(plan, load: bool = True) -> nn.Module:
    """timm.create_model under the plan's name; with weights default, timm loads the pinned
    pretrained weights (downloading them from the Hugging Face hub unless cached)."""
    name = timm_models.created_name(plan)
    return timm_models.timm().create_model(name, pretrained=load and plan.weights.enum is not None)
