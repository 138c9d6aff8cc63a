"""`ftr lsp` driven over stdio as an editor drives it: one server for the module."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from recipe_lang.diagnostics import Span  # noqa: E402
from recipe_lang.editor.positions import from_units, offset_of, span_to_range, to_units  # noqa: E402
from recipe_lang.editor.stdio_client import StdioClient, ftr_lsp_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), FTR_LSP_DEBOUNCE="0.05")

RECIPE = """recipe "r18"

model {
  backbone resnet18
  head linear(classes=10)
}

data {
  train synthetic(classes=10)
  val split(0.1)
}

groups {
  top = layer4
}

train {
  epochs 2
  lr 1e-3
  freeze all except top, head
}
"""


def uri_of(name: str) -> str:
    return f"file:///recipes/{name}.ftr"


@pytest.fixture(scope="module")
def client():
    client = StdioClient(ftr_lsp_command(), env=ENV, cwd=str(ROOT))
    client.initialize()
    yield client
    if client.process.poll() is None:
        client.process.kill()


@pytest.fixture(scope="module")
def resolved(client):
    """A document whose model was built: its uri, once the model check has answered."""
    uri = uri_of("resolved")
    client.open(uri, RECIPE)
    client.diagnostics(uri)  # the syntax pass
    assert client.diagnostics(uri, timeout=120)["diagnostics"] == []  # the model pass (imports torch)
    return uri


def position(text: str, marker: str, after: int = 0) -> dict:
    """The LSP position (UTF-16) of the first `marker` in text, plus `after` code points."""
    offset = text.index(marker) + after
    line = text[:offset].count("\n")
    column = offset - (text.rfind("\n", 0, offset) + 1)
    return {"line": line, "character": to_units(text.split("\n")[line], column)}


def labels(client, uri: str, text: str, marker: str, after: int) -> list[str]:
    client.change(uri, text, version=next_version())
    answer = client.request(
        "textDocument/completion", {"textDocument": {"uri": uri}, "position": position(text, marker, after)}
    )
    return [item["label"] for item in answer["result"]["items"]]


_versions = iter(range(100, 10_000))


def next_version() -> int:
    return next(_versions)


# --- positions ---------------------------------------------------------------


def test_positions_count_utf16_units():
    line = 'x "é😀" y'
    assert to_units(line, 5) == 6  # the emoji is two units
    assert to_units(line, 5, "utf-8") == 9  # é two bytes, the emoji four
    assert from_units(line, 6) == 5
    assert from_units(line, 4) == 4  # the middle of the emoji: the emoji
    assert span_to_range(Span(2, 8, 2, 9), ["a", line]) == ((1, 8), (1, 9))
    assert span_to_range(None, ["first line"]) == ((0, 0), (0, 10))
    assert offset_of("ab\r\né😀x", 1, 3) == len("ab\r\n") + 2


def test_completion_and_hover_answer_at_every_position_of_a_recipe_being_typed():
    from recipe_lang.editor.completion import complete
    from recipe_lang.editor.hover import hover

    text = (ROOT / "recipes" / "pets_resnet50.ftr").read_text()
    for offset in range(0, len(text) + 1, 3):
        complete(text[:offset], offset)  # as typed so far
        complete(text, offset)
        hover(text, offset)


# --- diagnostics -------------------------------------------------------------


def test_syntax_error_is_published_with_its_range_and_fixed_by_a_change(client):
    uri = uri_of("syntax")
    bad = RECIPE.replace("epochs 2", "epochs 2 3")
    client.open(uri, bad)
    published = client.diagnostics(uri)
    [diagnostic] = published["diagnostics"]
    assert diagnostic["message"] == "unexpected number 3\nhelp: expected ',' or the end of the line"
    assert diagnostic["range"] == {"start": position(bad, "3\n"), "end": position(bad, "3\n", 1)}
    assert diagnostic["severity"] == 1 and diagnostic["source"] == "ftr"
    client.change(uri, RECIPE, version=2)
    assert client.diagnostics(uri, until=lambda p: p["version"] == 2)["diagnostics"] == []


def test_range_is_in_utf16_after_non_ascii_text(client):
    uri = uri_of("unicode")
    bad = RECIPE.replace('recipe "r18"', 'recipe "résumé 😀"').replace("epochs 2", 'epochs 2\n  precision "😀" fp64')
    client.open(uri, bad)
    [diagnostic] = client.diagnostics(uri)["diagnostics"]
    assert diagnostic["range"]["start"] == position(bad, "fp64")
    assert diagnostic["range"]["start"]["character"] == 17  # 16 code points, the emoji two units


def test_model_error_arrives_after_the_syntax_pass(client, resolved):
    uri = uri_of("model")
    bad = RECIPE.replace("except top", "except layer5")
    client.open(uri, bad)
    assert client.diagnostics(uri)["diagnostics"] == []  # syntax: fine
    [diagnostic] = client.diagnostics(uri, timeout=60)["diagnostics"]
    assert "no module 'layer5'" in diagnostic["message"] and "did you mean 'layer4'?" in diagnostic["message"]
    assert diagnostic["range"] == {"start": position(bad, "layer5"), "end": position(bad, "layer5", 6)}


def test_a_stale_model_check_is_never_published_over_newer_text(client, resolved):
    uri = uri_of("stale")
    client.open(uri, RECIPE.replace("except top", "except layer5"))
    client.change(uri, RECIPE.replace("epochs 2", "epochs 0"), version=2)  # before the first model check ends
    seen = []
    client.diagnostics(uri, until=lambda p: seen.append(p) or p["version"] == 2)
    with pytest.raises(TimeoutError):
        client.diagnostics(uri, timeout=2, until=lambda p: seen.append(p) or False)
    latest = [p for p in seen if p["version"] == 2]
    assert latest and all("epochs" in d["message"] for p in latest for d in p["diagnostics"])
    assert not any("layer5" in d["message"] for p in seen[seen.index(latest[0]) :] for d in p["diagnostics"])


# --- completion --------------------------------------------------------------


def test_completion_lists_the_statements_of_the_block(client, resolved):
    text = RECIPE.replace("  epochs 2\n", "  epochs 2\n  \n")
    found = labels(client, resolved, text, "  \n  lr", 2)
    assert {"epochs", "optimizer", "schedule", "freeze"} <= set(found)
    assert "backbone" not in found


def test_completion_lists_functions_after_a_statement_keyword(client, resolved):
    text = RECIPE.replace("  epochs 2\n", "  epochs 2\n  optimizer \n")
    assert labels(client, resolved, text, "optimizer ", 10) == ["sgd", "adam", "adamw", "rmsprop"]


def test_completion_lists_the_options_of_the_call(client, resolved):
    text = RECIPE.replace("  epochs 2\n", "  epochs 2\n  optimizer adamw(\n")
    assert "weight_decay" in labels(client, resolved, text, "adamw(", 6)
    text = RECIPE.replace("  epochs 2\n", "  epochs 2\n  optimizer adamw(weight_decay=0.1, )\n")
    assert labels(client, resolved, text, "0.1, ", 5) == ["betas", "eps"]


def test_completion_lists_modules_and_groups_where_a_selector_goes(client, resolved):
    text = RECIPE.replace("freeze all except top, head", "freeze ")
    found = labels(client, resolved, text, "freeze ", 7)
    assert {"layer4", "top", "head", "all", "rest", "fc"} <= set(found)
    text = RECIPE.replace("freeze all except top, head", "freeze layer4.")
    assert labels(client, resolved, text, "layer4.", 7) == ["layer4.0", "layer4.1"]


# --- hover and formatting ----------------------------------------------------


def hover(client, uri: str, text: str, marker: str, after: int = 1) -> str | None:
    client.change(uri, text, version=next_version())
    answer = client.request(
        "textDocument/hover", {"textDocument": {"uri": uri}, "position": position(text, marker, after)}
    )
    return answer["result"]["contents"]["value"] if answer["result"] else None


def test_hover_documents_statements_options_and_selectors(client, resolved):
    assert "integer, ≥ 1, ≤ 100000" in hover(client, resolved, RECIPE, "epochs")
    text = RECIPE.replace("  epochs 2\n", "  epochs 2\n  schedule cosine(warmup=1)\n")
    assert "epochs of linear warmup" in hover(client, resolved, text, "warmup")
    assert "8,393,728 parameters" in hover(client, resolved, RECIPE, "top, head", 0)
    assert hover(client, resolved, RECIPE, '"r18"', 2) is None  # inside a string


def test_formatting_returns_the_canonical_text(client):
    from recipe_lang.formatter import format_text

    uri = uri_of("format")
    messy = RECIPE.replace("  epochs 2", "epochs   2").replace("\n\n", "\n")
    client.open(uri, messy)
    params = {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}}
    [edit] = client.request("textDocument/formatting", params)["result"]
    assert edit["newText"] == format_text(messy) and edit["range"]["start"] == {"line": 0, "character": 0}
    client.change(uri, format_text(messy), version=2)
    assert client.request("textDocument/formatting", params)["result"] == []
    client.change(uri, "train {", version=3)
    assert client.request("textDocument/formatting", params)["result"] == []


def test_a_failing_request_does_not_end_the_session_and_exit_is_clean(client):
    nowhere = {"textDocument": {"uri": "file:///nowhere.ftr"}, "position": {"line": 0, "character": 0}}
    assert client.request("textDocument/hover", nowhere)["result"] is None  # never opened, no such file
    assert client.request("textDocument/completion", nowhere)["result"] == []
    assert client.close() == 0


def test_exit_while_a_model_check_runs_and_exit_without_shutdown():
    """The process ends at `exit` without waiting for a model check in flight or for
    torch's teardown; without `shutdown` first its status is 1, as LSP asks."""
    busy = StdioClient(ftr_lsp_command(), env=dict(ENV, FTR_LSP_DEBOUNCE="0"), cwd=str(ROOT))
    busy.initialize()
    busy.open(uri_of("busy"), RECIPE)
    busy.diagnostics(uri_of("busy"))  # the syntax pass: the model check starts now
    assert busy.close() == 0
    abrupt = StdioClient(ftr_lsp_command(), env=ENV, cwd=str(ROOT))
    abrupt.initialize()
    abrupt.notify("exit")
    assert abrupt.process.wait(timeout=30) == 1


def test_without_pygls_ftr_lsp_says_how_to_install_it(tmp_path):
    (tmp_path / "pygls").mkdir()
    (tmp_path / "pygls" / "__init__.py").write_text("raise ModuleNotFoundError(name='pygls')\n")
    env = dict(ENV, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    done = subprocess.run(ftr_lsp_command(), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["ftr lsp: the language server needs pygls: pip install 'ftr[lsp]'"]
