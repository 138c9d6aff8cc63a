"""runtime.data: sources, pipelines, split and loaders, against seed_loop.py's contract."""

import collections
import random
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

import recipe_lang
from recipe_lang import recipe as r
from recipe_lang.resolve import resolve
from runtime.data import (
    BadImage,
    Batch,
    RgbLoader,
    Unreadable,
    collate_skipping,
    datasets,
    loaders,
    pipeline,
    split_indices,
    transforms_of,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED_LOOP = Path(__file__).parent.parent / "recipes" / "seed_loop.ftr"


# --- helpers -------------------------------------------------------------------


def write_png(path: Path, seed: int, size=(40, 30)):
    """A small random RGB png (random so that crops and flips change the tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (3, size[1], size[0]), dtype=torch.uint8, generator=g)
    v2.functional.to_pil_image(pixels).save(path)


def image_folder(root: Path, counts: dict, seed: int = 0) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_png(root / name / f"{i:02d}.png", seed * 1000 + c * 100 + i, size=(36 + i % 5, 30 + c))
    return root


def plan_of(text: str, data: bool = True):
    return resolve(recipe_lang.parse(text), data=data, weights_file=False)


def recipe_text(data_lines: str, classes: int, backbone="resnet18", weights="none", seed=0) -> str:
    return f"""recipe "t"
seed {seed}

model {{
  backbone {backbone}
  weights {weights}
  head linear(classes={classes})
}}

data {{
{data_lines}
}}

train {{
  epochs 1
  lr 0.01
}}
"""


def seed_all(seed: int):
    torch.manual_seed(seed)
    random.seed(seed)


def epochs_of(train_loader, val_loader, epochs=2):
    """What seed_loop's loop reads: every train batch, then every val batch, per epoch."""
    out = []
    for _ in range(epochs):
        out.append([tuple(b) for b in train_loader])
        out.append([tuple(b) for b in val_loader] if val_loader is not None else [])
    return out


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for pass_a, pass_b in zip(a, b, strict=True):
        assert len(pass_a) == len(pass_b)
        for (xa, ya), (xb, yb) in zip(pass_a, pass_b, strict=True):
            assert torch.equal(xa, xb)
            assert torch.equal(ya, yb)


def same_transform(a, b) -> bool:
    """Same class and same settings (torchvision 0.29 keeps interpolation='bilinear' as the string
    it defaults to, and the enum when given one: the same mode)."""

    def public(t):
        out = {k: v for k, v in vars(t).items() if not k.startswith("_") and k != "training"}
        if isinstance(out.get("interpolation"), str):
            out["interpolation"] = InterpolationMode(out["interpolation"])
        return out

    return type(a) is type(b) and public(a) == public(b)


# --- parity with seed_loop.py --------------------------------------------------


@pytest.fixture
def seed_loop_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counts = {"ant": 5, "bee": 4, "cat": 6, "dog": 5}
    image_folder(tmp_path / "data" / "train", counts, seed=1)
    image_folder(tmp_path / "data" / "val", {k: 2 for k in counts}, seed=2)
    return tmp_path


def hand_built_seed_loop(data: Path, seed: int, batch_size: int, size: int = 32):
    """seed_loop.py's data part, line for line."""

    def seed_pipeline(steps):
        return v2.Compose(
            [v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    train_tf = seed_pipeline([v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()])
    eval_tf = seed_pipeline([v2.Resize(size * 256 // 224), v2.CenterCrop(size)])
    train_set = torchvision.datasets.ImageFolder(Path(data, "train"), transform=train_tf)
    val_set = torchvision.datasets.ImageFolder(Path(data, "val"), transform=eval_tf)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size)
    return train_loader, val_loader


@pytest.mark.parametrize("seed", [0, 3])
def test_batches_equal_seed_loop(seed_loop_data, seed):
    text = SEED_LOOP.read_text().replace("batch_size 32", "batch_size 8").replace("seed 0", f"seed {seed}")
    plan = plan_of(text)
    assert plan.seed == seed and plan.data.batch_size == 8
    before = torch.get_rng_state()

    seed_all(seed)
    data = datasets(plan)
    assert data.classes == ["ant", "bee", "cat", "dog"]
    ours = epochs_of(*loaders(plan, data, plan.seed))
    after_ours = torch.get_rng_state()

    seed_all(seed)
    theirs = epochs_of(*hand_built_seed_loop(seed_loop_data / "data", seed, batch_size=8))
    after_theirs = torch.get_rng_state()

    assert [len(p) for p in ours] == [3, 1, 3, 1]
    assert_same_batches(ours, theirs)
    # the global generator was spent the same way (transforms and the val loader's base seed)
    assert torch.equal(after_ours, after_theirs)
    assert not torch.equal(before, after_ours)
    # and the two epochs differ: the augmentation and the shuffle are really random
    assert not torch.equal(ours[0][0][0], ours[2][0][0])


def test_default_transforms_equal_seed_loops(seed_loop_data):
    plan = plan_of(SEED_LOOP.read_text())
    built = transforms_of(plan.preprocess.train) + transforms_of(plan.preprocess.eval)
    expected = [v2.RandomResizedCrop(32), v2.RandomHorizontalFlip(), v2.Resize(36), v2.CenterCrop(32)]
    assert all(same_transform(a, b) for a, b in zip(built, expected, strict=True))
    # they spend the global generator identically
    image = v2.ToImage()(Image.open(next((seed_loop_data / "data" / "train" / "ant").iterdir())).convert("RGB"))
    for a, b in zip(built, expected, strict=True):
        torch.manual_seed(5)
        out_a, state_a = a(image), torch.get_rng_state()
        torch.manual_seed(5)
        out_b, state_b = b(image), torch.get_rng_state()
        assert torch.equal(out_a, out_b) and torch.equal(state_a, state_b)


# --- transforms and pipelines --------------------------------------------------

ALL_TRANSFORMS = (
    "resize(20, interpolation=bicubic), center_crop([16, 12]), "
    "random_resized_crop(24, scale=(0.5, 1.0), ratio=(0.5, 2.0), interpolation=nearest), "
    "hflip(0.3), vflip(p=0.2), rotate(15), color_jitter(brightness=0.2, hue=0.1), grayscale(), "
    "trivial_augment(), rand_augment(3, 7), random_erasing(0.4), resize([10, 14])"
)


def test_every_transform_maps_to_torchvision():
    plan = plan_of(
        recipe_text(f"  train synthetic(classes=2)\n  train_transforms {ALL_TRANSFORMS}", classes=2), data=False
    )
    expected = [
        v2.Resize(20, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop([16, 12]),
        v2.RandomResizedCrop(24, scale=(0.5, 1.0), ratio=(0.5, 2.0), interpolation=InterpolationMode.NEAREST),
        v2.RandomHorizontalFlip(0.3),
        v2.RandomVerticalFlip(0.2),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.2, hue=0.1),
        v2.Grayscale(num_output_channels=3),
        v2.TrivialAugmentWide(),
        v2.RandAugment(num_ops=3, magnitude=7),
        v2.RandomErasing(p=0.4),
        v2.Resize([10, 14], antialias=True),
    ]
    built = transforms_of(plan.preprocess.train)
    for a, b in zip(built, expected, strict=True):
        assert same_transform(a, b), (a, b)
    assert built[-1].size == [10, 14]
    assert transforms_of([r.Grayscale(channels=1)])[0].num_output_channels == 1


def test_default_transform_arguments():
    defaults = transforms_of([r.HFlip(), r.VFlip(), r.RandAugment(), r.RandomErasing(), r.Grayscale()])
    assert [t.p for t in (defaults[0], defaults[1], defaults[3])] == [0.5, 0.5, 0.5]
    assert (defaults[2].num_ops, defaults[2].magnitude) == (2, 9)
    assert defaults[4].num_output_channels == 3


def test_color_jitter_off_draws_nothing():
    image = v2.ToImage()(Image.new("RGB", (8, 8), (10, 200, 30)))
    # torchvision's own ColorJitter() with every option off still draws randperm(4)
    state = torch.get_rng_state()
    v2.ColorJitter()(image)
    assert not torch.equal(state, torch.get_rng_state())

    (off,) = transforms_of([r.ColorJitter()])
    assert isinstance(off, v2.Identity)
    state = torch.get_rng_state()
    assert torch.equal(off(image), image)
    assert torch.equal(state, torch.get_rng_state())

    (on,) = transforms_of([r.ColorJitter(contrast=0.4)])
    assert on.contrast == (0.6, 1.4) and on.brightness is None and on.hue is None


def test_pipeline_order_and_normalize_none():
    steps = [v2.CenterCrop(4)]
    normalized = pipeline(steps, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).transforms
    assert [type(t) for t in normalized] == [v2.ToImage, v2.CenterCrop, v2.ToDtype, v2.Normalize]
    assert normalized[2].dtype == torch.float32 and normalized[2].scale is True
    assert normalized[3].mean == [0.5, 0.5, 0.5] and normalized[3].std == [0.25, 0.25, 0.25]
    plain = pipeline(steps, None, None)
    assert [type(t) for t in plain.transforms] == [v2.ToImage, v2.CenterCrop, v2.ToDtype]
    out = plain(Image.new("RGB", (6, 6), (255, 0, 51)))
    assert out.dtype == torch.float32 and out.shape == (3, 4, 4)
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


def test_random_erasing_works_where_the_recipe_puts_it():
    # first in the recipe, before a resize: the image is already a tensor (ToImage ran), so it erases
    erase_then_resize = pipeline(transforms_of([r.RandomErasing(p=1.0), r.Resize(size=16)]), None, None)
    torch.manual_seed(0)
    out = erase_then_resize(Image.new("RGB", (32, 32), (255, 255, 255)))
    assert out.shape == (3, 16, 16)
    assert (out < 1).any() and out.max() == 1.0
    # erasing before ToDtype gives the tensor erasing after it would give
    image = Image.new("RGB", (20, 20), (200, 100, 50))
    torch.manual_seed(1)
    ours = pipeline(transforms_of([r.RandomErasing(p=1.0)]), IMAGENET_MEAN, IMAGENET_STD)(image)
    torch.manual_seed(1)
    after = v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=1.0),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )(image)
    assert torch.equal(ours, after)


def test_eval_transforms_weights_and_normalize(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = "  train synthetic(classes=2, count=4, size=8)\n  eval_transforms weights"
    plan = plan_of(recipe_text(lines, classes=2, backbone="resnet50", weights="default"))
    data = datasets(plan)
    assert data.val is None
    built = transforms_of(plan.preprocess.eval)
    assert same_transform(built[0], v2.Resize(232, interpolation=InterpolationMode.BILINEAR, antialias=True))
    assert same_transform(built[1], v2.CenterCrop(224))
    steps = data.train.transform.transforms
    assert [type(t) for t in steps] == [v2.ToImage, v2.ToDtype, v2.Normalize]  # no train transforms
    assert steps[-1].mean == list(IMAGENET_MEAN) and steps[-1].std == list(IMAGENET_STD)

    plan = plan_of(recipe_text(lines + "\n  normalize none", classes=2, backbone="resnet50", weights="default"))
    assert plan.preprocess.mean is None
    assert [type(t) for t in datasets(plan).train.transform.transforms] == [v2.ToImage, v2.ToDtype]
    x, _ = datasets(plan).train[0]
    assert x.shape == (3, 8, 8) and x.min() >= 0 and x.max() <= 1


# --- split ---------------------------------------------------------------------


def split_plan(tmp_path, monkeypatch, seed=0, fraction=0.3):
    monkeypatch.chdir(tmp_path)
    if not (tmp_path / "data").exists():
        image_folder(tmp_path / "data", {"a": 10, "b": 6, "c": 4})
    lines = f"""  train imagefolder("data")
  val split({fraction})
  batch_size 4
  train_transforms random_resized_crop(16), hflip()
  eval_transforms resize(18), center_crop(16)"""
    return plan_of(recipe_text(lines, classes=3, seed=seed))


def test_split_is_stratified_disjoint_and_seeded(tmp_path, monkeypatch):
    plan = split_plan(tmp_path, monkeypatch)
    state = torch.get_rng_state()
    data = datasets(plan)
    assert torch.equal(state, torch.get_rng_state())  # building spent nothing of the global generator

    train, val = data.train, data.val
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(20))
    # round(0.3 * n) of each class: 3 of 10, 2 of 6 (1.8), 1 of 4 (1.2)
    assert collections.Counter(val.targets) == {0: 3, 1: 2, 2: 1}
    assert collections.Counter(train.targets) == {0: 7, 1: 4, 2: 3}

    again = datasets(split_plan(tmp_path, monkeypatch))
    assert again.val.indices == val.indices and again.train.indices == train.indices
    other = datasets(split_plan(tmp_path, monkeypatch, seed=1))
    assert other.val.indices != val.indices
    assert collections.Counter(other.val.targets) == {0: 3, 1: 2, 2: 1}


def test_split_val_uses_eval_transforms(tmp_path, monkeypatch):
    data = datasets(split_plan(tmp_path, monkeypatch))
    assert [type(t) for t in data.val.transform.transforms] == [
        v2.ToImage,
        v2.Resize,
        v2.CenterCrop,
        v2.ToDtype,
        v2.Normalize,
    ]
    assert [type(t) for t in data.train.transform.transforms] == [
        v2.ToImage,
        v2.RandomResizedCrop,
        v2.RandomHorizontalFlip,
        v2.ToDtype,
        v2.Normalize,
    ]
    state = torch.get_rng_state()
    first = [data.val[i][0] for i in range(len(data.val))]
    second = [data.val[i][0] for i in range(len(data.val))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(state, torch.get_rng_state())  # the eval pipeline draws nothing
    # the train subset is augmented: the same item differs between two reads
    torch.manual_seed(0)
    assert any(not torch.equal(data.train[i][0], data.train[i][0]) for i in range(5))


def test_split_indices_edges():
    # a class of one stays in train; a class of two gives one to val even when the fraction rounds to 0 or 2
    train, val = split_indices([0, 1, 1, 2, 2], 0.1, seed=0)
    assert 0 in train and len(val) == 2 and {1, 2} & set(val) and {3, 4} & set(val)
    train, val = split_indices([0, 0], 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    assert split_indices(list(range(3)) * 7, 0.25, 4) == split_indices(list(range(3)) * 7, 0.25, 4)


# --- other sources -------------------------------------------------------------


def test_csv_source_with_and_without_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [("x/1.png", "oak"), ("x/2.png", "birch"), ("y/3.png", "oak"), ("y/4.png", "ash")]
    for i, (file, _) in enumerate(rows):
        write_png(tmp_path / "images" / file, i)
    (tmp_path / "labels.csv").write_text("path,species\n" + "".join(f"{f},{s}\n" for f, s in rows))
    (tmp_path / "flat.csv").write_text("file,label\n" + "".join(f"images/{f},{s}\n" for f, s in rows))

    lines = '  train csv("labels.csv", root="images", image="path", label="species")\n  normalize none'
    data = datasets(plan_of(recipe_text(lines, classes=3)))
    assert data.classes == ["ash", "birch", "oak"]
    assert data.train.targets == [2, 1, 2, 0]
    x, y = data.train[3]
    pixels = v2.functional.pil_to_tensor(Image.open(tmp_path / "images" / "y" / "4.png"))
    expected = v2.functional.to_dtype(pixels, torch.float32, scale=True)
    assert y == 0 and torch.equal(x, expected)

    # without root, the paths are relative to the working directory (or to datasets' root)
    data = datasets(plan_of(recipe_text('  train csv("flat.csv")\n  normalize none', classes=3)))
    assert data.classes == ["ash", "birch", "oak"] and torch.equal(data.train[3][0], expected)
    plan = plan_of(recipe_text('  train csv("flat.csv")\n  normalize none', classes=3), data=False)
    monkeypatch.chdir("/")
    assert torch.equal(datasets(plan, root=str(tmp_path)).train[3][0], expected)


def test_synthetic_is_deterministic_and_leaves_the_global_generator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = "  train synthetic(classes=3, count=10, size=12)\n  val synthetic(classes=3, count=4, size=12)"
    plan = plan_of(recipe_text(lines, classes=3, seed=9))
    state = torch.get_rng_state()
    first, second = datasets(plan), datasets(plan)
    items = [first.train[i] for i in range(10)]
    assert torch.equal(state, torch.get_rng_state())  # neither building nor reading drew from it

    assert first.classes == ["0", "1", "2"]
    assert len(first.train) == 10 and len(first.val) == 4
    assert [y for _, y in items] == [i % 3 for i in range(10)]
    assert all(x.shape == (3, 12, 12) for x, _ in items)
    assert all(torch.equal(x, second.train[i][0]) for i, (x, _) in enumerate(items))
    assert not torch.equal(items[0][0], items[1][0])
    assert not torch.equal(first.val[0][0], items[0][0])  # val is another stream of images
    other = datasets(plan_of(recipe_text(lines, classes=3, seed=10)))
    assert not torch.equal(other.train[0][0], items[0][0])


class TinyDataset:
    """Stands in for a torchvision dataset class (root, train=, download=, .classes, .targets)."""

    calls = []

    def __init__(self, root, train=True, transform=None, download=False):
        TinyDataset.calls.append((root, train, download))
        self.classes = ["no", "yes"]
        self.targets = [0, 1, 1] if train else [1, 0]
        self.fill = 40 if train else 200

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return Image.new("RGB", (6, 6), (self.fill, index, 0)), self.targets[index]


def test_torchvision_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "TinyDataset", TinyDataset, raising=False)
    TinyDataset.calls = []
    lines = '  train torchvision("TinyDataset", root="store")\n  val torchvision("TinyDataset", root="store")'
    data = datasets(plan_of(recipe_text(lines, classes=2), data=False))
    assert TinyDataset.calls == [("store", True, False), ("store", False, False)]
    assert data.classes == ["no", "yes"]
    assert (len(data.train), len(data.val)) == (3, 2)
    assert data.train[1][1] == 1 and data.val[1][1] == 0


def test_val_with_other_classes_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    image_folder(tmp_path / "val", {"cat": 1, "fox": 1})
    lines = '  train imagefolder("train")\n  val imagefolder("val")'
    with pytest.raises(ValueError, match="only in train: dog; only in val: fox"):
        datasets(plan_of(recipe_text(lines, classes=2), data=False))


# --- unreadable images ---------------------------------------------------------


def bad_plan(tmp_path, monkeypatch, skip: bool, workers: int = 0):
    monkeypatch.chdir(tmp_path)
    if not (tmp_path / "data").exists():
        image_folder(tmp_path / "data", {"a": 4, "b": 3})
        (tmp_path / "data" / "b" / "broken.png").write_bytes(b"this is not a png")
    lines = f"""  train imagefolder("data")
  batch_size 3
  workers {workers}
  train_transforms random_resized_crop(16)
  skip_bad_images {"true" if skip else "false"}"""
    return plan_of(recipe_text(lines, classes=2))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_names_the_file(tmp_path, monkeypatch, workers):
    plan = bad_plan(tmp_path, monkeypatch, skip=False, workers=workers)
    train, _ = loaders(plan, datasets(plan), seed=0)
    with pytest.raises(BadImage) as info:
        for _ in train:
            pass
    assert info.value.path == str(Path("data", "b", "broken.png"))
    message = str(info.value)
    assert message.startswith(f"cannot read image '{Path('data', 'b', 'broken.png')}' (")
    assert "set skip_bad_images true in data" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_bad_images_drops_and_counts(tmp_path, monkeypatch, workers):
    plan = bad_plan(tmp_path, monkeypatch, skip=True, workers=workers)
    data = datasets(plan)
    train, val = loaders(plan, data, seed=0)
    assert val is None
    for _ in range(2):
        batches = list(train)
        assert sum(len(labels) for _, labels in batches) == 7
        assert all(isinstance(b, Batch) and b[0].shape[1:] == (3, 16, 16) for b in batches)
        assert sum(len(b.skipped) for b in batches) == 1
        assert sorted(sum((labels.tolist() for _, labels in batches), [])) == [0] * 4 + [1] * 3
    assert data.skipped.count == 1  # the same file in both epochs counts once
    assert list(data.skipped.files) == [str(Path("data", "b", "broken.png"))]
    assert str(data.skipped) == "skipped 1 unreadable image"


def test_truncated_image(tmp_path):
    write_png(tmp_path / "whole.png", 0, size=(64, 64))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage) as info:
        RgbLoader()(str(tmp_path / "cut.png"))
    assert info.value.path == str(tmp_path / "cut.png") and "truncated" in info.value.reason
    marked = RgbLoader(mark=True)(str(tmp_path / "cut.png"))
    assert marked == Unreadable(str(tmp_path / "cut.png"), info.value.reason)
    assert RgbLoader()(str(tmp_path / "whole.png")).mode == "RGB"


def test_collate_skipping_all_bad_and_none_bad():
    bad = Unreadable("x.png", "truncated")
    empty = collate_skipping([bad, bad])
    assert empty[0] is None and empty.skipped == (bad, bad)
    batch = collate_skipping([(torch.zeros(3, 2, 2), 1), bad, (torch.ones(3, 2, 2), 0)])
    inputs, labels = batch
    assert inputs.shape == (2, 3, 2, 2) and labels.tolist() == [1, 0] and batch.skipped == (bad,)


def test_bad_image_rebuilt_from_a_workers_message():
    original = BadImage("data/b/it's (odd).png", "image file is truncated (3 bytes not processed)")
    wrapped = (
        "Caught BadImage in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        f'  File "x.py", line 1, in f\nruntime.data.BadImage: {original}\n'
    )
    rebuilt = BadImage(wrapped)
    assert (rebuilt.path, rebuilt.reason) == (original.path, original.reason)
    assert str(rebuilt) == str(original)


# --- workers -------------------------------------------------------------------


def test_workers_batches_repeat_with_the_seed(tmp_path, monkeypatch):
    plan = split_plan(tmp_path, monkeypatch)
    plan = plan.model_copy(update={"data": plan.data.model_copy(update={"workers": 2})})

    def run(seed):
        seed_all(seed)
        return epochs_of(*loaders(plan, datasets(plan), seed=seed))

    first = run(0)
    assert [len(p) for p in first] == [4, 2, 4, 2]
    assert_same_batches(first, run(0))
    different = run(1)
    assert not torch.equal(first[0][0][0], different[0][0][0])
