"""The training loop of a plan: setup, epochs, evaluation, checkpoints and resume.

The order in which randomness is spent is reference/seed_loop.py's: seeds, data,
backbone, weights, head, loaders. Everything else follows the plan.

With several processes (a `Distributed` whose world has more than one) the same
loop runs in each, on its share of the data, the model in DistributedDataParallel;
runtime/distributed.py says what changes. With one, every `self.dist` call is the
identity and the loop is the plain one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from recipe_lang.resolve.plan import Plan

from . import checkpoint as ckpt
from .cache import CachedSpan, FeatureCache
from .data import loaders
from .distillation import TeacherError, training_loss
from .distributed import Distributed, DistributedError, rank_seed, sync_batchnorm
from .head_probe import fit_head
from .loggers import TensorBoard
from .metrics import EarlyStop, better
from .model import enter_phase, train_mode
from .optim import Rates, build_optimizer, clear_state, steps_per_epoch
from .progress import Progress
from .pseudo_labels import PseudoLabels
from .run_files import read_json, read_jsonl
from .tasks import runtime_task

PER_CLASS = "per_class.jsonl"  # a task's per-class figures, one row per evaluation


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int | None, value: float):
        where = f"epoch {epoch}, step {step}" if step is not None else f"the validation of epoch {epoch}"
        super().__init__(f"the loss is {value} at {where}")
        self.epoch, self.step, self.value = epoch, step, value


class UnsupportedSetting(Exception):
    """A recipe setting this device cannot run."""


class PlanMismatch(Exception):
    """A checkpoint written by another plan."""


class WorldMismatch(Exception):
    """A checkpoint written by a run of another number of processes."""


class ClassesMismatch(Exception):
    """Data whose classes are not those the checkpoint's run learned."""


