"""Time per epoch of reference/seed_loop.py (a plain PyTorch loop), `ftr run` and the
script `ftr compile` writes, on the same generated images, in the same session,
taking turns.

    python bench/epoch_time.py [--images 64] [--epochs 3] [--rounds 2]

Prints each round's median seconds per epoch (from each run's metrics.jsonl, the
same clock in all three: train + validation of one epoch), the ratio ftr run /
reference and the ratio compiled script / ftr run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, per_class: int, classes: int = 4, size: int = 48) -> None:
    rng = random.Random(0)
    for split, count in (("train", per_class), ("val", max(per_class // 4, 1))):
        for c in range(classes):
            target = folder / "data" / split / f"class{c}"
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
                for _ in range(size * 2):
                    image.putpixel((rng.randrange(size), rng.randrange(size)), (60 * c, 255 - 60 * c, 128))
                image.save(target / f"{i}.png")


def epoch_seconds(command: list[str], cwd: Path, metrics: Path) -> float:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return statistics.median(row["seconds"] for row in rows)


def commands(epochs: int) -> dict[str, tuple[list[str], str]]:
    """The three runs of the seed example: their command lines and run folders."""
    py = sys.executable
    reference = [py, str(ROOT / "reference" / "seed_loop.py"), "--data", "data", "--out", "ref"]
    return {
        "seed_loop.py": (reference + ["--epochs", str(epochs)], "ref"),
        "ftr run": (
            [py, "-m", "recipe_lang.cli", "run", "seed.ftr", "--out", "ftr", "--overwrite", "--quiet"]
            + ["--device", "cpu", "--set", f"train.epochs={epochs}"],
            "ftr",
        ),
        "compiled": ([py, "train.py", "--out", "script", "--overwrite", "--quiet", "--device", "cpu"], "script"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64, help="train images per class (4 classes)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work, args.images)
        (work / "seed.ftr").write_text((ROOT / "recipes" / "seed_loop.ftr").read_text())
        compile_ = [sys.executable, "-m", "recipe_lang.cli", "compile", "seed.ftr", "-o", "train.py"]
        subprocess.run(compile_ + ["--set", f"train.epochs={args.epochs}"], cwd=work, check=True, capture_output=True)
        runs = commands(args.epochs)
        names = list(runs)
        rows = []
        for round_ in range(args.rounds):
            times = {}
            for name in names[round_ % 3 :] + names[: round_ % 3]:  # each round starts with another
                command, out = runs[name]
                times[name] = epoch_seconds(command, work, work / out / "metrics.jsonl")
            rows.append(times)
    print("| round | seed_loop.py s/epoch | ftr run s/epoch | compiled s/epoch | ftr run / seed_loop", end="")
    print(" | compiled / ftr run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, t in enumerate(rows, 1):
        ref, ftr, script = t["seed_loop.py"], t["ftr run"], t["compiled"]
        print(f"| {i} | {ref:.3f} | {ftr:.3f} | {script:.3f} | {ftr / ref:.3f} | {script / ftr:.3f} |")
    median = {name: statistics.median(t[name] for t in rows) for name in names}
    run_ratio = statistics.median(t["ftr run"] / t["seed_loop.py"] for t in rows)
    script_ratio = statistics.median(t["compiled"] / t["ftr run"] for t in rows)
    print(
        f"| median | {median['seed_loop.py']:.3f} | {median['ftr run']:.3f} | {median['compiled']:.3f} "
        f"| {run_ratio:.3f} | {script_ratio:.3f} |"
    )
    print(
        f"\nresnet18, 32 px, batch 32, {4 * args.images} train / {4 * max(args.images // 4, 1)} val images, "
        f"{args.epochs} epochs a run (median epoch time of each run), {args.rounds} rounds, CPU, {sys.platform}; "
        "ratios: the median of each round's ratio"
    )


if __name__ == "__main__":
    main()
