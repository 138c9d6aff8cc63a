"""`ftr compile`: the script's text (golden files, ruff, injection safety), every
construct of the language compiled and matched with `ftr run`, and the script's
own behaviour: folder rules, resume, failures.

Parity of each recipe in recipes/ with the script run in an isolated subprocess
is in test_compile_parity.py. Here scripts mostly run in this process (their
`main(argv)` called directly), which keeps the suite fast: importing torch in a
fresh process costs seconds on this machine.
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import make_image_folder
from hypothesis import given, settings
from test_docs import EXAMPLES, _whole
from test_fuzz import FUZZ, mutated_recipes
from test_run import (
    RESUME_RECIPE,
    assert_rows_close,
    ctrl_c_reaches_python,
    metrics,
    recipe_text,
    run_ok,
    weights,
    write_recipe,
)
from test_runtime_data import TinyDataset

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.diagnostics import RecipeError
from recipe_lang.resolve import resolve
from templates.compiler import compile_plan

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.ftr"))
GOLDEN = Path(__file__).parent / "expected_scripts"
GOLDEN_RECIPES = {  # expected_scripts/<name>.py: the script of this recipe
    "seed_loop": "recipes/seed_loop.ftr",
    "pets_resnet50": "recipes/pets_resnet50.ftr",
    "voc_fasterrcnn": "tests/fixtures/good/voc_fasterrcnn.ftr",  # detection, COCO weights
}


pytestmark = pytest.mark.usefixtures("one_thread")


def compile_to(capsys, recipe, script, *extra) -> str:
    code = main(["compile", str(recipe), "-o", str(script), *map(str, extra)])
    _, err = capsys.readouterr()
    assert code == 0, err
    return Path(script).read_text()


def run_script(script, *args) -> int:
    """The compiled script's main(argv), in this process."""
    namespace = runpy.run_path(str(script), run_name="compiled_script")
    return namespace["main"]([str(a) for a in args])


def script_ok(capsys, script, out, *args) -> dict:
    code = run_script(script, "--out", out, "--device", "cpu", "--quiet", *args)
    _, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((Path(out) / "summary.json").read_text())


def ruff(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=120)


# --- the text of the script --------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_RECIPES)
def test_golden_scripts(name, capsys, monkeypatch, tmp_path):
    """Every change to the generated code shows in review: FTR_UPDATE_GOLDEN=1 rewrites these."""
    monkeypatch.chdir(ROOT)
    script = compile_to(capsys, Path(GOLDEN_RECIPES[name]), tmp_path / "train.py")
    expected = GOLDEN / f"{name}.py"
    if os.environ.get("FTR_UPDATE_GOLDEN"):
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(script)
    assert script == expected.read_text()


def test_every_recipe_compiles_to_clean_code(capsys, tmp_path):
    """ruff's defaults (line length 88) and more rules, with no formatter run at compile time."""
    scripts = []
    for recipe in RECIPES + [write_recipe(tmp_path, text, f"feature{i}.ftr") for i, text in enumerate(FEATURES)]:
        script = tmp_path / f"{recipe.stem}.py"
        compile_to(capsys, recipe, script)
        ast.parse(script.read_text())
        scripts.append(str(script))
    formatted = ruff("format", "--isolated", "--check", "--diff", *scripts)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    checked = ruff("check", "--isolated", "--select", "E,F,W,I,B,UP", "--ignore", "E501", *scripts)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_documented_example_compiles(tmp_path, hf_models, monkeypatch):
    """No construct ftr run accepts is refused: every example of docs/language.md compiles to
    code that ruff leaves as it is."""
    monkeypatch.chdir(hf_models)
    scripts = []
    for i, example in enumerate(EXAMPLES):
        recipe = recipe_lang.parse(_whole(example), f"example{i}.ftr")
        script = tmp_path / f"example{i}.py"
        script.write_text(compile_plan(resolve(recipe, data=False, weights_file=False), recipe.source, "e.ftr"))
        scripts.append(str(script))
    formatted = ruff("format", "--isolated", "--check", *scripts)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@settings(FUZZ, max_examples=50)
@given(mutated_recipes())
def test_whatever_resolves_compiles(text):
    """Mutated recipes: each one that parses and resolves compiles to a script that parses
    (50 of them: each resolve builds a model, and 150 took two minutes of the suite)."""
    try:
        recipe = recipe_lang.parse(text, "fuzz.ftr")
        plan = resolve(recipe, data=False, weights_file=False)
    except RecipeError:
        return
    ast.parse(compile_plan(plan, recipe.source, recipe.filename))


