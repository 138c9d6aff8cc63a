"""The catalogue of bad recipes: every mistake is reported where it is, in words.

Each file in tests/fixtures/bad/ is a small recipe with one deliberate mistake
(a few have several). Its header says what `parse` must report:

    # expect: LINE:COL FRAGMENT
    # expect: - FRAGMENT            (a diagnostic with no position)

one line per ERROR diagnostic, in the order they are reported (warnings are
ignored). FRAGMENT must occur in the diagnostic's message or hint; several
fragments joined by ` && ` must each occur. A header line `# xfail: REASON`
marks a fixture whose expectation is right but which the library does not meet
yet (a known bug); it is a strict xfail, so it fails loudly once fixed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recipe_lang import RecipeError, parse
from recipe_lang.syntax import MAX_BYTES

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "fixtures" / "bad"
FIXTURES = sorted(BAD.glob("*.ftr"))

_EXPECT = re.compile(r"^# expect: (?:(\d+):(\d+)|-) (.+)$")


def _expectations(text: str) -> tuple[list[tuple[tuple[int, int] | None, list[str]]], str | None]:
    expected, xfail = [], None
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = _EXPECT.match(line)
        if match:
            position = (int(match[1]), int(match[2])) if match[1] else None
            expected.append((position, match[3].split(" && ")))
        elif line.startswith("# xfail:"):
            xfail = line.partition(":")[2].strip()
    return expected, xfail


def _params(with_xfail: bool = True):
    params = []
    for path in FIXTURES:
        _, xfail = _expectations(path.read_text(encoding="utf-8"))
        marks = [pytest.mark.xfail(reason=xfail, strict=True)] if xfail and with_xfail else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def _errors(text: str, filename: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse(text, filename)
    return info.value


def _describe(diagnostics) -> str:
    lines = []
    for d in diagnostics:
        where = f"{d.span.line}:{d.span.column}" if d.span else "-"
        lines.append(f"  {where} {d.message} [hint: {d.hint}]")
    return "\n".join(lines)


def test_catalogue_is_complete():
    assert len(FIXTURES) >= 45
    names = [path.name for path in FIXTURES]
    assert all(re.fullmatch(r"\d{3}_[a-z0-9_]+\.ftr", name) for name in names), names
    numbers = [name[:3] for name in names]
    assert len(set(numbers)) == len(numbers), "two fixtures share a number"
    for path in FIXTURES:
        expected, _ = _expectations(path.read_text(encoding="utf-8"))
        assert expected, f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", _params())
def test_bad_recipe(path: Path):
    text = path.read_text(encoding="utf-8")
    expected, _ = _expectations(text)
    error = _errors(text, str(path))
    errors = error.errors
    report = f"{path.name} reported:\n{_describe(errors)}"
    assert len(errors) == len(expected), report
    for diagnostic, (position, fragments) in zip(errors, expected, strict=True):
        where = (diagnostic.span.line, diagnostic.span.column) if diagnostic.span else None
        assert where == position, report
        words = f"{diagnostic.message}\n{diagnostic.hint or ''}"
        for fragment in fragments:
            assert fragment in words, f"{fragment!r} not in {words!r}\n{report}"


@pytest.mark.parametrize("path", _params(with_xfail=False))
def test_bad_recipe_renders_like_the_design(path: Path):
    """Every error renders as `file:line:col: error: message`, then the gutter,
    the source line and carets under the span; never a traceback."""
    text = path.read_text(encoding="utf-8")
    error = _errors(text, "bad.ftr")
    rendered = error.render()
    assert "Traceback" not in rendered
    lines = text.split("\n")
    for diagnostic in error.errors:
        if diagnostic.span is None:
            assert f"bad.ftr: error: {diagnostic.message}" in rendered
            continue
        span = diagnostic.span
        number = str(span.line)
        gutter = " " * len(number)
        source = lines[span.line - 1].expandtabs(1).rstrip()
        head = f"bad.ftr:{span.line}:{span.column}: error: {diagnostic.message}\n{gutter} |\n{number} | {source}\n"
        assert head in rendered, rendered
        carets = re.search(re.escape(head) + r"(.*)", rendered)[1]
        assert carets.startswith(f"{gutter} | " + " " * (span.column - 1) + "^"), rendered
        if diagnostic.hint:
            assert carets.endswith(" " + diagnostic.hint), rendered


# --- the input size limit -------------------------------------------------------


def _good_recipe() -> str:
    return (ROOT / "recipes" / "pets_resnet50.ftr").read_text(encoding="utf-8")


def test_oversized_recipe_is_refused():
    recipe = _good_recipe()
    text = recipe + "#" * (MAX_BYTES + 1 - len(recipe.encode("utf-8")))
    assert len(text.encode("utf-8")) == MAX_BYTES + 1
    error = _errors(text, "big.ftr")
    assert len(error.errors) == 1
    assert "larger than 1024 KiB" in error.errors[0].message
    assert error.errors[0].hint
    assert error.render().startswith("big.ftr: error: recipe is larger than 1024 KiB")


def test_oversized_recipe_counts_bytes_not_characters():
    """Two-byte characters: fewer than MAX_BYTES characters, more than MAX_BYTES bytes."""
    text = _good_recipe() + "# " + "é" * (MAX_BYTES // 2)
    assert len(text) < MAX_BYTES < len(text.encode("utf-8"))
    assert "larger than" in _errors(text, "big.ftr").errors[0].message


def test_many_megabytes_are_refused_at_once():
    text = "recipe " + "(" * (8 * MAX_BYTES)
    assert "larger than" in _errors(text, "huge.ftr").errors[0].message


def test_recipe_at_the_limit_is_read():
    recipe = _good_recipe()
    text = recipe + "#" * (MAX_BYTES - len(recipe.encode("utf-8")))
    assert len(text.encode("utf-8")) == MAX_BYTES
    assert parse(text).name == "pets-resnet50"


# --- bugs found while writing the catalogue, now fixed: they stay fixed ---------


def _seed_recipe_with(old: str, new: str) -> str:
    text = (ROOT / "recipes" / "seed_resnet18.ftr").read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


def test_render_shows_the_right_line_after_a_form_feed():
    # \f is whitespace to the grammar (WS: /[ \t\f]+/), so Lark does not count it as a line break
    text = _seed_recipe_with('recipe "seed-resnet18"', 'recipe "seed-resnet18"\f').replace("epochs 10", "epochs 0")
    error = _errors(text, "ff.ftr")
    (diagnostic,) = error.errors
    line = text.split("\n")[diagnostic.span.line - 1]
    assert line == "  epochs 0"
    assert f"{diagnostic.span.line} |   epochs 0\n" in error.render()


def test_end_of_file_position_counts_only_newlines():
    text = '# a comment with \u2028 in it\nrecipe "x"\nmodel {\n  backbone resnet18'
    (diagnostic,) = _errors(text, "eof.ftr").errors
    assert diagnostic.message == "block 'model' opened on line 3 is never closed"
    assert diagnostic.hint == "close it with '}' at the end of the file"
    assert (diagnostic.span.line, diagnostic.span.column) == (3, 1)


def test_nul_character_is_named_once_quoted():
    text = _seed_recipe_with("epochs 10", "epochs 10\0")
    (diagnostic,) = _errors(text, "nul.ftr").errors
    assert diagnostic.message == "unexpected character '\\x00'"


def test_only_ascii_digits_are_numbers():
    text = _seed_recipe_with("epochs 10", "epochs \uff11\uff10")  # fullwidth "10"
    with pytest.raises(RecipeError):
        parse(text)


@pytest.mark.parametrize(
    "old, new",
    [
        ("lr 0.001", "lr 1e999"),
        ("batchnorm train", "batchnorm train\n  clip_grad_norm 1e999"),
        ("sgd(momentum=0.9)", "sgd(momentum=0.9, weight_decay=1e400)"),
    ],
    ids=["lr", "clip_grad_norm", "weight_decay"],
)
def test_infinite_numbers_are_refused(old, new):
    text = _seed_recipe_with(old, new)
    (diagnostic,) = _errors(text, "inf.ftr").errors
    line = next(i for i, x in enumerate(text.split("\n"), 1) if "e999" in x or "e400" in x)
    assert diagnostic.span.line == line
