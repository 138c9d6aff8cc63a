"""`ftr run` end to end: parity with the reference loop, the run folder, resume after
SIGKILL, folder rules, failures, the language's training features, `ftr compare`.

Everything trains resnet18 (no pretrained weights) on tiny PNG folders at 32 px on
the CPU (`--device cpu`, so that the numbers are the reference loop's, which runs
on the CPU, whatever the machine has). Most runs call `recipe_lang.cli.main` in
this process; the parity and SIGKILL tests start real `ftr` processes. Torch runs
on one thread: on a shared 2-core machine its thread pool is many times slower.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import make_image_folder
from torch import nn
from torchvision.transforms import v2

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.resolve import resolve
from runtime.model import build_model
from runtime.optim import build_optimizer
from runtime.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SEED_LOOP_PY = ROOT / "reference" / "seed_loop.py"
SEED_LOOP_FTR = ROOT / "recipes" / "seed_loop.ftr"
CONTRACT = (  # the run folder of design.md
    "recipe.ftr",
    "plan.txt",
    "metrics.jsonl",
    "classes.json",
    "model.pt",
    "best.pt",
    "checkpoint.pt",
    "summary.json",
    "checkpoint.previous.pt",  # the checkpoint before checkpoint.pt, from a run's second epoch on
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers -------------------------------------------------------------------


def recipe_text(
    *,
    name="t",
    seed=0,
    head="linear(classes=4)",
    val='imagefolder("data/val")',
    batch_size=8,
    data="",
    epochs=2,
    optimizer="sgd(momentum=0.9)",
    lr="1e-2",
    freeze="all except head",
    train="",
    evaluate="metrics loss, accuracy",
    groups="",
) -> str:
    groups_block = f"groups {{\n  {groups}\n}}\n\n" if groups else ""
    return f"""recipe "{name}"
seed {seed}

model {{
  backbone resnet18
  weights none
  head {head}
}}

data {{
  train imagefolder("data/train")
  val {val}
  batch_size {batch_size}
  train_transforms random_resized_crop(32), hflip()
  eval_transforms resize(36), center_crop(32)
  {data}
}}

{groups_block}train {{
  epochs {epochs}
  optimizer {optimizer}
  lr {lr}
  {f"freeze {freeze}" if freeze else ""}
  {train}
}}

evaluate {{
  {evaluate}
}}
"""


def write_recipe(folder: Path, text: str, name: str = "r.ftr") -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


def ftr(capsys, *args) -> tuple[int, str, str]:
    """`ftr ARGS` in this process (the working directory is the test's)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_ok(capsys, recipe, out, *extra) -> dict:
    code, _, err = ftr(capsys, "run", recipe, "--out", out, "--device", "cpu", "--quiet", *extra)
    assert code == 0, err
    return json.loads((Path(out) / "summary.json").read_text())


def _strict(constant):
    raise ValueError(f"not strict JSON: {constant}")


def metrics(out) -> list[dict]:
    """metrics.jsonl, read as strict JSON (NaN and Infinity are not JSON)."""
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line, parse_constant=_strict) for line in lines if line.strip()]


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def assert_rows_close(a: list[dict], b: list[dict], rel=1e-6):
    a, b = without_seconds(a), without_seconds(b)
    assert [row["epoch"] for row in a] == [row["epoch"] for row in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=rel, abs=1e-12), (x["epoch"], key)


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def plan_of(recipe: Path, overrides=()):
    return resolve(recipe_lang.load(recipe, overrides))


def fresh_model(plan) -> nn.Module:
    """The model as the trainer builds it before the first step (same seeds first)."""
    torch.manual_seed(plan.seed)
    random.seed(plan.seed)
    return build_model(plan)


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(Path(folder).iterdir())}


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"
    return e


def interrupted_run(recipe, out, epoch: int) -> int:
    """`ftr run` with Ctrl-C pressed right after epoch `epoch`'s checkpoint: its exit status."""
    save = Trainer.save_checkpoint

    def save_then_stop(self, done):
        save(self, done)
        if done == epoch:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "save_checkpoint", save_then_stop)
        return main(["run", str(recipe), "--out", str(out), "--device", "cpu", "--quiet"])


