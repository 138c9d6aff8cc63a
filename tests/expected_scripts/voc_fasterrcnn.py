#!/usr/bin/env python3
# voc-fasterrcnn: compiled by ftr 0.1.0 from tests/fixtures/good/voc_fasterrcnn.ftr
# recipe sha256 c831fb42c383ac21c98cf410de7fa7cbb5aba434da68f6e2a818f690045996ce
#
# The recipe:
#
#     # The detection example of language-tasks.md: a COCO-trained Faster R-CNN moved to Pascal VOC's 20 classes.
#     recipe "voc-fasterrcnn"
#     task detection
#
#     model {
#       backbone fasterrcnn_resnet50_fpn  # any builder of torchvision.models.detection
#       weights default                   # COCO weights; or "COCO_V1", none, file(...)
#       head detection(classes=20)        # foreground classes; ftr adds the background slot
#       min_size 480
#       max_size 640
#     }
#
#     data {
#       train voc("data/VOC2007", split="trainval")
#       val voc("data/VOC2007", split="test")
#       batch_size 4
#       train_transforms hflip()
#     }
#
#     groups {
#       body = backbone.body
#     }
#
#     train {
#       epochs 12
#       optimizer sgd(momentum=0.9, weight_decay=1e-4)
#       lr 0.01, body=0.001
#       freeze backbone.body
#       at epoch 4 unfreeze backbone.body.layer4
#     }
#
#     evaluate {
#       metrics loss, map, map50
#       best map
#     }
#
# The plan (ftr plan): what trains in each span of epochs, and how fast.
#
#     voc-fasterrcnn: fasterrcnn_resnet50_fpn with FasterRCNN_ResNet50_FPN_Weights.COCO_V1 weights, 41.40M parameters
#     head: new class layers for 20 classes and the background, replace roi_heads.box_predictor
#     optimizer: sgd(momentum=0.9, weight_decay=0.0001), schedule: constant, 12 epochs, batchnorm in frozen parts: eval
#
#     group  covers                              params   rate
#     head   roi_heads.box_predictor (new head)  107.62K  0.01
#     body   backbone.body                       23.45M   0.001
#     rest   everything else                     17.83M   0.01
#
#     epochs  trains                   trainable       rates at start                    frozen BatchNorm  changes
#     1-3     head, rest               17.94M (43.3%)  head 0.01, rest 0.01              -
#     4-12    head, body (part), rest  32.88M (79.4%)  head 0.01, body 0.001, rest 0.01  -                 +backbone.body.layer4
#     feature cache: none; a detector trains on whole images and their boxes, never on cached features
"""A fine-tuning script compiled by ftr: it needs only torch, torchvision and pycocotools.

Run it from the folder the recipe's paths are relative to (or give --root):

    python SCRIPT [--out DIR] [--root DIR] [--train PATH] [--val PATH]
                  [--epochs N] [--device DEVICE] [--resume] [--overwrite] [--quiet]
                  [--logger tensorboard]

It writes the run folder `ftr run` writes (recipe.ftr, metrics.jsonl,
per_class.jsonl, classes.json, model.pt, best.pt, checkpoint.pt and the one
before it, checkpoint.previous.pt, summary.json), with the same numbers for the
same recipe, data and seed. --resume continues an interrupted run from its last
finished epoch, or from the one before when the last checkpoint is damaged.
"""

import argparse
import contextlib
import errno
import io
import json
import math
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from torchvision import tv_tensors
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms import v2

# --- the plan: every decision of the recipe, resolved by ftr ------------------

NAME = "voc-fasterrcnn"
FTR_VERSION = "0.1.0"
PLAN_DIGEST = "a191a06bd19eaf8f"  # a checkpoint of another plan is refused
SEED = 0
EPOCHS = 12
OUTPUT = "runs/voc-fasterrcnn"

# Data. Paths are relative to the working directory, or to --root.
TRAIN_DATA = {
    "kind": "voc",
    "path": "data/VOC2007",
    "split": "trainval",
    "classes": None,
}
VAL_DATA = {"kind": "voc", "path": "data/VOC2007", "split": "test", "classes": None}
BATCH_SIZE = 4
EVAL_BATCH_SIZE = 4
WORKERS = 0
SKIP_BAD_IMAGES = False

# Images: decoded to RGB, then ToImage, these transforms in this order (the boxes
# follow them), ToDtype(float32, scale=True); then boxes are clamped to the image
# and those left empty dropped. No normalisation: the detector normalises (and
# resizes) its inputs itself.
TRAIN_TRANSFORMS = [
    v2.RandomHorizontalFlip(),
]
EVAL_TRANSFORMS = []

# The model: torchvision's fasterrcnn_resnet50_fpn, 41396536 parameter values once built.
CLASSIFIER = "roi_heads.box_predictor"  # the module the new head replaces
PARAMETERS = 41396536

# Groups: each part of the model, its base rate (None: it never trains) and the
# parameters it covers. A name covers the parameter or module of that name and
# everything under it: "layer4" covers "layer4.0.conv1.weight".
GROUPS = {
    "head": {"lr": 0.01, "params": ["roi_heads.box_predictor"]},
    "body": {"lr": 0.001, "params": ["backbone.body"]},
    "rest": {"lr": 0.01, "params": ["backbone.fpn", "rpn", "roi_heads.box_head"]},
}

# The optimizer's parameter groups, fixed at step 0: a recipe group split by
# weight decay and by thaw warmup ([epoch, epochs]: the rate ramps up from 0).
OPTIMIZER_GROUPS = [
    {
        "group": "head",
        "params": ["roi_heads.box_predictor"],
        "weight_decay": 0.0001,
        "warmups": [],
    },
    {
        "group": "body",
        "params": ["backbone.body"],
        "weight_decay": 0.0001,
        "warmups": [],
    },
    {
        "group": "rest",
        "params": ["backbone.fpn", "rpn", "roi_heads.box_head"],
        "weight_decay": 0.0001,
        "warmups": [],
    },
]

# Spans of epochs: what trains, and which BatchNorm layers stay in eval mode.
PHASES = [
    {
        "first": 1,
        "last": 3,
        "trainable": ["backbone.fpn", "rpn", "roi_heads"],
        "batchnorm_eval": [],
    },
    {
        "first": 4,
        "last": 12,
        "trainable": ["backbone.body.layer4", "backbone.fpn", "rpn", "roi_heads"],
        "batchnorm_eval": [],
    },
]

