"""`ftr run` in one process against `ftr run --nproc 2` (DistributedDataParallel, gloo on the CPU).

    python bench/ddp.py [--images 64] [--epochs 6] [--rounds 2] [--trains convs head]

On the CPU several processes cannot train BatchNorm layers (SyncBatchNorm needs CUDA),
so the workload is what runs there: fine-tuning a backbone with its BatchNorm frozen.
First (untimed) a resnet18 learns a source task in one process: 4 colours of square
on noise. Then the measured recipe fine-tunes it on 4 other colours: a new head and
(`convs`) every convolution of layer3 and layer4 (10.3M parameters, whose gradients
DDP averages at every step) or (`head`) the head alone (2k); BatchNorm stays in eval
mode; 32 px random crops and flips, batch 32 (16 per process with two). Each
configuration runs that recipe, taking turns:

- 1 process, 1 thread (OMP_NUM_THREADS=1);
- 1 process, the threads torch takes by default (one per core);
- 2 processes of 1 thread each (`--nproc 2`; torchrun sets OMP_NUM_THREADS=1 too).

Prints each one's median epoch seconds (train and validation, from metrics.jsonl),
train images/s from it, the wall time of the whole command (starting processes and
importing torch included), and the last epoch's metrics with their difference from
the first configuration. Two processes draw other batches (DistributedSampler) and
other random crops (a stream per process): the runs are two samples of the same
training, not the same numbers (tests/test_ddp.py holds the equality where it is exact).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SOURCE_COLOURS = [(230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 230, 40)]
TARGET_COLOURS = [(200, 40, 200), (40, 200, 200), (240, 140, 30), (240, 240, 240)]

SOURCE = """recipe "ddp-bench-source"
seed 0

model {
  backbone resnet18
  weights none
  head linear(classes=4)
}

data {
  train imagefolder("source/train")
  val imagefolder("source/val")
  batch_size 32
  train_transforms random_resized_crop(32, scale=(0.6, 1.0)), hflip()
  eval_transforms resize(36), center_crop(32)
}

train {
  epochs 4
  optimizer adamw(weight_decay=0.01)
  lr 2e-3
}
"""

TARGET = """recipe "ddp-bench"
seed 0

model {{
  backbone resnet18
  weights file("source_run/model.pt", strict=false)
  head linear(classes=4)
}}

data {{
  train imagefolder("target/train")
  val imagefolder("target/val")
  batch_size 32
  train_transforms random_resized_crop(32, scale=(0.6, 1.0)), hflip()
  eval_transforms resize(36), center_crop(32)
}}

train {{
  epochs {epochs}
  optimizer adamw(weight_decay=0.01)
  lr head=3e-3, rest=3e-4
  freeze {freeze}
  batchnorm eval
}}

evaluate {{
  metrics loss, accuracy, macro_f1
}}
"""

TRAINS = {"convs": 'all except head, "layer3.*.conv*", "layer4.*.conv*"', "head": "all except head"}
CONFIGS = {
    "1 process x 1 thread": ([], "1"),
    "1 process x default threads": ([], None),
    "2 processes x 1 thread": (["--nproc", "2"], "1"),
}


def make_images(folder: Path, colours, per_class: int, size: int = 40, seed: int = 0) -> None:
    """folder/train and folder/val: a square of the class's colour at a random place on dark noise."""
    rng = random.Random(seed)
    for split, count in (("train", per_class), ("val", max(per_class // 4, 1))):
        for c, colour in enumerate(colours):
            target = folder / split / f"class{c}"
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.new("RGB", (size, size), tuple(rng.randrange(80) for _ in range(3)))
                draw = ImageDraw.Draw(image)
                side = size // 4
                x, y = rng.randrange(size - side), rng.randrange(size - side)
                draw.rectangle([x, y, x + side, y + side], fill=colour)
                for _ in range(size):
                    noise = tuple(rng.randrange(256) for _ in range(3))
                    draw.point((rng.randrange(size), rng.randrange(size)), fill=noise)
                image.save(target / f"{i}.png")


def ftr_run(work: Path, recipe: str, out: str, extra: list[str], threads: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    command = [sys.executable, "-m", "recipe_lang.cli", "run", recipe, "--out", out, "--overwrite", "--quiet"]
    command += ["--device", "cpu", *extra]
    began = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def measure(work: Path, rounds: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for round_ in range(rounds):
        for name in names[round_ % 3 :] + names[: round_ % 3]:  # each round starts with another
            extra, threads = CONFIGS[name]
            out = name.replace(" ", "_")
            wall = ftr_run(work, "target.ftr", out, extra, threads)
            rows = [json.loads(line) for line in (work / out / "metrics.jsonl").read_text().splitlines()]
            epoch = statistics.median(row["seconds"] for row in rows)
            results[name].append({"epoch": epoch, "wall": wall, "last": rows[-1]})
    return results


def table(trains: str, results: dict[str, list[dict]], train_images: int) -> None:
    names = list(CONFIGS)
    base = results[names[0]][0]["last"]
    keys = ["train_loss"] + [k for k in base if k.startswith("val_")]
    print("| trains | configuration | s/epoch | train images/s | wall s | " + " | ".join(keys) + " |")
    print("| --- " * (5 + len(keys)) + "|")
    for name in names:
        epoch = statistics.median(r["epoch"] for r in results[name])
        wall = statistics.median(r["wall"] for r in results[name])
        last = results[name][0]["last"]
        cells = [f"{last[k]:.4f}" + ("" if name == names[0] else f" ({last[k] - base[k]:+.4f})") for k in keys]
        print(
            f"| {trains} | {name} | {epoch:.3f} | {train_images / epoch:.0f} | {wall:.1f} | " + " | ".join(cells) + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64, help="train images per class (4 classes)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trains", nargs="+", choices=list(TRAINS), default=list(TRAINS))
    args = parser.parse_args()
    train_images = 4 * args.images
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work / "source", SOURCE_COLOURS, args.images, seed=0)
        make_images(work / "target", TARGET_COLOURS, args.images, seed=1)
        (work / "source.ftr").write_text(SOURCE)
        ftr_run(work, "source.ftr", "source_run", [], None)
        for trains in args.trains:
            (work / "target.ftr").write_text(TARGET.format(epochs=args.epochs, freeze=TRAINS[trains]))
            table(trains, measure(work, args.rounds), train_images)
            print()
    print(
        f"resnet18 at 32 px fine-tuned (BatchNorm frozen), batch 32, {train_images} train / "
        f"{4 * max(args.images // 4, 1)} val images, {args.epochs} epochs a run, {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, {sys.platform}. s/epoch and wall s: medians over the rounds; images/s: train "
        "images / s/epoch (the epoch's validation included); metrics: the last epoch (identical every round), "
        "(difference from the first row)."
    )


if __name__ == "__main__":
    main()
