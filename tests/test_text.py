"""task text_classification: Hugging Face encoders (the real all-MiniLM-L6-v2 for
check and plan; tiny BERT, DistilBERT, RoBERTa and GPT-2 folders made here for
training), ftr's head on pooled token states, csv/jsonl texts, layer_decay, and
the compiled script's parity with ftr run."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_compile import compile_to, script_ok
from test_run import assert_rows_close, ftr, metrics, run_ok, weights, without_seconds, write_recipe
from text_models import minilm, recipe, tiny, write_texts

import recipe_lang
from recipe_lang.diagnostics import RecipeError
from recipe_lang.resolve import encoders
from recipe_lang.resolve.resolver import resolve
from runtime.length_grouped import LengthGrouped
from runtime.tasks.text_data import pad_batch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")

MINILM = """recipe "packages"
task text_classification

model {
  backbone hf("models/minilm")
  weights default
  head linear(classes=3, dropout=0.1)
  pool mean
}

data {
  train csv("train.csv", text="text", label="label")
  val split(0.2)
  max_length 128
}

groups {
  top = encoder.layer[-2:]
}

train {
  epochs 3
  lr head=1e-3, top=1e-4, rest=3e-5
  layer_decay 0.8, over=encoder.layer
  freeze all except head
  at epoch 2 unfreeze top
  at epoch 3 unfreeze rest
}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """MiniLM's folder without its weights file (check and plan must not need it),
    tiny models of four families, and texts."""
    root = tmp_path_factory.mktemp("text")
    light = root / "models" / "minilm"
    light.mkdir(parents=True)
    for file in minilm().iterdir():
        if file.is_file() and file.suffix != ".safetensors":
            shutil.copy(file, light / file.name)
    for kind in ("bert", "distilbert", "roberta", "gpt2"):
        tiny(root / "models" / kind, kind)
    tiny(root / "models" / "steady", "bert", dropout=0.0)
    write_texts(root / "train.csv", 48, seed=1)
    return root


def _parse(text: str, name="r.ftr"):
    return recipe_lang.parse(text, name)


def test_minilm_resolves_on_the_meta_device_without_its_weights(folder, monkeypatch):
    monkeypatch.chdir(folder)
    plan = resolve(_parse(MINILM))
    assert not (folder / "models/minilm/model.safetensors").exists()
    assert plan.library == "hf" and plan.pool == "mean" and plan.max_length == 128
    assert plan.total_params == 22_565_376 + 384 * 3 + 3  # the encoder without its pooler, and the head
    rates = {g.name: g.lr for g in plan.groups}
    assert rates["encoder.layer.5"] == 1e-4 and rates["encoder.layer.4"] == 1e-4 * 0.8
    assert [rates[f"encoder.layer.{i}"] for i in range(4)] == [3e-5 * 0.8**k for k in (5, 4, 3, 2)]
    assert rates["rest"] == 3e-5 and plan.group("rest").params[0].startswith("embeddings.")
    assert plan.phases[1].trainable == sorted(plan.phases[1].trainable, key=plan.phases[2].trainable.index)
    assert {p.split(".")[2] for p in plan.phases[1].trainable if p.startswith("encoder.")} == {"4", "5"}