# lr/<group> in metrics.jsonl: the rate of this optimizer group.
REPORTED_RATES = {"head": 0, "body": 1, "rest": 2}

LABEL_SHIFT = 0  # softmax scores with the background at 0: labels 1..N as they are
CLIP_GRAD_NORM = None
ACCUMULATE = 1  # batches per optimizer step
PRECISION = "fp32"

# Evaluation: val_<metric> for each metric, every EVALUATE_EVERY epochs and at the end.
METRICS = ["loss", "map", "map50"]
EVALUATE_EVERY = 1
BEST = "map"  # the metric whose best epoch is kept in best.pt
EARLY_STOP = None

# recipe.ftr, as the run folder keeps it.
RECIPE_LINES = [
    "# The detection example of language-tasks.md: a COCO-trained Faster R-CNN moved to Pascal VOC's 20 classes.\n",
    'recipe "voc-fasterrcnn"\n',
    "task detection\n",
    "\n",
    "model {\n",
    "  backbone fasterrcnn_resnet50_fpn  # any builder of torchvision.models.detection\n",
    '  weights default                   # COCO weights; or "COCO_V1", none, file(...)\n',
    "  head detection(classes=20)        # foreground classes; ftr adds the background slot\n",
    "  min_size 480\n",
    "  max_size 640\n",
    "}\n",
    "\n",
    "data {\n",
    '  train voc("data/VOC2007", split="trainval")\n',
    '  val voc("data/VOC2007", split="test")\n',
    "  batch_size 4\n",
    "  train_transforms hflip()\n",
    "}\n",
    "\n",
    "groups {\n",
    "  body = backbone.body\n",
    "}\n",
    "\n",
    "train {\n",
    "  epochs 12\n",
    "  optimizer sgd(momentum=0.9, weight_decay=1e-4)\n",
    "  lr 0.01, body=0.001\n",
    "  freeze backbone.body\n",
    "  at epoch 4 unfreeze backbone.body.layer4\n",
    "}\n",
    "\n",
    "evaluate {\n",
    "  metrics loss, map, map50\n",
    "  best map\n",
    "}\n",
]


# --- data ---------------------------------------------------------------------


class RunError(Exception):
    """A run that cannot start or go on: printed as a message, never a traceback."""


class Unreadable:
    """Stands in for an image that cannot be read, so the batch can skip or name it."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason


UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def load_rgb(path):
    """An image file as RGB PIL, or an Unreadable in its place."""
    try:
        with open(path, "rb") as file:
            return Image.open(file).convert("RGB")  # a truncated file fails here
    except UNREADABLE as error:
        if isinstance(error, UnidentifiedImageError):
            reason = "not an image format PIL can read"
        else:
            reason = " ".join((str(error) or type(error).__name__).split())
        return Unreadable(str(path), reason)


def at(root, path):
    return path if root in ("", ".") else os.path.join(root, path)


def make_target(boxes, labels, flag, flags, image_id, canvas_size):
    """An image's target: boxes (XYXY on a canvas of (H, W)), labels 1..N (0 is the
    detector's background), a bool per box (VOC's difficult, COCO's crowd: evaluation
    ignores such a box) and the image's id."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas_size)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        flag: torch.tensor(flags, dtype=torch.bool),
        "image_id": image_id,
    }


def canvas(image, fallback):
    """(H, W) of a decoded image; the annotation's size for an unreadable one."""
    return fallback if isinstance(image, Unreadable) else (image.height, image.width)


def folder_needed(what, path):
    if not os.path.exists(path):
        raise RunError(f"{what} '{path}' does not exist")
    if not os.path.isdir(path):
        raise RunError(f"{what} '{path}' is a file")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def voc_number(element, tag, where):
    child = element.find(tag)
    if child is None or child.text is None:
        raise RunError(f"{where} has no <{tag}>")
    text = child.text.strip()
    try:
        value = float(child.text)
    except ValueError:
        raise RunError(f"{where}: <{tag}> is '{text}', not a number") from None
    if not math.isfinite(value):
        raise RunError(f"{where}: <{tag}> is '{text}', not a finite number")
    return value


def voc_object(element, where):
    """(name, box, difficult) of an <object>. VOC counts pixels from 1, both ends
    included: columns xmin..xmax are [xmin - 1, xmax) in 0-based coordinates."""
    name = (element.findtext("name") or "").strip()
    if not name:
        raise RunError(f"{where} has no <name>")
    box = element.find("bndbox")
    if box is None:
        raise RunError(f"{where} has no <bndbox>")
    tags = ("xmin", "ymin", "xmax", "ymax")
    x1, y1, x2, y2 = (voc_number(box, tag, where) for tag in tags)
    difficult = element.find("difficult")
    if difficult is None or not (difficult.text or "").strip():
        flag = 0.0
    else:
        flag = voc_number(element, "difficult", where)
    return name, (x1 - 1, y1 - 1, x2, y2), bool(flag)


def voc_image(root, image_id, tree, split_file):
    """JPEGImages/<the annotation's filename>, else JPEGImages/<id>.jpg, .png, ..."""
    folder = os.path.join(root, "JPEGImages")
    named = (tree.findtext("filename") or "").strip()
    candidates = ([named] if named else []) + [image_id + s for s in IMAGE_SUFFIXES]
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    first = os.path.join(folder, candidates[0])
    raise RunError(f"image '{first}' of '{image_id}' in '{split_file}' does not exist")


def voc_size(tree):
    """(H, W) from <size>; (0, 0) when it is missing (only an unreadable image uses it)."""
    try:
        height = int(float(tree.findtext("size/height")))
        return height, int(float(tree.findtext("size/width")))
    except (TypeError, ValueError):
        return 0, 0


