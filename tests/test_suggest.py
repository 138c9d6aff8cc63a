"""`ftr suggest lr|freeze`: the range test's rule on a problem whose divergence point
is known, and both commands on a tiny recipe (resnet18, 32 px images, two batches an
epoch): deterministic, group ratios kept, only their own lines changed, the result
`ftr fmt`-clean and checked."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from test_run import ftr

import recipe_lang
from runtime.suggest.lr_range import Sweep, ramp, sweep, valley

RECIPE = """recipe "tiny"
seed 0
output "{root}/out"

model {{
  backbone resnet18
  weights none
  head linear(classes=2)
}}

data {{
  train imagefolder("{root}/data/train")
  val imagefolder("{root}/data/val")
  batch_size 4
  train_transforms resize(32)
  eval_transforms resize(32)
}}

groups {{
  stem = conv1, bn1
}}

train {{
  epochs 2
  optimizer sgd(momentum=0.9)
  lr head=1e-2, stem=1e-4  # by hand
  freeze all except head, stem
  at epoch 2 freeze stem
}}
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch, one_thread) -> Path:
    make_image_folder(tmp_path / "data" / "train", classes=2, per_class=4, size=32, seed=1)
    make_image_folder(tmp_path / "data" / "val", classes=2, per_class=2, size=32, seed=2)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.ftr"
    path.write_text(RECIPE.format(root=tmp_path))
    return path


def changed_lines(before: str, after: str) -> list[str]:
    """The lines of `after` that `before` does not have, and the lines it lost."""
    diff = difflib.ndiff(before.splitlines(), after.splitlines())
    return [line for line in diff if line[:2] in ("+ ", "- ")]


# --- the range test itself ------------------------------------------------------------


def test_range_test_suggests_a_rate_below_divergence_on_least_squares():
    """Full-batch gradient descent on a mean squared error diverges for rates above
    2 / (the largest eigenvalue of its Hessian): the suggestion lies below that, in the
    part of the ramp where the loss fell, and the sweep stopped at divergence."""
    torch.manual_seed(0)
    x = torch.randn(64, 3) * torch.tensor([1.0, 2.0, 0.5])
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    inputs = torch.cat([x, torch.ones(64, 1)], 1)  # the bias as a fourth input
    critical = 2 / torch.linalg.eigvalsh(2 * inputs.T @ inputs / len(x)).max().item()

    def step(rate: float) -> float:
        optimizer.param_groups[0]["lr"] = rate
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    measured = sweep(step, ramp(1e-7, 10.0, 100))
    suggested = measured.suggestion()
    assert measured.stop in ("diverged", "non-finite loss")
    assert measured.rates[suggested] < critical < measured.stop_rate
    assert measured.smoothed[suggested] < measured.smoothed[0]


def test_sweep_stops_where_the_smoothed_loss_passes_four_times_its_lowest():
    losses = iter([1.0] * 5 + [100.0] * 50)
    measured = sweep(lambda rate: next(losses), ramp(1e-3, 1.0, 40))
    assert measured.stop == "diverged"
    assert len(measured.rates) < 10
    assert measured.smoothed[-1] > 4 * min(measured.smoothed)
    assert measured.smoothed[0] == pytest.approx(1.0)  # bias-corrected from the first step


def test_valley_is_the_middle_of_the_longest_fall():
    curve = [5.0, 5.1, 4.0, 3.0, 2.0, 1.0, 0.5, 3.0, 9.0]
    assert valley(curve) == 3  # the fall runs from index 0 to 6
    assert Sweep(list(range(9)), curve, curve, 9, "", None).suggestion() == 1  # the last five are left out


# --- ftr suggest lr -------------------------------------------------------------------


def test_suggest_lr_is_deterministic_keeps_group_ratios_and_changes_only_its_line(recipe, capsys):
    options = ("--steps", "40", "--plot", "curve.png")
    code, _, err = ftr(capsys, "suggest", "lr", recipe, "-o", "one.ftr", *options)
    assert code == 0, err
    code, _, err = ftr(capsys, "suggest", "lr", recipe, "-o", "two.ftr", *options)
    assert code == 0, err
    one, two = Path("one.ftr").read_text(), Path("two.ftr").read_text()
    assert one == two
    assert Path("curve.png").read_bytes().startswith(b"\x89PNG")
    assert not Path("out").exists()  # the recipe's output folder is not touched

    rates = recipe_lang.parse(one).train.lr.groups
    assert rates["head"] / rates["stem"] == pytest.approx(100)
    assert rates["head"] != 1e-2
    changed = changed_lines(recipe.read_text(), one)
    assert "-   lr head=1e-2, stem=1e-4  # by hand" in changed
    assert sum(line.startswith("+   lr head=") and line.endswith("  # by hand") for line in changed) == 1
    assert all(line.startswith(("+   # suggest lr:", "+   lr ", "-   lr ")) for line in changed)
    assert len(changed) == 2 + 4
    assert "fastai's valley" in one and "curve: curve.png" in one
    code, _, err = ftr(capsys, "fmt", "--check", "one.ftr")
    assert code == 0, err


