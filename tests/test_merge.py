"""`ftr merge`: uniform and greedy soups, WiSE-FT, BatchNorm statistics, and the
run folder it writes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_image_folder
from test_run import ftr, run_ok, weights, write_recipe

from runtime.trained import open_run

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """recipe "soup"
seed {seed}

model {{
  backbone resnet18
  weights none
  head linear(classes=4)
}}

data {{
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 8
  train_transforms random_resized_crop(32), hflip()
  eval_transforms resize(32)
}}

train {{
  epochs 1
  optimizer sgd(momentum=0.9)
  lr {lr}
}}

evaluate {{
  metrics loss, accuracy
}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three one-epoch runs: two rates from one seed, and another seed."""
    root = tmp_path_factory.mktemp("merge")
    make_image_folder(root / "data" / "train", per_class=4, size=36, seed=6)
    make_image_folder(root / "data" / "val", per_class=3, size=36, seed=7)
    capsys = type("Quiet", (), {"readouterr": lambda self: ("", "")})()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name, seed, lr in (("a", 0, "1e-2"), ("b", 0, "3e-3"), ("other", 1, "1e-2")):
            run_ok(capsys, write_recipe(root, RECIPE.format(seed=seed, lr=lr), f"{name}.ftr"), name)
    return root


def _merge(capsys, *args):
    return ftr(capsys, "merge", *map(str, args))


def test_a_soup_of_one_run_is_that_run(folder, capsys, tmp_path):
    code, _, err = _merge(capsys, folder / "a", "-o", tmp_path / "one")
    assert code == 0, err
    assert "no held-out score: cannot measure on" in err  # the val folder is relative to the folder
    got, expected = weights(tmp_path / "one" / "model.pt"), weights(folder / "a" / "model.pt")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_uniform_soup_is_the_mean_and_a_run_folder_evaluate_accepts(folder, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(folder)
    code, _, err = _merge(capsys, folder / "a", folder / "b", "-o", tmp_path / "soup")
    assert code == 0, err
    got = weights(tmp_path / "soup" / "model.pt")
    a, b = weights(folder / "a" / "model.pt"), weights(folder / "b" / "model.pt")
    key = "layer1.0.conv1.weight"
    assert torch.allclose(got[key], (a[key] + b[key]) / 2, atol=1e-7)
    assert torch.equal(got["bn1.num_batches_tracked"], a["bn1.num_batches_tracked"])
    about = json.loads((tmp_path / "soup" / "merge.json").read_text())
    assert about["method"] == "uniform" and about["runs"] == [str(folder / "a"), str(folder / "b")]
    monkeypatch.chdir(folder)
    code, text, err = ftr(capsys, "evaluate", tmp_path / "soup", "-o", tmp_path / "eval")
    assert code == 0, err
    measured = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert measured["accuracy"] == about["held_out"]["val_accuracy"]


@pytest.mark.parametrize("alpha", [0, 1])
def test_wise_0_and_1_give_the_endpoints_exactly(folder, capsys, tmp_path, alpha, monkeypatch):
    monkeypatch.chdir(folder)
    code, _, err = _merge(capsys, folder / "a", "-o", tmp_path / "w", "--wise", alpha, "--model", "final")
    assert code == 0, err
    got = weights(tmp_path / "w" / "model.pt")
    if alpha == 1:
        expected = weights(folder / "a" / "model.pt")
    else:  # the model `ftr run a.ftr` builds before its first step
        run = open_run(str(folder / "a"), "final")
        torch.manual_seed(0)
        expected = run.task.build_model().state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected if expected[k].is_floating_point())


def test_a_greedy_soup_keeps_a_run_only_if_the_held_out_score_holds(folder, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(folder)
    code, _, err = _merge(capsys, folder / "a", folder / "b", "-o", tmp_path / "g", "--greedy")
    assert code == 0, err
    about = json.loads((tmp_path / "g" / "merge.json").read_text())
    alone, soup = about["scores"]["runs"], about["scores"]["soup"]
    assert soup >= max(alone)
    assert about["kept"][0] == str(folder / ("a" if alone[0] >= alone[1] else "b"))
    assert about["held_out"]["val_accuracy"] == soup


def test_runs_of_another_starting_point_are_refused_with_the_reason(folder, capsys, tmp_path):
    code, _, err = _merge(capsys, folder / "a", folder / "other", "-o", tmp_path / "x")
    assert code == 1
    assert "do not share a starting point: their seed differs (1 against 0)" in err
    assert not (tmp_path / "x").exists()


def test_recomputed_batchnorm_statistics_change_only_the_statistics(folder, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(folder)
    code, _, err = _merge(capsys, folder / "a", folder / "b", "-o", tmp_path / "r", "--bn", "recompute")
    assert code == 0, err
    recomputed = weights(tmp_path / "r" / "model.pt")
    code, _, _ = _merge(capsys, folder / "a", folder / "b", "-o", tmp_path / "m")
    averaged = weights(tmp_path / "m" / "model.pt")
    assert torch.equal(recomputed["layer1.0.conv1.weight"], averaged["layer1.0.conv1.weight"])
    assert not torch.allclose(recomputed["bn1.running_mean"], averaged["bn1.running_mean"])
