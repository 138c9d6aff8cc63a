"""`ftr check`, `plan` and `run` of a detection recipe on digits pasted onto canvases."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_run import ftr, metrics, run_ok, weights, without_seconds, write_recipe

import recipe_lang
from recipe_lang.resolve import resolve
from runtime.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_digits_voc", ROOT / "recipes/detection/make_digits_voc.py")
make_digits_voc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_digits_voc)

RECIPE = """recipe "digits-detector"
seed 2
task detection

model {{
  backbone fasterrcnn_mobilenet_v3_large_320_fpn
  weights none
  head detection(classes={classes})
  min_size 48
  max_size 48
}}

data {{
  train voc("voc", split="train")
  val voc("voc", split="val")
  batch_size 4
  train_transforms hflip()
}}

train {{
  epochs 2
  optimizer sgd(momentum=0.9, weight_decay=1e-4)
  lr 0.02
  freeze backbone.body
  at epoch 2 unfreeze backbone.body
}}

evaluate {{
  metrics loss, map, map50
  best map50
}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Digits 0-2 on 48-pixel canvases: 8 train images, 4 val."""
    root = tmp_path_factory.mktemp("detection")
    make_digits_voc.make(root / "voc", digits=(0, 1, 2), images=12, size=48, seed=0, val=1 / 3)
    write_recipe(root, RECIPE.format(classes=3))
    return root


@pytest.fixture(scope="module")
def full_run(folder) -> Path:
    """The uninterrupted two-epoch run (in this process)."""
    cwd = Path.cwd()
    try:
        import os

        os.chdir(folder)
        assert recipe_lang.cli.main(["run", "r.ftr", "--out", "full", "--device", "cpu", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "full"


def test_a_run_writes_map_and_the_ap_of_every_class(full_run):
    rows = metrics(full_run)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert set(row) >= {"train_loss", "val_loss", "val_map", "val_map50", "lr/head", "lr/rest"}
        assert 0.0 <= row["val_map"] <= row["val_map50"] <= 1.0
    per_class = [json.loads(line) for line in (full_run / "per_class.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in per_class] == [1, 2]
    assert set(per_class[0]["ap"]) == {"d0", "d1", "d2"}
    assert json.loads((full_run / "classes.json").read_text()) == {"d0": 0, "d1": 1, "d2": 2}
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["best"]["metric"] == "map50"


def test_evaluate_gives_the_logged_map_and_per_class_ap(folder, full_run, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(folder)
    code, text, err = ftr(capsys, "evaluate", full_run, "--model", "final", "-o", tmp_path)
    assert code == 0, err
    measured, logged = json.loads((tmp_path / "metrics.json").read_text()), metrics(full_run)[-1]
    assert {k: measured[k] for k in ("loss", "map", "map50")} == {
        "loss": logged["val_loss"],
        "map": logged["val_map"],
        "map50": logged["val_map50"],
    }
    last = json.loads((full_run / "per_class.jsonl").read_text().splitlines()[-1])["ap"]
    rows = (tmp_path / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,ap,ap50" and [r.split(",")[0] for r in rows[1:]] == list(last)
    assert [float(r.split(",")[2] or "nan") for r in rows[1:]] == pytest.approx(
        [v["ap50"] if v["ap50"] is not None else float("nan") for v in last.values()], nan_ok=True
    )
    mistakes = (tmp_path / "mistakes.csv").read_text().splitlines()
    assert mistakes[0] == "input,boxes,missed,false_detections"  # a 2-epoch detector misses boxes
    assert all(row.startswith("voc/JPEGImages/") for row in mistakes[1:])


def test_predict_writes_a_row_per_box_in_the_image_s_pixels(folder, full_run, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(folder)
    images = sorted((folder / "voc" / "JPEGImages").iterdir())[:3]
    args = ["predict", full_run, *images, "--threshold", "0", "--top", "2", "--draw", tmp_path]
    code, out, err = ftr(capsys, *args)
    assert code == 0, err
    drawn = sorted(tmp_path.iterdir())
    assert [p.name for p in drawn] == [f"{image.stem}.png" for image in images]
    from PIL import Image

    assert all(Image.open(p).size == Image.open(i).size for p, i in zip(drawn, images, strict=True))
    rows = [line.split(",") for line in out.splitlines()]
    assert rows[0] == ["input", "label", "score", "x1", "y1", "x2", "y2"]
    for name in map(str, images):
        boxes = [r for r in rows[1:] if r[0] == name]
        assert 1 <= len(boxes) <= 2
        for _, label, score, *box in boxes:
            x1, y1, x2, y2 = map(float, box)
            assert label in {"d0", "d1", "d2"} and 0 <= float(score) <= 1
            assert 0 <= x1 <= x2 <= 48 and 0 <= y1 <= y2 <= 48


def test_a_damaged_checkpoint_resumes_from_the_epoch_before_to_the_same_numbers(folder, full_run, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    cut = folder / "cut"
    shutil.copytree(full_run, cut)
    (cut / "summary.json").unlink()
    (cut / "checkpoint.pt").write_bytes(b"torn")
    run_ok(capsys, "r.ftr", cut, "--resume")
    assert without_seconds(metrics(cut)) == without_seconds(metrics(full_run))
    assert (cut / "per_class.jsonl").read_text() == (full_run / "per_class.jsonl").read_text()
    got, expected = weights(cut / "model.pt"), weights(full_run / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_evaluation_changes_no_weight_statistic_or_random_stream(folder, monkeypatch, tmp_path):
    """val_loss needs the detector in train mode; BatchNorm statistics and the
    generator R-CNN's samplers draw from must come out as they went in (the val
    loader itself draws its base seed from it, as in classification)."""
    monkeypatch.chdir(folder)
    plan = resolve(recipe_lang.load(folder / "r.ftr"))
    trainer = Trainer(plan, tmp_path / "out", "cpu")
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    first = trainer.evaluate(1)
    after = torch.get_rng_state()
    torch.set_rng_state(rng)
    for _ in trainer.val_loader:
        pass
    assert torch.equal(after, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.evaluate(1) == first


def test_a_class_count_other_than_the_data_s_is_an_error_at_the_head(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    recipe = write_recipe(folder, RECIPE.format(classes=4), "four.ftr")
    code, _, err = ftr(capsys, "check", recipe)
    assert code == 1
    line = RECIPE.splitlines().index("  head detection(classes={classes})") + 1
    assert f"four.ftr:{line}:26: error: the data has 3 classes but the head has 4" in err


def test_a_missing_voc_folder_is_named_at_the_source(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    recipe = write_recipe(folder, RECIPE.format(classes=3).replace('voc("voc", split="val")', 'voc("gone")'), "g.ftr")
    code, _, err = ftr(capsys, "check", recipe)
    assert code == 1 and "Traceback" not in err
    line = RECIPE.splitlines().index('  val voc("voc", split="val")') + 1
    assert f"g.ftr:{line}:7: error:" in err and "gone" in err


class _TwoProcesses:
    """A stand-in for runtime.distributed.Distributed whose gather returns what both
    processes would send, in rank order."""

    def __init__(self, other):
        self.other = other

    def gather(self, obj) -> list:
        return [obj, self.other]


def test_with_several_processes_map_is_that_of_the_whole_val_set():
    from runtime.tasks.detection import Evaluation

    torch.manual_seed(0)
    images = []
    for _ in range(6):
        boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [24.0, 10.0, 40.0, 30.0]])
        target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "difficult": torch.tensor([False, False])}
        detection = {
            "boxes": boxes + torch.randn(2, 4) * 3,
            "scores": torch.rand(2),
            "labels": torch.tensor([1, 2]) if torch.rand(1) > 0.3 else torch.tensor([2, 1]),
        }
        images.append((detection, target))
    whole, first, second = (Evaluation(["a", "b"], ["loss", "map", "map50"]) for _ in range(3))
    for i, (detection, target) in enumerate(images):
        whole.update([detection], [target], loss=float(i))
        (first if i % 2 == 0 else second).update([detection], [target], loss=float(i))
    first.reduce(_TwoProcesses((second.loss_sum, second.seen, second.map.state())))
    assert first.result() == pytest.approx(whole.result(), rel=0, abs=1e-12)
    assert 0 < whole.result()["val_map"] < 1


def test_map_without_pycocotools_is_an_error_at_the_metric(folder, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else real(name, *a))
    monkeypatch.chdir(folder)
    code, _, err = ftr(capsys, "check", "r.ftr")
    line = RECIPE.splitlines().index("  metrics loss, map, map50") + 1
    assert code == 1 and f"r.ftr:{line}:17: error: metric map needs pycocotools, which is not installed" in err
    assert "pip install 'ftr[detection]'" in err
