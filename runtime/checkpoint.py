"""Files of a run, written atomically, and the state a resumed run needs.

The checkpoint is kept in two: `checkpoint.pt` (the last epoch's) and
`checkpoint.previous.pt` (the one before), rotated so that a complete checkpoint
exists at every instant (recipe_lang/files.py's `previous`). A resume takes the
first of them that reads whole; a damaged one is set aside as
`checkpoint.damaged.pt`, so that the next rotation never keeps it in place of a
good one."""

from __future__ import annotations

import errno
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from recipe_lang.files import atomic_write

from .run_files import RunFileError, read_tensors

CHECKPOINT, PREVIOUS, DAMAGED = "checkpoint.pt", "checkpoint.previous.pt", "checkpoint.damaged.pt"
_REQUIRED = ("plan", "epoch", "model", "optimizer")


class WriteFailed(Exception):
    """A run file that could not be written; the file as it was before is intact."""

    def __init__(self, path: Path, error: OSError):
        self.path, self.no_space = Path(path), error.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "no space left on device" if self.no_space else (error.strerror or str(error))
        super().__init__(f"{reason} writing {path}")


def _written(path: Path, write, previous: Path | None = None) -> None:
    try:
        atomic_write(path, write, previous=previous)
    except (OSError, RuntimeError) as error:
        cause = _os_error(error)
        if cause is None:
            raise
        raise WriteFailed(path, cause) from None


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind an error: torch.save reports a failed write as a RuntimeError."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__context__
    return None


def save_tensors(path: Path, obj) -> None:
    _written(path, lambda out: torch.save(obj, out))


def save_text(path: Path, text: str) -> None:
    _written(path, lambda out: out.write(text.encode("utf-8")))


def save_checkpoint(out: Path, state: dict) -> None:
    """checkpoint.pt, the one it replaces kept as checkpoint.previous.pt."""
    _written(out / CHECKPOINT, lambda file: torch.save(state, file), previous=out / PREVIOUS)


def has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT).exists() or (out / PREVIOUS).exists()


@dataclass
class Found:
    name: str  # the file to resume from
    epoch: int
    note: str | None  # why the latest could not be used


def read_checkpoint(path: Path) -> dict:
    state = read_tensors(path)
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED):
        raise RunFileError(path, "is not a checkpoint of ftr (a torch file without a run's state)")
    if not isinstance(state["epoch"], int):
        raise RunFileError(path, "is not a checkpoint of ftr (its epoch is not a number)")
    return state


def find_checkpoint(out: Path, set_aside: bool = True) -> Found:
    """The latest checkpoint that reads whole; with `set_aside`, a damaged latest one is
    renamed checkpoint.damaged.pt. Raises RunFileError when none is left."""
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = out / name
        if not path.exists():
            if name == CHECKPOINT and (out / PREVIOUS).exists():
                problems.append(RunFileError(path, "is missing (the run was stopped while replacing it)"))
            continue
        try:
            state = read_checkpoint(path)
        except RunFileError as error:
            problems.append(error)
            continue
        note = None
        if problems:
            note = f"{problems[0]}; resuming from {path} (epoch {state['epoch']}), the checkpoint before it"
            if set_aside and problems[0].path.exists():
                os.replace(problems[0].path, out / DAMAGED)
                note += f"; the damaged file is kept as {out / DAMAGED}"
        return Found(name, state["epoch"], note)
    if not problems:
        raise RunFileError(out / CHECKPOINT, "does not exist")
    if len(problems) == 1:
        raise problems[0].with_hint("no complete checkpoint is left: start again with --overwrite")
    raise RunFileError(
        problems[0].path,
        "; ".join(e.problem if e is problems[0] else str(e) for e in problems),
        "no complete checkpoint is left: start again with --overwrite",
    )


def save_json(path: Path, obj) -> None:
    save_text(path, json.dumps(obj, indent=2) + "\n")


def rng_state(loader_generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
