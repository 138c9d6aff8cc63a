"""`head_init probe` (LP-FT): the new linear head fitted by logistic regression on frozen
features before the first epoch, in ftr run and in the compiled script."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from sklearn.linear_model import LogisticRegression
from test_compile import compile_to, script_ok
from test_run import ftr, metrics, run_ok, write_recipe

from runtime.head_probe import fit_head, logistic_regression

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """recipe "probe"
seed 3

model {{
  backbone resnet18
  weights none
  head {head}
  {init}
}}

data {{
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 8
  train_transforms random_resized_crop(32), hflip()
  eval_transforms resize(32)
}}

train {{
  epochs 2
  optimizer sgd(momentum=0.9)
  lr 1e-3
  freeze all except head
  at epoch 2 unfreeze rest
}}

evaluate {{
  metrics loss, accuracy
}}
"""


def test_the_fit_is_scikit_learn_s_logistic_regression_at_its_defaults():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=generator, dtype=torch.float64)
    y = (x[:, :3] + 0.8 * torch.randn(120, 3, generator=generator, dtype=torch.float64)).argmax(1)
    weight, bias = logistic_regression(x, y, 3)
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    # multinomial weights are defined up to a shift shared by the classes: compare centred ones
    ours = weight.numpy() - weight.numpy().mean(0)
    theirs = reference.coef_ - reference.coef_.mean(0)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    np.testing.assert_allclose(bias.numpy() - bias.numpy().mean(), reference.intercept_, atol=2e-4)


def test_fit_head_sets_the_last_linear_of_a_head_with_dropout_and_lowers_its_loss():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(64, 8, generator=generator)
    labels = (features[:, 0] > 0).long() + (features[:, 1] > 0).long()
    head = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)).train()
    before = torch.nn.functional.cross_entropy(head.eval()(features), labels).item()
    head.train()
    fitted = fit_head(head, features, labels)
    assert head.training  # left as it was
    assert fitted["loss"] < before and fitted["accuracy"] >= 0.8
    assert fitted["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(head.eval()(features), labels).item(), rel=1e-5
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    make_image_folder(root / "data" / "train", per_class=6, size=36, seed=4)
    make_image_folder(root / "data" / "val", per_class=4, size=36, seed=5)
    write_recipe(root, RECIPE.format(head="linear(classes=4, dropout=0.2)", init="head_init probe"), "probe.ftr")
    write_recipe(root, RECIPE.format(head="linear(classes=4, dropout=0.2)", init=""), "plain.ftr")
    return root


def test_the_probed_head_starts_better_and_the_script_gives_ftr_run_s_numbers(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    run_ok(capsys, "probe.ftr", "probe")
    run_ok(capsys, "plain.ftr", "plain")
    probed, plain = metrics(folder / "probe"), metrics(folder / "plain")
    # epoch 1 trains the head alone from its start: the probe's start is the better one
    assert probed[0]["val_loss"] < plain[0]["val_loss"]
    assert probed[0]["val_accuracy"] >= plain[0]["val_accuracy"]
    compile_to(capsys, "probe.ftr", "probe.py")
    script_ok(capsys, "probe.py", "script")
    script = metrics(folder / "script")
    for ours, theirs in zip(script, probed, strict=True):
        assert {k: v for k, v in ours.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in theirs.items() if k != "seconds"}, rel=1e-6
        )


def test_probe_needs_a_linear_head_and_names_it_at_its_line(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    path = write_recipe(folder, RECIPE.format(head="mlp(classes=4, hidden=16)", init="head_init probe"), "mlp.ftr")
    code, _, err = ftr(capsys, "check", "--no-data", path)
    assert code == 1
    assert f"{path}:8:13: error: head_init probe fits a linear head; this recipe has head mlp(...)\n" in err
    assert "^^^^^ write head linear(classes=N), or remove head_init" in err
