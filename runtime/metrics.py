"""Validation metrics, the best-model comparison and early stopping.

Keys are those of `recipe_lang.recipe.metric_key` (loss, accuracy, top5,
macro_f1); they are logged with a `val_` prefix. The sums are kept the way
reference/seed_loop.py keeps them, so a plain loop and `ftr run` write the same
numbers: the loss is the sum over batches, in order, of (mean cross entropy of
the batch) x (batch size), divided by the number of samples; accuracy is an
integer count of `logits.argmax(1) == labels` divided by the same number.
"""

from __future__ import annotations

import re

import torch

_TOP = re.compile(r"top([1-9][0-9]*)")


def _top_k(key: str) -> int | None:
    match = _TOP.fullmatch(key)
    return int(match.group(1)) if match else None


class Evaluation:
    """Accumulates one evaluation pass; `result()` gives {"val_<key>": value}.

    - val_loss is always present, whatever the metrics list says.
    - accuracy = correct / seen, correct an integer count of argmax hits.
    - top<k> counts a sample when its label's logit ranks among the k highest,
      ties broken toward the lower class index, the same order in which
      argmax picks the first maximum: so top1 always equals accuracy. A k larger
      than num_classes counts every sample.
    - macro_f1 is the mean over classes of F1 = 2TP / (2TP + FP + FN), from a
      confusion matrix of labels against argmax predictions. A class that is
      neither present in the labels nor ever predicted has no F1 and is left out
      of the mean, as sklearn's f1_score(average="macro") leaves it out (its
      default labels are those seen in either); a class that is present or
      predicted but never right counts as 0.

    For DistributedDataParallel, `pack()` gives every sum as one float64
    tensor to all-reduce, and `unpack()` takes the reduced tensor back.
    """

    def __init__(self, metric_keys: list[str], num_classes: int, confusion: bool = False):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for key in metric_keys:
            if key not in ("loss", "accuracy", "macro_f1") and _top_k(key) is None:
                raise ValueError(f"unknown metric '{key}'")
        self.keys = ["loss"] + [k for k in dict.fromkeys(metric_keys) if k != "loss"]
        self.num_classes = num_classes
        self.ks = sorted({_top_k(k) for k in self.keys if _top_k(k) is not None})
        self.loss_sum = 0.0
        self.seen = 0
        self.correct = 0
        self.top = {k: 0 for k in self.ks}
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [label, prediction]
        self.counts_confusion = confusion or "macro_f1" in self.keys

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> None:
        """Add a batch: logits (N, C), labels (N,), and loss_sum = mean cross
        entropy of the batch x N (the caller computes it, as a Python float)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"expected logits (N, {self.num_classes}) and labels (N,), "
                f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if ((labels < 0) | (labels >= self.num_classes)).any().item():
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        n = len(labels)
        self.loss_sum += float(loss_sum)
        self.seen += n
        predicted = logits.argmax(1)
        self.correct += (predicted == labels).sum().item()
        if self.ks:
            label_logit = logits.gather(1, labels[:, None])
            index = torch.arange(self.num_classes, device=logits.device)
            ahead = (logits > label_logit) | ((logits == label_logit) & (index[None, :] < labels[:, None]))
            rank = ahead.sum(1)
            for k in self.ks:
                self.top[k] += (rank < k).sum().item()
        if self.counts_confusion:
            cells = labels.to(torch.int64) * self.num_classes + predicted
            counts = torch.bincount(cells, minlength=self.num_classes**2)
            self.confusion += counts.view(self.num_classes, self.num_classes).cpu()

    def result(self) -> dict[str, float]:
        if self.seen == 0:
            raise ValueError("no samples were evaluated")
        out = {}
        for key in self.keys:
            if key == "loss":
                value = self.loss_sum / self.seen
            elif key == "accuracy":
                value = self.correct / self.seen
            elif key == "macro_f1":
                value = macro_f1(self.confusion)
            else:
                value = self.top[_top_k(key)] / self.seen
            out[f"val_{key}"] = value
        return out

    def reduce(self, dist) -> None:
        """Every sum over all processes: each val item counted once."""
        self.unpack(dist.sum(self.pack()))

    def details(self) -> None:
        return None

    def pack(self) -> torch.Tensor:
        """[loss_sum, seen, correct, top counts (ascending k)..., confusion...] as float64."""
        head = [self.loss_sum, self.seen, self.correct, *(self.top[k] for k in self.ks)]
        return torch.cat([torch.tensor(head, dtype=torch.float64), self.confusion.flatten().to(torch.float64)])

    def unpack(self, packed: torch.Tensor) -> None:
        values = packed.detach().to("cpu", torch.float64)
        self.loss_sum = values[0].item()
        self.seen = round(values[1].item())
        self.correct = round(values[2].item())
        for i, k in enumerate(self.ks):
            self.top[k] = round(values[3 + i].item())
        rest = values[3 + len(self.ks) :]
        self.confusion = rest.round().to(torch.int64).view(self.num_classes, self.num_classes)


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean F1 over the classes present in the labels or the predictions of a
    confusion matrix [label, prediction]."""
    confusion = confusion.to(torch.float64)
    tp = confusion.diagonal()
    actual = confusion.sum(1)  # TP + FN
    predicted = confusion.sum(0)  # TP + FP
    denominator = actual + predicted  # 2TP + FP + FN
    counted = denominator > 0
    if not counted.any():
        return 0.0
    f1 = 2 * tp[counted] / denominator[counted]
    return f1.mean().item()


