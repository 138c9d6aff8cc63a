"""`ftr run`: a recipe to a run folder, with resume, and every failure a message.

With several processes (runtime/distributed.py) every process runs `run`: process 0
alone decides what to do with the run folder and writes to it, and tells the
others; errors that every process meets alike are printed by process 0 only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import recipe_lang
from recipe_lang.resolve import resolve
from recipe_lang.resolve.table import plan_table

from . import checkpoint as ckpt
from .data import BadImage
from .distributed import Distributed, DistributedError
from .loggers import TENSORBOARD_FOLDER, TensorBoard
from .progress import Progress
from .run_files import RunFileError, read_json
from .trainer import ClassesMismatch, NonFiniteLoss, PlanMismatch, Trainer, UnsupportedSetting, WorldMismatch
from .world import batch_error, resume_hint

RUN_FILES = (
    "recipe.ftr",
    "plan.txt",
    "metrics.jsonl",
    "classes.json",
    "model.pt",
    "best.pt",
    "checkpoint.pt",
    "summary.json",
    ckpt.PREVIOUS,
    ckpt.DAMAGED,
)


class RunError(Exception):
    """A run that cannot start or go on, with what to do about it.

    `local`: met by this process alone (an unreadable image in its share of the
    data), so it prints it whatever its rank; the others stop with it."""

    def __init__(self, message: str, local: bool = False):
        super().__init__(message)
        self.local = local


@dataclass
class RunRequest:
    recipe: str
    out: str | None = None
    overrides: tuple = ()
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    device: str | None = None
    logger: str | None = None  # "tensorboard": the rows also as TensorBoard scalars


def run(request: RunRequest, dist: Distributed | None = None) -> dict:
    """Train a recipe; return its summary. Raises RecipeError or RunError.

    `dist`: this process's part in a run of several (default: the only process)."""
    dist = dist or Distributed()
    source = recipe_lang.read_source(request.recipe)
    recipe = recipe_lang.parse(source, str(request.recipe), request.overrides)
    plan = resolve(recipe)
    split = batch_error(plan.data.batch_size, dist.world.size)
    if split:
        raise RunError(split)
    out = Path(request.out or plan.output)
    progress = Progress(quiet=request.quiet, silent=not dist.main)
    for warning in recipe.warnings:
        progress.say(warning.render(recipe.source, recipe.filename))
    try:
        device = dist.pick_device(request.device)
    except DistributedError as error:
        raise RunError(str(error), local=error.local) from None
    with dist.session(device):
        try:
            return _run(request, dist, plan, source, out, progress, device)
        except ckpt.WriteFailed as error:
            raise RunError(f"{error}; nothing is half-written: {_write_hint(error, request, out, dist)}") from None
        except RunFileError as error:  # read by every process alike, so said once
            raise RunError(str(error)) from None


def _write_hint(error: ckpt.WriteFailed, request: RunRequest, out: Path, dist: Distributed) -> str:
    fix = "free space" if error.no_space else "make it writable"
    if ckpt.has_checkpoint(out):
        return f"{fix} and resume with: {resume_command(request, dist.world)}"
    return f"{fix} and start again with: {resume_command(request, dist.world, resume=False)}"


def _run(request: RunRequest, dist: Distributed, plan, source: str, out: Path, progress: Progress, device) -> dict:
    resuming = _on_main(dist, lambda: _prepare(out, request, progress))
    if resuming is None:
        summary = _on_main(dist, lambda: _finished(out, plan))
        progress.say(f"{out} holds a finished run: nothing to resume")
        return summary
    logger = TensorBoard(out) if request.logger and dist.main else None
    trainer = Trainer(plan, out, device, progress, dist, logger)
    try:
        trainer.setup()
    except UnsupportedSetting as error:
        raise RunError(str(error)) from None
    if resuming:
        try:
            trainer.resume(resuming)
        except PlanMismatch as error:
            raise RunError(
                f"{error}; resume with the same recipe and --set options, or start again with --overwrite"
            ) from None
        except (WorldMismatch, ClassesMismatch) as error:
            raise RunError(str(error)) from None
        except RunFileError as error:
            if dist.main:
                raise
            # another machine, whose run folder is not the same folder
            raise RunError(
                f"process {dist.world.rank}: {error}: every process reads the checkpoint to resume, "
                "so the run folder must be one that every machine sees",
                local=True,
            ) from None
        progress.say(f"resuming {out} at epoch {trainer.start_epoch} of {plan.epochs}")
    elif dist.main:
        _write_start(out, source, request, plan, trainer.data.classes)
    try:
        outcome = trainer.train()
    except NonFiniteLoss as error:
        raise RunError(f"{error}; {_last_good(out)}") from None
    except BadImage as error:
        raise RunError(f"{error}; {_last_good(out)}", local=True) from None
    summary = {
        "recipe": plan.name,
        "status": outcome.status,
        "epochs": outcome.epochs,
        "of_epochs": plan.epochs,
        "final": outcome.final,
        "best": outcome.best,
        "skipped_images": outcome.skipped_images,
        "seconds": outcome.seconds,
        "session_seconds": outcome.session_seconds,
        "device": str(trainer.device),
        "plan": plan.digest(),
        "overrides": list(request.overrides),
        "ftr": recipe_lang.__version__,
    }
    if dist.enabled:
        summary["processes"] = dist.world.size
    if dist.main:
        ckpt.save_json(out / "summary.json", summary)
    dist.barrier()  # every process ends once process 0 has written everything
    return summary


