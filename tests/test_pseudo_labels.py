"""`pseudo_label` with `unlabeled images("dir")` (issue 15, item 3): self-training on
unlabeled images in both back ends, resume, the keys of metrics.jsonl, and the
errors a recipe can make."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import make_image_folder
from test_compile import compile_to, script_ok
from test_run import assert_rows_close, ftr, interrupted_run, metrics, run_ok, weights, without_seconds, write_recipe

from recipe_lang.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """recipe "pseudo"
seed 5

model {{
  backbone resnet18
  weights none
  head linear(classes=4)
}}

data {{
  train imagefolder("data/train")
  val imagefolder("data/val")
{unlabeled}
  batch_size 8
  train_transforms random_resized_crop(32, scale=(0.6, 1.0)), hflip()
  eval_transforms resize(32)
}}

train {{
  epochs 3
  optimizer sgd(momentum=0.9)
  lr 1e-2
{pseudo}
}}
"""
UNLABELED = '  unlabeled images("data/unlabeled")'
UNLABELED_IMAGES = 17  # 4 class folders of 4, and one image beside them


def recipe(threshold=None, unlabeled=UNLABELED, start=2, weight=0.5, balanced=None) -> str:
    pseudo = "" if threshold is None else f"  pseudo_label threshold={threshold}, weight={weight}, start={start}"
    if balanced is not None:
        pseudo += f", balanced={balanced}"
    return RECIPE.format(unlabeled=unlabeled if threshold is not None else "", pseudo=pseudo)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo")
    make_image_folder(root / "data" / "train", per_class=4, size=32, seed=1)
    make_image_folder(root / "data" / "val", per_class=2, size=32, seed=2)
    make_image_folder(root / "data" / "unlabeled", per_class=4, size=32, seed=3)
    # an image whose folder names no class: used, never measured
    shutil.copy(root / "data" / "unlabeled" / "class_0" / "00.png", root / "data" / "unlabeled" / "loose.png")
    write_recipe(root, recipe(), "plain.ftr")
    write_recipe(root, recipe(threshold=1.0), "never.ftr")
    write_recipe(root, recipe(threshold=0.3), "pseudo.ftr")
    write_recipe(root, recipe(threshold=0.6, balanced="true"), "balanced.ftr")
    return root


@pytest.fixture(scope="module")
def runs(folder):
    """`ftr run` of a recipe in the folder, once per module: name -> run folder."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = folder / f"run_{name}"
            code = main(["run", str(folder / f"{name}.ftr"), "--out", str(out), "--device", "cpu", "--quiet"])
            assert code == 0
            done[name] = out
        return done[name]

    return run


def test_threshold_one_selects_nothing_and_gives_the_plain_run_s_numbers(folder, runs, monkeypatch):
    monkeypatch.chdir(folder)
    never, plain = metrics(runs("never")), metrics(runs("plain"))
    # before start nothing is logged; from start on, the share is 0 and there is no accuracy to give
    assert "pseudo_share" not in never[0]
    assert [row["pseudo_share"] for row in never[1:]] == [0.0, 0.0]
    assert not any("pseudo_accuracy" in row for row in never)
    stripped = [{k: v for k, v in row.items() if k != "pseudo_share"} for row in without_seconds(never)]
    assert stripped == without_seconds(plain)  # number for number
    assert weights(runs("never") / "model.pt").keys() == weights(runs("plain") / "model.pt").keys()