def _direction_key(metric_key: str) -> str:
    return metric_key[4:] if metric_key.startswith("val_") else metric_key


def better(metric_key: str, new: float, old: float | None, min_delta: float = 0.0) -> bool:
    """Whether `new` improves on `old` by more than min_delta: lower for loss,
    higher for every other metric. Anything beats None; NaN never improves."""
    if old is None:
        return new == new  # not NaN
    if _direction_key(metric_key) == "loss":
        return new < old - min_delta
    return new > old + min_delta


class EarlyStop:
    """Stops after `patience` evaluations in a row without an improvement of
    more than min_delta over the best value so far. The best value moves only
    on such an improvement (as Keras and Lightning do), so a slow drift of many
    small gains still runs out of patience.

    `update(metric_key, value)` takes the metric with each value, so the
    direction (lower for loss) is never lost; one EarlyStop follows one
    metric, fixed by the constructor or by the first update."""

    def __init__(self, patience: int, min_delta: float = 0.0, metric_key: str | None = None):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.metric_key = None if metric_key is None else _direction_key(metric_key)
        self.best: float | None = None
        self.bad = 0  # evaluations since the last improvement

    @classmethod
    def from_plan(cls, plan) -> EarlyStop | None:
        """The plan's early stop (on its own metric, else on `best`), or None."""
        spec = plan.evaluate.early_stop
        if spec is None:
            return None
        metric = plan.evaluate.stop_metric
        if metric is None:  # the checks reject this recipe; guard against a hand-made plan
            raise ValueError("early_stop needs a metric")
        return cls(spec.patience, spec.min_delta, metric)

    def update(self, metric_key: str, value: float) -> bool:
        """Record one evaluation's value of the metric; True when training should stop."""
        key = _direction_key(metric_key)
        if self.metric_key is None:
            self.metric_key = key
        elif key != self.metric_key:
            raise ValueError(f"this early stop follows '{self.metric_key}', not '{key}'")
        if better(key, value, self.best, self.min_delta):
            self.best = value
            self.bad = 0
        else:
            self.bad += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def state(self) -> dict:
        return {"metric": self.metric_key, "best": self.best, "bad": self.bad}

    def load_state(self, state: dict) -> None:
        metric = state.get("metric")
        if metric is not None and self.metric_key is not None and metric != self.metric_key:
            raise ValueError(f"early stop state is for '{metric}', not '{self.metric_key}'")
        self.metric_key = metric if metric is not None else self.metric_key
        self.best = state["best"]
        self.bad = state["bad"]
