"""`ftr run`: a recipe to a run folder, with resume, and every failure a message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import recipe_lang
from recipe_lang.resolve import resolve
from recipe_lang.resolve.table import plan_table

from . import checkpoint as ckpt
from .data import BadImage
from .progress import Progress
from .trainer import NonFiniteLoss, PlanMismatch, Trainer, UnsupportedSetting

RUN_FILES = (
    "recipe.ftr",
    "plan.txt",
    "metrics.jsonl",
    "classes.json",
    "model.pt",
    "best.pt",
    "checkpoint.pt",
    "summary.json",
)


class RunError(Exception):
    """A run that cannot start or go on, with what to do about it."""


@dataclass
class RunRequest:
    recipe: str
    out: str | None = None
    overrides: tuple = ()
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    device: str | None = None


def run(request: RunRequest) -> dict:
    """Train a recipe; return its summary. Raises RecipeError or RunError."""
    source = recipe_lang.read_source(request.recipe)
    recipe = recipe_lang.parse(source, str(request.recipe), request.overrides)
    plan = resolve(recipe)
    out = Path(request.out or plan.output)
    progress = Progress(quiet=request.quiet)
    for warning in recipe.warnings:
        progress.say(warning.render(recipe.source, recipe.filename))
    resuming = _prepare(out, request)
    if resuming is None:
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("plan") != plan.digest():
            raise RunError(f"{out} holds a finished run of other settings; use --overwrite to replace it")
        progress.say(f"{out} holds a finished run: nothing to resume")
        return summary
    trainer = Trainer(plan, out, request.device, progress)
    try:
        trainer.setup()
    except UnsupportedSetting as error:
        raise RunError(str(error)) from None
    if resuming:
        try:
            trainer.resume()
        except PlanMismatch as error:
            raise RunError(
                f"{error}; resume with the same recipe and --set options, or start again with --overwrite"
            ) from None
        progress.say(f"resuming {out} at epoch {trainer.start_epoch} of {plan.epochs}")
    else:
        _write_start(out, source, request, plan, trainer.data.classes)
    try:
        outcome = trainer.train()
    except NonFiniteLoss as error:
        raise RunError(f"{error}; {_last_good(out)}") from None
    except BadImage as error:
        raise RunError(f"{error}; {_last_good(out)}") from None
    summary = {
        "recipe": plan.name,
        "status": outcome.status,
        "epochs": outcome.epochs,
        "of_epochs": plan.epochs,
        "final": outcome.final,
        "best": outcome.best,
        "skipped_images": outcome.skipped_images,
        "seconds": outcome.seconds,
        "device": str(trainer.device),
        "plan": plan.digest(),
        "overrides": list(request.overrides),
        "ftr": recipe_lang.__version__,
    }
    ckpt.save_json(out / "summary.json", summary)
    return summary


def _prepare(out: Path, request: RunRequest) -> bool | None:
    """True to resume, False to start; None when a finished run is asked to resume."""
    finished = (out / "summary.json").exists()
    started = (out / "checkpoint.pt").exists()
    if request.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        return False
    if finished:
        if request.resume:
            return None
        raise RunError(f"{out} holds a finished run; use --overwrite to replace it, or --out for another folder")
    if started and not request.resume:
        state = ckpt.load_tensors(out / "checkpoint.pt")
        raise RunError(
            f"{out} holds an unfinished run (epoch {state['epoch']} done); "
            "use --resume to continue it, or --overwrite to start again"
        )
    if request.resume and not started:
        raise RunError(f"nothing to resume in {out}: it holds no checkpoint.pt; run without --resume")
    out.mkdir(parents=True, exist_ok=True)
    return request.resume


def _write_start(out: Path, source: str, request: RunRequest, plan, classes: list[str]) -> None:
    header = "".join(f"# ftr run --set {override}\n" for override in request.overrides)
    ckpt.save_text(out / "recipe.ftr", header + source)
    ckpt.save_text(out / "plan.txt", plan_table(plan))
    ckpt.save_json(out / "classes.json", {name: index for index, name in enumerate(classes)})


def _last_good(out: Path) -> str:
    path = out / "checkpoint.pt"
    if not path.exists():
        return "no epoch had finished, so there is no checkpoint"
    epoch = ckpt.load_tensors(path)["epoch"]
    return f"the checkpoint of epoch {epoch} is kept in {path}"


def interrupted_message(request: RunRequest) -> str:
    where = f" --out {request.out}" if request.out else ""
    sets = "".join(f" --set {o}" for o in request.overrides)
    return (
        "interrupted; the last finished epoch is saved and nothing is half-written. "
        f"Continue with: ftr run {request.recipe}{where}{sets} --resume"
    )
