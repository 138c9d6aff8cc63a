"""`ftr predict` against a plain loop over the same model, preprocessing and batches.

    python bench/predict.py [--run runs/digits-finetune] [--images data/digits] [--rounds 3]

The plain loop is what a user writes by hand: torchvision's resnet18 with the run's
head and weights, the recipe's eval pipeline (PIL RGB -> ToImage -> Resize(32) ->
ToDtype -> Normalize), a DataLoader of batch 32, softmax and the top label, CSV rows.
Two measures, arms taking turns to go first, medians of --rounds (after a warm-up):
- in one process: the prediction loop only (model built, files listed), images/s;
- whole process (`ftr predict RUN IMAGES -o FILE` against `python plain_loop.py`):
  wall time from start to exit, imports and model building included.
Run `make demo` first (or the digits source and finetune recipes) for the run.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLAIN = """
import csv, os, sys
import torch, torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

run, images, out = sys.argv[1:4]
files = sorted(os.path.join(r, n) for r, _, names in os.walk(images) for n in names if n.endswith(".png"))
model = torchvision.models.resnet18()
model.fc = torch.nn.Linear(512, 5)
model.load_state_dict(torch.load(os.path.join(run, "best.pt"), weights_only=True))
model.eval()
pipeline = v2.Compose([v2.ToImage(), v2.Resize(32), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize([0.5] * 3, [0.5] * 3)])
class Files(Dataset):
    def __len__(self): return len(files)
    def __getitem__(self, i): return pipeline(Image.open(files[i]).convert("RGB")), i
classes = sorted(os.listdir(os.path.join("data", "digits", "target", "train")))
with open(out, "w", newline="") as f, torch.inference_mode():
    w = csv.writer(f); w.writerow(["input", "label", "score"])
    for x, index in DataLoader(Files(), batch_size=32):
        score, label = model(x).softmax(1).max(1)
        for i, c, s in zip(index.tolist(), label.tolist(), score.tolist()):
            w.writerow([files[i], classes[c], f"{s:.6g}"])
"""


def plain_loop(model, files: list[str], pipeline, classes: list[str], out) -> None:
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return pipeline(Image.open(files[i]).convert("RGB")), i

    writer = csv.writer(out)
    writer.writerow(["input", "label", "score"])
    with torch.inference_mode():
        for x, index in DataLoader(Files(), batch_size=32):
            score, label = model(x).softmax(1).max(1)
            for i, c, s in zip(index.tolist(), label.tolist(), score.tolist(), strict=True):
                writer.writerow([files[i], classes[c], f"{s:.6g}"])


def in_process(run_folder: str, images: str, rounds: int) -> tuple[list[float], list[float], int]:
    import torch
    import torchvision
    from torchvision.transforms import v2

    from runtime.inputs import image_files
    from runtime.predict import PredictOptions, predict
    from runtime.trained import open_run

    run = open_run(run_folder, "best")
    files = image_files([images]).items
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Linear(512, len(run.classes))
    model.load_state_dict(torch.load(os.path.join(run_folder, "best.pt"), weights_only=True))
    model.eval()
    pipeline = v2.Compose(
        [v2.ToImage(), v2.Resize(32), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    )
    plain, ftr = [], []
    with tempfile.TemporaryDirectory() as tmp:

        def plain_arm():
            with open(os.path.join(tmp, "plain.csv"), "w", newline="") as out:
                plain_loop(model, files, pipeline, run.classes, out)

        def ftr_arm():
            predict(run, [images], PredictOptions(output=os.path.join(tmp, "ftr.csv")))

        plain_arm(), ftr_arm()  # warm-up: files in the page cache, allocator primed
        for round_ in range(rounds):  # the arms take turns going first
            arms = [(plain, plain_arm), (ftr, ftr_arm)]
            for times, arm in arms if round_ % 2 == 0 else arms[::-1]:
                start = time.perf_counter()
                arm()
                times.append(time.perf_counter() - start)
        same = _labels(os.path.join(tmp, "plain.csv")) == _labels(os.path.join(tmp, "ftr.csv"))
    if not same:
        sys.exit("the two arms disagree on the labels: the comparison is void")
    return plain, ftr, len(files)


def _labels(path: str) -> list[tuple[str, str]]:
    with open(path, newline="") as file:
        return [(row["input"], row["label"]) for row in csv.DictReader(file)]


def whole_process(run_folder: str, images: str, rounds: int) -> tuple[list[float], list[float]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain, ftr = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "plain_loop.py"
        script.write_text(PLAIN)
        arms = [
            (plain, [sys.executable, str(script), run_folder, images, f"{tmp}/plain.csv"]),
            (ftr, [sys.executable, "-m", "recipe_lang.cli", "predict", run_folder, images, "-o", f"{tmp}/f.csv"]),
        ]
        for round_ in range(rounds):
            for arm, command in arms if round_ % 2 == 0 else arms[::-1]:
                start = time.perf_counter()
                subprocess.run(command, check=True, env=env, capture_output=True)
                arm.append(time.perf_counter() - start)
    return plain, ftr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/digits-finetune")
    parser.add_argument("--images", default="data/digits")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    plain, ftr, count = in_process(args.run, args.images, args.rounds)
    plain_p, ftr_p = whole_process(args.run, args.images, args.rounds)
    median = statistics.median
    print(f"{count} images of {args.images}, model {args.run}/best.pt, {torch.get_num_threads()} threads, batch 32")
    print("| measure | plain loop | ftr predict | ftr / plain |")
    print("|---|---|---|---|")
    print(
        f"| prediction loop, s (images/s) | {median(plain):.2f} ({count / median(plain):.0f}) "
        f"| {median(ftr):.2f} ({count / median(ftr):.0f}) | {median(ftr) / median(plain):.3f} |"
    )
    print(f"| whole process, s | {median(plain_p):.2f} | {median(ftr_p):.2f} | {median(ftr_p) / median(plain_p):.3f} |")


if __name__ == "__main__":
    main()
