"""Time per training epoch of `ftr run` on a detection recipe against a plain loop
written like torchvision's detection reference (references/detection/engine.py,
train_one_epoch), on the same digits VOC folder, taking turns.

    python bench/detection_epoch.py [--detector ssdlite320_mobilenet_v3_large]
        [--images 48] [--epochs 3] [--rounds 3] [--threads 2]

Both sides train the detector from scratch on 64 px canvases (SSDlite resizes them
to 320 px itself; Faster R-CNN is given min_size/max_size 64) with SGD (momentum
0.9, weight decay 1e-4, lr 0.01), batch 4, no validation, one process of --threads
threads (OMP_NUM_THREADS). The plain loop spends randomness in ftr's order
(torch.manual_seed and random.seed, the detector built, its new class layers
built, the loader shuffled by its own generator), so the two are the same
computation: the bench prints both train losses, which agree to float rounding.

Prints each round's median seconds per epoch of each side (ftr: metrics.jsonl's
`seconds`, an epoch's training without the checkpoint written after it; plain:
the same span), the ratio ftr / plain, train images per second, and the minor
page faults of each process (glibc's malloc hands large blocks back to the system
and faults them in again; MALLOC_MMAP_THRESHOLD_ in the environment reaches both).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")
SIZE = 64
BATCH = 4
LR = 0.01
SEED = 0


def recipe(detector: str) -> str:
    sizes = "" if detector.startswith("ssd") else f"  min_size {SIZE}\n  max_size {SIZE}\n"
    return f"""\
recipe "bench-detection"
seed {SEED}
task detection

model {{
  backbone {detector}
  weights none
  head detection(classes=5)
{sizes}}}

data {{
  train voc("data", split="train")
  batch_size {BATCH}
}}