def ctrl_c_reaches_python() -> None:
    """For a child the test will Ctrl-C: a test suite started in the background (`pytest &`)
    ignores SIGINT, its children inherit that, and Python then installs no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ftr_command(*args) -> list[str]:
    return [sys.executable, "-m", "recipe_lang.cli", *map(str, args)]


# --- 1. parity with reference/seed_loop.py ----------------------------------------


def test_parity_with_the_reference_loop(image_data):
    """seed_loop.py and `ftr run recipes/seed_loop.ftr` write the same numbers, epoch by epoch."""
    common = dict(cwd=image_data, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reference = subprocess.Popen([sys.executable, str(SEED_LOOP_PY), "--data", "data", "--out", "ref"], **common)
    ours = subprocess.Popen(ftr_command("run", SEED_LOOP_FTR, "--out", "run", "--device", "cpu"), **common)
    ref_out, ref_err = reference.communicate(timeout=180)
    run_out, run_err = ours.communicate(timeout=180)
    assert reference.returncode == 0, ref_err
    assert ours.returncode == 0, run_err
    expected, got = metrics(image_data / "ref"), metrics(image_data / "run")
    assert [row["epoch"] for row in got] == [1, 2]
    keys = ("epoch", "train_loss", "val_loss", "val_accuracy")
    assert_rows_close([{k: r[k] for k in keys} for r in got], [{k: r[k] for k in keys} for r in expected])
    assert got[0]["train_loss"] != got[1]["train_loss"]  # it trained


# --- 2. the run folder -----------------------------------------------------------


def _eval_val_set(model: nn.Module, root: Path, batch_size=8) -> tuple[float, float]:
    """seed_loop's evaluation, written out: mean cross entropy and accuracy on data/val."""
    tf = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(36),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(root / "data" / "val", tf), batch_size)
    model.eval()
    total, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for inputs, labels in loader:
            logits = model(inputs)
            total += nn.functional.cross_entropy(logits, labels).item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
    return total / seen, correct / seen