def test_confident_predictions_join_training_from_start_in_both_back_ends(folder, runs, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    rows, plain = metrics(runs("pseudo")), metrics(runs("plain"))
    assert without_seconds(rows[:1]) == without_seconds(plain[:1])  # epoch 1 is before start=2
    for row in rows[1:]:
        chosen = row["pseudo_share"] * UNLABELED_IMAGES
        assert 0 < row["pseudo_share"] <= 1 and chosen == pytest.approx(round(chosen))
        assert 0 <= row["pseudo_accuracy"] <= 1
        assert list(row)[:4] == ["epoch", "train_loss", "pseudo_share", "pseudo_accuracy"]
    assert rows[1]["train_loss"] != plain[1]["train_loss"]  # the pseudo-labelled images trained
    script = compile_to(capsys, "pseudo.ftr", "pseudo.py")
    assert "class PseudoLabels:" in script and "PSEUDO_LABEL = {" in script
    assert "PseudoLabels" not in compile_to(capsys, "plain.ftr", "plain.py")
    script_ok(capsys, "pseudo.py", "script")
    assert_rows_close(metrics("script"), rows)


def test_a_resumed_run_selects_again_and_gives_the_uninterrupted_run_s_numbers(folder, runs, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    full = runs("pseudo")
    assert interrupted_run("pseudo.ftr", "stopped", epoch=2) == 130
    assert len(metrics("stopped")) == 2
    run_ok(capsys, "pseudo.ftr", "stopped", "--resume")
    assert_rows_close(metrics("stopped"), metrics(full))
    got, expected = weights(Path("stopped") / "model.pt"), weights(full / "model.pt")
    assert all((got[k] == expected[k]).all() for k in expected)


def test_the_compiled_script_resumes_to_the_same_numbers(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    compile_to(capsys, "pseudo.ftr", "resumed.py")
    script_ok(capsys, "resumed.py", "script_full")
    shutil.copytree("script_full", "script_resumed")
    Path("script_resumed/summary.json").unlink()
    Path("script_resumed/checkpoint.pt").write_bytes(b"")  # cut short: resumes from epoch 2's
    script_ok(capsys, "resumed.py", "script_resumed", "--resume")
    assert_rows_close(metrics("script_resumed"), metrics("script_full"))


def test_the_plan_says_what_is_pseudo_labelled_and_that_nothing_is_cached(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    path = write_recipe(folder, recipe(threshold=0.9, start=3).replace("lr 1e-2", "lr 1e-2\n  freeze all except head"))
    code, out, err = ftr(capsys, "plan", path)
    assert code == 0, err
    assert (
        "pseudo-labels: from epoch 3, images under data/unlabeled predicted at >= 0.9 train as that class "
        "(loss weight 0.5)"
    ) in out
    assert "pseudo_label trains on unlabeled images through the whole model" in out


def test_a_missing_or_empty_unlabeled_folder_is_an_error_at_its_line(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    missing = write_recipe(folder, recipe(threshold=0.9, unlabeled='  unlabeled images("data/nowhere")'), "m.ftr")
    code, _, err = ftr(capsys, "check", missing)
    assert code == 1
    assert f"{missing}:13:13: error: unlabeled folder 'data/nowhere' does not exist" in err
    (folder / "data" / "empty" / "sub").mkdir(parents=True)
    empty = write_recipe(folder, recipe(threshold=0.9, unlabeled='  unlabeled images("data/empty")'), "e.ftr")
    code, _, err = ftr(capsys, "check", empty)
    assert code == 1
    assert f"{empty}:13:13: error: unlabeled folder 'data/empty' has no images" in err


def test_unlabeled_images_without_pseudo_label_is_a_warning(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    path = write_recipe(folder, recipe().replace("  batch_size 8", UNLABELED + "\n  batch_size 8"), "w.ftr")
    code, _, err = ftr(capsys, "check", "--syntax", path)
    assert code == 0
    assert f"{path}:14:13: warning: the unlabeled images are not used without pseudo_label" in err


def test_nproc_is_refused_before_any_process_starts(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    code, _, err = ftr(capsys, "run", "pseudo.ftr", "--nproc", "2", "--out", "never_started")
    assert code == 1
    assert "--nproc 2: pseudo_label (pseudo.ftr:23:3) takes one process" in err
    assert not (folder / "never_started").exists()


def test_pseudo_label_belongs_to_classification(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    text = recipe(threshold=0.9).replace('recipe "pseudo"', 'recipe "pseudo"\ntask text_classification')
    path = write_recipe(folder, text, "text.ftr")
    code, _, err = ftr(capsys, "check", "--syntax", path)
    assert code == 1
    assert f"{path}:14:3: error: unlabeled belongs to task classification, not text_classification" in err
    assert f"{path}:24:3: error: pseudo_label belongs to task classification, not text_classification" in err


def test_prepare_puts_half_of_the_unlabelled_target_pool_in_class_folders(tmp_path):
    """digits/prepare.py --unlabeled 0.5: the same labelled draw as without it; of each
    target class's other images, half go to target/unlabeled/<class>, half to val."""
    import subprocess
    import sys

    prepare = Path(__file__).resolve().parent.parent / "recipes" / "digits" / "prepare.py"

    def draw(out, *extra):
        command = [sys.executable, str(prepare), "--out", str(out), "--shots", "3", "--seed", "1", *extra]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        return {
            part: sorted(str(p.relative_to(out / "target" / part)) for p in (out / "target" / part).rglob("*.png"))
            for part in ("train", "val", "unlabeled")
        }

    plain, split = draw(tmp_path / "plain"), draw(tmp_path / "split", "--unlabeled", "0.5")
    assert split["train"] == plain["train"] and len(split["train"]) == 15
    assert not plain["unlabeled"]
    assert sorted(split["unlabeled"] + split["val"]) == plain["val"]
    for digit in "56789":
        pool = sum(1 for name in plain["val"] if name.startswith(f"{digit}/"))
        unlabeled = sum(1 for name in split["unlabeled"] if name.startswith(f"{digit}/"))
        assert unlabeled == round(0.5 * pool)


def test_class_thresholds_are_flexmatch_s_against_a_hand_computation():
    import torch

    from runtime.pseudo_labels import class_thresholds

    # 10 images, 3 classes, threshold 0.9: at >= 0.9, four predicted 0, two predicted 1, none 2
    confidence = torch.tensor([0.95, 0.99, 0.9, 0.97, 0.91, 0.93, 0.5, 0.6, 0.4, 0.7])
    predicted = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
    # sigma = (4, 2, 0); N - sum = 4; beta = sigma / max(4, 4) = (1, 0.5, 0);
    # M(beta) = beta / (2 - beta) = (1, 1/3, 0)
    got = class_thresholds(confidence, predicted, 3, 0.9)
    assert got.tolist() == pytest.approx([0.9, 0.3, 0.0])
    # warm-up: 1 of 10 images is at >= 0.9 (class 0), so N - sum = 9 normalises, not max sigma = 1:
    # beta = (1/9, 0, 0), M = (1/9) / (17/9) = 1/17
    low = torch.tensor([0.95, 0.5, 0.6, 0.4, 0.7, 0.3, 0.5, 0.6, 0.8, 0.85])
    got = class_thresholds(low, predicted, 3, 0.9)
    assert got.tolist() == pytest.approx([0.9 / 17, 0.0, 0.0])


def test_balanced_selects_more_of_the_class_the_model_is_unsure_of():
    import torch

    from runtime.pseudo_labels import class_thresholds

    # class 0: 8 sure predictions; class 1: 2 sure and 6 at 0.8 (the unsure class)
    confidence = torch.tensor([0.99] * 8 + [0.97, 0.96] + [0.8] * 6)
    predicted = torch.tensor([0] * 8 + [1] * 8)
    one = (confidence >= 0.95).nonzero().flatten()
    thresholds = class_thresholds(confidence, predicted, 2, 0.95)
    flex = (confidence >= thresholds[predicted]).nonzero().flatten()
    # sigma = (8, 2), N - sum = 6, beta = (1, 0.25), T = (0.95, 0.95 / 7)
    assert thresholds.tolist() == pytest.approx([0.95, 0.95 * 0.25 / 1.75])
    assert (predicted[one] == 1).sum() == 2 and (predicted[flex] == 1).sum() == 8
    assert (predicted[one] == 0).sum() == (predicted[flex] == 0).sum() == 8  # the sure class keeps 0.95


def test_balanced_thresholds_give_the_same_numbers_in_both_back_ends(folder, runs, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    rows = metrics(runs("balanced"))
    for row in rows[1:]:
        assert 0 < row["pseudo_share"] <= 1
        assert 0 <= row["pseudo_threshold_min"] <= 0.6
    assert not any("pseudo_threshold_min" in row for row in metrics(runs("pseudo")))
    script = compile_to(capsys, "balanced.ftr", "balanced.py")
    assert "def class_thresholds(" in script and '"balanced": True' in script
    assert "class_thresholds" not in compile_to(capsys, "pseudo.ftr", "unbalanced.py")
    script_ok(capsys, "balanced.py", "script_balanced")
    assert_rows_close(metrics("script_balanced"), rows)
    code, out, err = ftr(capsys, "plan", "balanced.ftr")
    assert code == 0, err
    assert "predicted at >= a class-balanced (FlexMatch) threshold of at most 0.6 train as that class" in out


def test_balanced_is_a_bool_at_its_line(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    path = write_recipe(folder, recipe(threshold=0.9, balanced="3"), "b.ftr")
    code, _, err = ftr(capsys, "check", "--syntax", path)
    assert code == 1
    column = recipe(threshold=0.9, balanced="3").splitlines()[22].index("balanced=3") + len("balanced=") + 1
    assert f"{path}:23:{column}: error: invalid balanced: must be true or false" in err