train {{
  epochs 3
  optimizer sgd(momentum=0.9, weight_decay=1e-4)
  lr {LR}
}}
"""


# --- the plain loop (run in its own process: `detection_epoch.py plain DATA OUT EPOCHS`) ---


class VocFolder:
    """A VOC split as torchvision's references read one: an RGB image tensor in 0..1 and
    {"boxes": XYXY float (VOC's 1-based, inclusive pixels made 0-based), "labels": 1..N}."""

    def __init__(self, root: Path, split: str):
        self.root = root
        self.ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        self.objects = [self._objects(i) for i in self.ids]
        names = sorted({name for objects in self.objects for name, _ in objects})
        self.label = {name: n for n, name in enumerate(names, 1)}

    def _objects(self, image_id: str) -> list:
        tree = ET.parse(self.root / "Annotations" / f"{image_id}.xml")
        out = []
        for obj in tree.iter("object"):
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (float(box.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax"))
            out.append((obj.find("name").text, (x1 - 1, y1 - 1, x2, y2)))
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        with Image.open(self.root / "JPEGImages" / f"{self.ids[index]}.png") as image:
            tensor = F.to_dtype(F.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
        objects = self.objects[index]
        target = {
            "boxes": torch.tensor([box for _, box in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.label[name] for name, _ in objects], dtype=torch.int64),
        }
        return tensor, target


def collate_fn(batch):
    return tuple(zip(*batch, strict=True))  # the reference's utils.collate_fn (every item is a pair)


def detector_for(name: str, classes: int):
    """torchvision's detector, with new class layers for `classes` foreground classes put
    in as torchvision's fine-tuning tutorials do (Faster R-CNN: a FastRCNNPredictor;
    SSDlite: an SSDLiteClassificationHead on the backbone's channels)."""
    from functools import partial

    import torch
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    if name.startswith("ssdlite"):
        from torchvision.models.detection import _utils as det_utils
        from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

        model = builder(weights=None, weights_backbone=None)
        channels = det_utils.retrieve_out_channels(model.backbone, (320, 320))
        anchors = model.anchor_generator.num_anchors_per_location()
        norm = partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03)
        model.head.classification_head = SSDLiteClassificationHead(channels, anchors, classes + 1, norm)
        return model
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    model = builder(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE)
    features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(features, classes + 1)
    return model


def plain(detector: str, data: Path, out: Path, epochs: int) -> None:
    import torch

    torch.manual_seed(SEED)
    random.seed(SEED)
    dataset = VocFolder(data, "train")
    model = detector_for(detector, len(dataset.label))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(SEED), collate_fn=collate_fn
    )
    rows = []
    for epoch in range(1, epochs + 1):
        began = time.perf_counter()
        # references/detection/engine.py, train_one_epoch (no warmup, no scaler, no logger)
        model.train()
        total, seen = 0.0, 0
        for images, targets in loader:
            loss_dict = model(list(images), list(targets))
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            total += losses.item() * len(images)
            seen += len(images)
        rows.append({"epoch": epoch, "train_loss": total / seen, "seconds": time.perf_counter() - began})
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


# --- the bench -----------------------------------------------------------------


def run(command: list[str], cwd: Path, threads: int, metrics: Path) -> tuple[list[dict], int]:
    """The run's metrics.jsonl rows, and the minor page faults of its whole process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    return [json.loads(line) for line in metrics.read_text().splitlines()], faults


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plain"]:
        return plain(argv[1], Path(argv[2]), Path(argv[3]), int(argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0])
    parser.add_argument("--images", type=int, default=48, help="train canvases (64 px, 1-3 digits each)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "recipes" / "detection"))
    import make_digits_voc

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_digits_voc.make(work / "data", images=args.images, size=SIZE, val=0)
        (work / "bench.ftr").write_text(recipe(args.detector))
        plain_loop = [py, str(Path(__file__).resolve()), "plain", args.detector, "data", "plain", str(args.epochs)]
        runs = {
            "plain": (plain_loop, "plain"),
            "ftr run": (
                [py, "-m", "recipe_lang.cli", "run", "bench.ftr", "--out", "ftr", "--overwrite", "--quiet"]
                + ["--device", "cpu", "--set", f"train.epochs={args.epochs}"],
                "ftr",
            ),
        }
        names = list(runs)
        rounds = []
        for round_ in range(args.rounds):
            result, faults = {}, {}
            for name in names[round_ % 2 :] + names[: round_ % 2]:  # each round starts with the other
                command, out = runs[name]
                result[name], faults[name] = run(command, work, args.threads, work / out / "metrics.jsonl")
            rounds.append((result, faults))
    print(
        "| round | plain s/epoch | ftr run s/epoch | ftr / plain | plain images/s | ftr images/s "
        "| plain page faults | ftr page faults |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    medians = []
    for i, (result, faults) in enumerate(rounds, 1):
        plain_s = statistics.median(row["seconds"] for row in result["plain"])
        ftr_s = statistics.median(row["seconds"] for row in result["ftr run"])
        medians.append((plain_s, ftr_s))
        print(
            f"| {i} | {plain_s:.2f} | {ftr_s:.2f} | {ftr_s / plain_s:.3f} "
            f"| {args.images / plain_s:.1f} | {args.images / ftr_s:.1f} "
            f"| {faults['plain'] / 1e3:.0f}k | {faults['ftr run'] / 1e3:.0f}k |"
        )
    plain_m = statistics.median(p for p, _ in medians)
    ftr_m = statistics.median(f for _, f in medians)
    ratio = statistics.median(f / p for p, f in medians)
    print(
        f"| median | {plain_m:.2f} | {ftr_m:.2f} | {ratio:.3f} | {args.images / plain_m:.1f} "
        f"| {args.images / ftr_m:.1f} | | |"
    )
    last = rounds[-1][0]
    losses = [
        (row["epoch"], row["train_loss"], other["train_loss"])
        for row, other in zip(last["plain"], last["ftr run"], strict=True)
    ]
    worst = max(abs(a - b) / abs(a) for _, a, b in losses)
    print(
        f"\n{args.detector} from scratch, {SIZE} px canvases, batch {BATCH}, SGD, {args.images} train images, "
        f"{args.epochs} epochs a run (median epoch of each run), {args.rounds} rounds, "
        f"{args.threads} thread(s), CPU; ratio: the median of each round's ratio; page faults: "
        "minor faults of each whole process (imports and checkpoints included)"
    )
    print(
        "train_loss per epoch (plain, ftr): "
        + ", ".join(f"{e}: {a:.6f} {b:.6f}" for e, a, b in losses)
        + f"; largest relative difference {worst:.1e}"
    )


if __name__ == "__main__":
    main()
