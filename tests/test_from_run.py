"""`weights run("runs/x")`: starting from a finished run, head included; and what
`ftr plan` says a weights file loads and drops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from test_compile import compile_to, script_ok
from test_run import assert_rows_close, fresh_model, ftr, metrics, plan_of, recipe_text, run_ok, weights, write_recipe

from recipe_lang.cli import main
from recipe_lang.resolve import from_run as from_run_module

pytestmark = pytest.mark.usefixtures("one_thread")

FIRST = recipe_text(name="first", epochs=1, evaluate="metrics loss, accuracy\n  best accuracy")
LINE = 6  # the weights statement of recipe_text's model block


def from_run(weights_value: str, **changes) -> str:
    return recipe_text(epochs=1, **changes).replace("weights none", f"weights {weights_value}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A folder with data/ and runs/first, a one-epoch run of resnet18 that kept best.pt."""
    root = tmp_path_factory.mktemp("from_run")
    make_image_folder(root / "data" / "train", per_class=4, size=32, seed=1)
    make_image_folder(root / "data" / "val", per_class=2, size=32, seed=2)
    recipe = write_recipe(root, FIRST, "first.ftr")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        code = main(["run", str(recipe), "--out", "runs/first", "--device", "cpu", "--quiet"])
    torch.set_num_threads(threads)
    assert code == 0
    return root


@pytest.fixture
def root(finished, monkeypatch):
    monkeypatch.chdir(finished)
    return finished


def check_error(capsys, text: str, *extra) -> str:
    write_recipe(Path.cwd(), text, "second.ftr")
    code, _, err = ftr(capsys, "check", "second.ftr", *extra)
    assert code == 1, err
    return err


# --- the model a run starts from -------------------------------------------------


def test_the_model_starts_as_the_runs_best_model_head_included(root):
    plan = plan_of(write_recipe(root, from_run('run("runs/first", model=best)'), "second.ftr"))
    model = fresh_model(plan)
    after_run = torch.get_rng_state()
    best = weights(root / "runs" / "first" / "best.pt")
    state = model.state_dict()
    assert list(state) == list(best)
    assert all(torch.equal(state[k], best[k]) for k in best)

    plain = fresh_model(plan_of(write_recipe(root, from_run("none"), "plain.ftr")))
    assert not torch.equal(plain.state_dict()["fc.weight"], best["fc.weight"])
    assert torch.equal(torch.get_rng_state(), after_run)  # the head's init spent the seed as before


def test_model_final_is_the_default_and_loads_model_pt(root):
    plan = plan_of(write_recipe(root, from_run('run("runs/first")'), "second.ftr"))
    assert plan.weights.file == str(Path("runs/first/model.pt"))
    final = weights(root / "runs" / "first" / "model.pt")
    assert torch.equal(fresh_model(plan).state_dict()["fc.weight"], final["fc.weight"])


def test_plan_says_the_weights_come_from_the_run(root, capsys):
    summary = json.loads((root / "runs" / "first" / "summary.json").read_text())
    best = summary["best"]
    recipe = write_recipe(root, from_run('run("runs/first", model=best)'), "second.ftr")
    code, out, err = ftr(capsys, "plan", recipe)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"t: resnet18 with the weights of run runs/first (best.pt, epoch {best['epoch']}, "
        f"val_accuracy {best['value']:.4g}), 11.18M parameters"
    )
    assert lines[1] == "weights: 122 tensors loaded from runs/first/best.pt, the head included"
    assert lines[2] == "head: linear 512 -> 4, replaces fc, with the run's weights"

    recipe = write_recipe(root, from_run('run("runs/first")'), "final.ftr")
    code, out, _ = ftr(capsys, "plan", "--no-data", recipe)
    assert out.splitlines()[0] == "t: resnet18 with the weights of run runs/first (model.pt), 11.18M parameters"
    assert not out.splitlines()[1].startswith("weights:")  # --no-data opens no folder


