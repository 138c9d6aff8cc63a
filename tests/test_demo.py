"""The README's main job: the digits transfer demo, on a shortened schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import demo_calls
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


def test_prepare_seed_draws_other_labelled_images_from_the_same_source(digits, tmp_path):
    subprocess.run(
        [sys.executable, str(DIGITS / "prepare.py"), "--out", "other", "--shots", "3", "--seed", "1"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )

    def files(root: Path, part: str) -> set[str]:
        return {str(p.relative_to(root / part)) for p in (root / part).rglob("*.png")}

    seed0, seed1 = digits / "data" / "digits", tmp_path / "other"
    assert files(seed0, "source") == files(seed1, "source")  # the source model is trained once for all seeds
    assert files(seed0, "target/train") != files(seed1, "target/train")
    assert len(files(seed1, "target/train")) == 15


def test_demo_runs_the_source_once_and_every_arm_over_three_seeds(tmp_path):
    """demo.sh with `python` and `ftr` replaced by stand-ins that log their arguments."""
    calls = demo_calls(DIGITS / "demo.sh", tmp_path)
    runs = [c.split()[2] for c in calls if c.startswith("ftr run")]
    assert runs.count("recipes/digits/source.ftr") == 1 and runs[0] == "recipes/digits/source.ftr"
    arms = ["probe", "gradual", "finetune", "lpft", "scratch"]
    outs = [f"runs/digits-{arm}-seed{seed}" for seed in (0, 1, 2) for arm in arms]
    for seed in (0, 1, 2):
        # each seed draws its labelled images, then every arm runs with that seed
        draw = calls.index(f"python recipes/digits/prepare.py --out data/digits --shots 10 --seed {seed}")
        for arm in arms:
            run = f"ftr run recipes/digits/{arm}.ftr --set seed={seed} --out runs/digits-{arm}-seed{seed}"
            assert any(c.startswith(run) for c in calls[draw:]), run
    assert calls[-1] == "ftr compare --mean " + " ".join(outs)
    assert any("torchvision" in c and "sklearn" in c for c in calls if c.startswith("python -c"))


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


def test_probe_over_two_seeds_is_one_row_of_compare_mean(digits, monkeypatch, capsys):
    """What the demo does per arm: each seed on its own draw of labelled images, then the mean."""
    monkeypatch.chdir(digits)
    torch.set_num_threads(1)
    short = ["--quiet", "--device", "cpu", "--set", "train.epochs=1"]
    if not (digits / "runs/digits-source/model.pt").exists():
        assert main(["run", str(DIGITS / "source.ftr"), *short]) == 0
    subprocess.run(
        [sys.executable, str(DIGITS / "prepare.py"), "--out", "data/draw1", "--shots", "3", "--seed", "1"],
        check=True,
        capture_output=True,
    )
    draw1 = [f'--set=data.{part}=imagefolder("data/draw1/target/{part}")' for part in ("train", "val")]
    assert main(["run", str(DIGITS / "probe.ftr"), *short, "--out", "runs/probe-0"]) == 0
    assert main(["run", str(DIGITS / "probe.ftr"), *short, *draw1, "--set", "seed=1", "--out", "runs/probe-1"]) == 0
    capsys.readouterr()
    accuracies = [
        json.loads((digits / f"runs/probe-{n}/summary.json").read_text())["final"]["val_accuracy"] for n in (0, 1)
    ]

    assert main(["compare", "--mean", "runs/probe-0", "runs/probe-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[:-1]] == [["recipe", "runs"], ["digits-probe", "2"]]
    assert f"{sum(accuracies) / 2:.4f} ± " in out[1]
