"""Write a small detection data set as a Pascal VOC folder, offline: the UCI handwritten
digits (8x8, shipped with scikit-learn) pasted onto noisy canvases, a few a canvas, each
enlarged 2, 3 or 4 times, never overlapping. Classes are named d0..d9, so their sorted
order is the digits' order.

    python recipes/detection/make_digits_voc.py [--out data/digits_voc] [--digits 0-4]
        [--images 200] [--size 96] [--seed 0] [--val 0.25]

writes OUT/JPEGImages/NNNNNN.png, OUT/Annotations/NNNNNN.xml and
OUT/ImageSets/Main/{train,val,trainval}.txt. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

PLACEMENT_TRIES = 30


def digit_range(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '1,3,7' -> [1, 3, 7]."""
    digits = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        digits.update(range(int(low), int(high or low) + 1))
    if not digits or not digits <= set(range(10)):
        raise ValueError(f"digits must lie in 0-9, got '{text}'")
    return sorted(digits)


def _glyphs(digits: list[int]) -> dict[int, list[np.ndarray]]:
    """The data set's images of each digit, as 0..255 arrays cropped to their ink.

    Values below 4 (of 16) are the strokes' faint fringe, lost in the canvas's
    noise: they are left out, so that a box's edges touch visible ink."""
    data = load_digits()
    out: dict[int, list[np.ndarray]] = {d: [] for d in digits}
    for image, label in zip(data.images, data.target, strict=True):
        if int(label) in out:
            pixels = np.where(image >= 4, image * (255 / 16), 0)
            rows, cols = np.nonzero(pixels)
            out[int(label)].append(pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    return out


def _free(box, placed) -> bool:
    x1, y1, x2, y2 = box
    return all(x2 <= a1 or a2 <= x1 or y2 <= b1 or b2 <= y1 for a1, b1, a2, b2 in placed)


def canvas(rng: random.Random, glyphs, first: int, size: int, count: int):
    """(H x W uint8 image, [(digit, (x1, y1, x2, y2)) in 0-based pixel spans])."""
    noise = np.random.default_rng(rng.getrandbits(32))
    pixels = noise.integers(0, 48, (size, size)).astype(np.float64)
    objects = []
    for n in range(count):
        digit = first if n == 0 else rng.choice(list(glyphs))
        glyph = rng.choice(glyphs[digit])
        scale = rng.randint(2, 4)
        big = np.kron(glyph, np.ones((scale, scale)))
        h, w = big.shape
        for _ in range(PLACEMENT_TRIES):
            x, y = rng.randrange(size - w + 1), rng.randrange(size - h + 1)
            if _free((x, y, x + w, y + h), [box for _, box in objects]):
                pixels[y : y + h, x : x + w] = np.maximum(pixels[y : y + h, x : x + w], big)
                objects.append((digit, (x, y, x + w, y + h)))
                break
    return pixels.round().astype(np.uint8), objects


def annotation_xml(name: str, size: int, objects) -> str:
    """A VOC annotation; VOC counts pixels from 1 and includes both ends."""
    parts = [
        "<annotation>",
        f"  <filename>{escape(name)}</filename>",
        f"  <size><width>{size}</width><height>{size}</height><depth>3</depth></size>",
    ]
    for digit, (x1, y1, x2, y2) in objects:
        parts += [
            "  <object>",
            f"    <name>d{digit}</name>",
            "    <difficult>0</difficult>",
            f"    <bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
            "  </object>",
        ]
    return "\n".join(parts + ["</annotation>", ""])


def make(
    out,
    digits: list[int] = (0, 1, 2, 3, 4),
    images: int = 200,
    size: int = 96,
    seed: int = 0,
    val: float = 0.25,
    max_per_image: int = 3,
) -> dict[str, list[str]]:
    """Write the VOC folder `out` (replacing it); returns {split: image ids}.

    Canvas i's first digit is digits[i % len(digits)], so every run of
    len(digits) images, and so every split that long, holds every class. The
    last round(val * images) canvases are the val split."""
    if size < 32:
        raise ValueError(f"size must be at least 32 (a digit enlarged 4 times), got {size}")
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / folder).mkdir(parents=True)
    rng = random.Random(seed)
    glyphs = _glyphs(list(digits))
    ids = []
    for i in range(images):
        pixels, objects = canvas(rng, glyphs, digits[i % len(digits)], size, rng.randint(1, max_per_image))
        image_id = f"{i:06d}"
        # grayscale PNGs, quickly compressed: the loader converts them to RGB
        Image.fromarray(pixels, mode="L").save(out / "JPEGImages" / f"{image_id}.png", compress_level=1)
        (out / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(f"{image_id}.png", size, objects))
        ids.append(image_id)
    held = round(val * images)
    splits = {"train": ids[: images - held], "val": ids[images - held :], "trainval": ids}
    for split, members in splits.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{m}\n" for m in members))
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/digits_voc")
    parser.add_argument("--digits", default="0-4", type=digit_range, help="digit classes, e.g. 0-4 or 1,3,7")
    parser.add_argument("--images", type=int, default=200, help="canvases in all")
    parser.add_argument("--size", type=int, default=96, help="canvas side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=float, default=0.25, help="fraction of the canvases in the val split")
    parser.add_argument("--max-per-image", type=int, default=3, help="digits on a canvas: 1 to this")
    args = parser.parse_args(argv)
    splits = make(args.out, args.digits, args.images, args.size, args.seed, args.val, args.max_per_image)
    print(", ".join(f"{split}: {len(ids)}" for split, ids in splits.items()), f"images in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