def test_script_header_lists_recipe_plan_and_literals(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    script = compile_to(capsys, "recipes/vit_b16_probe.ftr", tmp_path / "t.py", "--set", "train.epochs=6")
    assert script.startswith("#!/usr/bin/env python3\n# vit-b16-probe: compiled by ftr 0.1.0")
    assert "# with --set train.epochs=6\n" in script
    assert "#       at epoch 4 unfreeze encoder.layers[-2:], encoder.ln warmup=1\n" in script
    assert re.search(r"^#     4-6 +head, rest \(part\) +14\.26M", script, re.M)
    namespace = runpy.run_path(str(tmp_path / "t.py"), run_name="compiled_script")
    assert namespace["EPOCHS"] == 6
    assert namespace["PHASES"][1]["trainable"] == [
        "encoder.layers.encoder_layer_10",
        "encoder.layers.encoder_layer_11",
        "encoder.ln",
        "heads",
    ]
    rest = [og["warmups"] for og in namespace["OPTIMIZER_GROUPS"] if og["group"] == "rest"]
    assert rest == [[], [], [[4, 1.0]], [[4, 1.0]]]  # split by weight decay and by the thaw
    assert namespace["RECIPE_LINES"][0] == "# ftr compile --set train.epochs=6\n"


def test_compile_to_stdout_and_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["compile", "recipes/seed_loop.ftr"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("#!/usr/bin/env python3") and 'NAME = "seed-loop"' in out

    bad = write_recipe(tmp_path, recipe_text().replace("optimizer sgd", "optimiser sgd"))
    assert main(["compile", str(bad), "-o", str(tmp_path / "never.py")]) == 1
    _, err = capsys.readouterr()
    assert re.search(r"r\.ftr:\d+:3: error: unknown statement 'optimiser' in train", err)
    assert not (tmp_path / "never.py").exists()

    assert main(["compile", "recipes/seed_loop.ftr", "-o", str(tmp_path / "no" / "such" / "dir.py")]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("ftr compile: error: cannot write") and "Traceback" not in err


def test_compiling_needs_no_data_and_no_weight_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # none of the recipe's paths exist here
    script = compile_to(capsys, ROOT / "recipes" / "vgg11_file_weights.ftr", tmp_path / "t.py")
    assert 'WEIGHTS_FILE = {\n    "path": "checkpoints/vgg11_places.pt",' in script
    assert os.access(tmp_path / "t.py", os.X_OK)


# --- injection safety ------------------------------------------------------------

NASTY = '"); import os; os.system("touch PWNED"); (" \'\'\' """ \\ # {{ x }} {% if %}\nline2 %s'
INJECTION_RECIPE = """recipe {name}
seed 3
output {output}

model {{
  backbone resnet18
  head linear(classes=2)
}}

data {{
  train csv({csv}, root={root}, image={image}, label={label})
  val split(0.25)
  batch_size 4
  train_transforms resize(16)
  eval_transforms resize(16)
}}

train {{
  epochs 1
  optimizer sgd(momentum=0.9)
  lr 0.01
  freeze all except head
}}
"""


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_recipe_strings_cannot_inject_code(capsys, tmp_path, monkeypatch):
    """Quotes, triple quotes, backslashes, newlines, #, {{ }} and Python in the recipe's
    name, paths, csv columns and output folder stay data: the script parses, runs,
    writes where the recipe says, and never runs the injected code."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / ("data" + NASTY.replace("/", "|"))
    images = folder / "images"
    make_image_folder(images, classes=2, per_class=4, size=16, seed=5)
    image_column, label_column = "image " + NASTY, "label " + NASTY
    csv_path = folder / ("labels " + NASTY.replace("/", "|") + ".csv")
    paths = sorted(images.rglob("*.png"))
    rows = [f"{path.relative_to(images)},{'yes' if 'class_1' in str(path) else 'no'}" for path in paths]

    def cell(text):
        return '"' + text.replace('"', '""') + '"'

    csv_path.write_text(f"{cell(image_column)},{cell(label_column)}\n" + "\n".join(rows) + "\n")
    output = "runs/" + NASTY.replace("/", "|")
    text = INJECTION_RECIPE.format(
        name=_quoted("name " + NASTY),
        output=_quoted(output),
        csv=_quoted(str(csv_path.relative_to(tmp_path))),
        root=_quoted(str(images.relative_to(tmp_path))),
        image=_quoted(image_column),
        label=_quoted(label_column),
    )
    recipe = write_recipe(tmp_path, text, "nasty.ftr")
    script = compile_to(capsys, recipe, tmp_path / "nasty.py")
    tree = ast.parse(script)
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not any(isinstance(f, ast.Attribute) and f.attr == "system" for f in calls)
    namespace = runpy.run_path(str(tmp_path / "nasty.py"), run_name="compiled_script")
    assert namespace["NAME"] == "name " + NASTY and namespace["OUTPUT"] == output

    assert run_script(tmp_path / "nasty.py", "--device", "cpu", "--quiet") == 0
    capsys.readouterr()
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    summary = json.loads((tmp_path / output / "summary.json").read_text())
    assert summary["recipe"] == "name " + NASTY and summary["status"] == "finished"
    assert (tmp_path / output / "recipe.ftr").read_text() == text
    run_ok(capsys, recipe, tmp_path / "by-ftr-run")
    assert_rows_close(metrics(tmp_path / output), metrics(tmp_path / "by-ftr-run"))


# --- every construct compiles, and gives ftr run's numbers --------------------------

FEATURES = [
    # synthetic data, every transform, an mlp head, rmsprop, onecycle, no val, no normalisation
    """recipe "every-transform"
seed 9
model {
  backbone resnet18
  head mlp(classes=3, hidden=[24, 12], dropout=0.1, activation=gelu)
}
data {
  train synthetic(classes=3, count=12, size=20)
  batch_size 4
  train_transforms resize([18, 20], interpolation=bicubic), center_crop(16),
    random_resized_crop(16, scale=(0.5, 1.0), ratio=(0.8, 1.25), interpolation=nearest),
    hflip(p=0.3), vflip(), rotate(10), color_jitter(), color_jitter(brightness=0.2, hue=0.1),
    grayscale(3), trivial_augment(), rand_augment(1, 5), random_erasing(0.7)
  normalize none
}
train {
  epochs 2
  optimizer rmsprop(alpha=0.9, momentum=0.5)
  lr 0.002
  schedule onecycle(pct_start=0.4)
  freeze all except head, layer4
}
""",
    # synthetic val, adam with a step decay, label smoothing, clipping, accumulation with a
    # short last window, evaluation every 2 epochs, best loss, early stopping, bf16. At 32 px:
    # on 16 px images layer4 sees 1x1 maps, where bf16 conv weight gradients are not
    # deterministic on the CPU in torch 2.14 (uninitialised values, sometimes NaN)
    """recipe "training-options"
seed 4
model {
  backbone resnet18
  head linear(classes=2, dropout=0.2)
}
data {
  train synthetic(classes=2, count=20, size=32)
  val synthetic(classes=2, count=6, size=32)
  batch_size 3
  eval_batch_size 4
  normalize mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
}
train {
  epochs 3
  optimizer adam(weight_decay=1e-4)
  lr 0.001, head=0.01
  schedule step(every=1, gamma=0.5)
  freeze all except head
  at epoch 2 unfreeze layer4
  at epoch 3 freeze layer4
  label_smoothing 0.1
  clip_grad_norm 0.5
  accumulate 3
  precision bf16
  no_weight_decay bias
}
evaluate {
  metrics loss, accuracy, top_k(2), macro_f1
  every 2
  best loss
  early_stop metric=accuracy, patience=1, min_delta=0.5
}
""",
    # gradual unfreezing, linear schedule with warmup, sgd nesterov, BatchNorm kept in eval mode
    """recipe "gradual"
seed 2
model {
  backbone resnet18
  head mlp(classes=3, hidden=16)
}
data {
  train synthetic(classes=3, count=9, size=16)
  val split(0.34)
  batch_size 4
}
train {
  epochs 3
  optimizer sgd(momentum=0.9, nesterov=true, weight_decay=1e-3)
  lr head=0.01, late=0.001
  schedule linear(warmup=0.5)
  freeze all except head
  unfreeze gradually layer4.1, layer4.0 from epoch 2 every 1
  batchnorm eval
  no_weight_decay bias, norm
}
groups {
  late = layer4
}
evaluate {
  metrics loss, accuracy, top_k(3)
  best accuracy
}
""",
]


@pytest.mark.parametrize("index", range(len(FEATURES)), ids=["transforms", "options", "gradual"])
def test_feature_recipes_match_ftr_run(index, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, FEATURES[index])
    compile_to(capsys, recipe, tmp_path / "t.py")
    expected = run_ok(capsys, recipe, tmp_path / "ftr")
    got = script_ok(capsys, tmp_path / "t.py", tmp_path / "script")
    assert_rows_close(metrics(tmp_path / "script"), metrics(tmp_path / "ftr"))
    assert (got["status"], got["epochs"], got["best"]) == (expected["status"], expected["epochs"], expected["best"])
    for name in ("model.pt", "best.pt"):
        if (tmp_path / "ftr" / name).exists():
            a, b = weights(tmp_path / "script" / name), weights(tmp_path / "ftr" / name)
            assert all(torch.equal(a[k], b[k]) for k in b), name


def test_torchvision_source_with_workers_and_skipped_images(capsys, tmp_path, monkeypatch):
    """A torchvision dataset class, loaded by 2 worker processes; and an image folder with
    an unreadable image, skipped and counted."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "TinyDataset", TinyDataset, raising=False)
    monkeypatch.setattr(torchvision.datasets, "__all__", [*torchvision.datasets.__all__, "TinyDataset"])
    data = 'train torchvision("TinyDataset", root="store")\n  val torchvision("TinyDataset", root="store")\n  workers 2'
    text = recipe_text(head="linear(classes=2)", val="split(0.5)", data="").replace(
        '  train imagefolder("data/train")\n  val split(0.5)', "  " + data
    )
    recipe = write_recipe(tmp_path, text)
    (tmp_path / "store").mkdir()
    compile_to(capsys, recipe, tmp_path / "t.py")
    run_ok(capsys, recipe, tmp_path / "ftr")
    script_ok(capsys, tmp_path / "t.py", tmp_path / "script")
    assert_rows_close(metrics(tmp_path / "script"), metrics(tmp_path / "ftr"))

    make_image_folder(tmp_path / "data" / "train", per_class=4, size=24, seed=1)
    make_image_folder(tmp_path / "data" / "val", per_class=2, size=24, seed=2)
    (tmp_path / "data" / "train" / "class_2" / "01.png").write_bytes(b"not a png at all")
    recipe = write_recipe(tmp_path, recipe_text(epochs=1, data="skip_bad_images true"), "skip.ftr")
    compile_to(capsys, recipe, tmp_path / "skip.py")
    expected = run_ok(capsys, recipe, tmp_path / "ftr-skip")
    got = script_ok(capsys, tmp_path / "skip.py", tmp_path / "script-skip")
    assert got["skipped_images"] == expected["skipped_images"] == 1
    assert_rows_close(metrics(tmp_path / "script-skip"), metrics(tmp_path / "ftr-skip"))


# --- the script's own behaviour ------------------------------------------------------


def test_folder_rules_epochs_and_root(capsys, image_data, monkeypatch):
    tmp_path = image_data / "elsewhere"  # the data lies under --root, not here
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(image_data, recipe_text(epochs=2))
    script = image_data / "t.py"
    compile_to(capsys, recipe, script)
    out = tmp_path / "out"
    summary = script_ok(capsys, script, out, "--root", image_data, "--epochs", "1")
    assert summary["epochs"] == summary["of_epochs"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "classes.json",
        "metrics.jsonl",
        "model.pt",
        "recipe.ftr",
        "summary.json",
    ]
    assert json.loads((out / "classes.json").read_text()) == {f"class_{i}": i for i in range(4)}

    assert run_script(script, "--out", out, "--root", image_data, "--quiet") == 1
    assert "holds a finished run; use --overwrite" in capsys.readouterr().err
    assert run_script(script, "--out", out, "--root", image_data, "--quiet", "--resume", "--epochs", "1") == 0
    assert "nothing to resume" in capsys.readouterr().err
    (out / "summary.json").unlink()
    assert run_script(script, "--out", out, "--root", image_data, "--quiet", "--resume") == 1
    assert "another recipe or another --epochs" in capsys.readouterr().err
    assert run_script(script, "--out", out, "--root", image_data, "--quiet") == 1
    assert "holds an unfinished run; use --resume" in capsys.readouterr().err
    assert run_script(script, "--out", tmp_path / "new", "--root", image_data, "--quiet", "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err
    summary = script_ok(capsys, script, out, "--root", image_data, "--overwrite")
    assert summary["epochs"] == 2 and len(metrics(out)) == 2

    moved = ["--train", image_data / "data" / "train", "--val", image_data / "data" / "val"]
    assert run_script(script, "--out", tmp_path / "moved", "--quiet", "--epochs", "1", *moved) == 0
    assert_rows_close(metrics(tmp_path / "moved"), metrics(out)[:1])

    assert run_script(script, "--out", tmp_path / "x", "--quiet") == 1  # no --root: the data is not here
    err = capsys.readouterr().err
    assert err.startswith("error: data folder 'data/train'") and "Traceback" not in err


def test_failures_are_messages_and_keep_the_last_checkpoint(capsys, image_data, monkeypatch):
    monkeypatch.chdir(image_data)
    text = recipe_text(epochs=2, lr="head=1e-3, rest=1e30", train="at epoch 2 unfreeze all")
    script = image_data / "t.py"
    compile_to(capsys, write_recipe(image_data, text), script)
    assert run_script(script, "--out", "out", "--device", "cpu", "--quiet") == 1
    err = capsys.readouterr().err
    assert re.search(r"^error: the loss is (nan|inf|-inf) at epoch 2, step 2; the checkpoint of epoch 1 is kept", err)
    assert weights(image_data / "out" / "checkpoint.pt")["epoch"] == 1
    assert not (image_data / "out" / "summary.json").exists()

    (image_data / "data" / "train" / "class_1" / "03.png").write_bytes(b"\x89PNG but not really" * 20)
    compile_to(capsys, write_recipe(image_data, recipe_text(epochs=1)), script)
    assert run_script(script, "--out", "bad", "--device", "cpu", "--quiet") == 1
    err = capsys.readouterr().err
    assert "cannot read image 'data/train/class_1/03.png'" in err and "skip_bad_images" in err
    assert "no epoch had finished" in err

    compile_to(capsys, write_recipe(image_data, recipe_text(epochs=1, head="linear(classes=5)")), script)
    assert run_script(script, "--out", "five", "--device", "cpu", "--quiet") == 1
    assert "the data has 4 classes, the head 5" in capsys.readouterr().err


def test_script_refuses_an_unusable_device_before_making_anything(capsys, image_data, monkeypatch):
    monkeypatch.chdir(image_data)
    script = image_data / "t.py"
    compile_to(capsys, write_recipe(image_data, recipe_text(epochs=1)), script)
    for device, message in (("tpu", "unknown device 'tpu'"), ("xla", "runs on cpu, cuda or mps")):
        with pytest.raises(SystemExit) as exit_:
            run_script(script, "--out", "out", "--device", device)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    assert not (image_data / "out").exists()


def test_script_resumes_after_sigkill_and_ctrl_c(capsys, tmp_path, monkeypatch):
    """Killed after its first checkpoint, then resumed: the uninterrupted run's numbers
    and weights. Ctrl-C: exit 130, how to resume, nothing half-written."""
    make_image_folder(tmp_path / "big" / "train", per_class=20, size=64, seed=3)
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "t.py"
    compile_to(capsys, write_recipe(tmp_path, RESUME_RECIPE), script)

    def start(out):
        command = [sys.executable, str(script), "--out", str(out), "--device", "cpu", "--quiet"]
        environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        process = subprocess.Popen(
            command, cwd=tmp_path, env=environment, stderr=subprocess.PIPE, preexec_fn=ctrl_c_reaches_python
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not (out / "checkpoint.pt").exists():
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()
        return process

    killed = start(tmp_path / "killed")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    interrupted = start(tmp_path / "stopped")
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    err = err.decode()
    assert interrupted.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not list((tmp_path / "stopped").glob(".*.tmp"))

    full = script_ok(capsys, script, tmp_path / "full")
    for out in ("killed", "stopped"):
        assert 1 <= len(metrics(tmp_path / out)) < 4, "the run should stop in the middle"
        summary = script_ok(capsys, script, tmp_path / out, "--resume")
        assert summary["best"] == full["best"]
        assert summary["seconds"] >= sum(row["seconds"] for row in metrics(tmp_path / out)), out
        assert summary["session_seconds"] < summary["seconds"], out
        assert_rows_close(metrics(tmp_path / out), metrics(tmp_path / "full"))
        for name in ("model.pt", "best.pt"):
            got, expected = weights(tmp_path / out / name), weights(tmp_path / "full" / name)
            assert all(torch.equal(got[k], expected[k]) for k in expected), (out, name)


def test_file_weights_that_do_not_fit_load_what_fits(capsys, image_data, monkeypatch):
    """strict=false: the misshapen and unexpected tensors are left out, in both back ends."""
    monkeypatch.chdir(image_data)
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    state["layer4.0.conv1.weight"] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(2)
    del state["layer1.0.bn1.running_mean"]
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, image_data / "w.pt")
    weights_line = 'weights file("w.pt", key="model", strip="module.", strict=false)'
    text = recipe_text(epochs=1).replace("weights none", weights_line)
    recipe = write_recipe(image_data, text)
    compile_to(capsys, recipe, image_data / "t.py")
    run_ok(capsys, recipe, image_data / "ftr")
    script_ok(capsys, image_data / "t.py", image_data / "script")
    assert_rows_close(metrics(image_data / "script"), metrics(image_data / "ftr"))
    loaded = weights(image_data / "script" / "model.pt")
    assert torch.equal(loaded["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])  # frozen: as loaded

    strict = write_recipe(image_data, text.replace(", strict=false", ""), "strict.ftr")
    compile_to(capsys, strict, image_data / "strict.py")
    assert run_script(image_data / "strict.py", "--out", "s2", "--device", "cpu", "--quiet") == 1
    err = capsys.readouterr().err
    assert "'w.pt' does not fit resnet18: missing ['layer1.0.bn1.running_mean']" in err


def test_channels_last_and_compile_change_no_number(capsys, image_data, monkeypatch):
    """Opt-in speed options: the same numbers up to float rounding, in both back ends.
    torch.compile runs with the eager backend here: inductor takes about a minute to
    compile resnet18 on this CPU (bench/precision.py measures it)."""
    monkeypatch.chdir(image_data)
    compile_, compiled = torch.compile, []

    def eager_compile(model, **options):
        compiled.append(model)
        return compile_(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    train = "at epoch 2 unfreeze layer4\n  batchnorm train"
    plain = write_recipe(image_data, recipe_text(head="linear(classes=4, dropout=0.3)", train=train), "plain.ftr")
    fast = write_recipe(
        image_data,
        recipe_text(head="linear(classes=4, dropout=0.3)", train=train + "\n  channels_last true\n  compile true"),
        "fast.ftr",
    )
    script = compile_to(capsys, fast, image_data / "fast.py")
    assert "torch.compile(self.model)" in script and "memory_format=torch.channels_last" in script
    run_ok(capsys, plain, "plain")
    run_ok(capsys, fast, "fast")
    script_ok(capsys, image_data / "fast.py", "script")
    torch._dynamo.reset()
    assert len(compiled) == 2  # ftr run's model and the script's
    assert_rows_close(metrics("fast"), metrics("plain"), rel=1e-4)
    assert_rows_close(metrics("script"), metrics("fast"))


def test_compiled_script_under_torchrun_gives_the_numbers_of_one_process(capsys, tmp_path, monkeypatch):
    """`torchrun --nproc_per_node 2 SCRIPT`: gloo on the CPU, each process half of every
    batch, metrics summed over both, files from process 0 only. The recipe is one whose
    two runs are equal in exact arithmetic (test_ddp.py's): only float error may differ."""
    from test_ddp import EQUAL_RECIPE

    make_image_folder(tmp_path / "data" / "train", per_class=8, size=40, seed=1)
    make_image_folder(tmp_path / "data" / "val", per_class=3, size=40, seed=2)
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "equal.py"
    compile_to(capsys, write_recipe(tmp_path, EQUAL_RECIPE), script)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.Popen(
        [*command, str(script), "--out", "two", "--device", "cpu", "--quiet"],
        cwd=tmp_path,
        env=environment,
        stderr=subprocess.PIPE,
    )
    script_ok(capsys, script, "one")
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err.decode()[-3000:]
    assert_rows_close(metrics("two"), metrics("one"), rel=1e-4)
    assert {p.name for p in Path("two").iterdir()} == {
        "recipe.ftr",
        "metrics.jsonl",
        "classes.json",
        "model.pt",
        "best.pt",
        "checkpoint.pt",
        "checkpoint.previous.pt",
        "summary.json",
    }
    assert len(weights("two/checkpoint.pt")["rng"]) == 2  # every process's generators, for --resume
