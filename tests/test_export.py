"""`ftr export RUN -o DIR`: the folder's files, its config.json and tensors, predict.py
run where ftr cannot be imported (the same lines as `ftr predict`), model.onnx checked
against onnxruntime, and the refusals. One tiny run per task, trained once a module:
a resnet18 at 32 px, a 2-layer BERT, a Faster R-CNN MobileNet at 48 px; ONNX once
per task."""

from __future__ import annotations

import builtins
import contextlib
import csv
import io
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from safetensors.torch import load_file
from test_compile import compile_to, script_ok
from test_compile_detection import VOC_RECIPE, make_digits_voc
from test_compile_parity import run_isolated
from test_run import ftr, recipe_text, run_ok, weights, write_recipe
from text_models import recipe as text_recipe
from text_models import tiny, write_texts

import runtime.export_onnx
from recipe_lang.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {"README.md", "config.json", "model.safetensors", "predict.py"}


def export_ok(capsys, run, out, *extra) -> str:
    code, _, err = ftr(capsys, "export", run, "-o", out, *extra)
    assert code == 0, err
    return err


def predict_rows(capsys, run, *args) -> list[dict]:
    code, out, err = ftr(capsys, "predict", run, *args)
    assert code == 0, err
    return list(csv.DictReader(io.StringIO(out)))


def script_lines(export_dir: Path, *args, cwd: Path) -> list[list[str]]:
    """predict.py's lines, run in a process that cannot import ftr."""
    done = run_isolated(export_dir / "predict.py", *args, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def assert_same_predictions(lines: list[list[str]], rows: list[dict], columns: list[str]) -> None:
    assert len(lines) == len(rows) > 0
    for line, row in zip(lines, rows, strict=True):
        assert line[:2] == [row["input"], row["label"]]
        numbers = [float(row[c]) for c in columns]
        assert [float(x) for x in line[2:]] == pytest.approx(numbers, abs=1e-5 if len(numbers) == 1 else 1e-3)


def assert_safetensors_equal_run(export_dir: Path, model_file: Path) -> None:
    exported, trained = load_file(export_dir / "model.safetensors"), weights(model_file)
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], trained[k]) for k in trained)


# --- classification -----------------------------------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A resnet18 at 32 px, one epoch on 4 classes x 4 images, best.pt kept; exported with ONNX."""
    root = tmp_path_factory.mktemp("export-images")
    make_image_folder(root / "data/train", per_class=4, seed=1)
    make_image_folder(root / "data/val", per_class=2, seed=2)
    write_recipe(root, recipe_text(epochs=1, evaluate="metrics loss, accuracy\n  best accuracy"))
    return root


@pytest.fixture(scope="module")
def image_export(image_run):
    """(run folder, export folder, ftr export's stderr), made once in the run's folder."""
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        patch.chdir(image_run)
        assert main(["run", "r.ftr", "--out", "run", "--device", "cpu", "--quiet"]) == 0
        assert main(["export", "run", "-o", "out", "--format", "onnx"]) == 0, err.getvalue()
    return image_run / "run", image_run / "out", err.getvalue()


def test_the_export_folder_describes_the_model(image_export):
    run, out, _ = image_export
    assert {p.name for p in out.iterdir()} == FILES | {"model.onnx"}
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "classification"
    learned = json.loads((run / "classes.json").read_text())  # {name: index}
    assert config["classes"] == sorted(learned, key=learned.get)
    assert config["id2label"]["3"] == "class_3" and config["label2id"]["class_0"] == 0
    architecture = config["architecture"]
    assert (architecture["library"], architecture["backbone"]) == ("torchvision", "resnet18")
    assert architecture["classifier"] == {"path": "fc", "in_features": 512, "adapter": "none"}
    assert [t["kind"] for t in config["preprocessing"]["eval_transforms"]] == ["resize", "center_crop"]
    assert config["source"]["file"] == "best.pt" and config["metrics"]["best"]["metric"] == "accuracy"
    assert_safetensors_equal_run(out, run / "best.pt")
    card = (out / "README.md").read_text()
    assert (run / "recipe.ftr").read_text().strip() in card and "load_file" in card and "## What trained" in card


def test_predict_py_without_ftr_gives_ftr_predict_s_rows(image_export, capsys, monkeypatch):
    run, out, _ = image_export
    monkeypatch.chdir(run.parent)
    rows = predict_rows(capsys, "run", "data/val")
    assert_same_predictions(script_lines(out, "data/val", cwd=run.parent), rows, ["score"])