@dataclass
class Outcome:
    status: str  # finished | early_stopped
    epochs: int
    final: dict
    best: dict | None
    skipped_images: int
    seconds: float  # training time over every session of the run
    session_seconds: float  # this session's
    history: list = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        plan: Plan,
        out: Path,
        device: str | torch.device | None = None,
        progress: Progress | None = None,
        dist: Distributed | None = None,
        logger: TensorBoard | None = None,
    ):
        self.plan = plan
        self.logger = logger  # given to the process that writes files only
        self.out = Path(out)
        self.dist = dist or Distributed()
        self.device = device if isinstance(device, torch.device) else self.dist.pick_device(device)
        self.progress = progress or Progress(quiet=True)

    # --- setup -----------------------------------------------------------------

    def setup(self) -> None:
        plan = self.plan
        torch.manual_seed(plan.seed)
        random.seed(plan.seed)
        self.task = runtime_task(plan)
        self.data = self.task.datasets()
        model = self.task.build_model()
        world = self.dist.world
        if world.distributed and plan.data.group_by_length:
            raise UnsupportedSetting("group_by_length takes one process: remove it, or run without --nproc")
        if world.distributed and plan.train.pseudo_label is not None:
            raise UnsupportedSetting("pseudo_label takes one process: remove it, or run without --nproc")
        self.pseudo = PseudoLabels(plan, self.data.classes) if plan.train.pseudo_label is not None else None
        self.pseudo_row: dict = {}  # the epoch's pseudo_share and pseudo_accuracy
        if world.distributed:
            try:
                model = sync_batchnorm(plan, model, self.device)
            except DistributedError as error:
                raise UnsupportedSetting(str(error)) from None
        self.model = model.to(self.device)
        self.layout = torch.channels_last if plan.train.channels_last else torch.contiguous_format
        if plan.train.channels_last:
            self.model = self.model.to(memory_format=self.layout)
        self.optimizer = build_optimizer(plan, self.model)
        if world.rank > 0:  # its own random transforms and dropout; the same model as process 0
            seed = rank_seed(plan.seed, world.rank)
            torch.manual_seed(seed)
            random.seed(seed)
        cuda = self.device.type == "cuda"
        self.train_loader, self.val_loader = loaders(
            plan, self.data, plan.seed, world.rank, world.size, cuda, self.task.collate
        )
        self.net = self.model  # what the loop trains: the model, or its DistributedDataParallel
        self.net_phase: int | None = None  # the first epoch of the phase self.net was wrapped for
        self.forward = self.evaluated = _compiled(self.model) if plan.train.compile else self.model
        self.steps = steps_per_epoch(len(self.train_loader), plan.train.accumulate)
        self.rates = Rates(plan, self.optimizer, self.steps)
        if plan.train.precision == "fp16" and self.device.type != "cuda":
            raise UnsupportedSetting(f"precision fp16 needs a CUDA device, not {self.device}; use bf16 or fp32")
        self.scaler = torch.amp.GradScaler("cuda") if plan.train.precision == "fp16" else None
        self.early_stop = (
            EarlyStop(plan.evaluate.early_stop.patience, plan.evaluate.early_stop.min_delta)
            if (plan.evaluate.early_stop)
            else None
        )
        self.stop_metric = plan.evaluate.stop_metric
        try:  # the task's loss, or with a teacher distillation's
            self.loss = training_loss(plan, self.task, self.device)
        except TeacherError as error:
            raise UnsupportedSetting(str(error)) from None
        self.head = self.model.get_submodule(plan.classifier.path)
        self.cache = FeatureCache(self.out)
        self.cached: CachedSpan | None = None
        self.best: dict | None = None
        self.best_weights: dict | None = None  # best.pt's tensors, on the CPU, in process 0
        self.start_epoch, self.global_step, self.history = 1, 0, []
        self.details: list[dict] = []  # per-class figures of each evaluation, when the task has them
        self.seconds_before = 0.0  # training time of the sessions before this one
        self.began = time.perf_counter()

    # --- resume ----------------------------------------------------------------

    def resume(self, name: str = ckpt.CHECKPOINT) -> None:
        """Continue from a checkpoint (run.py picks checkpoint.pt or the one before):
        model, optimizer, rates, RNG and loader state; metrics.jsonl and best.pt as
        they were when it was written."""
        path = self.out / name
        state = ckpt.read_checkpoint(path)
        self._check_classes(state, path)  # before the plan's digest, which the classes change too
        if state["plan"] != self.plan.digest():
            raise PlanMismatch(
                f"{path} was written by another recipe or other settings "
                f"(plan {state['plan']}, this one {self.plan.digest()})"
            )
        world, size = state.get("world", 1), self.dist.world.size
        if world != size:
            how = "in one process (ftr run ... --resume, no --nproc, no torchrun)"
            if world > 1:
                how = f"in {world} (ftr run --nproc {world} ... --resume, or torchrun with as many)"
            raise WorldMismatch(
                f"{path} was written by a run of {world} process{'es' if world > 1 else ''}, "
                f"and this one has {size}: its data order and random streams are those of {world}; resume it "
                f"{how}, or start again with --overwrite"
            )
        enter_phase(self.model, self.plan.phase_of(state["epoch"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng_ranks"][self.dist.world.rank] if world > 1 else state["rng"]
        ckpt.restore_rng(rng, self.train_loader.generator)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.early_stop is not None:
            self.early_stop.load_state(state["early_stop"])
        self.best = state["best"]
        self.start_epoch = state["epoch"] + 1
        self.global_step = state["global_step"]
        self.seconds_before = state.get("seconds", 0.0)
        rows = state["history"] if "history" in state else read_jsonl(self.out / "metrics.jsonl")
        self.history = [row for row in rows if row["epoch"] <= state["epoch"]]
        self.details = [row for row in state.get("details", []) if row["epoch"] <= state["epoch"]]
        self.best_weights = state.get("best_model")
        if self.dist.main:
            self._restore_files()

    def _check_classes(self, state: dict, path: Path) -> None:
        """The data's classes are the run's: a class folder added or removed since is refused."""
        learned = state.get("classes")
        if learned is None:  # a checkpoint from before classes were kept in it
            index = read_json(self.out / "classes.json")
            learned = [name for name, _ in sorted(index.items(), key=lambda item: item[1])]
        now = list(self.data.classes)
        if learned == now:
            return
        added, removed = [c for c in now if c not in learned], [c for c in learned if c not in now]
        what = [f"added {', '.join(added)}"] if added else []
        what += [f"removed {', '.join(removed)}"] if removed else []
        raise ClassesMismatch(
            f"the data's classes are not those of the run in {path.parent} "
            f"({'; '.join(what) or 'the same names in another order'}): the model learned "
            f"{len(learned)} ({', '.join(learned[:8])}{', ...' if len(learned) > 8 else ''}); put the data back "
            "as it was to resume, or start again with --overwrite"
        )

    def _restore_files(self) -> None:
        """metrics.jsonl and best.pt as of the checkpoint: rows and a best model written
        after it (by the session that stopped) must not outlive the epochs run again."""
        self._write_metrics()
        if self.best is None:
            (self.out / "best.pt").unlink(missing_ok=True)
        elif self.best_weights is not None:
            ckpt.save_tensors(self.out / "best.pt", self.best_weights)

    def save_checkpoint(self, epoch: int) -> None:
        """checkpoint.pt, by process 0; with several processes it holds every process's
        generators (`rng_ranks`, in rank order) and their number (`world`)."""
        rng = ckpt.rng_state(self.train_loader.generator)
        rngs = self.dist.gather(rng) if self.dist.enabled else None
        if not self.dist.main:
            return
        model = self.model.state_dict()
        state = {
            "format": 2,
            "plan": self.plan.digest(),
            "epoch": epoch,
            "global_step": self.global_step,
            "model": model,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "best": self.best,
            # best.pt's tensors, so that a resume can put it back; the same tensors as
            # "model" (stored once) when this epoch is the best
            "best_model": model if self.best and self.best["epoch"] == epoch else self.best_weights,
            "history": self.history,
            **({"details": self.details} if self.details else {}),
            "classes": list(self.data.classes),
            "early_stop": self.early_stop.state() if self.early_stop else None,
            "seconds": self.seconds_before + time.perf_counter() - self.began,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if rngs is not None:
            state["world"] = self.dist.world.size
            state["rng_ranks"] = rngs
        ckpt.save_checkpoint(self.out, state)

    # --- the loop --------------------------------------------------------------

    def train(self) -> Outcome:
        try:
            return self._train()
        finally:
            self.cache.close()
            if self.logger is not None:
                self.logger.close()

    def _span(self, epoch: int):
        """(train loader, val loader, forward) of an epoch: the images through the whole
        model, or in a cached span the head's inputs, computed once, through the head."""
        phase = self.plan.phase_of(epoch)
        if not phase.cache or self.dist.enabled:  # the cache works on the whole data set, in one process
            return self.train_loader, self.val_loader, None
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
                self.task,
            )
        return self.cached.train, self.cached.val, self.head

    def _probe_head(self) -> None:
        """head_init probe: the head fitted on the frozen features of the train images."""
        plan = self.plan
        dataset = self.task.probe_dataset(self.data)
        features = self.cache.features(
            self.model, plan.classifier.path, dataset, plan.data, self.device, self._autocast, self.task
        )
        fitted = fit_head(self.head, *features.tensors)
        self.progress.say(
            f"head_init probe: the head fitted on {len(dataset)} train images' features "
            f"(train loss {fitted['loss']:.4f}, accuracy {fitted['accuracy']:.4f})"
        )

    def _train(self) -> Outcome:
        plan = self.plan
        self.began = time.perf_counter()
        stopped = self.early_stop is not None and self.early_stop.should_stop
        status = "early_stopped" if stopped else "finished"
        epoch = self.start_epoch - 1
        last = epoch if stopped else plan.epochs  # a resumed run that had stopped trains no more
        if self.logger is not None:
            self.logger.begin(self.history, self.start_epoch)
        if self.start_epoch == 1 and plan.head_init == "probe":
            self._probe_head()
        for epoch in range(self.start_epoch, last + 1):
            began = time.perf_counter()
            rates = self.rates.set(self.global_step)
            train_loss = self.train_epoch(epoch)
            row = {"epoch": epoch, "train_loss": train_loss, **self.pseudo_row}
            if self._evaluates(epoch):
                row.update(self.evaluate(epoch))
            row.update({f"lr/{group}": rate for group, rate in rates.items()})
            row["seconds"] = time.perf_counter() - began
            self.history.append(row)
            stop = self._after_evaluation(epoch, row)
            if self.dist.main:
                self._write_metrics()
                if self.logger is not None:
                    self.logger.log(row)
            self.save_checkpoint(epoch)
            self.progress.epoch_done(row)
            if stop:
                status = "early_stopped"
                break
        skipped = self.data.skipped.count
        if self.dist.enabled:  # an unreadable file counts once, whichever processes met it
            skipped = len(set().union(*self.dist.gather(set(self.data.skipped.files))))
        if self.dist.main:
            ckpt.save_tensors(self.out / "model.pt", self.model.state_dict())
        final = self.history[-1] if self.history else {}
        session = time.perf_counter() - self.began
        return Outcome(status, epoch, final, self.best, skipped, self.seconds_before + session, session, self.history)

    def _evaluates(self, epoch: int) -> bool:
        every = self.plan.evaluate.every
        return self.val_loader is not None and (epoch % every == 0 or epoch == self.plan.epochs)

    def train_epoch(self, epoch: int) -> float:
        plan, model = self.plan, self.model
        phase = plan.phase_of(epoch)
        if phase.first == epoch > 1:
            thawed = set(phase.trainable) - set(plan.phase_of(epoch - 1).trainable)
            clear_state(self.optimizer, [p for name, p in model.named_parameters() if name in thawed])
        batches = len(self.train_loader)
        if self.pseudo is not None:  # the model in eval mode labels the unlabeled images
            self.pseudo_row = self.pseudo.select(
                epoch, model, self.evaluated, self.device, self.layout, self._autocast, batches
            )
        loader, _, forward = self._span(epoch)
        enter_phase(model, phase)
        if self.dist.enabled:
            if self.net_phase != phase.first:
                self.net = self.model  # drop the old wrapper (and its reducer's hooks) first
                self.net = self.dist.wrap(model)
                self.net_phase = phase.first
                self.forward = _compiled(self.net) if plan.train.compile else self.net
            self.train_loader.sampler.set_epoch(epoch)
        train_mode(model, phase)
        forward = forward or self.forward
        accumulate = plan.train.accumulate
        total, seen = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = self.progress.epoch(epoch, plan.epochs, batches)
        for i, batch in enumerate(loader):
            if i % accumulate == 0:
                self.rates.set(self.global_step)
            steps = (i + 1) % accumulate == 0 or i + 1 == batches
            inputs, targets = self.task.to_device(batch, self.device, self.layout)
            n = self.task.count(targets)
            chunk = self.pseudo.batch(i, self.device, self.layout) if self.pseudo is not None else None
            with self._gradient_sync(steps):
                with self._autocast():
                    if chunk is None:
                        loss = self.loss(forward, inputs, targets)
                    else:
                        loss = self.pseudo.loss(self.task.criterion, forward, inputs, targets, chunk)
                if self.dist.enabled:
                    value = loss.item()
                    finite = math.isfinite(value)
                    # one sum for all: whether any process's loss is non-finite, and train_loss's sums
                    bad, bad_value, loss_sum, count = self.dist.sum(
                        [not finite, 0.0 if finite else value, value * n, n]
                    ).tolist()
                    if bad:
                        raise NonFiniteLoss(epoch, i + 1, bad_value)
                elif not torch.isfinite(loss):
                    raise NonFiniteLoss(epoch, i + 1, loss.item())
                window = min(accumulate, batches - i // accumulate * accumulate)  # the last may be shorter
                self._backward(loss / window if window > 1 else loss)
            if steps:
                self._step()
            if self.dist.enabled:
                total += loss_sum
                seen += round(count)
                bar.update(round(count), total / seen)
            else:
                total += loss.item() * n
                seen += n
                bar.update(n, total / seen)
        bar.close()
        return total / max(seen, 1)

    def _gradient_sync(self, steps: bool):
        """DDP's no_sync() on a micro-batch after which no optimizer step comes: its
        gradients accumulate locally, and the backward of the stepping micro-batch
        averages their sum over the processes once."""
        if steps or not self.dist.enabled:
            return contextlib.nullcontext()
        return self.net.no_sync()

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
        forward = forward or self.evaluated
        self.model.eval()
        evaluation = self.task.evaluation(self.data.classes)
        with torch.no_grad():
            for batch in loader:
                inputs, targets = self.task.to_device(batch, self.device, self.layout)
                loss = self.task.evaluate_batch(self.model, forward, inputs, targets, evaluation, self._autocast)
                if not self.dist.enabled and not math.isfinite(loss):
                    raise NonFiniteLoss(epoch, None, loss)
        if self.dist.enabled:
            evaluation.reduce(self.dist)
            if not math.isfinite(evaluation.loss_sum):  # NaN and inf stay so in a sum: all see it
                raise NonFiniteLoss(epoch, None, evaluation.loss_sum / max(evaluation.seen, 1))
        details = evaluation.details()
        if details is not None:
            self.details.append({"epoch": epoch, **details})
        return evaluation.result()

    def _after_evaluation(self, epoch: int, row: dict) -> bool:
        """Keep the best model, and say whether early stopping ends the run."""
        evaluate = self.plan.evaluate
        if evaluate.best is not None and f"val_{evaluate.best}" in row:
            value = row[f"val_{evaluate.best}"]
            if better(evaluate.best, value, self.best["value"] if self.best else None):
                self.best = {"metric": evaluate.best, "value": value, "epoch": epoch}
                if self.dist.main:
                    self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                    ckpt.save_tensors(self.out / "best.pt", self.best_weights)
        if self.early_stop is not None and f"val_{self.stop_metric}" in row:
            return self.early_stop.update(self.stop_metric, row[f"val_{self.stop_metric}"])
        return False

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(row, allow_nan=False) + "\n" for row in self.history)
        ckpt.save_text(self.out / "metrics.jsonl", lines)
        if self.details:
            ckpt.save_text(self.out / PER_CLASS, "".join(json.dumps(row) + "\n" for row in self.details))
        else:  # a resume to before the first evaluation that had them
            (self.out / PER_CLASS).unlink(missing_ok=True)


def _compiled(model: nn.Module) -> nn.Module:
    """torch.compile of the model, its dropout drawing eager PyTorch's random numbers."""
    import torch._inductor.config

    torch._inductor.config.fallback_random = True
    return torch.compile(model)
