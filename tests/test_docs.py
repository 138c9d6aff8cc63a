"""docs/language.md cannot fall behind the code: every statement and every function
with its parameters (in positional order) and defaults is documented, and every
`ftr` example in it is a valid recipe (or block) that resolves against its model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

import recipe_lang
from recipe_lang.build import STATEMENTS, TOP_LEVEL, Builder, _parameters, family_members
from recipe_lang.formatter import format_text
from recipe_lang.nodes import Block
from recipe_lang.recipe import FUNCTION_FAMILIES, DataSpec, EvaluateSpec, ModelSpec, Recipe, TeacherSpec, TrainSpec
from recipe_lang.syntax import parse_document

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"
TEXT = DOC.read_text(encoding="utf-8")
ROWS = [line for line in TEXT.splitlines() if line.startswith("|")]


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


# --- statements ----------------------------------------------------------------


STATEMENT_KEYWORDS = [(block, keyword) for block, table in STATEMENTS.items() for keyword in table] + [
    ("top level", keyword) for keyword in TOP_LEVEL
]


@pytest.mark.parametrize(("block", "keyword"), STATEMENT_KEYWORDS, ids=[f"{b}.{k}" for b, k in STATEMENT_KEYWORDS])
def test_every_statement_has_a_row(block, keyword):
    """Each statement is the first cell of a row of its block's table."""
    assert any(_cells(row)[0] == f"`{keyword}`" for row in ROWS), f"no table row for `{keyword}` ({block})"


SPECS = {"model": ModelSpec, "teacher": TeacherSpec, "data": DataSpec, "train": TrainSpec, "evaluate": EvaluateSpec}


def _default(block: str, keyword: str):
    if block == "top level":
        return Recipe.model_fields[TOP_LEVEL[keyword]].default
    return SPECS[block].model_fields[STATEMENTS[block][keyword][0]].default


# statements whose default is a plain number, word or truth value
PLAIN_DEFAULTS = [
    (keyword, default)
    for block, keyword in STATEMENT_KEYWORDS
    if isinstance(default := _default(block, keyword), (bool, int, float, str))
]


@pytest.mark.parametrize(("keyword", "default"), PLAIN_DEFAULTS, ids=[k for k, _ in PLAIN_DEFAULTS])
def test_plain_defaults_of_statements(keyword, default):
    """The default column of the statement's row shows the code's default."""
    row = next(row for row in ROWS if _cells(row)[0] == f"`{keyword}`")
    shown = [_value(code) for code in _code(_cells(row)[2])]
    assert any(_same(value, default) for value in shown), f"{keyword}: default {default!r} not in {_cells(row)[2]}"


def test_there_are_plain_defaults():
    assert {"seed", "batch_size", "workers", "normalize", "batchnorm", "precision", "every"} <= {
        k for k, _ in PLAIN_DEFAULTS
    }


def test_every_block_is_documented():
    for block in ("model", "data", "groups", "train", "evaluate"):
        assert f"## `{block}`" in TEXT
        assert any(_cells(row)[0] == f"`{block} {{ }}`" for row in ROWS)


# --- functions -----------------------------------------------------------------

FUNCTIONS = sorted(
    {(name, cls) for family in FUNCTION_FAMILIES for name, cls in family_members(family).items()},
    key=lambda item: item[0] + item[1].__name__,
)


def _signature_rows(name: str) -> dict[tuple, str]:
    """Rows whose first cell is `name(p1, p2, ...)` (or `name` for no parameters),
    keyed by the parameter list they show."""
    found = {}
    for row in ROWS:
        first = _cells(row)[0]
        match = re.fullmatch(rf"`{re.escape(name)}(?:\((.*)\))?`", first)
        if match:
            params = tuple(p.strip() for p in (match.group(1) or "").split(",") if p.strip())
            found[params] = row
    return found


def _value(text: str):
    """A value written in the docs, read the way the builder reads it."""
    document = parse_document(f"x {text}\n")
    return Builder().plain(document.items[0].args[0], ("x",))


def _same(written, default) -> bool:
    if isinstance(default, (list, tuple)):
        return isinstance(written, list) and len(written) == len(default) and all(map(_same, written, default))
    if isinstance(default, bool) or default is None:
        return written == default
    if isinstance(default, (int, float)):
        return isinstance(written, (int, float)) and math.isclose(written, default, rel_tol=1e-4)
    return written == default