class VocImages(Dataset):
    """A Pascal VOC split, every annotation read up front; label = index in
    `classes` + 1. Classes: the split's names, sorted, unless the recipe names them."""

    def __init__(self, root, split, classes):
        folder_needed("VOC folder", root)
        for part in ("Annotations", "JPEGImages"):
            if not os.path.isdir(os.path.join(root, part)):
                raise RunError(f"VOC folder '{root}' has no {part} folder")
        split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(split_file):
            raise RunError(f"VOC split file '{split_file}' does not exist")
        with open(split_file, encoding="utf-8") as file:
            ids = [line.split()[0] for line in file if line.strip()]
        if not ids:
            raise RunError(f"VOC split file '{split_file}' lists no images")
        self.records = []  # (image path, annotation path, (H, W), objects)
        for image_id in ids:
            annotation = os.path.join(root, "Annotations", f"{image_id}.xml")
            if not os.path.isfile(annotation):
                raise RunError(
                    f"annotation '{annotation}' of '{image_id}' in '{split_file}' does not exist"
                )
            try:
                tree = ET.parse(annotation).getroot()
            except ET.ParseError as error:
                what = f"annotation '{annotation}' is not valid XML"
                raise RunError(f"{what} ({error})") from None
            image = voc_image(root, image_id, tree, split_file)
            objects = [
                voc_object(element, f"'{annotation}': object[{n}]")
                for n, element in enumerate(tree.findall("object"), start=1)
            ]
            self.records.append((image, annotation, voc_size(tree), objects))
        if classes is None:
            names = {name for *_, objects in self.records for name, _, _ in objects}
            classes = sorted(names)
        self.classes = list(classes)
        index = {name: i + 1 for i, name in enumerate(self.classes)}
        self.labels = []
        for _, annotation, _, objects in self.records:
            for n, (name, _, _) in enumerate(objects, start=1):
                if name not in index:
                    raise RunError(
                        f"'{annotation}': object[{n}] is a '{name}', which is not one "
                        "of the classes"
                    )
            self.labels.append([index[name] for name, _, _ in objects])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        path, _, size, objects = self.records[index]
        image = load_rgb(path)
        boxes = [box for _, box, _ in objects]
        difficult = [flag for _, _, flag in objects]
        labels = self.labels[index]
        size = canvas(image, size)
        return image, make_target(boxes, labels, "difficult", difficult, index, size)


FLAGGED = ("labels", "difficult", "crowd")  # what goes with each box


def boxes_and_their_rows(inputs):
    """SanitizeBoundingBoxes's labels_getter: the labels and the flags, so that a box
    dropped takes its label and flag with it."""
    target = inputs[1]
    return tuple(target[key] for key in FLAGGED if key in target)


def pipeline(transforms, train):
    """ToImage, the transforms (boxes follow), ToDtype, boxes clamped to the image,
    empty boxes dropped with their labels and flags, plain tensors. No Normalize: the detector normalises itself."""
    steps = [
        v2.ToImage(),
        *transforms,
        v2.ToDtype(torch.float32, scale=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(labels_getter=boxes_and_their_rows),
    ]
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


class Transformed(Dataset):
    """A detection dataset (or the items `indices` of it) with a pipeline applied to
    (image, target); an unreadable image is passed on alone."""

    def __init__(self, base, transform, indices=None):
        self.base = base
        self.transform = transform
        self.indices = indices

    def __len__(self):
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, index):
        if self.indices is not None:
            index = self.indices[index]
        image, target = self.base[index]
        if isinstance(image, Unreadable):
            return image
        return self.transform(image, target)


def source(spec, root):
    """A detection dataset (items: PIL image, target) with its class names."""
    if spec["kind"] == "voc":
        return VocImages(at(root, spec["path"]), spec["split"], spec["classes"])
    raise RunError(f"unknown data source {spec['kind']}")


def moved(spec, path):
    """A data source read from `path` (given on the command line) instead: a VOC
    folder, or a COCO annotation file (its images stay where the recipe says)."""
    return {**spec, "path": os.path.abspath(path)}


def datasets(root, train_path=None, val_path=None):
    """The train and val datasets with their pipelines, and the class names."""
    train_data = moved(TRAIN_DATA, train_path) if train_path else TRAIN_DATA
    train_transform = pipeline(TRAIN_TRANSFORMS, train=True)
    base = source(train_data, root)
    classes = list(base.classes)
    eval_transform = pipeline(EVAL_TRANSFORMS, train=False)
    val_data = moved(VAL_DATA, val_path) if val_path else VAL_DATA
    val_base = source(val_data, root)
    val_classes = list(val_base.classes)
    if val_classes != classes:
        raise RunError(f"val has other classes than train: {val_classes} != {classes}")
    val_set = Transformed(val_base, eval_transform)
    return Transformed(base, train_transform), val_set, classes


def collate(items):
    """(images, targets) as two lists (a detector takes images of different sizes),
    the unreadable images beside."""
    bad = [item for item in items if isinstance(item, Unreadable)]
    good = [item for item in items if not isinstance(item, Unreadable)]
    if not good:
        return None, None, bad
    return [image for image, _ in good], [target for _, target in good], bad


LOADER_OPTIONS = {"collate_fn": collate}