def test_run_folder_contract(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    source = recipe_text(
        epochs=3,
        optimizer="adamw(weight_decay=0.5)",  # frozen parameters must get no decay either
        lr="1e-3, head=1e-2",
        groups="top = layer4",
        train="batchnorm eval",
        evaluate="metrics loss, accuracy, top_k(2), macro_f1\n  best accuracy",
    )
    recipe = write_recipe(image_data, source)
    summary = run_ok(capsys, recipe, "out", "--set", "train.epochs=2")
    out = image_data / "out"
    for name in CONTRACT:
        assert (out / name).is_file(), name

    # metrics.jsonl: one strict-JSON object per epoch, with every key of the contract
    rows = metrics(out)
    assert [row["epoch"] for row in rows] == [1, 2]
    required = {"epoch", "train_loss", "val_loss", "val_accuracy", "val_top2", "val_macro_f1", "seconds"}
    required |= {"lr/head", "lr/top", "lr/rest"}
    for row in rows:
        assert required <= row.keys(), row
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in row.values())
        assert 0 <= row["val_accuracy"] <= row["val_top2"] <= 1
        assert row["lr/head"] == pytest.approx(1e-2) and row["lr/top"] == pytest.approx(1e-3)

    # classes.json: ImageFolder's map
    classes = json.loads((out / "classes.json").read_text())
    assert classes == torchvision.datasets.ImageFolder("data/train").class_to_idx

    # model.pt, best.pt: plain state dicts of the plan's model; only the head moved
    plan = plan_of(recipe, ["train.epochs=2"])
    initial = fresh_model(plan).state_dict()
    final = weights(out / "model.pt")
    model = build_model(plan)
    model.load_state_dict(final)  # strict
    build_model(plan).load_state_dict(weights(out / "best.pt"))
    trainable = {name for name, _ in model.named_parameters() if name.startswith("fc.")}
    assert trainable
    for name, tensor in initial.items():
        if name in trainable:
            assert not torch.equal(final[name], tensor), f"{name} did not train"
        else:
            assert torch.equal(final[name], tensor), f"frozen {name} changed"

    # the last row's val_loss and val_accuracy are those of model.pt, measured the plain way
    loss, accuracy = _eval_val_set(model, image_data)
    assert rows[-1]["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert rows[-1]["val_accuracy"] == accuracy

    # summary.json agrees with metrics.jsonl
    assert summary["status"] == "finished"
    assert summary["epochs"] == summary["of_epochs"] == 2
    assert summary["final"] == rows[-1]
    best = max(rows, key=lambda row: row["val_accuracy"])  # the first of the best
    assert summary["best"] == {"metric": "accuracy", "value": best["val_accuracy"], "epoch": best["epoch"]}
    assert summary["skipped_images"] == 0
    assert summary["overrides"] == ["train.epochs=2"]

    # plan.txt is `ftr plan`'s output; recipe.ftr the source, under a line per --set
    code, plan_out, _ = ftr(capsys, "plan", recipe, "--set", "train.epochs=2")
    assert code == 0
    assert (out / "plan.txt").read_text().rstrip("\n") == plan_out.rstrip("\n") != ""
    assert (out / "recipe.ftr").read_text() == "# ftr run --set train.epochs=2\n" + source


def test_recipe_copy_without_overrides_is_the_source(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    source = recipe_text(epochs=1)
    run_ok(capsys, write_recipe(image_data, source), "out")
    assert (image_data / "out" / "recipe.ftr").read_text() == source
    assert not (image_data / "out" / "best.pt").exists()  # no `best`, no best.pt


def test_run_files_have_ordinary_permissions(image_data, capsys, monkeypatch):
    """The files of a run are readable like any file the user creates (umask), not 0600."""
    monkeypatch.chdir(image_data)
    run_ok(capsys, write_recipe(image_data, recipe_text(epochs=1)), "out")
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("metrics.jsonl", "summary.json", "model.pt"):
        mode = (image_data / "out" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, f"{name}: {oct(mode)}"


# --- 3. resume after SIGKILL -------------------------------------------------------


RESUME_RECIPE = """recipe "resume"
seed 3

model {
  backbone resnet18
  weights none
  head mlp(classes=4, hidden=32, dropout=0.3)
}

data {
  train imagefolder("big/train")
  val split(0.25)
  batch_size 8
  workers 0
  train_transforms random_resized_crop(64, scale=(0.5, 1.0)), hflip(), color_jitter(brightness=0.2)
  eval_transforms center_crop(64)
}

train {
  epochs 4
  optimizer adamw(weight_decay=0.05)
  lr head=3e-3, rest=1e-3
  schedule cosine(warmup=1)
  freeze all except head
  at epoch 3 unfreeze layer4 warmup=1
  batchnorm train
  label_smoothing 0.1
}

evaluate {
  metrics loss, accuracy, macro_f1
  best accuracy
  early_stop patience=10
}
"""


def start_until_first_checkpoint(recipe, out, cwd) -> subprocess.Popen:
    """`ftr run` in a subprocess, returned once its first epoch is checkpointed (still running)."""
    process = subprocess.Popen(
        ftr_command("run", recipe, "--out", out, "--device", "cpu", "--quiet"),
        cwd=cwd,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=ctrl_c_reaches_python,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (out / "checkpoint.pt").exists():
        time.sleep(0.01)  # checkpoint.pt is written after metrics.jsonl's first line
    assert process.poll() is None, process.stderr.read().decode()
    return process


def test_resume_after_sigkill_gives_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    make_image_folder(tmp_path / "big" / "train", per_class=20, size=64, seed=3)
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    monkeypatch.chdir(tmp_path)

    killed = tmp_path / "killed"
    process = start_until_first_checkpoint(recipe, killed, tmp_path)
    try:
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    done = len(metrics(killed))
    assert 1 <= done < 4, "the run should be killed in the middle"

    summary = run_ok(capsys, recipe, killed, "--resume")
    reference = run_ok(capsys, recipe, tmp_path / "full")
    assert summary["status"] == reference["status"] == "finished"
    assert summary["best"] == reference["best"]
    # seconds: the training time of both sessions, every logged epoch's time included
    assert summary["seconds"] >= sum(row["seconds"] for row in metrics(killed))
    assert summary["session_seconds"] < summary["seconds"]
    assert reference["session_seconds"] == reference["seconds"]
    assert_rows_close(metrics(killed), metrics(tmp_path / "full"))
    for name in ("model.pt", "best.pt"):
        got, expected = weights(killed / name), weights(tmp_path / "full" / name)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected), name


def test_ctrl_c_saves_nothing_half_written_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    make_image_folder(tmp_path / "big" / "train", per_class=20, size=64, seed=3)
    recipe = write_recipe(tmp_path, RESUME_RECIPE)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "stopped"
    process = start_until_first_checkpoint(recipe, out, tmp_path)
    try:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    err = err.decode()
    assert process.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    summary = run_ok(capsys, recipe, out, "--resume")
    reference = run_ok(capsys, recipe, tmp_path / "full")
    assert summary["status"] == reference["status"] == "finished"
    assert_rows_close(metrics(out), metrics(tmp_path / "full"))


UNUSABLE_DEVICES = [
    ("tpu", "unknown device 'tpu': use cpu, cuda, cuda:N or mps"),
    ("xla", "--device xla: ftr runs on cpu, cuda or mps"),
    ("cuda:99", "CUDA is not available" if not torch.cuda.is_available() else "CUDA device(s), cuda:0 to"),
]


@pytest.mark.parametrize("device, message", UNUSABLE_DEVICES, ids=[d for d, _ in UNUSABLE_DEVICES])
def test_unusable_device_is_a_usage_error_before_anything_is_made(image_data, capsys, monkeypatch, device, message):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1))
    code, out, err = ftr(capsys, "run", recipe, "--out", "out", "--device", device)
    assert (code, out) == (2, "")
    assert err.startswith("ftr run: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (image_data / "out").exists()


# --- 4. folder rules ---------------------------------------------------------------


def test_folder_rules(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1))
    out = image_data / "out"
    run_ok(capsys, recipe, out)
    before = snapshot(out)

    # a finished run is not replaced without --overwrite
    code, _, err = ftr(capsys, "run", recipe, "--out", out, "--device", "cpu", "--quiet")
    assert code == 1 and "--overwrite" in err and "Traceback" not in err
    assert snapshot(out) == before

    # --resume on a finished run: exit 0, nothing trained, nothing written
    code, _, err = ftr(capsys, "run", recipe, "--out", out, "--device", "cpu", "--quiet", "--resume")
    assert code == 0, err
    assert snapshot(out) == before

    # --overwrite replaces it: the same numbers again, new files
    run_ok(capsys, recipe, out, "--overwrite")
    after = snapshot(out)
    assert after["model.pt"][0] != before["model.pt"][0]
    assert without_seconds(metrics(out)) == without_seconds(
        [json.loads(x) for x in before["metrics.jsonl"][1].splitlines()]
    )

    # an unfinished run (checkpoint, no summary) needs --resume
    (out / "summary.json").unlink()
    before = snapshot(out)
    code, _, err = ftr(capsys, "run", recipe, "--out", out, "--device", "cpu", "--quiet")
    assert code == 1 and "--resume" in err
    assert snapshot(out) == before

    # --resume with other settings is refused, clearly
    code, _, err = ftr(
        capsys, "run", recipe, "--out", out, "--device", "cpu", "--quiet", "--resume", "--set", "train.lr=0.5"
    )
    assert code == 1 and "Traceback" not in err
    assert "another recipe or other settings" in err and "--overwrite" in err
    assert snapshot(out) == before

    # --resume with nothing to resume
    empty = image_data / "empty"
    empty.mkdir()
    code, _, err = ftr(capsys, "run", recipe, "--out", empty, "--device", "cpu", "--quiet", "--resume")
    assert code == 1 and "nothing to resume" in err
    assert list(empty.iterdir()) == []
    code, _, err = ftr(capsys, "run", recipe, "--out", image_data / "missing", "--device", "cpu", "--resume")
    assert code == 1 and "nothing to resume" in err
    assert not (image_data / "missing").exists()


def test_resume_after_the_early_stop_epoch_does_not_train_on(image_data, capsys, monkeypatch):
    """Killed after the checkpoint of the epoch at which early stopping ended the run, but
    before summary.json was written (while model.pt was being saved): --resume must finish
    the run as it was, early stopped, not train another epoch."""
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=5, lr="1e-30", evaluate="best loss\n  early_stop patience=1"))
    out = image_data / "out"
    first = run_ok(capsys, recipe, out)
    assert (first["status"], first["epochs"]) == ("early_stopped", 2)
    rows = metrics(out)
    (out / "summary.json").unlink()
    (out / "model.pt").unlink()
    again = run_ok(capsys, recipe, out, "--resume")
    assert (again["status"], again["epochs"]) == ("early_stopped", 2)
    assert metrics(out) == rows


