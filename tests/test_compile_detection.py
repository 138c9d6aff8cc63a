"""`ftr compile` of a detection recipe: the script writes `ftr run`'s metrics.jsonl
and per_class.jsonl on the same recipe, data and seed (the same detector, boxes,
losses and pycocotools mAP), resumes to the same numbers, imports nothing but torch,
torchvision (with PIL) and pycocotools besides the standard library, and is code
ruff leaves as it is.

The data: digits pasted on 48-pixel canvases (recipes/detection/make_digits_voc.py),
as a VOC folder and as a COCO file with crowd boxes. Two detectors: a softmax one
(Faster R-CNN, MobileNetV3 320) and a sigmoid one (RetinaNet, from a weights file,
so with FrozenBatchNorm2d in its backbone). The scripts run in this process.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import runpy
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
import torchvision
from test_compile import compile_to, ruff, run_script, script_ok
from test_run import assert_rows_close, metrics, plan_of, run_ok, weights, without_seconds, write_recipe
from torchvision.ops.misc import FrozenBatchNorm2d

from runtime.tasks import runtime_task

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_digits_voc", ROOT / "recipes/detection/make_digits_voc.py")
make_digits_voc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_digits_voc)

pytestmark = pytest.mark.usefixtures("one_thread")

VOC_RECIPE = """recipe "digits-frcnn"
seed 2
task detection

model {
  backbone fasterrcnn_mobilenet_v3_large_320_fpn
  weights none
  head detection(classes=3)
  min_size 48
  max_size 48
}

data {
  train voc("voc", split="train")
  val voc("voc", split="val")
  batch_size 4
  train_transforms hflip()
}

train {
  epochs 2
  optimizer sgd(momentum=0.9, weight_decay=1e-4)
  lr 0.02
  freeze backbone.body
  at epoch 2 unfreeze backbone.body
}

evaluate {
  metrics loss, map, map50
  best map50
}
"""

# a sigmoid detector (labels shift by one), its backbone's BatchNorm frozen as for
# pretrained weights; COCO categories with ids of their own, crowd boxes, a split val
COCO_RECIPE = """recipe "digits-retinanet"
seed 5
task detection

model {
  backbone retinanet_resnet50_fpn
  weights file("weights.pt", strict=false)
  head detection(classes=3)
  min_size 48
  max_size 48
}

data {
  train coco("digits.json", images="voc/JPEGImages")
  val split(0.25)
  batch_size 3
  train_transforms random_resized_crop(40, scale=(0.5, 1.0)), hflip()
  eval_transforms resize(40)
}

train {
  epochs 2
  optimizer adamw(weight_decay=0.01)
  lr 1e-4
  freeze backbone.body
}

evaluate {
  metrics loss, map, map75
}
"""


def coco_from_voc(voc: Path, path: Path) -> None:
    """The VOC folder's images and boxes as a COCO file: category ids 10, 11, ...,
    image ids from 100, every third box a crowd box."""
    ids = (voc / "ImageSets/Main/trainval.txt").read_text().split()
    roots = [ET.parse(voc / "Annotations" / f"{i}.xml").getroot() for i in ids]
    names = sorted({o.findtext("name") for r in roots for o in r.findall("object")})
    data = {"images": [], "annotations": [], "categories": [{"id": 10 + k, "name": n} for k, n in enumerate(names)]}
    for k, root in enumerate(roots):
        size = root.find("size")
        height, width = int(size.findtext("height")), int(size.findtext("width"))
        data["images"].append({"id": 100 + k, "file_name": root.findtext("filename"), "height": height, "width": width})
        for o in root.findall("object"):
            x1, y1, x2, y2 = (float(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            n = len(data["annotations"]) + 1
            data["annotations"].append(
                {
                    "id": n,
                    "image_id": 100 + k,
                    "category_id": 10 + names.index(o.findtext("name")),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": int(n % 3 == 0),
                }
            )
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Digits 0-2 on 48-pixel canvases: 8 train images and 4 val (VOC), the 12 as COCO;
    a weights file of RetinaNet's FPN alone (strict=false loads what it holds)."""
    root = tmp_path_factory.mktemp("detection-compile")
    make_digits_voc.make(root / "voc", digits=(0, 1, 2), images=12, size=48, seed=0, val=1 / 3)
    coco_from_voc(root / "voc", root / "digits.json")
    generator = torch.Generator().manual_seed(0)
    fpn = {"backbone.fpn.layer_blocks.0.0.weight": torch.randn(256, 256, 3, 3, generator=generator) * 0.01}
    torch.save(fpn, root / "weights.pt")
    write_recipe(root, VOC_RECIPE, "voc.ftr")
    write_recipe(root, COCO_RECIPE, "coco.ftr")
    return root


