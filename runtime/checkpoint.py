"""Files of a run, written atomically, and the state a resumed run needs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from recipe_lang.files import atomic_write, atomic_write_text


def save_tensors(path: Path, obj) -> None:
    atomic_write(path, lambda out: torch.save(obj, out))


def save_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def save_json(path: Path, obj) -> None:
    save_text(path, json.dumps(obj, indent=2) + "\n")


def load_tensors(path: Path):
    """Only tensors and plain containers: never pickle's full power."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