def test_compiled_script_gives_ftr_runs_numbers(root, capsys):
    recipe = write_recipe(root, from_run('run("runs/first", model=best)'), "second.ftr")
    script = compile_to(capsys, recipe, root / "second.py")
    assert 'RUN_WEIGHTS = "runs/first/best.pt"' in script
    run_ok(capsys, recipe, root / "runs" / "by_ftr")
    script_ok(capsys, root / "second.py", root / "runs" / "by_script")
    assert_rows_close(metrics(root / "runs" / "by_script"), metrics(root / "runs" / "by_ftr"), rel=0)

    # a compiled script's run folder is a run to start from too
    again = write_recipe(root, from_run('run("runs/by_script")'), "third.ftr")
    code, out, err = ftr(capsys, "plan", again)
    assert code == 0, err
    assert out.splitlines()[0].startswith("t: resnet18 with the weights of run runs/by_script (model.pt, epoch 1 of 1)")


def test_the_runs_recipe_is_read_with_its_set_options(tmp_path):
    (tmp_path / "recipe.ftr").write_text("# ftr run --set model.backbone=resnet34\n" + FIRST)
    assert from_run_module.run_recipe(str(tmp_path)).model.backbone == "resnet34"


# --- what does not fit, at the recipe's line and column ------------------------------


def test_missing_folder(root, capsys):
    err = check_error(capsys, from_run('run("runs/nope")'))
    assert err.startswith(f"second.ftr:{LINE}:15: error: run folder 'runs/nope' does not exist")
    recipe = write_recipe(root, from_run('run("runs/nope")'), "second.ftr")
    assert ftr(capsys, "check", "--no-data", recipe)[0] == 0  # --no-data opens no run folder


def test_not_a_run_folder(root, capsys):
    err = check_error(capsys, from_run('run("data")'))
    assert f":{LINE}:15: error: 'data' is not a run folder: it has no recipe.ftr and no classes.json" in err


def copy_of_run(root: Path, name: str, *without: str) -> str:
    shutil.copytree(root / "runs" / "first", root / "runs" / name, dirs_exist_ok=True)
    for file in without:
        (root / "runs" / name / file).unlink()
    return f"runs/{name}"


def test_best_without_best_pt(root, capsys):
    folder = copy_of_run(root, "no_best", "best.pt")
    err = check_error(capsys, from_run(f'run("{folder}", model=best)'))
    assert f"second.ftr:{LINE}:15: error: run '{folder}' has no best.pt" in err
    assert "use model=final" in err


def test_unfinished_run(root, capsys):
    folder = copy_of_run(root, "unfinished", "model.pt", "summary.json")
    err = check_error(capsys, from_run(f'run("{folder}")'))
    assert f"second.ftr:{LINE}:15: error: run '{folder}' is unfinished: it has no model.pt" in err
    assert "or start from its best epoch with model=best" in err


def test_other_classes_name_both_lists(root, capsys):
    other = root / "other_data"
    make_image_folder(other / "train", per_class=2, size=32, seed=3)
    (other / "train" / "class_3").rename(other / "train" / "dog")
    text = from_run('run("runs/first")').replace('"data/train"', '"other_data/train"').replace("val imagefolder", "#")
    err = check_error(capsys, text)
    assert f"second.ftr:{LINE}:11: error: run 'runs/first' learned other classes than this recipe's data holds" in err
    assert "the run: 4 (class_0, class_1, class_2, class_3)" in err
    assert "the data: 4 (class_0, class_1, class_2, dog)" in err
    assert 'write weights file("runs/first/model.pt")' in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head": "linear(classes=5)"}, "has the head linear(classes=4), this recipe linear(classes=5)"),
        ({"head": "mlp(classes=4, hidden=8)"}, "has the head linear(classes=4), this recipe mlp(classes=4, hidden=8)"),
    ],
)
def test_other_head(root, capsys, change, message):
    err = check_error(capsys, from_run('run("runs/first")', **change))
    assert err.startswith(f"second.ftr:{LINE}:11: error: run 'runs/first' ") and message in err, err


