"""The VS Code extension in editors/vscode: its manifest, language configuration and TextMate grammar.

The structure is checked in Python always; the grammar's highlighting is checked with the real TextMate
engine (vscode-tmgrammar-test, from npm) when it is installed: editors/vscode/install-test-tools.sh.
Where the environment variable CI is set, a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from recipe_lang.editor.keywords import LITERALS, block_names, grammar_keywords, selector_names, statement_keywords

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR_PATH = VSCODE / "syntaxes" / "ftr.tmLanguage.json"
BIN = VSCODE / "node_modules" / ".bin"
SCOPE_ROOTS = {
    "comment",
    "constant",
    "entity",
    "invalid",
    "keyword",
    "meta",
    "punctuation",
    "storage",
    "string",
    "support",
    "variable",
}
LEXICAL = ("unexpected character", "invalid escape")  # an unterminated string is a string to the line's end


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


GRAMMAR = load(GRAMMAR_PATH)
RULES = GRAMMAR["repository"]


def walk(rule: dict):
    """Every rule nested in `rule`, itself included."""
    yield rule
    for child in rule.get("patterns", []):
        yield from walk(child)
    for value in rule.values():
        if isinstance(value, dict) and "patterns" in value:
            yield from walk(value)


def all_rules():
    yield from walk({"patterns": GRAMMAR["patterns"]})
    for rule in RULES.values():
        yield from walk(rule)


def scopes(rule: dict) -> list[str]:
    names = [rule.get("name"), rule.get("contentName")]
    for key in ("captures", "beginCaptures", "endCaptures"):
        names += [capture.get("name") for capture in rule.get(key, {}).values()]
    return [scope for name in names if name for scope in name.split()]


def words(scope: str) -> set[str]:
    """The words of the alternations `(a|b|c)` in every rule that gives `scope`."""
    found = set()
    for rule in all_rules():
        if any(name.startswith(scope) for name in scopes(rule)):
            regex = rule.get("begin", rule.get("match", ""))
            found.update(w for group in re.findall(r"\(([a-z_]+(?:\|[a-z_]+)*)\)", regex) for w in group.split("|"))
    return found


# --- structure ---------------------------------------------------------------------------------------


def test_manifest_contributes_the_language_and_its_files():
    manifest = load(VSCODE / "package.json")
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "ftr"
    assert language["extensions"] == [".ftr"]
    assert (VSCODE / language["configuration"]).is_file()
    assert (VSCODE / grammar["path"]).resolve() == GRAMMAR_PATH
    assert grammar["scopeName"] == GRAMMAR["scopeName"] == "source.ftr"
    assert "vscode" in manifest["engines"]
    assert "vscode-tmgrammar-test" in manifest["devDependencies"]
    lock = load(VSCODE / "package-lock.json")
    assert "node_modules/vscode-tmgrammar-test" in lock["packages"]


def test_every_regex_compiles():
    count = 0
    for rule in all_rules():
        for key in ("match", "begin", "end", "while"):
            if key in rule:
                re.compile(rule[key])
                count += 1
    assert count > 20


def test_every_include_resolves_and_every_rule_is_used():
    used = set()
    for rule in all_rules():
        include = rule.get("include")
        if include is not None:
            assert include.startswith("#") and include[1:] in RULES, include
            used.add(include[1:])
    assert used == set(RULES)


def test_scopes_follow_textmate_naming():
    every = {scope for rule in all_rules() for scope in scopes(rule)}
    for scope in every:
        assert scope.split(".")[0] in SCOPE_ROOTS and scope.endswith(".ftr"), scope
    assert {
        "comment.line.number-sign.ftr",
        "string.quoted.double.ftr",
        "constant.character.escape.ftr",
        "constant.numeric.integer.ftr",
        "constant.numeric.float.ftr",
        "constant.language.ftr",
        "keyword.control.ftr",
        "keyword.other.statement.ftr",
        "entity.name.function.ftr",
        "variable.parameter.ftr",
        "entity.name.section.block.ftr",
        "punctuation.separator.comma.ftr",
    } <= every


def test_keywords_are_the_languages():
    """The grammar's word lists are the language's: a statement added to build.py fails here until added."""
    assert words("entity.name.section.block") == set(block_names())
    control = words("keyword.control")
    assert control == set(grammar_keywords()) - {"head"}
    assert words("keyword.other.statement") | (control & {"at", "freeze", "unfreeze"}) == set(statement_keywords())
    assert words("constant.language") == set(LITERALS)
    assert words("variable.language.selector") == set(selector_names())


def test_language_configuration():
    config = load(VSCODE / "language-configuration.json")
    assert config["comments"] == {"lineComment": "#"}
    pairs = [tuple(pair) for pair in config["brackets"]]
    assert pairs == [("{", "}"), ("[", "]"), ("(", ")")]
    closing = {(pair["open"], pair["close"]) for pair in config["autoClosingPairs"]}
    assert closing == set(pairs) | {('"', '"')}
    assert {tuple(pair) for pair in config["surroundingPairs"]} == closing
    increase = re.compile(config["indentationRules"]["increaseIndentPattern"])
    decrease = re.compile(config["indentationRules"]["decreaseIndentPattern"])
    for line in ("model {", "groups {  # parts", "  head mlp(", "  hidden=["):
        assert increase.search(line), line
    for line in ("  backbone resnet18", '  train imagefolder("{")', "# model {", "  weights default  # x {"):
        assert not increase.search(line), line
    assert decrease.search("  }") and decrease.search(")") and not decrease.search("  top = layer4")


# --- the TextMate engine -----------------------------------------------------------------------------


def tool(name: str) -> Path:
    path = BIN / name
    if shutil.which("node") and path.exists():
        return path
    how = "run editors/vscode/install-test-tools.sh (npm ci in editors/vscode)"
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed and CI is set: {how}")
    pytest.skip(f"{name} is not installed: {how}")


def test_grammar_test_files_pass():
    cases = sorted((VSCODE / "tests").glob("*.test.ftr"))
    assert cases
    command = [tool("vscode-tmgrammar-test"), "-g", GRAMMAR_PATH, *cases]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=VSCODE)
    assert result.returncode == 0, result.stdout + result.stderr


def snapshot_invalid(snap: str) -> list[tuple[int, int, str]]:
    """(line, column, scope) of every invalid.* token in a vscode-tmgrammar-snap file, both from 1."""
    found, line = [], 0
    for row in snap.splitlines():
        if row.startswith(">"):
            line += 1
        elif row.startswith("#") and "invalid." in row:
            column = row.index("^")
            found += [(line, column, s) for s in row.split() if s.startswith("invalid.")]
    return found


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """The texts of every recipe, documented example and bad fixture, and their scopes as the TextMate engine
    gives them (vscode-tmgrammar-snap), by name."""
    snap = tool("vscode-tmgrammar-snap")
    folder = tmp_path_factory.mktemp("snap")
    sources = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in ROOT.glob("recipes/**/*.ftr")}
    sources |= {
        p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in ROOT.glob("tests/fixtures/**/*.ftr")
    }
    for doc in (ROOT / "docs" / "language.md", ROOT / "README.md"):
        blocks = re.findall(r"^```ftr\n(.*?)^```", doc.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
        sources |= {f"{doc.name}-{i}": text for i, text in enumerate(blocks, 1)}
    names = {}
    for i, (name, text) in enumerate(sorted(sources.items())):
        (folder / f"{i:03d}.ftr").write_text(text, encoding="utf-8")
        names[name] = folder / f"{i:03d}.ftr.snap"
    command = [snap, "-u", "-g", GRAMMAR_PATH, "-s", "source.ftr", str(folder / "*.ftr")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=VSCODE)
    assert result.returncode == 0, result.stdout + result.stderr
    return sources, {name: path.read_text(encoding="utf-8") for name, path in names.items()}


def test_recipes_and_examples_have_no_invalid_scope(snapshots):
    _, scoped = snapshots
    checked = [name for name in scoped if not name.startswith("tests/")]
    assert len(checked) >= 15
    for name in checked:
        assert snapshot_invalid(scoped[name]) == [], name


def test_bad_fixtures_are_invalid_only_where_the_text_is(snapshots):
    """A character outside the language or an unknown escape is marked where the parser reports it;
    a mistake of grammar shows no invalid character."""
    sources, scoped = snapshots
    for name, text in sources.items():
        if not name.startswith("tests/"):
            continue
        expected = [
            (int(line), int(column))
            for line, column, message in re.findall(r"^# expect: (\d+):(\d+) (.*)$", text, flags=re.MULTILINE)
            if any(words in message for words in LEXICAL)
        ]
        marked = [
            (line, column)
            for line, column, scope in snapshot_invalid(scoped[name])
            if scope in ("invalid.illegal.character.ftr", "invalid.illegal.unknown-escape.ftr")
        ]
        first_on_each_line = sorted({line: (line, column) for line, column in reversed(marked)}.values())
        assert first_on_each_line == expected, name
