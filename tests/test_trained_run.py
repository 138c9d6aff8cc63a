"""After training, for image classification: a run folder opened again (ftr run's and a
compiled script's), `ftr predict` and `ftr evaluate`."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import make_image_folder
from PIL import Image
from test_compile import compile_to, script_ok
from test_run import ftr, metrics, run_ok, write_recipe
from torchvision.transforms import v2

from runtime.trained import RunOpenError, open_run

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """recipe "shapes"
seed 0

model {
  backbone resnet18
  weights none
  head linear(classes=4)
}

data {
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 8
  train_transforms random_resized_crop(32), hflip()
  eval_transforms resize(36), center_crop(32)
  normalize mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)
}

train {
  epochs 3
  optimizer adamw
  lr 1e-3
}

evaluate {
  metrics loss, accuracy, macro_f1
  best loss
}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A three-epoch run of ftr run (`run`) and of the compiled script (`script`)."""
    root = tmp_path_factory.mktemp("trained")
    make_image_folder(root / "data" / "train", per_class=6, size=40, seed=1)
    make_image_folder(root / "data" / "val", per_class=3, size=40, seed=2)
    write_recipe(root, RECIPE)
    return root


@pytest.fixture(scope="module")
def runs(folder):
    capsys = _Quiet()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_ok(capsys, "r.ftr", "run")
        compile_to(capsys, "r.ftr", "r.py")
        script_ok(capsys, "r.py", "script")
    return folder


class _Quiet:
    """capsys for module fixtures (pytest's own is function-scoped)."""

    def readouterr(self):
        return "", ""


def _by_hand(run: Path, files: list[Path], model_file: str) -> torch.Tensor:
    """The probabilities a plain loop gets: torchvision's resnet18 with the head, the
    run's weights, the recipe's eval pipeline."""
    model = torchvision.models.resnet18(num_classes=1000)
    model.fc = torch.nn.Linear(512, 4)
    model.load_state_dict(torch.load(run / model_file, weights_only=True))
    pipeline = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(36),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
        ]
    )
    images = torch.stack([pipeline(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        return model.eval()(images).softmax(1)


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


# --- opening a run -------------------------------------------------------------------


def test_a_run_opens_with_its_classes_plan_and_best_model(runs):
    run = open_run(str(runs / "run"))
    assert run.which == "best" and run.model_file.endswith("best.pt")
    assert run.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert [t.kind for t in run.plan.preprocess.eval] == ["resize", "center_crop"]
    state = torch.load(runs / "run" / "best.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in run.model.state_dict().items())
    assert not run.model.training


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "recipe.ftr").unlink(), "is not a run folder: it has no recipe.ftr"),
        (lambda f: (f / "model.pt").unlink(), "is unfinished: it has no model.pt"),
        (lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:5000]), "model.pt is damaged: cut"),
        (lambda f: (f / "recipe.ftr").write_text('recipe "x"\nmodle {}\n'), "does not check any more"),
    ],
)
def test_a_broken_run_folder_is_named_with_what_to_do(runs, tmp_path, capsys, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(runs / "run", broken)
    damage(broken)
    code, out, err = ftr(capsys, "predict", broken, runs / "data" / "val", "--model", "final")
    assert code == 1 and out == ""
    assert message in err and "Traceback" not in err
    with pytest.raises(RunOpenError):
        open_run(str(broken), "final")


# --- ftr predict ---------------------------------------------------------------------


@pytest.mark.parametrize("which, file", [("final", "model.pt"), ("best", "best.pt")])
def test_predict_gives_a_plain_loop_s_labels_and_probabilities(runs, capsys, which, file):
    files = sorted((runs / "data" / "val").rglob("*.png"))
    code, out, err = ftr(capsys, "predict", runs / "run", runs / "data" / "val", "--model", which, "--top", "2")
    assert code == 0, err
    rows = _rows(out)
    assert list(rows[0]) == ["input", "label", "score", "label_2", "score_2"]
    assert [r["input"] for r in rows] == [str(f) for f in files]
    expected = _by_hand(runs / "run", files, file)
    scores, labels = expected.topk(2, 1)
    classes = ["class_0", "class_1", "class_2", "class_3"]
    assert [r["label"] for r in rows] == [classes[i] for i in labels[:, 0]]
    assert [r["label_2"] for r in rows] == [classes[i] for i in labels[:, 1]]
    assert [float(r["score"]) for r in rows] == pytest.approx(scores[:, 0].tolist(), rel=1e-5)
    assert f"{len(files)} predicted with {runs / 'run' / file}" in err


def test_unreadable_and_missing_inputs_are_named_skipped_and_counted(runs, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    good = runs / "data" / "val" / "class_1" / "00.png"
    out_file = tmp_path / "p.jsonl"
    args = ["predict", runs / "run", good, tmp_path / "notes.png", tmp_path / "gone", "--format", "jsonl"]
    code, out, err = ftr(capsys, *args, "-o", out_file)
    assert code == 0 and out == ""
    assert f"skipped {tmp_path / 'gone'}: no such file or folder" in err
    assert f"skipped {tmp_path / 'notes.png'}: not an image format PIL can read" in err
    assert "1 predicted" in err and "skipped 2" in err
    [row] = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert row["input"] == str(good) and 0 < row["score"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png", "p.jsonl"]  # no temporary file left


def test_nothing_readable_exits_1(runs, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    code, out, err = ftr(capsys, "predict", runs / "run", tmp_path / "a.png")
    assert code == 1 and "0 predicted" in err


def test_a_compiled_script_s_run_folder_predicts_as_ftr_run_s(runs, capsys):
    """The script's run trained the same numbers: its predictions are the same."""
    val = runs / "data" / "val"
    code, from_script, err = ftr(capsys, "predict", runs / "script", val, "--model", "final")
    assert code == 0, err
    code, from_run, _ = ftr(capsys, "predict", runs / "run", val, "--model", "final")
    assert [(r["input"], r["label"]) for r in _rows(from_script)] == [(r["input"], r["label"]) for r in _rows(from_run)]
    assert [float(r["score"]) for r in _rows(from_script)] == pytest.approx(
        [float(r["score"]) for r in _rows(from_run)], rel=1e-5
    )


# --- ftr evaluate --------------------------------------------------------------------


@pytest.mark.parametrize("run_folder", ["run", "script"])
def test_evaluate_on_the_run_s_val_gives_the_numbers_it_logged(runs, capsys, tmp_path, monkeypatch, run_folder):
    monkeypatch.chdir(runs)
    rows = metrics(runs / run_folder)
    best = min(rows, key=lambda r: r["val_loss"])
    for which, row in (("final", rows[-1]), ("best", best)):
        out = tmp_path / which
        code, _, err = ftr(capsys, "evaluate", run_folder, "--model", which, "-o", out)
        assert code == 0, err
        measured = json.loads((out / "metrics.json").read_text())
        assert measured["loss"] == row["val_loss"]
        assert measured["accuracy"] == row["val_accuracy"]
        assert measured["macro_f1"] == row["val_macro_f1"]
        assert measured["items"] == 12


def test_evaluate_writes_per_class_figures_a_confusion_matrix_and_the_worst_mistakes(runs, capsys, tmp_path):
    out = tmp_path / "eval"
    code, text, err = ftr(capsys, "evaluate", runs / "run", f'imagefolder("{runs}/data/train")', "-o", out)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {
        "metrics.json",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        "mistakes.csv",
    }
    confusion = list(csv.DictReader((out / "confusion.csv").open()))
    counts = [[int(row[f"class_{j}"]) for j in range(4)] for row in confusion]
    assert sum(map(sum, counts)) == 24 and [sum(r) for r in counts] == [6, 6, 6, 6]
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    for k, row in enumerate(per_class):
        predicted = sum(r[k] for r in counts)
        assert int(row["support"]) == 6
        assert float(row["recall"]) == pytest.approx(counts[k][k] / 6)
        if predicted:
            assert float(row["precision"]) == pytest.approx(counts[k][k] / predicted)
    accuracy = json.loads((out / "metrics.json").read_text())["accuracy"]
    assert accuracy == pytest.approx(sum(counts[k][k] for k in range(4)) / 24)
    mistakes = list(csv.DictReader((out / "mistakes.csv").open()))
    wrong = 24 - sum(counts[k][k] for k in range(4))
    assert len(mistakes) == min(wrong, 10)
    assert all(m["label"] != m["predicted"] for m in mistakes)
    assert [float(m["score"]) for m in mistakes] == sorted((float(m["score"]) for m in mistakes), reverse=True)
    assert Image.open(out / "confusion.png").format == "PNG"
    assert "precision" in text and "worst" in text


def test_a_plain_folder_is_read_as_the_run_read_its_data_and_a_subset_of_classes_is_fine(runs, capsys, tmp_path):
    make_image_folder(tmp_path / "two", classes=2, per_class=2, size=40, seed=5)
    shutil.move(tmp_path / "two" / "class_1", tmp_path / "two" / "class_3")
    code, text, err = ftr(capsys, "evaluate", runs / "run", tmp_path / "two")
    assert code == 0, err
    assert f"on imagefolder('{tmp_path / 'two'}'): 4 items" in text


def test_a_class_the_run_never_learned_is_named(runs, capsys, tmp_path):
    make_image_folder(tmp_path / "other", classes=1, per_class=2, size=40)
    shutil.move(tmp_path / "other" / "class_0", tmp_path / "other" / "zebra")
    code, _, err = ftr(capsys, "evaluate", runs / "run", tmp_path / "other")
    assert code == 1
    assert "the data has 1 class(es) the run did not learn: zebra" in err
    assert "help: the run knows class_0, class_1, class_2, class_3" in err


def test_a_mistake_in_source_is_shown_at_its_column(runs, capsys):
    code, _, err = ftr(capsys, "evaluate", runs / "run", 'imagefolder("data/val", root="x")')
    assert code == 2
    assert "SOURCE:1:29: error: unknown option 'root' of imagefolder" in err


def test_draw_is_refused_where_there_are_no_boxes(runs, capsys, tmp_path):
    code, _, err = ftr(capsys, "predict", runs / "run", runs / "data" / "val", "--draw", tmp_path / "d")
    assert code == 2 and "--draw draws boxes: classification runs have none to draw" in err
    assert not (tmp_path / "d").exists()


def test_without_matplotlib_the_confusion_png_is_left_out_with_the_extra_named(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    code, _, err = ftr(capsys, "evaluate", runs / "run", runs / "data" / "val", "-o", tmp_path)
    assert code == 0, err
    assert "confusion.png needs matplotlib: pip install 'ftr[report]'" in err
    assert (tmp_path / "confusion.csv").exists() and not (tmp_path / "confusion.png").exists()