# --- 5. failures -------------------------------------------------------------------


def test_corrupt_image_stops_with_a_message(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    (image_data / "data" / "train" / "class_1" / "03.png").write_bytes(b"\x89PNG but not really" * 20)
    recipe = write_recipe(image_data, recipe_text(epochs=2))
    code, _, err = ftr(capsys, "run", recipe, "--out", "out", "--device", "cpu", "--quiet")
    assert code == 1
    assert "class_1/03.png" in err.replace(os.sep, "/") and "skip_bad_images" in err
    assert "Traceback" not in err and err.startswith("ftr run: error:")
    assert not (image_data / "out" / "summary.json").exists()

    summary = run_ok(capsys, recipe, "skipping", "--set", "data.skip_bad_images=true")
    assert summary["status"] == "finished" and summary["epochs"] == 2
    assert summary["skipped_images"] == 1


def test_non_finite_loss_stops_with_epoch_step_and_checkpoint(image_data, capsys, monkeypatch):
    """Epoch 1 trains the head; epoch 2 thaws everything at 1e30 and the loss explodes at its step 2."""
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=2, lr="head=1e-3, rest=1e30", train="at epoch 2 unfreeze all"))
    code, _, err = ftr(capsys, "run", recipe, "--out", "out", "--device", "cpu", "--quiet")
    out = image_data / "out"
    assert code == 1 and "Traceback" not in err
    assert re.search(r"the loss is (nan|inf|-inf) at epoch 2, step 2\b", err), err
    assert "checkpoint of epoch 1 is kept" in err and str(Path("out") / "checkpoint.pt") in err
    assert weights(out / "checkpoint.pt")["epoch"] == 1
    assert [row["epoch"] for row in metrics(out)] == [1]
    assert not (out / "summary.json").exists() and not (out / "model.pt").exists()