def test_onnx_matches_pytorch_and_says_by_how_much(image_export):
    import onnxruntime

    run, out, err = image_export
    assert "model.onnx (dynamo) against onnxruntime on 8 items of the run's val data" in err
    assert "top-1 agreement 8/8" in err and "max abs diff" in err
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.rand(3, 3, 32, 32)  # a batch size other than the export's
    got = session.run(None, {"images": images.numpy()})[0]
    namespace = runpy.run_path(str(out / "predict.py"), run_name="exported")
    with torch.no_grad():
        expected = namespace["load_model"](str(out))(images).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_an_existing_folder_is_refused_unless_overwrite(image_export, capsys, monkeypatch):
    run, _, _ = image_export
    monkeypatch.chdir(run.parent)
    taken = run.parent / "taken"
    taken.mkdir(exist_ok=True)
    (taken / "notes.txt").write_text("mine")
    code, _, err = ftr(capsys, "export", "run", "-o", taken)
    assert code == 1 and "exists and is not empty" in err and "--overwrite" in err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    export_ok(capsys, "run", taken, "--overwrite", "--model", "final")
    assert {p.name for p in taken.iterdir()} == FILES
    assert json.loads((taken / "config.json").read_text())["source"]["file"] == "model.pt"
    assert_safetensors_equal_run(taken, run / "model.pt")
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".taken.")]  # no temp folder left


def test_onnx_without_onnxruntime_is_one_line_before_anything_is_written(image_export, capsys, monkeypatch):
    run, _, _ = image_export
    monkeypatch.chdir(run.parent)
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    code, _, err = ftr(capsys, "export", "run", "-o", "no-onnx", "--format", "onnx")
    assert code == 1
    assert err == "ftr export --format onnx needs onnx and onnxruntime: pip install 'ftr[onnx]'\n"
    assert not (run.parent / "no-onnx").exists()


def test_a_compiled_script_s_run_folder_exports(image_run, capsys, monkeypatch):
    monkeypatch.chdir(image_run)
    compile_to(capsys, "r.ftr", "r.py")
    script_ok(capsys, "r.py", "script-run")
    export_ok(capsys, "script-run", "script-out")
    config = json.loads((image_run / "script-out/config.json").read_text())
    assert config["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    assert_safetensors_equal_run(image_run / "script-out", image_run / "script-run/best.pt")


# --- text classification ---------------------------------------------------------


def test_a_text_export_predicts_without_ftr_and_its_onnx_matches(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny(tmp_path / "bert", "bert")
    write_texts(tmp_path / "train.csv", 24, seed=1)
    text = text_recipe(tmp_path / "bert", tmp_path / "train.csv", tmp_path / "run", epochs=1)
    write_recipe(tmp_path, text.replace("  at epoch 2 unfreeze rest\n", ""))
    run_ok(capsys, "r.ftr", "run")
    err = export_ok(capsys, "run", "out", "--format", "onnx")
    assert "top-1 agreement 6/6" in err
    out = tmp_path / "out"
    assert FILES | {"model.onnx", "encoder"} <= {p.name for p in out.iterdir()}
    assert (out / "encoder/config.json").is_file() and (out / "encoder/tokenizer.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["pool"] == "mean" and config["preprocessing"]["max_length"] == 16
    (tmp_path / "bert").rename(tmp_path / "bert-gone")  # predict.py must not need the model folder
    (tmp_path / "texts.txt").write_text("apple banana juice\nengine brake road\n\npython loop bug\n")
    lines = script_lines(out, "texts.txt", "train.csv", cwd=tmp_path)
    (tmp_path / "bert-gone").rename(tmp_path / "bert")
    rows = predict_rows(capsys, "run", "texts.txt", "train.csv")
    assert_same_predictions(lines, rows, ["score"])
    assert lines[2][0] == "texts.txt:4"


# --- detection -----------------------------------------------------------------


def test_a_detector_export_predicts_without_ftr_and_falls_back_to_torchscript(tmp_path, capsys, monkeypatch):
    """The dynamo exporter's failure on torchvision's detectors is simulated: it takes
    seconds to fail on a real one (data-dependent shapes in the box post-processing)."""
    monkeypatch.chdir(tmp_path)
    make_digits_voc.make(tmp_path / "voc", digits=(0, 1, 2), images=12, size=48, seed=0, val=1 / 3)
    recipe = VOC_RECIPE.replace("epochs 2", "epochs 1").replace("at epoch 2 unfreeze backbone.body", "")
    write_recipe(tmp_path, recipe)
    run_ok(capsys, "r.ftr", "run")

    def dynamo_fails(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression u0 > 0")

    monkeypatch.setattr(runtime.export_onnx, "_dynamo", dynamo_fails)
    err = export_ok(capsys, "run", "out", "--format", "onnx")
    assert "torch.export cannot export this model (RuntimeError: Could not guard" in err
    assert "model.onnx written by the TorchScript exporter instead" in err
    assert "top-1 agreement 4/4" in err
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["family"] == "rcnn" and config["architecture"]["label_shift"] == 0
    assert_safetensors_equal_run(out, tmp_path / "run/best.pt")
    lines = script_lines(out, "voc/JPEGImages", "--threshold", "0", cwd=tmp_path)
    rows = predict_rows(capsys, "run", "voc/JPEGImages", "--threshold", "0")
    assert_same_predictions(lines, rows, ["score", "x1", "y1", "x2", "y2"])