@pytest.mark.parametrize(("name", "cls"), FUNCTIONS, ids=[f"{n}-{c.__name__}" for n, c in FUNCTIONS])
def test_every_function_has_its_signature_and_defaults(name, cls):
    """`name(p1, p2, ...)` lists the parameters in positional order, and the row
    gives every default as `param = value`, equal to the model's default."""
    parameters = tuple(_parameters(cls))
    rows = _signature_rows(name)
    assert parameters in rows, f"no row `{name}({', '.join(parameters)})`; rows found for {name}: {list(rows)}"
    row = rows[parameters]
    written = dict(m.groups() for code in _code(_cells(row)[1]) if (m := re.fullmatch(r"(\w+) = (.+)", code.strip())))
    for param in parameters:
        assert re.search(rf"\b{param}\b", row), f"{name}: parameter '{param}' is not described"
        field = cls.model_fields[param]
        if field.default is PydanticUndefined:
            assert param not in written, f"{name}: '{param}' is required but the docs give a default"
            continue
        assert param in written, f"{name}: the default of '{param}' is not written as `{param} = ...`"
        assert _same(_value(written[param]), field.default), (
            f"{name}: docs say {param} = {written[param]}, the code says {field.default!r}"
        )


def test_weights_none_and_enum_members_are_documented():
    # not functions of the family (the builder reads them apart), but values of `weights`
    assert any(_cells(row)[0] == "`none`" for row in ROWS)
    assert any(_cells(row)[0] == '`"MEMBER"`' for row in ROWS)


def test_every_set_key_is_documented():
    from recipe_lang.overrides import override_keys

    for key in override_keys():
        assert f"`{key}`" in TEXT, f"--set key {key} is not documented"


# --- examples ------------------------------------------------------------------

EXAMPLES = re.findall(r"^```ftr\n(.*?)^```", TEXT, flags=re.S | re.M)

# what a fragment is completed with: each block of a fragment replaces this one's
BASE = {
    "model": "model {\n  backbone resnet18\n  head linear(classes=10)\n}\n",
    "data": "data {\n  train synthetic(classes=10)\n  val split(0.2)\n}\n",
    "train": "train {\n  epochs 10\n  lr 1e-3\n}\n",
}


def _is_whole(example: str) -> bool:
    return any(not isinstance(item, Block) and item.keyword == "recipe" for item in parse_document(example).items)


def _whole(example: str) -> str:
    """A whole recipe as it is; a fragment of blocks completed with BASE."""
    if _is_whole(example):
        return example
    blocks = dict(BASE)
    lines = example.splitlines(keepends=True)
    for item in parse_document(example).items:
        assert isinstance(item, Block), f"a fragment is made of whole blocks:\n{example}"
        blocks[item.name] = "".join(lines[item.span.line - 1 : item.span.end_line])
    order = ("model", "data", "groups", "train", "evaluate")
    return 'recipe "example"\n\n' + "\n".join(blocks[b] for b in order if b in blocks)


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_parses_checks_and_resolves(example, hf_models, monkeypatch):
    """Whole recipes as they are; fragments (blocks) completed with a small base
    recipe. Each must pass the model-free checks and resolve against its model
    (without looking at data or weight files)."""
    from recipe_lang.resolve import resolve

    monkeypatch.chdir(hf_models)
    recipe = recipe_lang.parse(_whole(example))
    resolve(recipe, data=False, weights_file=False)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_is_in_canonical_form(example):
    assert format_text(example) == example


def test_there_are_whole_recipes_and_fragments():
    assert sum(map(_is_whole, EXAMPLES)) >= 2
    assert sum(not _is_whole(e) for e in EXAMPLES) >= 4


# --- links ---------------------------------------------------------------------


def test_readme_links_to_the_reference():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not written yet")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    assert "docs/language.md" in links
    for link in links:
        if not re.match(r"[a-z]+:", link):
            assert (ROOT / link).exists(), f"README links to a missing file: {link}"


def test_internal_links_resolve():
    """Every `](#anchor)` in the reference names a heading of it (GitHub's slugs)."""

    def slug(heading: str) -> str:
        text = heading.strip().lower()
        text = re.sub(r"[^\w\- ]", "", text)
        return text.replace(" ", "-")

    anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", TEXT, flags=re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", TEXT):
        assert anchor in anchors, f"broken link #{anchor}"
