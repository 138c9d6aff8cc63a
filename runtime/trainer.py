"""The training loop of a plan: setup, epochs, evaluation, checkpoints and resume.

The order in which randomness is spent is reference/seed_loop.py's: seeds, data,
backbone, weights, head, loaders. Everything else follows the plan.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from recipe_lang.resolve.plan import Plan

from . import checkpoint as ckpt
from .cache import CachedSpan, FeatureCache
from .data import datasets, loaders
from .metrics import EarlyStop, Evaluation, better
from .model import build_model, enter_phase, pick_device, train_mode
from .optim import Rates, build_optimizer, clear_state, steps_per_epoch
from .progress import Progress


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int | None, value: float):
        where = f"epoch {epoch}, step {step}" if step is not None else f"the validation of epoch {epoch}"
        super().__init__(f"the loss is {value} at {where}")
        self.epoch, self.step, self.value = epoch, step, value


class UnsupportedSetting(Exception):
    """A recipe setting this device cannot run."""


class PlanMismatch(Exception):
    """A checkpoint written by another plan."""


@dataclass
class Outcome:
    status: str  # finished | early_stopped
    epochs: int
    final: dict
    best: dict | None
    skipped_images: int
    seconds: float
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, plan: Plan, out: Path, device: str | None = None, progress: Progress | None = None):
        self.plan = plan
        self.out = Path(out)
        self.device = pick_device(device)
        self.progress = progress or Progress(quiet=True)

    # --- setup -----------------------------------------------------------------

    def setup(self) -> None:
        plan = self.plan
        torch.manual_seed(plan.seed)
        random.seed(plan.seed)
        self.data = datasets(plan)
        self.model = build_model(plan).to(self.device)
        self.layout = torch.channels_last if plan.train.channels_last else torch.contiguous_format
        if plan.train.channels_last:
            self.model = self.model.to(memory_format=self.layout)
        self.forward = _compiled(self.model) if plan.train.compile else self.model
        self.optimizer = build_optimizer(plan, self.model)
        cuda = self.device.type == "cuda"
        self.train_loader, self.val_loader = loaders(plan, self.data, plan.seed, pin_memory=cuda)
        self.steps = steps_per_epoch(len(self.train_loader), plan.train.accumulate)
        self.rates = Rates(plan, self.optimizer, self.steps)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=plan.train.label_smoothing)
        if plan.train.precision == "fp16" and self.device.type != "cuda":
            raise UnsupportedSetting(f"precision fp16 needs a CUDA device, not {self.device}; use bf16 or fp32")
        self.scaler = torch.amp.GradScaler("cuda") if plan.train.precision == "fp16" else None
        self.early_stop = (
            EarlyStop(plan.evaluate.early_stop.patience, plan.evaluate.early_stop.min_delta)
            if (plan.evaluate.early_stop)
            else None
        )
        self.stop_metric = plan.evaluate.stop_metric
        self.head = self.model.get_submodule(plan.classifier.path)
        self.cache = FeatureCache(self.out)
        self.cached: CachedSpan | None = None
        self.best: dict | None = None
        self.start_epoch, self.global_step, self.history = 1, 0, []

    # --- resume ----------------------------------------------------------------

    def resume(self) -> None:
        """Continue from checkpoint.pt: model, optimizer, rates, RNG and loader state."""
        state = ckpt.load_tensors(self.out / "checkpoint.pt")
        if state["plan"] != self.plan.digest():
            raise PlanMismatch(
                f"{self.out / 'checkpoint.pt'} was written by another recipe or other settings "
                f"(plan {state['plan']}, this one {self.plan.digest()})"
            )
        enter_phase(self.model, self.plan.phase_of(state["epoch"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ckpt.restore_rng(state["rng"], self.train_loader.generator)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.early_stop is not None:
            self.early_stop.load_state(state["early_stop"])
        self.best = state["best"]
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        self.history = [row for row in _read_metrics(self.out) if row["epoch"] <= state["epoch"]]

    def save_checkpoint(self, epoch: int) -> None:
        state = {
            "format": 1,
            "plan": self.plan.digest(),
            "epoch": epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state(self.train_loader.generator),
            "best": self.best,
            "early_stop": self.early_stop.state() if self.early_stop else None,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        ckpt.save_tensors(self.out / "checkpoint.pt", state)

    # --- the loop --------------------------------------------------------------

    def train(self) -> Outcome:
        try:
            return self._train()
        finally:
            self.cache.close()

    def _span(self, epoch: int):
        """(train loader, val loader, forward) of an epoch: the images through the whole
        model, or in a cached span the head's inputs, computed once, through the head."""
        phase = self.plan.phase_of(epoch)
        if not phase.cache:
            return self.train_loader, self.val_loader, self.forward
        if self.cached is None or self.cached.first != phase.first:
            self.cached = self.cache.span(
                phase.first,
                self.model,
                self.plan.classifier.path,
                self.data,
                self.plan.data,
                self.train_loader.generator,
                self.device,
                self._autocast,
            )
        return self.cached.train, self.cached.val, self.head

    def _train(self) -> Outcome:
        plan = self.plan
        started = time.perf_counter()
        stopped = self.early_stop is not None and self.early_stop.should_stop
        status = "early_stopped" if stopped else "finished"
        epoch = self.start_epoch - 1
        last = epoch if stopped else plan.epochs  # a resumed run that had stopped trains no more
        for epoch in range(self.start_epoch, last + 1):
            began = time.perf_counter()
            rates = self.rates.set(self.global_step)
            train_loss = self.train_epoch(epoch)
            row = {"epoch": epoch, "train_loss": train_loss}
            if self._evaluates(epoch):
                row.update(self.evaluate(epoch))
            row.update({f"lr/{group}": rate for group, rate in rates.items()})
            row["seconds"] = time.perf_counter() - began
            self.history.append(row)
            stop = self._after_evaluation(epoch, row)
            self._write_metrics()
            self.save_checkpoint(epoch)
            self.progress.epoch_done(row)
            if stop:
                status = "early_stopped"
                break
        ckpt.save_tensors(self.out / "model.pt", self.model.state_dict())
        final = self.history[-1] if self.history else {}
        return Outcome(
            status, epoch, final, self.best, self.data.skipped.count, time.perf_counter() - started, self.history
        )

    def _evaluates(self, epoch: int) -> bool:
        every = self.plan.evaluate.every
        return self.val_loader is not None and (epoch % every == 0 or epoch == self.plan.epochs)

    def train_epoch(self, epoch: int) -> float:
        plan, model = self.plan, self.model
        phase = plan.phase_of(epoch)
        if phase.first == epoch > 1:
            thawed = set(phase.trainable) - set(plan.phase_of(epoch - 1).trainable)
            clear_state(self.optimizer, [p for name, p in model.named_parameters() if name in thawed])
        loader, _, forward = self._span(epoch)
        enter_phase(model, phase)
        train_mode(model, phase)
        accumulate = plan.train.accumulate
        total, seen = 0.0, 0
        batches = len(self.train_loader)
        self.optimizer.zero_grad(set_to_none=True)
        bar = self.progress.epoch(epoch, plan.epochs, batches)
        for i, (inputs, labels) in enumerate(loader):
            if i % accumulate == 0:
                self.rates.set(self.global_step)
            inputs, labels = self._to_device(inputs), labels.to(self.device)
            with self._autocast():
                loss = self.criterion(forward(inputs), labels)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(epoch, i + 1, loss.item())
            window = min(accumulate, batches - i // accumulate * accumulate)  # the last may be shorter
            self._backward(loss / window if window > 1 else loss)
            if (i + 1) % accumulate == 0 or i + 1 == batches:
                self._step()
            total += loss.item() * len(labels)
            seen += len(labels)
            bar.update(len(labels), total / seen)
        bar.close()
        return total / max(seen, 1)

    def _to_device(self, inputs: torch.Tensor) -> torch.Tensor:
        """A batch of images in the model's memory layout (cached features as they are)."""
        if inputs.dim() == 4:
            return inputs.to(self.device, memory_format=self.layout)
        return inputs.to(self.device)

    def _autocast(self):
        precision = self.plan.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def _step(self) -> None:
        clip = self.plan.train.clip_grad_norm
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if clip is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def evaluate(self, epoch: int) -> dict:
        _, loader, forward = self._span(epoch)
        self.model.eval()
        evaluation = Evaluation(self.plan.evaluate.metric_keys, len(self.data.classes))
        with torch.no_grad():
            for inputs, labels in loader:
                inputs, labels = self._to_device(inputs), labels.to(self.device)
                with self._autocast():
                    logits = forward(inputs)
                logits = logits.float()
                loss = nn.functional.cross_entropy(logits, labels)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(epoch, None, loss.item())
                evaluation.update(logits, labels, loss.item() * len(labels))
        return evaluation.result()

    def _after_evaluation(self, epoch: int, row: dict) -> bool:
        """Keep the best model, and say whether early stopping ends the run."""
        evaluate = self.plan.evaluate
        if evaluate.best is not None and f"val_{evaluate.best}" in row:
            value = row[f"val_{evaluate.best}"]
            if better(evaluate.best, value, self.best["value"] if self.best else None):
                self.best = {"metric": evaluate.best, "value": value, "epoch": epoch}
                ckpt.save_tensors(self.out / "best.pt", self.model.state_dict())
        if self.early_stop is not None and f"val_{self.stop_metric}" in row:
            return self.early_stop.update(self.stop_metric, row[f"val_{self.stop_metric}"])
        return False

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(row, allow_nan=False) + "\n" for row in self.history)
        ckpt.save_text(self.out / "metrics.jsonl", lines)


def _read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _compiled(model: nn.Module) -> nn.Module:
    """torch.compile of the model, its dropout drawing eager PyTorch's random numbers."""
    import torch._inductor.config

    torch._inductor.config.fallback_random = True
    return torch.compile(model)
