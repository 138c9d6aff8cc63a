"""Write the UCI handwritten digits (shipped with scikit-learn) as image folders for the
transfer-learning demo: a source task (digits 0-4, all images) and a target task with
few labels (digits 5-9: --shots images per class to train on, the rest to validate).
With --unlabeled F, that fraction of each target class's images beyond the shots goes
to target/unlabeled/<class>/ instead of val (for pseudo_label: the labels are not
trained on, only used to measure the pseudo-labels' accuracy).

    python recipes/digits/prepare.py [--out data/digits] [--shots 10] [--seed 0] [--unlabeled 0.5]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image
from sklearn.datasets import load_digits


def write(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (image * (255 / 16)).round().astype("uint8")  # the data set's values run 0..16
    Image.fromarray(pixels, mode="L").save(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="data/digits")
    parser.add_argument("--shots", type=int, default=10, help="labelled images per target class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unlabeled", type=float, default=0.0, help="fraction of the non-shot target images")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    digits = load_digits()
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(digits.target):
        by_class.setdefault(int(label), []).append(index)
    rng = random.Random(args.seed)
    for label, indices in sorted(by_class.items()):
        rng.shuffle(indices)
        unlabeled = args.shots + round(args.unlabeled * (len(indices) - args.shots))
        for n, index in enumerate(indices):
            if label < 5:
                folder = out / "source" / str(label)
            else:
                part = "train" if n < args.shots else "unlabeled" if n < unlabeled else "val"
                folder = out / "target" / part / str(label)
            write(digits.images[index], folder / f"{index:04d}.png")
    parts = ("source", "target/train", "target/val") + (("target/unlabeled",) if args.unlabeled else ())
    counts = {part: sum(1 for _ in (out / part).rglob("*.png")) for part in parts}
    print(", ".join(f"{part}: {n} images" for part, n in counts.items()))


if __name__ == "__main__":
    main()