def test_the_plan_shows_every_layer_s_rate(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    write_recipe(folder, MINILM)
    code, out, err = ftr(capsys, "plan", "r.ftr")
    assert code == 0, err
    assert "its pretrained weights (hf)" in out and "on the mean token state, at most 128 tokens" in out
    assert "encoder.layer.0  encoder.layer.0 (rest x 0.8^5)" in out
    assert "9.83e-06" in out


def _errors(folder, monkeypatch, text):
    monkeypatch.chdir(folder)
    with pytest.raises(RecipeError) as info:
        resolve(_parse(text))
    return [(e.span.line, e.span.column, e.message, e.hint or "", e.notes) for e in info.value.errors]


def test_a_missing_column_is_named_with_the_file_s_columns(folder, monkeypatch):
    ((line, col, message, hint, notes),) = _errors(folder, monkeypatch, MINILM.replace('text="text"', 'text="body"'))
    assert (line, col) == (12, 9)
    assert message == "csv file 'train.csv' has no column 'body'" and notes == ("columns: text, label",)


def test_an_empty_text_is_named_by_its_line(folder, monkeypatch):
    rows = (folder / "train.csv").read_text().splitlines()
    rows[5] = ',"code"'
    (folder / "empty.csv").write_text("\n".join(rows) + "\n")
    ((line, col, message, _, _),) = _errors(folder, monkeypatch, MINILM.replace("train.csv", "empty.csv"))
    assert (line, col, message) == (12, 9, "line 6 of 'empty.csv' has an empty text")


def test_a_class_count_other_than_the_data_s_is_an_error_at_the_head(folder, monkeypatch):
    ((line, col, message, hint, _),) = _errors(folder, monkeypatch, MINILM.replace("classes=3", "classes=8"))
    assert (line, col, message, hint) == (7, 23, "the data has 3 classes but the head has 8", "set classes=3")


def test_model_limits_and_decay_containers_are_checked(folder, monkeypatch):
    text = MINILM.replace("max_length 128", "max_length 600").replace("over=encoder.layer", "over=encoder")
    found = _errors(folder, monkeypatch, text)
    assert [(f[0], f[1], f[2]) for f in found] == [
        (14, 14, "max_length 600 is more than the 512 positions the encoder has"),
        (24, 25, "'encoder' has 1 child with parameters: nothing to decay across"),
    ]
    assert found[1][3] == "write over=encoder.layer"


def test_a_missing_model_folder_is_an_error_at_the_backbone(folder, monkeypatch):
    ((line, col, message, _, _),) = _errors(folder, monkeypatch, MINILM.replace("models/minilm", "./models/none"))
    assert (line, col, message) == (5, 12, "model folder './models/none' does not exist")


@pytest.mark.parametrize("kind, pool", [("bert", "cls"), ("distilbert", "mean"), ("roberta", "mean"), ("gpt2", "last")])
def test_padding_changes_no_text_s_logits(folder, kind, pool):
    """A text alone and in a batch beside a longer one (padded on the right) gets the
    same logits: pooling reads only its own tokens (GPT-2 pads with end-of-text)."""
    tokenizer = encoders.tokenizer(str(folder / "models" / kind))
    torch.manual_seed(0)
    model = encoders.TextClassifier(
        encoders.build(str(folder / "models" / kind), "default"), torch.nn.Linear(16, 3), pool
    ).eval()
    short, long = tokenizer(["apple banana", "engine wheel road drive brake gear"])["input_ids"]
    alone, _ = pad_batch([(short, 0)], tokenizer.pad_token_id)
    both, _ = pad_batch([(short, 0), (long, 1)], tokenizer.pad_token_id)
    assert both["attention_mask"][0].sum() == len(short) < both["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.allclose(model(alone)[0], model(both)[0], atol=1e-5)


@pytest.mark.parametrize("kind, pool", [("distilbert", "cls"), ("roberta", "mean"), ("gpt2", "last")])
def test_each_family_trains_in_ftr_run(folder, kind, pool, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    path = write_recipe(folder, recipe(Path("models") / kind, "train.csv", kind, pool=pool), f"{kind}.ftr")
    run_ok(capsys, path, folder / kind)
    rows = metrics(folder / kind)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_accuracy"] <= 1 and r["train_loss"] > 0 for r in rows)
    assert json.loads((folder / kind / "classes.json").read_text()) == {"cars": 0, "code": 1, "fruit": 2}


BERT = recipe(
    Path("models/bert"),
    "train.csv",
    "x",
    extra_train="  layer_decay 0.5, over=encoder.layer\n  label_smoothing 0.1\n",
).replace("  batch_size 8\n", "  batch_size 8\n  group_by_length true\n")


def _run_both(folder, capsys):
    """The tiny BERT recipe run by ftr run and by its compiled script, once a module."""
    run, script = folder / "bert-run", folder / "bert-script"
    if not (script / "summary.json").exists():
        path = write_recipe(folder, BERT, "bert.ftr")
        compile_to(capsys, path, folder / "bert.py")
        run_ok(capsys, path, run)
        script_ok(capsys, folder / "bert.py", script)
    return run, script


def test_the_script_writes_ftr_run_s_numbers(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    run, script = _run_both(folder, capsys)
    rows = metrics(run)
    assert {"lr/encoder.layer.0", "lr/encoder.layer.1", "lr/head", "lr/rest"} <= rows[0].keys()
    assert rows[0]["lr/encoder.layer.0"] == rows[0]["lr/encoder.layer.1"] * 0.5
    assert_rows_close(metrics(script), rows)
    got, expected = weights(script / "model.pt"), weights(run / "model.pt")
    assert got.keys() == expected.keys() and "head.weight" in got and "embeddings.word_embeddings.weight" in got
    assert all(torch.allclose(got[k], expected[k], rtol=1e-5, atol=1e-6) for k in expected)


def test_a_damaged_checkpoint_resumes_to_the_same_numbers(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    run, _ = _run_both(folder, capsys)
    cut = folder / "bert-cut"
    shutil.copytree(run, cut)
    (cut / "summary.json").unlink()
    (cut / "checkpoint.pt").write_bytes(b"torn")
    code, _, err = ftr(capsys, "run", "bert.ftr", "--out", cut, "--device", "cpu", "--quiet", "--resume")
    assert code == 0, err
    assert without_seconds(metrics(cut)) == without_seconds(metrics(run))
    got, expected = weights(cut / "model.pt"), weights(run / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_the_script_imports_torch_and_transformers_only(folder, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    _run_both(folder, capsys)
    imported = set()
    for node in ast.walk(ast.parse((folder / "bert.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers"}


def test_evaluate_gives_the_logged_numbers_for_ftr_run_s_and_the_script_s_run(folder, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(folder)
    for out in _run_both(folder, capsys):
        code, text, err = ftr(capsys, "evaluate", out, "-o", tmp_path / out.name)
        assert code == 0, err
        measured, logged = json.loads((tmp_path / out.name / "metrics.json").read_text()), metrics(out)[-1]
        assert (measured["loss"], measured["accuracy"], measured["macro_f1"]) == (
            logged["val_loss"],
            logged["val_accuracy"],
            logged["val_macro_f1"],
        )
        assert "the run's val (split(0.25) of 'train.csv')" in text


def test_predict_reads_files_of_lines_and_csv_columns(folder, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(folder)
    run, _ = _run_both(folder, capsys)
    (tmp_path / "lines.txt").write_text("apples and pears\n\nthe engine and its wheels\n")
    (tmp_path / "rows.csv").write_text('id,body\n1,"def main(): return 0"\n')
    code, out, err = ftr(capsys, "predict", run, tmp_path / "lines.txt", tmp_path / "rows.csv", "--column", "body")
    assert code == 0, err
    rows = [line.split(",")[:2] for line in out.splitlines()[1:]]
    expected = [f"{tmp_path}/lines.txt:1", f"{tmp_path}/lines.txt:3", f"{tmp_path}/rows.csv:2"]
    assert [name for name, _ in rows] == expected
    assert {label for _, label in rows} <= {"cars", "code", "fruit"}
    code, _, err = ftr(capsys, "predict", run, tmp_path / "rows.csv")
    assert code == 1 and "no column 'text' (it has id, body): name it with --column" in err


def test_length_grouped_batches_hold_texts_of_similar_length():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    order = list(LengthGrouped(lengths, 8, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(400))
    assert lengths[order[0]] == max(lengths)
    batches = [order[i : i + 8] for i in range(0, 400, 8)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # a shuffled order's batches span ~75 of the 101 lengths
    again = list(LengthGrouped(lengths, 8, torch.Generator().manual_seed(0)))
    assert again == order


def test_check_syntax_of_a_text_recipe_imports_no_transformers(folder):
    code = (
        "import sys\n"
        "from recipe_lang.cli import main\n"
        f"assert main(['check', '--syntax', {str(folder / 'bert.ftr')!r}]) == 0\n"
        "assert not {'torch', 'transformers', 'tokenizers'} & {m.split('.')[0] for m in sys.modules}\n"
    )
    write_recipe(folder, BERT, "bert.ftr")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


PROBE = recipe(Path("models/steady"), "train.csv", "x").replace("  at epoch 2 unfreeze rest\n", "")


def test_a_probe_of_an_encoder_without_dropout_trains_on_cached_features(folder, capsys, monkeypatch):
    """Only the head trains and nothing draws random numbers: the features are computed
    once, and ftr run (cached and not) and the script (cached) give the same numbers."""
    monkeypatch.chdir(folder)
    path = write_recipe(folder, PROBE, "probe.ftr")
    plan = resolve(_parse(PROBE))
    assert [p.cache for p in plan.phases] == [True] and plan.cache_blockers == []
    dropped = resolve(_parse(PROBE.replace("models/steady", "models/bert")))
    assert "draw random numbers in train mode" in dropped.cache_blockers[0]
    run_ok(capsys, path, folder / "probe-cached")
    run_ok(capsys, path, folder / "probe-plain", "--set", "train.cache=false")
    assert_rows_close(metrics(folder / "probe-cached"), metrics(folder / "probe-plain"), rel=1e-5)
    compile_to(capsys, path, folder / "probe.py")
    assert "class FeatureCache" in (folder / "probe.py").read_text()
    script_ok(capsys, folder / "probe.py", folder / "probe-script")
    assert_rows_close(metrics(folder / "probe-script"), metrics(folder / "probe-cached"), rel=1e-5)