def test_non_finite_validation_loss_is_an_error(image_data, capsys, monkeypatch):
    """One step per epoch: epoch 2's only step is finite but leaves non-finite weights, so
    the loss becomes non-finite in validation. That must stop the run like a non-finite
    training loss (exit 1, naming epoch 2), not finish it with val_loss NaN in
    metrics.jsonl and summary.json (not JSON) and the broken model as best.pt."""
    monkeypatch.chdir(image_data)
    recipe = write_recipe(
        image_data,
        recipe_text(
            epochs=2,
            batch_size=32,
            lr="head=1e-3, rest=1e30",
            train="at epoch 2 unfreeze all",
            evaluate="metrics loss, accuracy\n  best accuracy",
        ),
    )
    code, _, err = ftr(capsys, "run", recipe, "--out", "out", "--device", "cpu", "--quiet")
    assert code == 1, "a run whose validation loss is NaN finished with exit 0"
    assert "epoch 2" in err and "Traceback" not in err
    assert not (image_data / "out" / "summary.json").exists()


def test_recipe_error_is_a_diagnostic(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text().replace("optimizer sgd", "optimiser sgd"))
    code, _, err = ftr(capsys, "run", recipe, "--out", "out", "--device", "cpu")
    line = recipe.read_text().splitlines().index("  optimiser sgd(momentum=0.9)") + 1
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"{recipe}:{line}:3: error: unknown statement 'optimiser' in train")
    assert "did you mean 'optimizer'?" in err
    assert not (image_data / "out").exists()


def test_missing_data_folder_points_at_the_recipe_line(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(
        image_data, recipe_text().replace('train imagefolder("data/train")', 'train imagefolder("data/nope")')
    )
    code, _, err = ftr(capsys, "run", recipe, "--out", "out", "--device", "cpu")
    line = recipe.read_text().splitlines().index('  train imagefolder("data/nope")') + 1
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"{recipe}:{line}:9: error: data folder 'data/nope' does not exist")
    assert f'{line} |   train imagefolder("data/nope")' in err
    assert not (image_data / "out").exists()


# --- 6. language features in the runtime ---------------------------------------------


def test_evaluate_every(image_data, capsys, monkeypatch):
    """`every 2` over 3 epochs: val_* on epochs 2 and 3 (the last always); absent on epoch 1."""
    monkeypatch.chdir(image_data)
    recipe = write_recipe(
        image_data, recipe_text(epochs=3, evaluate="metrics loss, accuracy\n  every 2\n  best accuracy")
    )
    summary = run_ok(capsys, recipe, "out")
    rows = metrics(image_data / "out")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert not [k for k in rows[0] if k.startswith("val_")]
    assert {"train_loss", "lr/head", "seconds"} <= rows[0].keys()
    for row in rows[1:]:
        assert {"val_loss", "val_accuracy"} <= row.keys()
    assert summary["best"]["epoch"] in (2, 3)


