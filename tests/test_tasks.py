"""The `task` statement and detection in the language: parse, typed Recipe, model-free checks.

Mistakes are in the bad-recipe catalogue (tests/fixtures/bad/096 to 120); good
detection recipes are in tests/fixtures/good/. Nothing here builds a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipe_lang import RecipeError, parse
from recipe_lang.build import family_members
from recipe_lang.cli import main
from recipe_lang.formatter import format_text
from recipe_lang.recipe import CocoSource, DetectionHead, Recipe, VocSource, metric_key
from recipe_lang.tasks import HEAD_TASK, METRIC_TASK, SOURCE_TASK, STATEMENT_TASK, TRANSFORM_TASK

ROOT = Path(__file__).resolve().parent.parent
GOOD = sorted((ROOT / "tests" / "fixtures" / "good").glob("*.ftr"))
FASTER_RCNN = ROOT / "tests" / "fixtures" / "good" / "voc_fasterrcnn.ftr"
SEED = ROOT / "recipes" / "seed_resnet18.ftr"

DETECTION = """recipe "d"
task detection

model {
  backbone fasterrcnn_resnet50_fpn
  head detection(classes=2)
}

data {
  train voc("data/voc")
  val split(0.2)
}

train {
  epochs 2
  lr 1e-3
}
"""


def _errors(text: str) -> list:
    with pytest.raises(RecipeError) as info:
        parse(text)
    return info.value.errors


# --- good recipes ----------------------------------------------------------------


def test_there_are_good_detection_recipes():
    assert len(GOOD) >= 3


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_recipe_passes_check_syntax(path, capsys):
    assert main(["check", "--syntax", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_recipe_is_canonical(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text) == text


def test_the_faster_rcnn_example_reads_as_written():
    recipe = parse(FASTER_RCNN.read_text(encoding="utf-8"))
    assert recipe.task == "detection"
    model = recipe.model
    assert (model.backbone, model.weights.kind, model.min_size, model.max_size) == (
        "fasterrcnn_resnet50_fpn",
        "default",
        480,
        640,
    )
    assert model.head == DetectionHead(classes=20)
    assert recipe.data.train == VocSource(path="data/VOC2007", split="trainval")
    assert recipe.data.val == VocSource(path="data/VOC2007", split="test")
    assert recipe.evaluate.metric_keys == ["loss", "map", "map50"]
    assert recipe.evaluate.best == "map"


def test_sources_keep_their_options_and_defaults():
    voc = parse(DETECTION.replace('voc("data/voc")', 'voc("v", classes=["cat", "dog"])')).data.train
    assert (voc.path, voc.split, voc.classes) == ("v", "trainval", ["cat", "dog"])
    assert parse(DETECTION).data.train.classes is None
    coco = parse(DETECTION.replace('voc("data/voc")', 'coco("a.json", "images")')).data.train
    assert coco == CocoSource(path="a.json", images="images")


# --- the task statement ----------------------------------------------------------


def test_task_defaults_to_classification():
    recipe = parse(SEED.read_text(encoding="utf-8"))
    assert recipe.task == "classification"
    assert ("task",) not in recipe.spans


def test_task_statement_keeps_its_position():
    recipe = parse(DETECTION)
    value, keyword = recipe.spans[("task",)], recipe.keyword_spans[("task",)]
    assert (value.line, value.column, value.end_column) == (2, 6, 15)
    assert (keyword.line, keyword.column, keyword.end_column) == (2, 1, 5)
    assert recipe.keyword_spans[("model", "head")].column == 3


def test_task_may_stand_anywhere_at_the_top_and_fmt_moves_it_up():
    text = DETECTION.replace("task detection\n", "") + "task detection\n"
    assert parse(text).task == "detection"
    assert format_text(text).startswith('recipe "d"\ntask detection\n\nmodel {')


def test_task_goes_after_recipe_seed_and_output():
    text = 'task detection\noutput "o"\nseed 1\nrecipe "d"\n'
    assert format_text(text) == 'recipe "d"\nseed 1\noutput "o"\ntask detection\n'


def test_set_task_and_detection_statements():
    recipe = parse(DETECTION.replace("task detection\n", ""), overrides=["task=detection", "model.min_size=600"])
    assert (recipe.task, recipe.model.min_size) == ("detection", 600)
    with pytest.raises(RecipeError) as info:
        parse(DETECTION, overrides=["task=classification"])
    assert [e.message for e in info.value.errors] == [
        "head detection(...) belongs to task detection, not classification",
        "voc(...) belongs to task detection, not classification",
    ]


def test_an_image_recipe_named_text_classification_lists_every_image_statement():
    text = SEED.read_text(encoding="utf-8").replace(
        'recipe "seed-resnet18"\n', 'recipe "t"\ntask text_classification\n'
    )
    found = [(e.span.line, e.span.column, e.message, e.hint) for e in _errors(text)]
    assert [f[:3] for f in found] == [
        (6, 12, "backbone resnet18 belongs to tasks classification and detection, not text_classification"),
        (12, 9, "imagefolder(...) belongs to task classification, not text_classification"),
        (13, 7, "imagefolder(...) belongs to task classification, not text_classification"),
        (15, 3, "train_transforms belongs to tasks classification and detection, not text_classification"),
        (16, 3, "eval_transforms belongs to tasks classification and detection, not text_classification"),
        (17, 3, "normalize belongs to task classification, not text_classification"),
    ]
    assert found[0][3] == 'write backbone hf("model-folder")'
    assert found[1][3].startswith('write csv("file.csv", text="column"')


def test_text_things_in_an_image_recipe_name_their_task():
    text = SEED.read_text(encoding="utf-8").replace(
        'train imagefolder("data/train")', 'train csv("t.csv", text="body", label="topic")\n  max_length 64'
    )
    text = text.replace("backbone resnet18", 'backbone hf("models/bert")\n  pool cls')
    messages = [e.message for e in _errors(text)]
    assert messages == [
        "backbone hf(...) belongs to task text_classification, not classification",
        "pool belongs to task text_classification, not classification",
        "csv(..., text=...) belongs to task text_classification, not classification",
        "max_length belongs to task text_classification, not classification",
    ]


# --- metrics -----------------------------------------------------------------------


def test_detection_measures_loss_and_map_unless_told():
    assert parse(DETECTION).evaluate.metric_keys == ["loss", "map"]
    told = parse(DETECTION + "\nevaluate {\n  metrics map75\n  best map75\n}\n")
    assert told.evaluate.metric_keys == ["map75"]
    assert told.evaluate.best == "map75"


def test_classification_still_measures_loss_and_accuracy():
    assert parse(SEED.read_text(encoding="utf-8")).evaluate.metric_keys == ["loss", "accuracy"]


def test_map_metrics_are_logged_under_their_names():
    recipe = parse(DETECTION + "\nevaluate {\n  metrics loss, map, map50, map75\n}\n")
    assert [metric_key(m) for m in recipe.evaluate.metrics] == ["loss", "map", "map50", "map75"]


def test_best_and_early_stop_take_map_metrics():
    text = DETECTION + "\nevaluate {\n  metrics map, map50\n  best map50\n  early_stop patience=2, metric=map\n}\n"
    evaluate = parse(text).evaluate
    assert (evaluate.best, evaluate.stop_metric) == ("map50", "map")


@pytest.mark.parametrize("key", ["map", "map50", "map75", "val_map", "val_map50", "val_map75"])
def test_map_metrics_are_better_higher(key):
    from runtime.metrics import better

    assert better(key, 0.5, 0.4)
    assert not better(key, 0.4, 0.5)


# --- the task tables ----------------------------------------------------------------


def test_every_head_and_source_has_its_task():
    assert set(HEAD_TASK) == set(family_members("head"))
    assert set(SOURCE_TASK) == set(family_members("data source"))
    assert set(family_members("validation source")) - set(SOURCE_TASK) == {"split"}


def test_every_metric_but_loss_has_its_task():
    assert set(METRIC_TASK) == set(family_members("metric")) - {"loss"}


def test_task_tables_name_what_exists():
    assert set(TRANSFORM_TASK) <= set(family_members("transform"))
    for block, field in STATEMENT_TASK:
        assert field in Recipe.model_fields[block].annotation.model_fields


def test_min_size_may_equal_max_size():
    recipe = parse(DETECTION.replace("  head detection", "  min_size 600\n  max_size 600\n  head detection"))
    assert (recipe.model.min_size, recipe.model.max_size) == (600, 600)


def test_every_task_error_is_collected_in_one_pass():
    text = DETECTION.replace("head detection(classes=2)", "head linear(classes=2)").replace(
        "  lr 1e-3\n", "  lr 1e-3\n  label_smoothing 0.1\n"
    )
    text += "\nevaluate {\n  metrics loss, accuracy, macro_f1\n}\n"
    messages = [e.message for e in _errors(text)]
    assert messages == [
        "head linear(...) belongs to tasks classification and text_classification, not detection",
        "label_smoothing belongs to tasks classification and text_classification, not detection",
        "metric accuracy belongs to tasks classification and text_classification, not detection",
        "metric macro_f1 belongs to tasks classification and text_classification, not detection",
    ]


# --- tools --------------------------------------------------------------------------


def test_schema_has_the_task_and_detection(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    task = schema["properties"]["task"]
    assert task["enum"] == ["classification", "detection", "text_classification"] and task["description"]
    defs = schema["$defs"]
    model = defs["ModelSpec"]["properties"]
    assert model["min_size"]["description"] and model["max_size"]["description"]
    assert defs["DetectionHead"]["properties"]["classes"]["description"]
    assert {"path", "split", "classes"} <= set(defs["VocSource"]["properties"])
    assert defs["CocoSource"]["required"] == ["path", "images"]
    assert {"MapMetric", "Map50Metric", "Map75Metric"} <= set(defs)


def test_check_syntax_of_a_detection_recipe_imports_no_torch():
    code = (
        "import sys\n"
        "from recipe_lang.cli import main\n"
        f"assert main(['check', '--syntax', {str(FASTER_RCNN)!r}]) == 0\n"
        "assert not {'torch', 'torchvision'} & {m.split('.')[0] for m in sys.modules}\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