def _on_main(dist: Distributed, decide):
    """`decide()` in process 0, its result (or its RunError) in every process."""
    if not dist.enabled:
        return decide()
    result = None
    if dist.main:
        try:
            result = ("ok", decide())
        except RunError as error:
            result = ("error", str(error))
    kind, value = dist.broadcast(result)
    if kind == "error":
        raise RunError(value)
    return value


def _finished(out: Path, plan) -> dict:
    try:
        summary = read_json(out / "summary.json")
    except RunFileError as error:
        hint = f"delete it and run with --resume to write it again from {ckpt.CHECKPOINT}"
        raise RunError(str(error.with_hint(hint))) from None
    if summary.get("plan") != plan.digest():
        raise RunError(f"{out} holds a finished run of other settings; use --overwrite to replace it")
    return summary


def _prepare(out: Path, request: RunRequest, progress: Progress) -> str | bool | None:
    """The checkpoint to resume from, False to start; None when a finished run is asked to resume."""
    finished = (out / "summary.json").exists()
    started = ckpt.has_checkpoint(out)
    _remove_temporaries(out)
    if request.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_FOLDER, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        return False
    if finished:
        if request.resume:
            return None
        raise RunError(f"{out} holds a finished run; use --overwrite to replace it, or --out for another folder")
    if started and not request.resume:
        epoch = _checkpoint_epoch(out)
        done = f" (epoch {epoch} done)" if epoch is not None else ""
        raise RunError(
            f"{out} holds an unfinished run{done}; use --resume to continue it, or --overwrite to start again"
        )
    if request.resume and not started:
        raise RunError(f"nothing to resume in {out}: it holds no checkpoint.pt; run without --resume")
    out.mkdir(parents=True, exist_ok=True)
    if not request.resume:
        return False
    found = ckpt.find_checkpoint(out)
    if found.note:
        progress.say(f"warning: {found.note}")
    return found.name


def _remove_temporaries(out: Path) -> None:
    """The temporary files of writes that a kill cut short (never read: they are not renamed)."""
    for name in RUN_FILES:
        for temporary in out.glob(f".{name}.*.tmp"):
            temporary.unlink(missing_ok=True)


def _checkpoint_epoch(out: Path) -> int | None:
    try:
        return ckpt.find_checkpoint(out, set_aside=False).epoch
    except RunFileError:
        return None


def _write_start(out: Path, source: str, request: RunRequest, plan, classes: list[str]) -> None:
    header = "".join(f"# ftr run --set {override}\n" for override in request.overrides)
    ckpt.save_text(out / "recipe.ftr", header + source)
    ckpt.save_text(out / "plan.txt", plan_table(plan))
    ckpt.save_json(out / "classes.json", {name: index for index, name in enumerate(classes)})


def _last_good(out: Path) -> str:
    if not ckpt.has_checkpoint(out):
        return "no epoch had finished, so there is no checkpoint"
    try:
        found = ckpt.find_checkpoint(out, set_aside=False)
    except RunFileError as error:
        return f"no checkpoint reads whole ({error})"
    return f"the checkpoint of epoch {found.epoch} is kept in {out / found.name}"


def resume_command(request: RunRequest, world=None, resume: bool = True) -> str:
    where = f" --out {request.out}" if request.out else ""
    sets = "".join(f" --set {o}" for o in request.overrides)
    processes = resume_hint(world) if world is not None else ""
    flag = " --resume" if resume else ""
    return f"ftr run {request.recipe}{where}{sets}{flag}{processes}"


def interrupted_message(request: RunRequest, world=None, what: str = "interrupted") -> str:
    return (
        f"{what}; the last finished epoch is saved and nothing is half-written. "
        f"Continue with: {resume_command(request, world)}"
    )