def test_early_stop_when_nothing_improves(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=5, lr="1e-30", evaluate="best loss\n  early_stop patience=1"))
    summary = run_ok(capsys, recipe, "out")
    rows = metrics(image_data / "out")
    assert summary["status"] == "early_stopped"
    assert summary["epochs"] == 2 and summary["of_epochs"] == 5
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0]["val_loss"] == rows[1]["val_loss"]  # nothing moved
    assert summary["best"]["epoch"] == 1
    assert (image_data / "out" / "model.pt").exists()


def test_best_loss_keeps_the_model_of_the_best_epoch(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=3, lr="5e-2", evaluate="metrics loss, accuracy\n  best loss"))
    summary = run_ok(capsys, recipe, "out")
    rows = metrics(image_data / "out")
    best = min(rows, key=lambda row: row["val_loss"])
    assert summary["best"] == {"metric": "loss", "value": best["val_loss"], "epoch": best["epoch"]}
    # constant rate, no events: the first E epochs of the run are a run of E epochs
    run_ok(capsys, recipe, "short", "--set", f"train.epochs={best['epoch']}")
    got, expected = weights(image_data / "out" / "best.pt"), weights(image_data / "short" / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_bf16_runs_on_cpu(image_data, capsys, monkeypatch):
    """bf16 autocast on the CPU: finishes, finite, near fp32's numbers but not equal to them."""
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(train="precision bf16"))
    summary = run_ok(capsys, recipe, "bf16")
    run_ok(capsys, recipe, "fp32", "--set", "train.precision=fp32")
    assert summary["status"] == "finished" and summary["device"] == "cpu"
    low, full = metrics(image_data / "bf16"), metrics(image_data / "fp32")
    for a, b in zip(low, full, strict=True):
        assert math.isfinite(a["train_loss"]) and math.isfinite(a["val_loss"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=5e-2)
    assert low[0]["train_loss"] != full[0]["train_loss"]  # autocast was on


def _accumulate_pair(image_data, capsys):
    """The same recipe with batch 8 x accumulate 2 and with batch 16: linear head only,
    BatchNorm in eval mode, no dropout, so that only float error may tell them apart."""
    common = dict(epochs=2, lr="5e-2", train="batchnorm eval")
    small = write_recipe(
        image_data, recipe_text(batch_size=8, **{**common, "train": "batchnorm eval\n  accumulate 2"}), "a.ftr"
    )
    large = write_recipe(image_data, recipe_text(batch_size=16, **common), "b.ftr")
    run_ok(capsys, small, "acc")
    run_ok(capsys, large, "big")
    a, b = weights(image_data / "acc" / "model.pt"), weights(image_data / "big" / "model.pt")
    initial = fresh_model(plan_of(large)).state_dict()
    assert not torch.equal(a["fc.weight"], initial["fc.weight"])
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=key)
    for x, y in zip(metrics(image_data / "acc"), metrics(image_data / "big"), strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5)


def test_accumulate_equals_a_doubled_batch(image_data, capsys, monkeypatch):
    """32 images: 4 batches of 8 = 2 steps, as 2 batches of 16."""
    monkeypatch.chdir(image_data)
    _accumulate_pair(image_data, capsys)


def test_accumulate_equals_a_doubled_batch_with_a_short_last_window(image_data, capsys, monkeypatch):
    """24 images: batches of 8 -> steps over (8, 8) and (8); batches of 16 -> (16) and (8).
    The last step's gradient must be that of the mean loss over its 8 images, not half of it."""
    monkeypatch.chdir(image_data)
    for c in range(4):
        for i in (6, 7):
            (image_data / "data" / "train" / f"class_{c}" / f"{i:02d}.png").unlink()
    _accumulate_pair(image_data, capsys)


def test_label_smoothing_changes_train_loss_not_val_loss(image_data, capsys, monkeypatch):
    """At lr 1e-30 the weights never move, so the losses differ only by their definition."""
    monkeypatch.chdir(image_data)
    plain = write_recipe(image_data, recipe_text(epochs=1, lr="1e-30"), "a.ftr")
    smooth = write_recipe(image_data, recipe_text(epochs=1, lr="1e-30", train="label_smoothing 0.1"), "b.ftr")
    run_ok(capsys, plain, "plain")
    run_ok(capsys, smooth, "smooth")
    [a], [b] = metrics(image_data / "plain"), metrics(image_data / "smooth")
    assert a["val_loss"] == b["val_loss"]
    assert a["val_accuracy"] == b["val_accuracy"]
    assert abs(a["train_loss"] - b["train_loss"]) > 1e-4