def test_suggest_lr_without_matplotlib_still_suggests(recipe, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    code, out, err = ftr(capsys, "suggest", "lr", recipe, "--steps", "10")
    assert code == 0, err
    assert "ftr suggest lr: no curve: the curve's PNG needs matplotlib: pip install 'ftr[report]'" in err.splitlines()
    assert "# suggest lr: x" in out and "the curve: not drawn" in out
    assert not list(Path().glob("*.png"))


def test_suggest_lr_refuses_an_epoch_the_recipe_does_not_train(recipe, capsys):
    code, out, err = ftr(capsys, "suggest", "lr", recipe, "--epoch", "3")
    assert code == 1
    assert "--epoch 3: the recipe trains epochs 1 to 2" in err
    assert out == ""


def test_suggest_reports_recipe_errors_and_unwritable_outputs_before_measuring(recipe, capsys):
    Path("bad.ftr").write_text(recipe.read_text().replace("epochs 2", "epochs 0"))
    code, out, err = ftr(capsys, "suggest", "lr", "bad.ftr")
    assert code == 1 and out == ""
    assert "bad.ftr:24:10: error: invalid epochs: must be at least 1" in err  # the rendered diagnostic
    code, _, err = ftr(capsys, "suggest", "freeze", recipe, "-o", "nowhere/new.ftr")
    assert code == 1
    assert "-o nowhere/new.ftr: there is no folder 'nowhere': create it, or write elsewhere" in err


# --- ftr suggest freeze ---------------------------------------------------------------


def test_suggest_freeze_is_deterministic_checks_and_changes_only_freeze_lines(recipe, capsys):
    code, printed, err = ftr(capsys, "suggest", "freeze", recipe, "--batches", "2")
    assert code == 0, err
    code, _, err = ftr(capsys, "suggest", "freeze", recipe, "--batches", "2", "-o", "new.ftr")
    assert code == 0, err
    new = Path("new.ftr").read_text()
    assert new == printed
    for block in ("conv1, bn1", "layer1", "layer2", "layer3", "layer4", "fc (head)"):
        assert f"# suggest freeze:   {block} " in new
    freeze_lines = [line for line in new.splitlines() if line.startswith(("  freeze", "  at epoch"))]
    assert len(freeze_lines) <= 1  # one freeze line, or none when every block trains
    changed = changed_lines(recipe.read_text(), new)
    assert "-   at epoch 2 freeze stem" in changed
    assert all(line.startswith(("+   # suggest freeze:", "+   freeze ", "-   freeze ", "-   at ")) for line in changed)
    code, _, err = ftr(capsys, "check", "new.ftr")
    assert code == 0, err
    assert not Path("out").exists()


def test_blocks_are_the_backbone_children_with_the_stem_joined_and_the_head_left_out():
    from torch import nn

    from runtime.suggest.rgn import backbone_blocks

    features = nn.Sequential()
    features.add_module("conv", nn.Conv2d(3, 4, 1))
    features.add_module("bn", nn.BatchNorm2d(4))
    features.add_module("act", nn.ReLU())
    features.add_module("stages", nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)))
    model = nn.Sequential()
    model.add_module("features", features)  # the one child with parameters besides the head: looked into
    model.add_module("classifier", nn.Sequential(nn.Dropout(), nn.Linear(4, 2)))
    blocks = backbone_blocks(model, "classifier.1")
    assert [block.modules for block in blocks] == [["features.conv", "features.bn"], ["features.stages"]]
    assert blocks[0].numel == 3 * 4 + 4 + 4 + 4
    assert blocks[1].params == [
        "features.stages.0.weight",
        "features.stages.0.bias",
        "features.stages.1.weight",
        "features.stages.1.bias",
    ]
