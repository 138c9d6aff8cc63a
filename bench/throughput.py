"""Training throughput (images/s) of `ftr run` in each speed setting, against a plain
PyTorch loop over the same data, in the same session.

    python bench/throughput.py [--device cpu] [--backbone resnet18] [--size 64]
                               [--images 512] [--batch 32] [--epochs 3] [--workers 0]
                               [--settings fp32,bf16,channels_last,compile]

Every run fine-tunes the whole backbone with a new linear head on synthetic
images (`synthetic(classes=10, count=images, size=size)`), no validation. A
setting is fp32, bf16 or fp16 (precision), channels_last or compile (each on top
of fp32). The plain loop is torch alone: the same dataset class and image
pipeline, DataLoader, model, SGD step. images/s is the number of images over the
median time of an epoch after the first (the first holds compilation and warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.data import SyntheticImages, Transformed, pipeline  # noqa: E402

RECIPE = """recipe "throughput"
seed 0
model {{
  backbone {backbone}
  head linear(classes=10)
}}
data {{
  train synthetic(classes=10, count={images}, size={size})
  batch_size {batch}
  workers {workers}
}}
train {{
  epochs {epochs}
  optimizer sgd(momentum=0.9)
  lr 0.01
}}
"""

SETTINGS = {
    "fp32": [],
    "bf16": ["--set", "train.precision=bf16"],
    "fp16": ["--set", "train.precision=fp16"],
    "channels_last": ["--set", "train.channels_last=true"],
    "compile": ["--set", "train.compile=true"],
}


def ftr_run(work: Path, setting: str, device: str) -> list[float]:
    out = work / setting
    command = [sys.executable, "-m", "recipe_lang.cli", "run", "r.ftr", "--out", str(out), "--overwrite"]
    done = subprocess.run(command + ["--quiet", "--device", device, *SETTINGS[setting]], cwd=work, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{setting}: {done.stderr.decode()[-2000:]}")
    return [json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def plain_loop(args) -> list[float]:
    """The same work written as a plain PyTorch loop (fp32)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    dataset = Transformed(SyntheticImages(10, args.images, args.size, 0), pipeline([], mean, std))
    options = {"num_workers": args.workers} if args.workers else {}
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, pin_memory=device.type == "cuda", **options)
    model = torchvision.models.get_model(args.backbone)
    model.fc = nn.Linear(model.fc.in_features, 10) if hasattr(model, "fc") else model.fc
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(args.epochs):
        began = time.perf_counter()
        for inputs, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(inputs.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--settings", default="fp32,bf16,channels_last,compile")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recipe = RECIPE.format(
            **{k: getattr(args, k) for k in ("backbone", "images", "size", "batch", "epochs")}, workers=args.workers
        )
        (work / "r.ftr").write_text(recipe)
        rows["plain PyTorch loop, fp32"] = plain_loop(args)
        for setting in args.settings.split(","):
            rows[f"ftr run, {setting}"] = ftr_run(work, setting, args.device)
    base = args.images / statistics.median(rows["ftr run, fp32"][1:] or rows["ftr run, fp32"])
    print("| run | images/s | × ftr run fp32 | first epoch s |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows.items():
        rate = args.images / statistics.median(seconds[1:] or seconds)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {seconds[0]:.1f} |")
    where = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\n{args.backbone}, {args.size} px synthetic images, {args.images} an epoch, batch {args.batch}, "
        f"{args.workers} workers, {args.epochs} epochs, whole model trained; {where}; torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
