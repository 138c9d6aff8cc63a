"""`ftr report` and `--logger tensorboard`, the two views of a run's metrics.jsonl.

Two runs of one tiny recipe (resnet18 on 16 px synthetic images, three epochs, a
group thawed at epoch 2, best by accuracy) are made once per module: one by
`ftr run --logger tensorboard`, one by its compiled script with the same flag. The
report and the TensorBoard events are checked against their run folders' files.
"""

from __future__ import annotations

import ast
import base64
import html
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_compile import run_script
from test_run import ftr, metrics, run_ok

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.resolve import resolve
from recipe_lang.resolve.table import plan_table

RECIPE = """recipe "tiny"
seed 3

model {
  backbone resnet18
  weights none
  head linear(classes=2)
}

data {
  train synthetic(classes=2, count=8, size=16)
  val synthetic(classes=2, count=4, size=16)
  batch_size 4
}

groups {
  late = layer4
}

train {
  epochs 3
  optimizer sgd(momentum=0.9)
  lr head=0.01, late=0.001
  freeze all except head
  at epoch 2 unfreeze late
}

evaluate {
  metrics loss, accuracy
  best accuracy
}
"""
THAW = "epoch 2: thaw late"  # the recipe's `at epoch 2 unfreeze late`


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard events in folder/tensorboard: {tag: [(step, value)]}."""
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl under TensorBoard's names, as float32 (what an event holds)."""
    expected: dict[str, list] = {}
    for row in metrics(folder):
        for key, value in row.items():
            if key != "epoch":
                name = re.sub(r"^(train|val)_", r"\1/", key)
                expected.setdefault(name, []).append((row["epoch"], float(np.float32(value))))
    return expected


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"ftr": the folder `ftr run` wrote, "script": the compiled script's, "recipe": the recipe}."""
    root = tmp_path_factory.mktemp("runs")
    recipe = root / "tiny.ftr"
    recipe.write_text(RECIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logger = ("--device", "cpu", "--quiet", "--logger", "tensorboard")
    try:
        assert main(["run", str(recipe), "--out", str(root / "ftr"), *logger]) == 0
        assert main(["compile", str(recipe), "-o", str(root / "train.py")]) == 0
        assert run_script(root / "train.py", "--out", root / "script", *logger) == 0
    finally:
        torch.set_num_threads(threads)
    return {"ftr": root / "ftr", "script": root / "script", "recipe": recipe}


def report(capsys, *args) -> tuple[int, str]:
    code, _, err = ftr(capsys, "report", *args)
    assert "Traceback" not in err
    return code, err


def images(page: str) -> list[Image.Image]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


def shown_plan(recipe: Path) -> str:
    plan = resolve(recipe_lang.parse(recipe.read_text(), str(recipe)), data=False, weights_file=False)
    return html.escape(plan_table(plan))


# --- ftr report ---------------------------------------------------------------------


def test_a_report_is_one_self_contained_page_of_the_run(runs, capsys):
    folder = runs["ftr"]
    code, err = report(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "nothing to fetch"
    charts = images(page)
    assert len(charts) == 3  # loss, accuracy, the rates of the run's groups
    for chart in charts:
        assert chart.format == "PNG" and chart.width > 300
    assert "<h2>Run ftr</h2>" in page
    best = json.loads((folder / "summary.json").read_text())["best"]
    assert f"<th>best epoch</th><td>{best['epoch']}, by val_accuracy" in page
    assert f"<li>{THAW}</li>" in page
    assert shown_plan(runs["recipe"]) in page
    assert html.escape(RECIPE) in page


def test_runs_are_overlaid_and_a_compiled_scripts_run_is_one(runs, capsys, tmp_path):
    """The script writes no plan.txt: its plan comes from its recipe.ftr, as ftr run's does."""
    assert not (runs["script"] / "plan.txt").exists()
    out = tmp_path / "both.html"
    code, err = report(capsys, runs["ftr"], runs["script"], "-o", out)
    assert code == 0, err
    page = out.read_text()
    assert "ftr report: ftr, script" in page
    assert "<h2>Run ftr</h2>" in page and "<h2>Run script</h2>" in page
    assert len(images(page)) == 4  # loss and accuracy overlaid, then each run's rates
    assert page.count(shown_plan(runs["recipe"])) == 2
    assert page.count(f"<li>{THAW}</li>") == 2


def test_a_recipe_that_no_longer_resolves_still_gives_the_curves(runs, capsys, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(runs["ftr"] / "metrics.jsonl", folder)
    shutil.copy(runs["ftr"] / "plan.txt", folder)
    (folder / "recipe.ftr").write_text(RECIPE.replace("late=0.001", "middle=0.001"))
    code, err = report(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert "its recipe.ftr does not resolve any more" in page and "unknown group &#x27;middle&#x27;" in page
    assert html.escape((runs["ftr"] / "plan.txt").read_text()) in page
    assert len(images(page)) == 3


def test_a_pseudo_labelled_run_has_a_chart_of_its_share_and_accuracy(runs, capsys, tmp_path):
    folder = tmp_path / "pseudo"
    shutil.copytree(runs["ftr"], folder)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for row in rows[1:]:
        row |= {"pseudo_share": 0.25 * row["epoch"], "pseudo_accuracy": 0.97}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, err = report(capsys, folder)
    assert code == 0, err
    page = (folder / "report.html").read_text()
    assert len(images(page)) == 4  # loss, accuracy, pseudo-labels, the rates
    assert 'alt="pseudo-labels per epoch"' in page
    code, err = report(capsys, runs["ftr"])
    assert code == 0 and "pseudo-labels" not in (runs["ftr"] / "report.html").read_text()


def test_what_is_not_a_run_gets_a_message(runs, capsys, tmp_path):
    code, err = report(capsys, tmp_path)
    assert code == 1
    assert f"ftr report: error: {tmp_path} is not a run folder: it has no metrics.jsonl" in err
    assert "a compiled script wrote (its --out)" in err

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    text = (runs["ftr"] / "metrics.jsonl").read_text()
    (damaged / "metrics.jsonl").write_text(text[: len(text) - 40])
    code, err = report(capsys, damaged)
    assert code == 1
    assert f"{damaged / 'metrics.jsonl'} line 3 is not valid JSON" in err and "--resume" in err
    assert not (damaged / "report.html").exists()

    code, err = report(capsys, runs["ftr"], runs["script"])
    assert code == 2 and "several runs need -o FILE.html" in err


def test_without_matplotlib_the_report_names_the_extra(runs, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, err = report(capsys, runs["ftr"], "-o", tmp_path / "r.html")
    assert (code, err) == (1, "ftr report needs matplotlib: pip install 'ftr[report]'\n")


# --- --logger tensorboard -----------------------------------------------------------


def test_tensorboard_holds_metrics_jsonl(runs):
    got = scalars(runs["ftr"])
    assert {"train/loss", "val/loss", "val/accuracy", "lr/head", "lr/late", "seconds"} == got.keys()
    assert got == expected_scalars(runs["ftr"])


def test_the_compiled_script_logs_the_same_scalars(runs):
    got = scalars(runs["script"])
    assert got.keys() == scalars(runs["ftr"]).keys()
    assert got == expected_scalars(runs["script"])


def test_compiled_script_imports_tensorboard_only_when_asked(runs):
    tree = ast.parse((runs["script"].parent / "train.py").read_text())
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert "tensorboard" not in "".join(ast.unparse(node) for node in top)


@pytest.mark.parametrize("stopped", ["after its events", "without a logger"])
def test_a_resumed_run_logs_each_epoch_once(runs, capsys, tmp_path, stopped):
    """Stopped after the events of epoch 3 but before its checkpoint (readers drop them,
    the epoch's events come again); or started without --logger (the rows restored
    by the resume are logged first)."""
    folder = tmp_path / "resumed"
    shutil.copytree(runs["ftr"], folder)
    for name in ("summary.json", "model.pt", "report.html"):
        (folder / name).unlink(missing_ok=True)
    (folder / "checkpoint.previous.pt").replace(folder / "checkpoint.pt")  # epoch 2's
    if stopped == "without a logger":
        shutil.rmtree(folder / "tensorboard")
    run_ok(capsys, runs["recipe"], folder, "--resume", "--logger", "tensorboard")
    got = scalars(folder)
    assert [step for step, _ in got["train/loss"]] == [1, 2, 3]
    assert got == expected_scalars(folder)


def test_without_tensorboard_nothing_starts(runs, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    code, _, err = ftr(capsys, "run", runs["recipe"], "--out", tmp_path / "a", "--logger", "tensorboard")
    assert (code, err) == (
        1,
        "ftr run: error: --logger tensorboard needs tensorboard: pip install 'ftr[tensorboard]'\n",
    )
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code = run_script(runs["script"].parent / "train.py", "--out", tmp_path / "b", "--logger", "tensorboard")
    assert code == 1
    assert "--logger tensorboard needs tensorboard: pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
