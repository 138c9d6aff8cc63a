"""The Pygments lexer reads every recipe the project ships or documents without an error token, gives
each part of a recipe its kind, and is found by `pygmentize` through its entry point once installed.

Rule for the bad fixtures: an Error token appears only where the parser reports a mistake in the text
itself (`unexpected character`, `unterminated string`, `invalid escape`), and the first one on such a
line is at the column the parser names; a recipe whose only mistakes are of grammar or meaning (a bracket
never closed, an unknown statement) lexes without Error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygments", reason='pip install -e ".[editor]" (or ".[test]") installs pygments')

from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String  # noqa: E402

from recipe_lang.build import BLOCKS, STATEMENTS, TOP_LEVEL  # noqa: E402
from recipe_lang.editor.keywords import grammar_keywords  # noqa: E402
from recipe_lang.editor.pygments_lexer import FtrLexer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").rglob("*.ftr"))
FIXTURES = sorted((ROOT / "tests" / "fixtures").rglob("*.ftr"))
DOCS = [ROOT / "docs" / "language.md", ROOT / "README.md"]
LEXICAL = ("unexpected character", "unterminated string", "invalid escape")


def _examples() -> list:
    found = []
    for doc in DOCS:
        blocks = re.findall(r"^```ftr\n(.*?)^```", doc.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
        found += [pytest.param(text, id=f"{doc.name}-{i}") for i, text in enumerate(blocks, 1)]
    return found


def lex(text: str) -> list[tuple[int, object, str]]:
    return list(FtrLexer().get_tokens_unprocessed(text))


def significant(text: str) -> list[tuple[object, str]]:
    return [(kind, value) for _, kind, value in lex(text) if value.strip()]


def errors(text: str) -> list[tuple[int, int]]:
    """(line, column) of every Error token, both from 1."""
    return [(text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)) for i, kind, _ in lex(text) if kind in Error]


def test_examples_found():
    assert len(RECIPES) >= 10 and len(FIXTURES) >= 80 and len(_examples()) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipes_lex_without_error(path):
    text = path.read_text(encoding="utf-8")
    assert "".join(value for _, _, value in lex(text)) == text
    assert errors(text) == []


@pytest.mark.parametrize("text", _examples())
def test_documented_examples_lex_without_error(text):
    assert "".join(value for _, _, value in lex(text)) == text
    assert errors(text) == []


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_have_errors_only_where_the_text_is_wrong(path):
    text = path.read_text(encoding="utf-8")
    assert "".join(value for _, _, value in lex(text)) == text
    expected = [
        (int(line), int(column))
        for line, column, message in re.findall(r"^# expect: (\d+):(\d+) (.*)$", text, flags=re.MULTILINE)
        if any(words in message for words in LEXICAL)
    ]
    found = errors(text)
    first_on_each_line = sorted({line: (line, column) for line, column in reversed(found)}.values())
    assert first_on_each_line == expected


def test_each_part_of_a_recipe_has_its_kind():
    text = (
        'recipe "pets\\t\\"x\\""  # a name\n'
        "model {\n"
        "  backbone resnet50\n"
        '  head mlp(classes=37, hidden=[512, 256], dropout=0.3) at "fc"\n'
        "}\n"
        "groups { top = layer4.1, features[-2:] }\n"
        "train {\n"
        "  lr 1e-3, top=3E-4\n"
        "  freeze all except head,\n"
        "    top\n"
        "  at epoch 3 unfreeze top warmup=1\n"
        "  unfreeze gradually top from epoch 6 every 3\n"
        "  compile false\n"
        "}\n"
    )
    tokens = significant(text)
    assert tokens[:6] == [
        (Keyword, "recipe"),
        (String.Double, '"'),
        (String.Double, "pets"),
        (String.Escape, "\\t"),
        (String.Escape, '\\"'),
        (String.Double, "x"),
    ]
    assert (Comment.Single, "# a name") in tokens
    assert tokens[tokens.index((Keyword, "backbone")) + 1] == (Name, "resnet50")
    expected_in_order = [
        (Keyword.Namespace, "model"),
        (Punctuation, "{"),
        (Keyword, "head"),
        (Name.Function, "mlp"),
        (Punctuation, "("),
        (Name.Attribute, "classes"),
        (Operator, "="),
        (Number.Integer, "37"),
        (Name.Attribute, "hidden"),
        (Punctuation, "["),
        (Number.Float, "0.3"),
        (Keyword, "at"),
        (Keyword.Namespace, "groups"),
        (Name.Variable, "top"),
        (Name.Namespace, "layer4.1"),
        (Name, "features"),
        (Number.Integer, "-2"),
        (Punctuation, ":"),
        (Keyword.Namespace, "train"),
        (Keyword, "lr"),
        (Number.Float, "1e-3"),
        (Name.Attribute, "top"),
        (Number.Float, "3E-4"),
        (Keyword, "freeze"),
        (Name.Builtin, "all"),
        (Keyword, "except"),
        (Name.Builtin, "head"),
        (Name, "top"),  # the statement goes on after the comma
        (Keyword, "at"),
        (Keyword, "epoch"),
        (Keyword, "unfreeze"),
        (Keyword, "warmup"),
        (Keyword, "unfreeze"),
        (Keyword, "gradually"),
        (Keyword, "from"),
        (Keyword, "every"),
        (Keyword, "compile"),
        (Keyword.Constant, "false"),
    ]
    position = 0
    for token in expected_in_order:
        assert token in tokens[position:], f"{token} not after {tokens[position - 1]}"
        position = tokens.index(token, position) + 1


def test_a_word_is_a_keyword_only_where_it_begins_a_statement():
    # `train` is a block, a statement of data, and a value of batchnorm
    tokens = significant("data {\n  train imagefolder(train)\n}\ntrain {\n  batchnorm train\n}\n")
    trains = [kind for kind, value in tokens if value == "train"]
    assert trains == [Keyword, Name, Keyword.Namespace, Name]
    # a statement on the line after an unclosed call is still a statement
    assert (Keyword, "seed") in significant('output "x"\nseed 3\n')
    assert significant("foo {\n  bar 1\n}\n")[:3] == [(Name, "foo"), (Punctuation, "{"), (Name, "bar")]


def test_a_module_path_under_a_reserved_name_is_one_path():
    text = "train {\n  freeze backbone.body except head.fc, backbone\n}\n"
    assert errors(text) == []
    tokens = significant(text)
    assert tokens[tokens.index((Keyword, "freeze")) + 1 :][:5] == [
        (Name.Namespace, "backbone.body"),
        (Keyword, "except"),
        (Name.Namespace, "head.fc"),
        (Punctuation, ","),
        (Name.Builtin, "backbone"),
    ]


def test_trailing_commas_close_their_brackets():
    text = "data {\n  train_transforms resize([256, 256,],), hflip(\n    p=0.5,\n  )\n  workers 2\n}\n"
    assert errors(text) == []
    tokens = significant(text)
    assert tokens[tokens.index((Name.Function, "hflip")) :][:8] == [
        (Name.Function, "hflip"),
        (Punctuation, "("),
        (Name.Attribute, "p"),
        (Operator, "="),
        (Number.Float, "0.5"),
        (Punctuation, ","),
        (Punctuation, ")"),
        (Keyword, "workers"),
    ]


def test_every_statement_of_the_language_is_a_keyword():
    keywords = set(TOP_LEVEL) | {word for table in STATEMENTS.values() for key in table for word in key.split()}
    for keyword in sorted(keywords - {"gradually"}):
        assert significant(f"{keyword} x\n")[0] == (Keyword, keyword)
    for block in BLOCKS:
        assert significant(f"{block} {{\n}}\n")[0] == (Keyword.Namespace, block)


def test_grammar_keywords_are_the_parsers_own_terminals():
    from recipe_lang.syntax import _parser

    parser = _parser()[0]
    words = {t.pattern.value for t in parser.terminals if re.fullmatch(r"[a-z]+", str(t.pattern.value))}
    assert set(grammar_keywords()) == words - {"true", "false", "none"}
    assert {"gradually", "except", "warmup"} <= set(grammar_keywords())


def test_lexer_never_imports_torch():
    code = "import sys, recipe_lang.editor.pygments_lexer; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_installed_package_registers_the_lexer_for_pygmentize(tmp_path):
    """pip builds the package (its metadata, entry point included); `python -m pygments` is pygmentize."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    for package in ("recipe_lang", "runtime", "templates"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", target, source], capture_output=True, check=True, cwd=tmp_path, timeout=300)

    recipe = tmp_path / "seed.ftr"
    shutil.copyfile(ROOT / "recipes" / "seed_resnet18.ftr", recipe)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}

    def pygmentize(*args):
        command = [sys.executable, "-m", "pygments", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout

    assert pygmentize("-N", recipe.name).strip() == "ftr"
    assert "Token.Keyword.Namespace\t'model'" in pygmentize("-l", "ftr", "-f", "raw", recipe.name)
    assert "* ftr:" in pygmentize("-L", "lexers")