def test_other_head_at_the_tensor_level(root, capsys):
    """A dropout before the linear layer moves its tensors: names must match exactly."""
    err = check_error(capsys, from_run('run("runs/first")', head="linear(classes=4, dropout=0.5)"))
    assert f"second.ftr:{LINE}:11: error: 'runs/first/model.pt' does not fit this recipe's model" in err
    assert "missing: fc.1.weight" in err and "unexpected: fc.weight" in err


def test_other_backbone(root, capsys):
    text = from_run('run("runs/first")').replace("backbone resnet18", "backbone resnet34")
    err = check_error(capsys, text)
    assert err.startswith(f"second.ftr:{LINE}:11: error: run 'runs/first' trained resnet18, not resnet34")


# --- what a weights file loads and drops ----------------------------------------------


def test_plan_lists_what_a_weights_file_loads_and_drops(root, capsys):
    recipe = write_recipe(root, from_run('file("runs/first/model.pt")'), "second.ftr")
    code, out, err = ftr(capsys, "plan", recipe)
    assert code == 0, err
    assert out.splitlines()[1] == (
        "weights: 120 tensors loaded from runs/first/model.pt; dropped: fc.bias, fc.weight "
        "(replaced by the new head at fc)"
    )
    code, out, _ = ftr(capsys, "plan", "--json", recipe)
    plan = json.loads(out)["weights"]
    assert plan["ignored_keys"] == ["fc.bias", "fc.weight"] and len(plan["loaded"]) == 120


def test_plan_lists_what_strict_false_leaves_out(root, capsys):
    state = weights(root / "runs" / "first" / "model.pt")
    state["layer4.0.conv1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(2)
    for key in [k for k in state if k.startswith("layer3.1.")]:
        del state[key]
    torch.save(state, root / "w.pt")
    recipe = write_recipe(root, from_run('file("w.pt", strict=false)'), "second.ftr")
    code, out, err = ftr(capsys, "plan", recipe)
    assert code == 0, err
    assert out.splitlines()[1:3] == [
        "weights: 107 tensors loaded from w.pt; dropped: fc.bias, fc.weight (replaced by the new head at fc); "
        "extra.weight (not in the model); layer4.0.conv1.weight (misshapen)",
        "weights: not in the file, left as built: layer3.1.* (12)",
    ]
    missing = json.loads(ftr(capsys, "plan", "--json", recipe)[1])["weights"]["missing"]
    assert len(missing) == 12 and missing[0] == "layer3.1.conv1.weight"


DAMAGES = [
    ("model.pt", b"PK\x03\x04 cut short", "'runs/damaged/model.pt' is not a torch checkpoint"),
    ("model.pt", b"", "'runs/damaged/model.pt' is not a torch checkpoint"),
    ("recipe.ftr", b"\xff\xfe\x00 not text", "cannot read 'runs/damaged/recipe.ftr': it is not UTF-8 text"),
    ("classes.json", b'{"class_0": 0, "class_1', "cannot read 'runs/damaged/classes.json'"),
]


@pytest.mark.parametrize("name, content, message", DAMAGES, ids=[f"{d[0]}-{i}" for i, d in enumerate(DAMAGES)])
def test_a_damaged_run_file_is_a_diagnostic(root, capsys, name, content, message):
    folder = copy_of_run(root, "damaged")
    (root / folder / name).write_bytes(content)
    err = check_error(capsys, from_run(f'run("{folder}")'))
    assert f"second.ftr:{LINE}:" in err and f"error: {message}" in err, err
    assert "Traceback" not in err


def test_a_hostile_model_pt_is_refused_and_runs_nothing(root, capsys):
    from test_resume_damage import Hostile

    folder = copy_of_run(root, "hostile")
    marker = root / "pwned"
    torch.save({"fc.weight": Hostile(marker)}, root / folder / "model.pt")
    err = check_error(capsys, from_run(f'run("{folder}")'))
    assert f"'{folder}/model.pt' is not a plain tensor checkpoint" in err and "Traceback" not in err
    assert not marker.exists()