def loaders(train_set, val_set, pin_memory):
    """The train loader shuffles with its own generator; the val loader has none, so
    each pass over it draws one number from the global generator."""
    extra = {**LOADER_OPTIONS, "pin_memory": pin_memory}
    if WORLD > 1:  # this process's share: of each train batch, and of the val images
        sampler = DistributedSampler(train_set, WORLD, RANK, shuffle=True, seed=SEED)
        generator = torch.Generator().manual_seed(SEED + RANK)
        options = {"sampler": sampler, "generator": generator, **extra}
        train = DataLoader(train_set, batch_size=BATCH_SIZE // WORLD, **options)
        if val_set is None:
            return train, None
        share = Subset(val_set, range(RANK, len(val_set), WORLD))
        eval_batch = -(-EVAL_BATCH_SIZE // WORLD)
        return train, DataLoader(share, batch_size=eval_batch, **extra)
    generator = torch.Generator().manual_seed(SEED)
    train = DataLoader(
        train_set, batch_size=BATCH_SIZE, shuffle=True, generator=generator, **extra
    )
    if val_set is None:
        return train, None
    return train, DataLoader(val_set, batch_size=EVAL_BATCH_SIZE, **extra)


def batches(loader, skipped):
    """(inputs, labels) of each batch: an unreadable image stops the run, or with
    SKIP_BAD_IMAGES is left out and counted in `skipped`."""
    for inputs, labels, bad in loader:
        for item in bad:
            if not SKIP_BAD_IMAGES:
                raise RunError(
                    f"cannot read image '{item.path}' ({item.reason}): set "
                    "skip_bad_images true in data to skip and count unreadable images"
                )
            skipped.setdefault(item.path, item.reason)
        if inputs is not None:
            yield inputs, labels


# --- the model ----------------------------------------------------------------


def freeze_batchnorm(module):
    """Every BatchNorm2d under `module` replaced by a FrozenBatchNorm2d, as torchvision
    builds a pretrained detector (the frozen layer's own eps, not the BatchNorm's)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features)
            frozen.to(child.weight.device)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


def new_predictor():
    """The class-dependent layers for the data's classes and the background,
    initialised as torchvision initialises them."""
    return FastRCNNPredictor(1024, 21)


def build_model(root):
    """The detector (its init draws from the seeded generator) with frozen
    BatchNorm in its backbone, its weights, then the new class-dependent layers
    (which draw again): the order that spends the seed."""
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=480,
        max_size=640,
    )
    freeze_batchnorm(model.backbone.body)  # where torchvision has them when pretrained
    weights = torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    model.load_state_dict(weights.get_state_dict(progress=True, check_hash=True))
    parent, _, name = CLASSIFIER.rpartition(".")
    setattr(model.get_submodule(parent), name, new_predictor())
    count = sum(p.numel() for p in model.parameters())
    if count != PARAMETERS:
        raise RunError(
            f"this torchvision builds fasterrcnn_resnet50_fpn with {count} parameter "
            f"values, not the {PARAMETERS} the script was compiled for"
        )
    return model


def covered(name, names):
    """Whether a parameter or module name is one of `names` or lies under one."""
    return any(name == n or name.startswith(n + ".") for n in names)


def parameters(model, names):
    """The parameters `names` cover, in the model's order."""
    return [p for name, p in model.named_parameters() if covered(name, names)]


def phase_of(epoch):
    """The span of PHASES an epoch falls in (the last one goes on past EPOCHS)."""
    return [phase for phase in PHASES if phase["first"] <= epoch][-1]


def enter_phase(model, phase):
    """requires_grad on exactly the span's trainable parameters."""
    for name, param in model.named_parameters():
        param.requires_grad_(covered(name, phase["trainable"]))


def train_mode(model, phase):
    """model.train(), except the BatchNorm layers the span keeps in eval mode."""
    model.train()
    for name, module in model.named_modules():
        batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if batchnorm and covered(name, phase["batchnorm_eval"]):
            module.eval()


# --- several processes: torchrun ------------------------------------------------
#
# `torchrun --nproc_per_node N SCRIPT ...` starts N processes of this script: each
# trains on its share of every batch (BATCH_SIZE is the batch of all together),
# DistributedDataParallel averages their gradients, every logged number is summed
# over them, and process 0 alone writes files and prints. Without torchrun, or
# with one process, none of this runs.

WORLD = int(os.environ.get("WORLD_SIZE", "1"))  # processes
RANK = int(os.environ.get("RANK", "0"))  # this one among them
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))  # this one on its machine: its GPU
MAIN = RANK == 0  # the process that writes files and prints


def start_processes(device):
    """The process group: gloo on the CPU, nccl on CUDA."""
    if WORLD > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stop_processes():
    if WORLD > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def summed(values, device):
    """Numbers summed over the processes (as they are with one)."""
    if WORLD == 1:
        return list(values)
    numbers = [float(v) for v in values]
    tensor = torch.tensor(numbers, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gathered(value):
    """A value of every process, in rank order (a list of one with one process)."""
    if WORLD == 1:
        return [value]
    values = [None] * WORLD
    dist.all_gather_object(values, value)
    return values


def batchnorm_trains(model):
    """Whether some span keeps a BatchNorm layer in train mode."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not covered(name, phase["batchnorm_eval"])
        for phase in PHASES
        for name, module in model.named_modules()
    )


def for_processes(model, device):
    """SyncBatchNorm where BatchNorm trains, with several processes (CUDA only)."""
    if WORLD == 1 or not batchnorm_trains(model):
        return model
    if device.type != "cuda":
        raise RunError(
            "BatchNorm trains in train mode and SyncBatchNorm needs CUDA: "
            "run one process on the CPU, or use batchnorm eval"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


# --- optimizer, rates, metrics ------------------------------------------------


def build_optimizer(model):
    groups = [
        {
            "params": parameters(model, og["params"]),
            "lr": GROUPS[og["group"]]["lr"],
            "weight_decay": og["weight_decay"],
            "ftr_group": og["group"],
            "base_lr": GROUPS[og["group"]]["lr"],
            "warmups": og["warmups"],
        }
        for og in OPTIMIZER_GROUPS
    ]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, nesterov=False)


def schedule_factor(t, dt, epochs):
    """The schedule's factor at progress t (epochs; dt: one step)."""
    return 1.0


def set_rates(optimizer, step, steps_per_epoch, epochs):
    """Every group's rate for optimizer step `step`: base x schedule."""
    t, dt = step / steps_per_epoch, 1 / steps_per_epoch
    factor = schedule_factor(t, dt, epochs)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    groups = optimizer.param_groups
    return {name: groups[i]["lr"] for name, i in REPORTED_RATES.items()}


def better(metric, new, old, min_delta=0.0):
    """Lower is better for loss, higher for every other metric; NaN never improves."""
    if old is None:
        return new == new
    if metric == "loss":
        return new < old - min_delta
    return new > old + min_delta


def image_record(boxes, scores, labels, target):
    """An image's ground truth and detections as plain numbers, in XYXY: a box
    flagged difficult or crowd is one that evaluation ignores."""
    truth = target["boxes"].detach().cpu().to(torch.float64).reshape(-1, 4)
    ignored = [False] * len(truth)
    for key in ("difficult", "crowd"):
        if key in target:
            flags = target[key].tolist()
            ignored = [a or b for a, b in zip(ignored, flags, strict=True)]
    return {
        "gt_boxes": truth.tolist(),
        "gt_labels": [int(label) for label in target["labels"].tolist()],
        "gt_ignored": ignored,
        "dt_boxes": boxes.detach().cpu().to(torch.float64).reshape(-1, 4).tolist(),
        "dt_scores": scores.detach().cpu().to(torch.float64).tolist(),
        "dt_labels": [int(label) for label in labels.tolist()],
    }


def xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_truth(records, classes):
    """The ground truth as a COCO data set: image ids 1, 2, ... in the order of the
    val images, category ids the labels 1..N, an ignored box as iscrowd."""
    annotations = []
    for image_id, record in enumerate(records, start=1):
        rows = (record["gt_boxes"], record["gt_labels"], record["gt_ignored"])
        for box, label, ignored in zip(*rows, strict=True):
            bbox = xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": int(ignored),
                }
            )
    categories = [{"id": k, "name": name} for k, name in enumerate(classes, start=1)]
    return {
        "images": [{"id": i} for i in range(1, len(records) + 1)],
        "categories": categories,
        "annotations": annotations,
    }


