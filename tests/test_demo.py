"""The README's main job: the digits transfer demo, on a shortened schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "recipes" / "digits"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("digits")
    subprocess.run(
        [sys.executable, str(DIGITS / "prepare.py"), "--out", "data/digits", "--shots", "3"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    return work


def test_prepare_writes_the_source_and_few_shot_target_folders(digits):
    data = digits / "data" / "digits"
    assert sorted(p.name for p in (data / "source").iterdir()) == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (data / "target" / "train").iterdir()) == ["5", "6", "7", "8", "9"]
    assert all(len(list(p.iterdir())) == 3 for p in (data / "target" / "train").iterdir())
    total = sum(1 for _ in data.rglob("*.png"))
    assert total == 1797  # every image of the UCI digits, once
    with Image.open(next((data / "source" / "0").iterdir())) as image:
        assert image.size == (8, 8) and image.mode == "L"


@pytest.mark.parametrize("path", sorted(DIGITS.glob("*.ftr")), ids=lambda p: p.stem)
def test_demo_recipes_resolve(path):
    plan = resolve(recipe_lang.load(path), data=False, weights_file=False)
    assert plan.head.classes == 5


def test_transfer_runs_end_to_end(digits, monkeypatch):
    """Source run, then a probe on its model.pt: the weights file is read for real."""
    monkeypatch.chdir(digits)
    torch.set_num_threads(1)
    short = ["--quiet", "--device", "cpu", "--set", "train.epochs=1"]
    assert main(["run", str(DIGITS / "source.ftr"), *short]) == 0
    assert main(["run", str(DIGITS / "probe.ftr"), *short]) == 0
    source = torch.load(digits / "runs/digits-source/model.pt", weights_only=True)
    probe = torch.load(digits / "runs/digits-probe/model.pt", weights_only=True)
    # the probe froze the transferred backbone and its BatchNorm statistics: only fc moved
    assert all(torch.equal(source[k], probe[k]) for k in source if not k.startswith("fc."))
    assert not torch.equal(source["fc.weight"], probe["fc.weight"])
    summary = json.loads((digits / "runs/digits-probe/summary.json").read_text())
    assert summary["status"] == "finished" and 0 <= summary["final"]["val_accuracy"] <= 1
    assert main(["compare", "runs/digits-source", "runs/digits-probe"]) == 0
