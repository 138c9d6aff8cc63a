"""The detection transfer demo (recipes/detection/demo.sh), on a few canvases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import demo_calls

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
DETECTION = ROOT / "recipes" / "detection"
ARMS = ["head", "upper", "finetune", "scratch"]


def _maker():
    spec = importlib.util.spec_from_file_location("make_digits_voc", DETECTION / "make_digits_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def canvases(tmp_path_factory) -> Path:
    """The demo's two VOC folders at its paths, every class in each split (source: 8 train
    canvases, whole batches of 4, since SSDlite's BatchNorm cannot train on a batch of
    one; target: one batch of 5; 5 val canvases each), and a source model.pt as an
    SSDlite for 5 classes saves it."""
    work = tmp_path_factory.mktemp("digits_voc")
    make = _maker().make
    make(work / "data/digits_voc/source", digits=[0, 1, 2, 3, 4], images=13, size=64, val=5 / 13)
    make(work / "data/digits_voc/target", digits=[5, 6, 7, 8, 9], images=10, size=64, val=0.5)
    torch.manual_seed(0)
    source = torchvision.models.get_model(
        "ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=6
    )
    (work / "runs/det-source").mkdir(parents=True)
    torch.save(source.state_dict(), work / "runs/det-source/model.pt")
    return work


def test_demo_trains_the_source_once_then_every_arm_on_one_seed(tmp_path):
    """demo.sh with `python` and `ftr` replaced by stand-ins that log their arguments."""
    calls = demo_calls(DETECTION / "demo.sh", tmp_path)
    runs = [c.split()[2] for c in calls if c.startswith("ftr run")]
    assert runs[0] == "recipes/detection/source.ftr" and runs.count("recipes/detection/source.ftr") == 1
    make = "python recipes/detection/make_digits_voc.py --size 64"
    source = calls.index(f"{make} --out data/digits_voc/source --digits 0-4 --images 250 --val 0.2 --seed 0")
    target = calls.index(f"{make} --out data/digits_voc/target --digits 5-9 --images 125 --val 0.8 --seed 0")
    assert source < calls.index("ftr run recipes/detection/source.ftr --overwrite --quiet") < target
    outs = [f"runs/det-{arm}-seed0" for arm in ARMS]
    for arm, out in zip(ARMS, outs, strict=True):
        assert calls.index(f"ftr run recipes/detection/{arm}.ftr --set seed=0 --out {out} --overwrite --quiet") > target
    assert calls[-2:] == ["ftr compare runs/det-source", "ftr compare " + " ".join(outs)]
    assert any("torchvision" in c and "sklearn" in c for c in calls if c.startswith("python -c"))


def test_demo_over_several_seeds_draws_canvases_per_seed_and_compares_means(tmp_path):
    calls = demo_calls(DETECTION / "demo.sh", tmp_path, seeds="0 1")
    draws = [c for c in calls if "--out data/digits_voc/target" in c]
    assert [d.split()[-1] for d in draws] == ["0", "1"]
    second = calls.index(draws[1])
    assert all(f"--set seed=1 --out runs/det-{arm}-seed1" in " ".join(calls[second:]) for arm in ARMS)
    outs = [f"runs/det-{arm}-seed{seed}" for seed in (0, 1) for arm in ARMS]
    assert calls[-1] == "ftr compare --mean " + " ".join(outs)


@pytest.mark.parametrize("name", ["source", *ARMS])
def test_demo_recipe_checks_against_the_canvases_and_the_source_weights(name, canvases, monkeypatch):
    monkeypatch.chdir(canvases)
    plan = resolve(recipe_lang.load(DETECTION / f"{name}.ftr"))
    digits = range(5) if name == "source" else range(5, 10)
    assert plan.classes == [f"d{d}" for d in digits]
    if plan.weights.spec.kind == "file":  # every tensor of the source but its class layers
        assert plan.weights.loaded and plan.weights.unexpected == [] and plan.weights.missing == []
        assert all(key.startswith("head.classification_head.") for key in plan.weights.ignored_keys)
        assert not any(key.startswith("head.classification_head.") for key in plan.weights.loaded)


def test_head_arm_trains_only_the_new_class_layers_on_the_source(canvases, monkeypatch):
    """A one-epoch source run, then the head arm from its model.pt: the file is read for
    real, and everything but the new class layers (BatchNorm statistics included) is
    the source's."""
    monkeypatch.chdir(canvases)
    torch.set_num_threads(1)
    short = ["--quiet", "--device", "cpu", "--set", "train.epochs=1", "--set", "evaluate.every=1"]
    assert main(["run", str(DETECTION / "source.ftr"), *short, "--out", "runs/det-source", "--overwrite"]) == 0
    assert main(["run", str(DETECTION / "head.ftr"), *short]) == 0
    source = torch.load(canvases / "runs/det-source/model.pt", weights_only=True)
    head = torch.load(canvases / "runs/det-head/model.pt", weights_only=True)
    assert source.keys() == head.keys()
    new = "head.classification_head."
    assert all(torch.equal(source[k], head[k]) for k in source if not k.startswith(new))
    assert any(not torch.equal(source[k], head[k]) for k in source if k.startswith(new) and k.endswith("weight"))
    summary = json.loads((canvases / "runs/det-head/summary.json").read_text())
    assert summary["status"] == "finished" and 0 <= summary["final"]["val_map50"] <= 1
