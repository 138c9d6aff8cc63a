"""`pseudo_label` with `unlabeled images("dir")`: self-training on unlabeled images.

From epoch `start` on, each epoch begins by predicting every unlabeled image (the
model in eval mode, the eval pipeline, no gradients); an image whose top
probability is at least `threshold` is pseudo-labelled with that class for the
epoch. The selected images, in an order drawn from a generator seeded with
(seed, epoch), are split into as many chunks as the epoch has batches; chunk i
goes through the train pipeline and joins batch i in one forward, and the batch's
loss is CE(labelled) + weight * CE(pseudo-labelled chunk). The number of optimizer
steps and the schedule do not change.

With `balanced=true` the one threshold becomes one per class (FlexMatch's
class-wise thresholds, Zhang et al., NeurIPS 2021), from the same predictions:
see class_thresholds.

The selection is made again from the model at the start of every epoch, so a run
resumed from a checkpoint (written at an epoch's end) selects what the
uninterrupted run selected. Nothing here draws from the global generator but the
train pipeline's random transforms of the chunks, in the main process, after the
labelled batch is loaded: templates/_pseudo.py.jinja does the same, in the same
order.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from recipe_lang.resolve.data_check import unlabeled_files

from .data import RgbLoader, pipeline, transforms_of

SEED_STRIDE = 1_000_003  # the shuffle of epoch e draws from seed * SEED_STRIDE + e


class UnlabeledImages(Dataset):
    """The images of `unlabeled images(...)` through a pipeline; items (image, index)."""

    def __init__(self, files: list[str], transform):
        self.files = files
        self.transform = transform
        self.loader = RgbLoader()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        return self.transform(self.loader(self.files[index])), index


def known_labels(files: list[str], root: str, classes: list[str]) -> list[int]:
    """The class index a file's top folder names under root (-1 when none does): what
    pseudo_accuracy is measured against, never trained on."""
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for file in files:
        parts = os.path.relpath(file, root).split(os.sep)
        labels.append(index.get(parts[0], -1) if len(parts) > 1 else -1)
    return labels


def class_thresholds(confidence: torch.Tensor, predicted: torch.Tensor, classes: int, threshold: float):
    """FlexMatch's class-wise thresholds from one pass of predictions: sigma_c is the
    number of images predicted as c at >= threshold, beta_c = sigma_c /
    max(max_c sigma_c, N - sum_c sigma_c) (the warm-up normalisation: while most
    images are below the threshold, every beta is small), and T_c = M(beta_c) *
    threshold with M(x) = x / (2 - x). A tensor of `classes` thresholds (float64)."""
    sigma = torch.bincount(predicted[confidence >= threshold], minlength=classes).double()
    beta = sigma / max(sigma.max().item(), len(confidence) - sigma.sum().item())
    return beta / (2 - beta) * threshold


class PseudoLabels:
    def __init__(self, plan, classes: list[str]):
        spec = plan.train.pseudo_label
        self.threshold, self.weight, self.start = spec.threshold, spec.weight, spec.start
        self.balanced, self.classes = spec.balanced, len(classes)
        self.seed = plan.seed
        self.batch_size = plan.data.eval_batch_size or plan.data.batch_size
        root = plan.data.unlabeled.path
        files = unlabeled_files(root)
        if not files:
            raise FileNotFoundError(f"unlabeled folder '{root}' has no images")
        self.known = torch.tensor(known_labels(files, root, classes))
        pre = plan.preprocess
        self.eval_set = UnlabeledImages(files, pipeline(transforms_of(pre.eval), pre.mean, pre.std))
        self.train_set = UnlabeledImages(files, pipeline(transforms_of(pre.train), pre.mean, pre.std))
        self.chunks: list[torch.Tensor] = []
        self.labels: dict[int, int] = {}

    def select(self, epoch: int, model, forward, device, layout, autocast, batches: int) -> dict:
        """The epoch's selection and its chunks; the metrics.jsonl keys it gives
        (none before `start`)."""
        self.chunks, self.labels = [], {}
        if epoch < self.start:
            return {}
        model.eval()
        loader = DataLoader(self.eval_set, batch_size=self.batch_size, generator=torch.Generator())
        confidence, predicted = [], []
        with torch.no_grad():
            for images, _ in loader:
                images = images.to(device, memory_format=layout)
                with autocast():
                    logits = forward(images)
                top, label = logits.float().softmax(1).max(1)
                confidence.append(top.cpu())
                predicted.append(label.cpu())
        confidence, predicted = torch.cat(confidence), torch.cat(predicted)
        if self.balanced:
            thresholds = class_thresholds(confidence, predicted, self.classes, self.threshold)
            chosen = (confidence >= thresholds[predicted]).nonzero().flatten()
        else:
            chosen = (confidence >= self.threshold).nonzero().flatten()
        self.labels = dict(zip(chosen.tolist(), predicted[chosen].tolist(), strict=True))
        generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
        order = chosen[torch.randperm(len(chosen), generator=generator)]
        self.chunks = list(torch.tensor_split(order, batches))
        row = {"pseudo_share": len(chosen) / len(self.eval_set)}
        known = self.known[chosen]
        if (known >= 0).any():
            right = (known == predicted[chosen]) & (known >= 0)
            row["pseudo_accuracy"] = right.sum().item() / (known >= 0).sum().item()
        if self.balanced:
            row["pseudo_threshold_min"] = thresholds.min().item()
        return row

    def batch(self, i: int, device, layout):
        """Chunk i of the epoch's selection through the train pipeline, or None."""
        if i >= len(self.chunks) or len(self.chunks[i]) == 0:
            return None
        items = [self.train_set[j] for j in self.chunks[i].tolist()]
        images = torch.stack([image for image, _ in items]).to(device, memory_format=layout)
        labels = torch.tensor([self.labels[j] for _, j in items], device=device)
        return images, labels

    def loss(self, criterion, forward, inputs, labels, chunk) -> torch.Tensor:
        """CE(labelled) + weight * CE(pseudo-labelled), in one forward of both."""
        images, pseudo = chunk
        logits = forward(torch.cat([inputs, images]))
        n = len(labels)
        return criterion(logits[:n], labels) + self.weight * criterion(logits[n:], pseudo)
