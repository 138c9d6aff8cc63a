"""Fuzzing the front end: whatever the text, `parse` returns a Recipe or raises
RecipeError (never another exception), every diagnostic points inside the text,
and `ftr fmt` is idempotent on whatever it accepts.

Derandomized, with no example database, so a run in CI is the same run as here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe_lang import Recipe, RecipeError, parse

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [path.read_text(encoding="utf-8") for path in sorted((ROOT / "recipes").glob("**/*.ftr"))]

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- mutations -------------------------------------------------------------------

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[A-Za-z_][A-Za-z0-9_.]*|[+-]?\.?\d[\d.eE+-]*|[ \t]+|\n+|#[^\n]*|.', re.S)

# fmt: off
SNIPPETS = [
    "(", ")", "[", "]", "{", "}", "{}", '"', "'", ",", "=", ":", ".", "#", "-", "+", "*", "\\", "\\q", "$", ";", "@",
    "\n", "\n\n", "\r", "\r\n", "\t", "\f", "\v", "\x00", "\x1b", "\u2028", "\u0085", "\ufeff", "\u200b",
    "é", "ß", "日本", "🙂", "\uff11\uff10", "\U0001d7d9",
    "0", "-1", "1e999", "1e-400", "0.0", "-0", "1.5", "3e", ".5", "99999999999999999999999", "nan", "inf",
    "true", "false", "none", "all", "head", "backbone", "rest", "layer4", "layer4.1", "features[1:]", "x[1:2:3]",
    '"layer*"', '"a\\nb"', "top_k(5)", "top_k()", "linear(classes=3)", "split(0.5)", "weights", "default",
    "at epoch 2 unfreeze ", "freeze ", "unfreeze gradually ", " from epoch ", " every ", " except ", " warmup=",
    "model {", "data {", "groups {", "train {", "evaluate {", "recipe \"r\"\n", "epochs 3\n", "lr 1e-3\n",
    "a = b\n", "x=(", "((((((((", "[[[[[[[[", "))))", "]]]]", ",)", ",]", ",,", ",\n}", ", except ", ", from ",
]
# fmt: on

INSERT = st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=4))
OPS = "delete insert replace duplicate swap line_delete line_duplicate".split()
OPS += "token_delete token_insert token_duplicate token_swap".split()
MUTATION = st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16), st.integers(0, 1 << 16), INSERT)


def mutate(text: str, op: str, a: int, b: int, payload: str) -> str:
    if op.startswith("token_"):
        tokens = TOKEN.findall(text) or [""]
        i, j = a % len(tokens), b % len(tokens)
        if op == "token_delete":
            del tokens[i]
        elif op == "token_insert":
            tokens.insert(i, payload)
        elif op == "token_duplicate":
            tokens.insert(i, tokens[i])
        else:
            tokens[i], tokens[j] = tokens[j], tokens[i]
        return "".join(tokens)
    if op.startswith("line_"):
        lines = text.split("\n")
        i = a % len(lines)
        if op == "line_delete":
            del lines[i]
        else:
            lines.insert(i, lines[i])
        return "\n".join(lines)
    i = a % (len(text) + 1)
    if op == "delete":
        return text[:i] + text[i + 1 + b % 8 :]
    if op == "insert":
        return text[:i] + payload + text[i:]
    if op == "replace":
        return text[:i] + payload + text[i + 1 :]
    if op == "duplicate":
        piece = text[i : i + 1 + b % 40]
        return text[:i] + piece + text[i:]
    j = b % (len(text) + 1)
    chars = list(text)
    if i < len(chars) and j < len(chars):
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@st.composite
def mutated_recipes(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for op, a, b, payload in draw(st.lists(MUTATION, min_size=1, max_size=6)):
        text = mutate(text, op, a, b, payload)
    return text


RECIPE_ISH = st.lists(
    st.one_of(st.sampled_from(SNIPPETS), st.sampled_from([" ", " ", "\n", "  ", "x", "1", "classes", "lr"])),
    max_size=60,
).map("".join)

# --- the properties ----------------------------------------------------------------


def _fits(span, lines: list[str]) -> bool:
    if not (1 <= span.line <= span.end_line <= len(lines)):
        return False
    if not 1 <= span.column <= len(lines[span.line - 1]) + 1:
        return False
    return span.end_line > span.line or span.column <= span.end_column


def assert_spans_inside(error: RecipeError, text: str) -> None:
    """Every span lies within the text's lines. Lark counts lines at "\n" only; the
    library still computes some positions with str.splitlines(), which also breaks at
    \r, \f, U+2028 and others (a known bug, see
    test_bad_recipes.test_end_of_file_position_counts_only_newlines), so a span may fit
    either way of cutting the text into lines."""
    by_newline = text.split("\n")
    by_splitlines = text.splitlines() or [""]
    for diagnostic in error.diagnostics:
        span = diagnostic.span
        if span is None or span.origin is not None:
            continue
        assert _fits(span, by_newline) or _fits(span, by_splitlines), diagnostic


def check(text: str) -> Recipe | None:
    try:
        recipe = parse(text, "fuzz.ftr")
    except RecipeError as error:
        assert error.diagnostics, "a RecipeError with nothing in it"
        assert any(d.is_error for d in error.diagnostics)
        assert_spans_inside(error, text)
        rendered = error.render()
        assert isinstance(rendered, str) and "Traceback" not in rendered
        return None
    assert isinstance(recipe, Recipe)
    return recipe


@settings(FUZZ, max_examples=1000)  # 2000 took 24 s of the suite's 10 minutes
@given(mutated_recipes())
def test_mutated_recipes_parse_or_fail_cleanly(text):
    check(text)


@settings(FUZZ, max_examples=800)
@given(st.text())
def test_random_text_parses_or_fails_cleanly(text):
    check(text)


@settings(FUZZ, max_examples=800)
@given(RECIPE_ISH)
def test_recipe_like_text_parses_or_fails_cleanly(text):
    check(text)


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(SEEDS), st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_overrides_fail_cleanly(seed, mutations):
    """A `--set` value is parsed by the recipe grammar too: it may fail, but cleanly."""
    value = "3"
    for op, a, b, payload in mutations:
        value = mutate(value, op, a, b, payload)
    for key in ("train.epochs", "data.train", "train.lr", "groups.top"):
        try:
            parse(seed, "fuzz.ftr", overrides=[f"{key}={value}"])
        except RecipeError as error:
            error.render()


@settings(FUZZ, max_examples=400)
@given(mutated_recipes())
def test_format_is_idempotent_on_mutated_recipes(text):
    formatter = pytest.importorskip("recipe_lang.formatter")
    try:
        once = formatter.format_text(text, "fuzz.ftr")
    except RecipeError:
        return
    twice = formatter.format_text(once, "fuzz.ftr")
    assert twice == once
    # and formatting keeps what the recipe means
    before, after = check(text), check(once)
    assert (before is None) == (after is None)
    if before is not None:
        assert before.model_dump() == after.model_dump()


def test_seeds_are_there():
    assert len(SEEDS) >= 3
    for text in SEEDS:
        assert check(text) is not None