def test_clip_grad_norm_clips(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1, lr="1e-1", train="clip_grad_norm 1e-9"))
    run_ok(capsys, recipe, "clipped")
    run_ok(capsys, recipe, "free", "--set", "train.clip_grad_norm=1000")
    initial = fresh_model(plan_of(recipe)).state_dict()
    clipped, free = weights(image_data / "clipped" / "model.pt"), weights(image_data / "free" / "model.pt")
    assert (clipped["fc.weight"] - initial["fc.weight"]).abs().max() < 1e-8
    assert (free["fc.weight"] - initial["fc.weight"]).abs().max() > 1e-4


def test_no_weight_decay_bias_and_norm(image_data, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(
        image_data,
        recipe_text(optimizer="adamw(weight_decay=0.05)", freeze=None, train="no_weight_decay bias, norm"),
    )
    plan = plan_of(recipe)
    model = build_model(plan)
    optimizer = build_optimizer(plan, model)
    names = {id(p): n for n, p in model.named_parameters()}
    norm = {
        f"{m}.{p}"
        for m, module in model.named_modules()
        if isinstance(module, nn.BatchNorm2d)
        for p in ("weight", "bias")
    }
    seen = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            seen.append(name)
            no_decay = name.endswith(".bias") or name in norm
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert sorted(seen) == sorted(names.values())
    assert "fc.bias" in seen and "conv1.weight" in seen and "bn1.weight" in seen


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batchnorm_mode_of_frozen_layers(image_data, capsys, monkeypatch, mode):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1, train=f"batchnorm {mode}"))
    run_ok(capsys, recipe, "out")
    initial = fresh_model(plan_of(recipe)).state_dict()
    final = weights(image_data / "out" / "model.pt")
    buffers = [k for k in initial if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert buffers
    changed = [k for k in buffers if not torch.equal(initial[k], final[k])]
    if mode == "eval":
        assert changed == []
    else:
        assert sorted(changed) == sorted(buffers)
        assert final["bn1.num_batches_tracked"].item() == 4  # 32 images in batches of 8
    # frozen affine parameters stay put either way
    assert torch.equal(initial["bn1.weight"], final["bn1.weight"])


# --- 7. ftr compare --------------------------------------------------------------------


def test_compare(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1, evaluate="metrics loss, accuracy\n  best accuracy"))
    first = run_ok(capsys, recipe, "first")
    second = run_ok(capsys, recipe, "second", "--set", "train.lr=0.1")
    code, out, err = ftr(capsys, "compare", "first", "second")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:2] == ["run", "status"] and "val_loss" in lines[0] and "val_accuracy" in lines[0]
    for line, name, summary in ((lines[1], "first", first), (lines[2], "second", second)):
        cells = line.split()
        assert cells[:3] == [name, "finished", "1/1"]
        assert f"{summary['final']['val_loss']:.4f}" in cells
        assert f"{summary['final']['val_accuracy']:.4f}" in cells
        assert f"{summary['final']['train_loss']:.4f}" in cells

    (image_data / "nothing").mkdir()
    code, out, err = ftr(capsys, "compare", "first", "nothing")
    assert code == 1 and out == ""
    assert "nothing" in err and "not a run folder" in err and "Traceback" not in err

    (image_data / "second" / "summary.json").unlink()
    code, _, err = ftr(capsys, "compare", "first", "second")
    assert code == 1 and "has not finished" in err


def test_compare_names_a_damaged_summary(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    recipe = write_recipe(image_data, recipe_text(epochs=1))
    run_ok(capsys, recipe, "a")
    for content, problem in (
        ('{"status": "finished", "epo', "a/summary.json is not valid JSON (line 1, column 24"),
        ("", "a/summary.json is empty"),
        ("[1, 2]", "a/summary.json holds a JSON list, not the dict ftr writes"),
        ('{"status": "finished"}', "a/summary.json is not a summary ftr wrote: epochs, of_epochs, final, seconds"),
    ):
        (image_data / "a" / "summary.json").write_text(content)
        code, _, err = ftr(capsys, "compare", "a")
        assert code == 1, content
        assert err.startswith(f"ftr compare: error: {problem}"), err
        assert "Traceback" not in err