def coco_results(records):
    return [
        {"image_id": image_id, "category_id": label, "bbox": xywh(box), "score": score}
        for image_id, record in enumerate(records, start=1)
        for box, score, label in zip(
            record["dt_boxes"], record["dt_scores"], record["dt_labels"], strict=True
        )
    ]


def coco_map(records, classes):
    """pycocotools' COCOeval ("bbox") of the val images: its 12 numbers (mAP, mAP at
    IoU 0.5, at 0.75, ...) and its precision array [IoU, recall, class, area, dets]."""
    if not records:
        raise RunError("no images were evaluated")
    if not any(not ignored for record in records for ignored in record["gt_ignored"]):
        raise RunError(
            "the ground truth has no box that counts (none, or all difficult/crowd): "
            "mAP is undefined"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = coco_truth(records, classes)
        truth.createIndex()
        found = coco_results(records)
        if found:
            results = truth.loadRes(found)
        else:  # what loadRes would make of no detections (it fails on an empty list)
            results = COCO()
            images, categories = truth.dataset["images"], truth.dataset["categories"]
            results.dataset = {"images": list(images), "categories": categories}
            results.dataset["annotations"] = []
            results.createIndex()
        evaluation = COCOeval(truth, results, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats, evaluation.eval["precision"]


def per_class_ap(precision, classes):
    """{name: {"ap": AP over IoU 0.50:0.95, "ap50": AP at IoU 0.5}}; None for a class
    with no box to find (pycocotools' -1)."""
    out = {}
    for k, name in enumerate(classes):
        curve = precision[:, :, k, 0, -1]  # every area, 100 detections
        missing = bool((curve == -1).any())
        out[name] = {
            "ap": None if missing else float(curve.mean()),
            "ap50": None if missing else float(curve[0].mean()),
        }
    return out


class NonFiniteLoss(RunError):
    pass


def to_device(images, targets, device):
    images = [image.to(device) for image in images]
    targets = [
        {k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def model_targets(targets):
    """What the detector trains on: boxes and labels. VOC's difficult boxes are kept; COCO's crowd boxes are left out."""
    out = []
    for t in targets:
        keep = ~t["crowd"] if "crowd" in t else slice(None)
        labels = t["labels"][keep] - LABEL_SHIFT
        out.append({"boxes": t["boxes"][keep], "labels": labels})
    return out


def detection_loss(forward, images, targets):
    """The sum of the detector's losses (in train mode it returns them)."""
    losses = forward(images, model_targets(targets))
    return sum(losses.values())


def val_loss(model, images, targets, device):
    """The detector's losses in train mode, its BatchNorm layers in eval mode and the
    random generators restored after (R-CNN's samplers draw): nothing changes."""
    devices = [images[0].device] if images[0].device.type == "cuda" else []
    batchnorm = nn.modules.batchnorm._BatchNorm
    norms = [m for m in model.modules() if isinstance(m, batchnorm)]
    with torch.random.fork_rng(devices=devices):
        model.train()
        for m in norms:
            m.eval()
        try:
            losses = model(images, model_targets(targets))
        finally:
            model.eval()
    return float(sum(v.float() for v in losses.values()))


def evaluate(model, val_batches, device, classes, epoch):
    """val_<metric> for each of METRICS over the whole val set (the model in eval
    mode), and the AP of every class."""
    loss_sum, seen = 0.0, 0
    records = []  # each val image's boxes and detections
    with torch.no_grad():
        for images, targets in val_batches:
            images, targets = to_device(images, targets, device)
            loss = val_loss(model, images, targets, device)
            detections = model(images)
            for found, target in zip(detections, targets, strict=True):
                boxes, scores = found["boxes"].float(), found["scores"].float()
                labels = found["labels"] + LABEL_SHIFT
                records.append(image_record(boxes, scores, labels, target))
            loss_sum += loss * len(targets)
            seen += len(targets)
            if WORLD == 1 and not math.isfinite(loss):
                where = f"the validation of epoch {epoch}"
                raise NonFiniteLoss(f"the loss is {loss} at {where}")
    if WORLD > 1:  # every process's images in one evaluation (mAP is no sum of parts)
        parts = gathered((loss_sum, seen, records))
        records = [record for part in parts for record in part[2]]
        loss_sum = sum(part[0] for part in parts)
        seen = sum(part[1] for part in parts)
        if not math.isfinite(loss_sum):
            where = f"the validation of epoch {epoch}"
            raise NonFiniteLoss(f"the loss is not finite at {where}")
    if seen == 0:
        raise RunError("no validation image could be read")
    stats, precision = coco_map(records, classes)
    values = {
        "val_loss": loss_sum / seen,
        "val_map": float(stats[0]),
        "val_map50": float(stats[1]),
    }
    return values, per_class_ap(precision, classes)


# --- the run: folder, checkpoints, the loop -------------------------------------

RUN_FILES = (
    "recipe.ftr",
    "metrics.jsonl",
    "classes.json",
    "model.pt",
    "best.pt",
    "checkpoint.pt",
    "summary.json",
    "checkpoint.previous.pt",
    "checkpoint.damaged.pt",
    "per_class.jsonl",
)
# checkpoint.pt is the last epoch's, checkpoint.previous.pt the one before: a
# resume takes the first that reads whole, and sets a damaged one aside
CHECKPOINTS = ("checkpoint.pt", "checkpoint.previous.pt")
CUT_SHORT = "cut short (a copy that stopped, or a disk that filled)"


class WriteFailed(RunError):
    """A run file not written; the file as it was before is intact."""

    def __init__(self, path, error):
        self.no_space = error.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "no space left on device" if self.no_space else error.strerror
        super().__init__(f"{reason or error} writing {path}")


def save_atomically(path, write, previous=None):
    """write(file) into a temporary file beside path, then rename it over path:
    a reader (or a resumed run) sees the old file or the new one, never half.
    With `previous`, the old file is renamed to it first."""
    prefix = f".{path.name}."
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temp, 0o666 & ~mask)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        # torch.save reports a failed write, and Ctrl-C inside it, as a RuntimeError
        # raised while handling the OSError or the KeyboardInterrupt
        cause = error
        while cause is not None and not isinstance(cause, (OSError, KeyboardInterrupt)):
            cause = cause.__context__
        if isinstance(cause, KeyboardInterrupt) and cause is not error:
            raise cause from None
        if isinstance(error, (OSError, RuntimeError)) and isinstance(cause, OSError):
            raise WriteFailed(path, cause) from None
        raise


def save_tensors(path, obj):
    save_atomically(path, lambda file: torch.save(obj, file))


def cpu_copy(state):
    return {name: t.detach().to("cpu", copy=True) for name, t in state.items()}


def read_tensors(path):
    """What torch.save wrote, tensors and plain containers only: nothing in it runs."""
    if not path.is_file() or path.stat().st_size == 0:
        what = "empty" if path.is_file() else "missing"
        raise RunError(f"{path} is {what}: {CUT_SHORT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(
            f"{path} holds objects other than tensors: it was refused unread, "
            "and nothing in it ran"
        ) from None
    except Exception as error:  # a damaged zip: RuntimeError, EOFError, OSError, ...
        cut = isinstance(error, (EOFError, OSError)) or "directory" in str(error)
        what = "is damaged" if cut else "is not a file torch.save wrote, or is damaged"
        raise RunError(f"{path} {what}: {CUT_SHORT}") from None


def read_json(path):
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise RunError(f"{path} is not valid JSON ({error}): {CUT_SHORT}") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} holds no JSON object")
    return value


def read_checkpoint(path):
    state = read_tensors(path)
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise RunError(f"{path} is not a checkpoint of this script")
    return state


def find_checkpoint(out, set_aside=False):
    """(the file to resume from, a note on the latest if it was not usable)."""
    problems = []
    for name in CHECKPOINTS:
        path = out / name
        if not path.exists():
            if name == CHECKPOINTS[0]:
                problems.append(f"{path} is missing (stopped while it was replaced)")
            continue
        try:
            state = read_checkpoint(path)
        except RunError as error:
            problems.append(str(error))
            continue
        note = None
        if problems:
            note = f"{problems[0]}; resuming from {path} (epoch {state['epoch']})"
            if set_aside and (out / CHECKPOINTS[0]).exists():
                os.replace(out / CHECKPOINTS[0], out / "checkpoint.damaged.pt")
        return path, note
    problems = "; ".join(problems)
    hint = "no complete checkpoint is left: start again with --overwrite"
    raise RunError(f"{problems}; {hint}")


def save_text(path, text):
    save_atomically(path, lambda file: file.write(text.encode("utf-8")))


def save_json(path, obj):
    save_text(path, json.dumps(obj, indent=2) + "\n")


def rng_state(generator):
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state, generator):
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def device_error(requested):
    try:
        device = torch.device(requested)
    except RuntimeError:
        return f"unknown device '{requested}': use cpu, cuda, cuda:N or mps"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {requested}: CUDA is not available on this machine"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"--device {requested}: this machine has {count} CUDA device(s)"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {requested}: MPS is not available on this machine"
    elif device.type not in ("cpu", "cuda", "mps"):
        return f"--device {requested}: this script runs on cpu, cuda or mps"
    return None


def pick_device(requested):
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", LOCAL_RANK)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Training:
    """The model, optimizer and loaders of the plan, and the state of the run."""

    def __init__(self, args, out, device):
        self.out = out
        self.epochs = args.epochs or EPOCHS
        self.device = device
        self.quiet = args.quiet or not MAIN
        if BATCH_SIZE % WORLD:
            raise RunError(f"batch_size {BATCH_SIZE} cannot split in {WORLD} parts")
        # the order that spends the seed: data, backbone, weights, head, loaders
        torch.manual_seed(SEED)
        random.seed(SEED)
        data = datasets(args.root, args.train, args.val)
        train_set, val_set, self.classes = data
        if len(self.classes) != 20:
            raise RunError(
                f"the data has {len(self.classes)} classes, "
                "the head 20: change the head's classes in the recipe"
            )
        self.model = for_processes(build_model(args.root), self.device).to(self.device)
        self.forward = self.model
        self.optimizer = build_optimizer(self.model)
        if RANK > 0:  # its own random transforms and dropout, the same model
            torch.manual_seed(SEED + 7919 * RANK)
            random.seed(SEED + 7919 * RANK)
        self.net_phase = None  # the span the DDP wrapper was made for
        cuda = self.device.type == "cuda"
        self.train_loader, self.val_loader = loaders(train_set, val_set, cuda)
        if len(self.train_loader) == 0:
            raise RunError("the training set is empty")
        # optimizer steps per epoch: the last window of ACCUMULATE batches may be short
        self.steps = -(-len(self.train_loader) // ACCUMULATE)
        self.step = 0  # optimizer steps so far
        self.start = 1  # the first epoch to train
        self.best = None  # {"metric", "value", "epoch"} of best.pt
        self.best_weights = None  # best.pt's tensors, on the CPU
        self.early_stop = {"best": None, "bad": 0}
        self.history = []  # the rows of metrics.jsonl
        self.details = []  # the rows of per_class.jsonl: each evaluation's figures per class
        self.seconds_before = 0.0  # training time of the sessions before this one
        self.began = time.perf_counter()  # when this session's training began
        self.skipped = {}  # unreadable images left out: path -> reason

    def write_start(self):
        if not MAIN:
            return
        save_text(self.out / "recipe.ftr", "".join(RECIPE_LINES))
        classes = {name: index for index, name in enumerate(self.classes)}
        save_json(self.out / "classes.json", classes)

    def save_checkpoint(self, epoch):
        model = self.model.state_dict()
        # best.pt's tensors, for a resume to put back: the model's own when it is the best
        is_best = self.best is not None and self.best["epoch"] == epoch
        state = {
            "plan": PLAN_DIGEST,
            "epochs": self.epochs,
            "epoch": epoch,
            "step": self.step,
            "model": model,
            "optimizer": self.optimizer.state_dict(),
            "rng": gathered(rng_state(self.train_loader.generator)),
            "processes": WORLD,
            "best": self.best,
            "best_model": model if is_best else self.best_weights,
            "history": self.history,
            "details": self.details,
            "classes": list(self.classes),
            "early_stop": self.early_stop,
            "seconds": self.seconds_before + time.perf_counter() - self.began,
        }
        if MAIN:
            path = self.out / "checkpoint.pt"
            previous = self.out / "checkpoint.previous.pt"
            save_atomically(path, lambda file: torch.save(state, file), previous)

    def resume(self):
        path, _ = find_checkpoint(self.out)  # process 0 has set a damaged one aside
        state = read_checkpoint(path)
        if state.get("plan") != PLAN_DIGEST or state.get("epochs") != self.epochs:
            raise RunError(
                f"{path} was written by another recipe or another --epochs; "
                "resume with the same script and flags, or start again with --overwrite"
            )
        if state.get("processes") != WORLD:
            processes = state.get("processes")
            raise RunError(f"{path} was written by {processes} processes, not {WORLD}")
        self.check_classes(state.get("classes"), path)
        enter_phase(self.model, phase_of(state["epoch"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"][RANK], self.train_loader.generator)
        self.best = state["best"]
        self.early_stop = state["early_stop"]
        self.start = state["epoch"] + 1
        self.step = state["step"]
        self.seconds_before = state.get("seconds", 0.0)
        done = state["epoch"]
        self.history = [row for row in state["history"] if row["epoch"] <= done]
        self.details = [row for row in state["details"] if row["epoch"] <= done]
        self.best_weights = state["best_model"]
        if MAIN:  # rows and a best model written after the checkpoint are dropped
            self.write_metrics()
            if self.best is None:
                (self.out / "best.pt").unlink(missing_ok=True)
            else:
                save_tensors(self.out / "best.pt", self.best_weights)

    def check_classes(self, learned, path):
        """A class folder added or removed since the run started is refused."""
        if learned is None:
            index = read_json(self.out / "classes.json")
            learned = sorted(index, key=index.get)
        if learned == self.classes:
            return
        added = [c for c in self.classes if c not in learned]
        removed = [c for c in learned if c not in self.classes]
        what = [f"added {', '.join(added)}"] if added else []
        what += [f"removed {', '.join(removed)}"] if removed else []
        raise RunError(
            f"the data's classes are not those of the run in {path.parent} "
            f"({'; '.join(what) or 'the same names in another order'}): the model learned "
            f"{len(learned)}; put the data back as it was to resume, "
            "or start again with --overwrite"
        )

    def write_metrics(self):
        lines = [json.dumps(row, allow_nan=False) + "\n" for row in self.history]
        save_text(self.out / "metrics.jsonl", "".join(lines))
        if self.details:
            lines = [json.dumps(row) + "\n" for row in self.details]
            save_text(self.out / "per_class.jsonl", "".join(lines))
        else:  # a resume to before the first evaluation
            (self.out / "per_class.jsonl").unlink(missing_ok=True)

    def train(self, logger=None):
        """Train from self.start to the end (or an early stop); the status and epochs done.
        `logger`: a TensorBoard that gets each new row, in process 0."""
        self.began = time.perf_counter()
        if logger:
            logger.begin(self.history, self.start)
        status = "finished"
        epoch = self.start - 1
        last = self.epochs
        for epoch in range(self.start, last + 1):
            began = time.perf_counter()
            rates = set_rates(self.optimizer, self.step, self.steps, self.epochs)
            row = {"epoch": epoch, "train_loss": self.train_epoch(epoch)}
            if self.val_loader is not None and (
                epoch % EVALUATE_EVERY == 0 or epoch == self.epochs
            ):
                self.model.eval()
                _, val_batches, _ = self.span(epoch)
                model, classes = self.model, self.classes
                values, ap = evaluate(model, val_batches, self.device, classes, epoch)
                row.update(values)
                self.details.append({"epoch": epoch, "ap": ap})
            row.update({f"lr/{group}": rate for group, rate in rates.items()})
            row["seconds"] = time.perf_counter() - began
            self.history.append(row)
            stop = self.after_evaluation(epoch, row)
            if MAIN:
                self.write_metrics()
                if logger:
                    logger.log(row)
            self.save_checkpoint(epoch)
            self.report(row)
            if stop:
                status = "early_stopped"
                break
        if MAIN:
            save_tensors(self.out / "model.pt", self.model.state_dict())
        return status, epoch

    def span(self, epoch):
        """The (inputs, labels) of train and val, and the forward that takes them."""
        val = self.val_loader and batches(self.val_loader, self.skipped)
        return batches(self.train_loader, self.skipped), val, self.forward

    def train_epoch(self, epoch):
        model, optimizer = self.model, self.optimizer
        phase = phase_of(epoch)
        if phase["first"] == epoch > 1:
            # what thaws starts with empty optimizer state
            before = phase_of(epoch - 1)["trainable"]
            for name, param in model.named_parameters():
                if covered(name, phase["trainable"]) and not covered(name, before):
                    optimizer.state.pop(param, None)
        train_batches, _, forward = self.span(epoch)
        enter_phase(model, phase)
        if WORLD > 1:
            self.train_loader.sampler.set_epoch(epoch)
            if self.net_phase != phase["first"]:  # a DDP wrapper fixes what trains
                self.forward = forward = self.distributed()
                self.net_phase = phase["first"]
        train_mode(model, phase)
        total, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for i, (inputs, labels) in enumerate(train_batches):
            set_rates(optimizer, self.step, self.steps, self.epochs)
            inputs, labels = to_device(inputs, labels, self.device)
            loss = detection_loss(forward, inputs, labels)
            if not torch.isfinite(loss):
                where = f"epoch {epoch}, step {i + 1}"
                raise NonFiniteLoss(f"the loss is {loss.item()} at {where}")
            self.backward(loss)
            self.optimizer_step()
            if WORLD > 1:
                value = loss.item()
                finite = math.isfinite(value)
                sums = [not finite, value * len(labels) if finite else 0.0, len(labels)]
                bad, part, count = summed(sums, self.device)
                if bad:
                    where = f"epoch {epoch}, step {i + 1}"
                    raise NonFiniteLoss(f"the loss is not finite at {where}")
                total += part
                seen += round(count)
            else:
                total += loss.item() * len(labels)
                seen += len(labels)
        return total / max(seen, 1)

    def distributed(self):
        """A new DistributedDataParallel wrapper: the trainable set changed."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        net = DistributedDataParallel(self.model, device_ids=ids)
        return net

    def backward(self, loss):
        loss.backward()

    def optimizer_step(self):
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def after_evaluation(self, epoch, row):
        """Keep the best model; say whether early stopping ends the run."""
        value = row.get(f"val_{BEST}")
        old = self.best["value"] if self.best else None
        if value is not None and better(BEST, value, old):
            self.best = {"metric": BEST, "value": value, "epoch": epoch}
            if MAIN:
                self.best_weights = cpu_copy(self.model.state_dict())
                save_tensors(self.out / "best.pt", self.best_weights)
        return False

    def report(self, row):
        if self.quiet:
            return
        values = {k: v for k, v in row.items() if k not in ("epoch", "seconds")}
        shown = [f"epoch {row['epoch']}/{self.epochs}"]
        shown += [f"{k} {v:.4g}" for k, v in values.items()]
        shown.append(f"{row['seconds']:.1f}s")
        print("  ".join(shown), file=sys.stderr, flush=True)


class TensorBoard:
    """--logger tensorboard: each row of metrics.jsonl, when it is written, as scalars
    in OUT/tensorboard at step = epoch (train/loss, val/accuracy, lr/head, seconds)."""

    def __init__(self, out):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            message = "--logger tensorboard needs tensorboard: pip install tensorboard"
            raise RunError(message) from None
        self.folder = out / "tensorboard"
        self.new_writer = SummaryWriter
        self.writer = None

    def begin(self, history, first):
        """Readers drop the events from epoch `first` on that a stopped session wrote
        after its last checkpoint; a folder without events gets the rows so far."""
        earlier = any(self.folder.glob("events.out.tfevents.*"))
        self.writer = self.new_writer(str(self.folder), purge_step=first)
        for row in () if earlier else history:
            self.log(row)

    def log(self, row):
        for key, value in row.items():
            if key != "epoch":
                split = key.startswith(("train_", "val_"))
                name = key.replace("_", "/", 1) if split else key
                self.writer.add_scalar(name, value, global_step=row["epoch"])
        self.writer.flush()

    def close(self):
        if self.writer:
            self.writer.close()


def prepare(out, args):
    """True to resume, False to start; None when a finished run is asked to resume."""
    finished = (out / "summary.json").exists()
    started = any((out / name).exists() for name in CHECKPOINTS)
    for name in RUN_FILES if MAIN else ():  # what a kill left of unfinished writes
        for temporary in out.glob(f".{name}.*.tmp"):
            temporary.unlink(missing_ok=True)
    if args.overwrite:
        for name in RUN_FILES if MAIN else ():
            (out / name).unlink(missing_ok=True)
        if MAIN:
            shutil.rmtree(out / "tensorboard", ignore_errors=True)
    elif finished:
        if args.resume:
            read_json(out / "summary.json")  # whole, or a message
            return None
        raise RunError(f"{out} holds a finished run; use --overwrite, or another --out")
    elif started and not args.resume:
        raise RunError(
            f"{out} holds an unfinished run; use --resume to continue it, "
            "or --overwrite to start again"
        )
    elif args.resume and not started:
        raise RunError(f"nothing to resume in {out}: it holds no checkpoint.pt")
    out.mkdir(parents=True, exist_ok=True)
    if args.resume and not args.overwrite and MAIN:
        _, note = find_checkpoint(out, set_aside=True)
        if note:
            print(f"warning: {note}", file=sys.stderr)
    return args.resume and not args.overwrite


def last_good(out):
    if not any((out / name).exists() for name in CHECKPOINTS):
        return "no epoch had finished, so there is no checkpoint"
    try:
        path, _ = find_checkpoint(out)
        epoch = read_checkpoint(path)["epoch"]
    except RunError as error:
        return f"no checkpoint reads whole ({error})"
    return f"the checkpoint of epoch {epoch} is kept in {path}"


def again(argv, resume=True):
    """The command that continues this run (or, with no checkpoint, starts it again)."""
    given = sys.argv[1:] if argv is None else argv
    flags = " ".join(a for a in given if a not in ("--overwrite", "--resume"))
    return f"python {sys.argv[0]} {flags}{' --resume' if resume else ''}"


def write_failed(error, out, argv):
    fix = "free space" if error.no_space else "make it writable"
    if any((out / name).exists() for name in CHECKPOINTS):
        return f"error: {error}; nothing is half-written: {fix} and resume with: {again(argv)}"
    return f"error: {error}; nothing is half-written: {fix} and start again: {again(argv, False)}"


def arguments(argv):
    parser = argparse.ArgumentParser(description="Fine-tune as the recipe says.")
    out = OUTPUT.replace("%", "%%")  # argparse formats help with %
    parser.add_argument("--out", metavar="DIR", help=f"run folder (default: {out})")
    parser.add_argument("--root", metavar="DIR", default=".", help="where paths start")
    parser.add_argument("--train", metavar="PATH", help="train data, not the recipe's")
    parser.add_argument("--val", metavar="PATH", help="val data, not the recipe's")
    parser.add_argument("--epochs", type=int, help=f"default: {EPOCHS}")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: fastest)")
    parser.add_argument("--resume", action="store_true", help="continue the run")
    parser.add_argument("--overwrite", action="store_true", help="replace the run")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    parser.add_argument(
        "--logger",
        choices=["tensorboard"],
        help="also write the metrics for TensorBoard, into OUT/tensorboard",
    )
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.device and device_error(args.device):
        parser.error(device_error(args.device))
    return args


def main(argv=None):
    args = arguments(argv)
    out = Path(args.out or OUTPUT)
    try:
        logger = TensorBoard(out) if args.logger and MAIN else None
        device = pick_device(args.device)
        start_processes(device)
        resuming = prepare(out, args)
        if WORLD > 1:
            dist.barrier()  # process 0 has made (or cleared) the folder
        if resuming is None:
            print(f"{out} holds a finished run: nothing to resume", file=sys.stderr)
            return 0
        run = Training(args, out, device)
        if resuming:
            run.resume()
        else:
            run.write_start()
    except WriteFailed as error:
        print(write_failed(error, out, argv), file=sys.stderr)
        return 1
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        status, epochs = run.train(logger)
    except WriteFailed as error:
        print(write_failed(error, out, argv), file=sys.stderr)
        return 1
    except RunError as error:
        print(f"error: {error}; {last_good(out)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted; the last finished epoch is saved and nothing is half-written. "
            f"Continue with: {again(argv)}",
            file=sys.stderr,
        )
        return 130
    finally:
        if logger:
            logger.close()
    skipped = set().union(*gathered(sorted(run.skipped)))  # each file once
    stop_processes()
    if not MAIN:
        return 0
    summary = {
        "recipe": NAME,
        "status": status,
        "epochs": epochs,
        "of_epochs": run.epochs,
        "final": run.history[-1] if run.history else {},
        "best": run.best,
        "skipped_images": len(skipped),
        "seconds": run.seconds_before + time.perf_counter() - started,
        "session_seconds": time.perf_counter() - started,
        "device": str(run.device),
        "plan": PLAN_DIGEST,
        "ftr": FTR_VERSION,
    }
    try:
        save_json(out / "summary.json", summary)
    except WriteFailed as error:
        print(write_failed(error, out, argv), file=sys.stderr)
        return 1
    if not args.quiet:
        seconds = summary["seconds"]
        print(f"{status}: {epochs} epochs in {seconds:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