def compiled_and_run(capsys, folder: Path, name: str) -> tuple[Path, Path]:
    """The recipe compiled and run by both, once a module: (ftr run's folder, the script's)."""
    run, script = folder / f"{name}-run", folder / f"{name}-script"
    if not (script / "summary.json").exists():
        compile_to(capsys, folder / f"{name}.ftr", folder / f"{name}.py")
        run_ok(capsys, folder / f"{name}.ftr", run)
        script_ok(capsys, folder / f"{name}.py", script)
    return run, script


@pytest.mark.parametrize("name", ["voc", "coco"])
def test_the_script_writes_ftr_run_s_numbers(name, folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    run, script = compiled_and_run(capsys, folder, name)
    assert_rows_close(metrics(script), metrics(run))
    rows = metrics(script)
    assert {"val_loss", "val_map"} <= rows[-1].keys()
    assert (script / "per_class.jsonl").read_text() == (run / "per_class.jsonl").read_text()
    per_class = [json.loads(line) for line in (script / "per_class.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in per_class] == [1, 2] and set(per_class[0]["ap"]) == {"d0", "d1", "d2"}
    assert (script / "classes.json").read_text() == (run / "classes.json").read_text()
    got, expected = weights(script / "model.pt"), weights(run / "model.pt")
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[k].float(), expected[k].float(), rtol=1e-5, atol=1e-6) for k in expected)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (script, run))
    assert (summary["status"], summary["best"]) == (expected["status"], expected["best"])


def test_a_damaged_checkpoint_resumes_to_the_same_numbers(folder, capsys, monkeypatch):
    """The last checkpoint torn: the script resumes from the one before and writes
    the uninterrupted run's metrics.jsonl, per_class.jsonl and model."""
    monkeypatch.chdir(folder)
    _, full = compiled_and_run(capsys, folder, "voc")
    cut = folder / "voc-cut"
    shutil.copytree(full, cut)
    (cut / "summary.json").unlink()
    (cut / "checkpoint.pt").write_bytes(b"torn")
    lines = (cut / "per_class.jsonl").read_text().splitlines()
    (cut / "per_class.jsonl").write_text(lines[0] + "\n")  # as if killed before the last write
    assert run_script(folder / "voc.py", "--out", cut, "--device", "cpu", "--quiet", "--resume") == 0
    _, err = capsys.readouterr()
    assert "resuming from" in err and "checkpoint.previous.pt" in err
    assert without_seconds(metrics(cut)) == without_seconds(metrics(full))
    assert (cut / "per_class.jsonl").read_text() == (full / "per_class.jsonl").read_text()
    got, expected = weights(cut / "model.pt"), weights(full / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_the_script_builds_ftr_s_detector_from_a_file_with_batchnorm_counters(folder, capsys, monkeypatch):
    """weights file(...) of a detector that trained its BatchNorm layers, loaded
    strictly: the script's build_model() gives the runtime's tensors, FrozenBatchNorm2d
    in the backbone's body (which keeps no step counter) and the new layers drawn alike."""
    monkeypatch.chdir(folder)
    torch.manual_seed(0)
    trained = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    torch.save(trained.state_dict(), folder / "trained.pt")
    recipe = write_recipe(folder, VOC_RECIPE.replace("weights none", 'weights file("trained.pt")'), "file.ftr")
    compile_to(capsys, recipe, folder / "file.py")
    plan = plan_of(recipe)
    torch.manual_seed(plan.seed)
    expected = runtime_task(plan).build_model().state_dict()
    torch.manual_seed(plan.seed)
    model = runpy.run_path(str(folder / "file.py"), run_name="compiled_script")["build_model"](".")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    got = model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert torch.equal(got["backbone.body.0.1.running_var"], trained.state_dict()["backbone.body.0.1.running_var"])


def test_the_script_imports_torch_torchvision_and_pycocotools_only(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    compiled_and_run(capsys, folder, "voc")
    imported = set()
    for node in ast.walk(ast.parse((folder / "voc.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert {"torch", "torchvision", "pycocotools"} <= imported
    assert imported - set(sys.stdlib_module_names) == {"torch", "torchvision", "PIL", "pycocotools"}
    assert "it needs only torch, torchvision and pycocotools" in (folder / "voc.py").read_text()


def test_detection_scripts_are_clean_code(folder, capsys, monkeypatch, tmp_path):
    """ruff's defaults and more rules on the scripts of every detection recipe of the
    fixtures (pretrained COCO weights, named classes) and of this module's two."""
    monkeypatch.chdir(folder)
    recipes = sorted((ROOT / "tests/fixtures/good").glob("*.ftr")) + [folder / "voc.ftr", folder / "coco.ftr"]
    scripts = []
    for recipe in recipes:
        if "task detection" in recipe.read_text():
            scripts.append(str(tmp_path / f"{recipe.stem}.py"))
            compile_to(capsys, recipe, scripts[-1])
    assert len(scripts) >= 4
    formatted = ruff("format", "--isolated", "--check", "--diff", *scripts)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    checked = ruff("check", "--isolated", "--select", "E,F,W,I,B,UP", "--ignore", "E501", *scripts)
    assert checked.returncode == 0, checked.stdout + checked.stderr
