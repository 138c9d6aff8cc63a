"""A linear probe with and without the feature cache, in the same session.

    python bench/cache.py [--images 128] [--size 96] [--epochs 10]

resnet18 (no pretrained weights: the cost is the same), its head trained on a
frozen backbone with fixed transforms (resize only), 4 classes of generated
images. Runs `ftr run` with the cache and with `--set train.cache=false`, and the
compiled script both ways, and prints a table: the training time (summary.json's
`seconds`: from the first epoch to the last, features included), the whole
process's wall time, and the largest relative difference of any logged number
between the cached and the uncached run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import make_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """recipe "probe"
seed 0
model {{
  backbone resnet18
  head linear(classes=4)
}}
data {{
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 32
  train_transforms resize({size})
  eval_transforms resize({size})
}}
train {{
  epochs {epochs}
  optimizer sgd(momentum=0.9)
  lr 0.01
  schedule cosine
  freeze all except head
}}
evaluate {{
  metrics loss, accuracy
}}
"""


def timed(command: list[str], cwd: Path, out: str) -> tuple[float, float, list[dict]]:
    began = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - began
    summary = json.loads((cwd / out / "summary.json").read_text())
    rows = [json.loads(line) for line in (cwd / out / "metrics.jsonl").read_text().splitlines()]
    return summary["seconds"], wall, rows


def difference(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        for key in x:
            if key != "seconds":
                worst = max(worst, abs(x[key] - y[key]) / max(abs(y[key]), 1e-12))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=128, help="train images per class (4 classes)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work, args.images, size=args.size)
        (work / "probe.ftr").write_text(RECIPE.format(size=args.size, epochs=args.epochs))
        ftr = [py, "-m", "recipe_lang.cli"]
        for name, extra in (("cached.py", []), ("uncached.py", ["--set", "train.cache=false"])):
            compile_ = ftr + ["compile", "probe.ftr", "-o", name, *extra]
            subprocess.run(compile_, cwd=work, check=True, capture_output=True)
        run = ftr + ["run", "probe.ftr", "--quiet", "--device", args.device, "--overwrite", "--out"]
        script = ["--quiet", "--device", args.device, "--overwrite", "--out"]
        results = {
            "ftr run, cache": timed(run + ["a"], work, "a"),
            "ftr run, cache false": timed(run + ["b", "--set", "train.cache=false"], work, "b"),
            "compiled, cache": timed([py, "cached.py", *script, "c"], work, "c"),
            "compiled, cache false": timed([py, "uncached.py", *script, "d"], work, "d"),
        }
    print("| run | training s | process wall s | speed-up (training) | largest relative difference |")
    print("| --- | ---: | ---: | ---: | ---: |")
    pairs = {"ftr run, cache": "ftr run, cache false", "compiled, cache": "compiled, cache false"}
    for name, (seconds, wall, rows) in results.items():
        base = pairs.get(name)
        speedup = f"{results[base][0] / seconds:.1f}x" if base else ""
        diff = f"{difference(rows, results[base][2]):.1e}" if base else ""
        print(f"| {name} | {seconds:.2f} | {wall:.2f} | {speedup} | {diff} |")
    print(
        f"\nresnet18 linear probe, {args.size} px, {4 * args.images} train / {4 * max(args.images // 4, 1)} val "
        f"images, batch 32, {args.epochs} epochs, {args.device}, {sys.platform}"
    )


if __name__ == "__main__":
    main()
