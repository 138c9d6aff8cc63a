"""The filters that carry recipe values into generated code: exact, injection-safe, ruff-formatted."""

import ast
import enum
import io
import random
import re
import subprocess
import sys
import tokenize

import pytest
from hypothesis import given
from hypothesis import strategies as st

from templates.literals import _width, comment, identifier, py

PARAMS = [
    f"layer{i}.{j}.{part}.{kind}"
    for i in (3, 4)
    for j in (0, 1)
    for part in ("conv1", "bn2")
    for kind in ("weight", "bias")
]
TRICKY = [
    "",
    "plain",
    'say "hi"',
    "it's",
    "both ' and \"",
    'more "" than \'',
    "''' and \"\"\"",
    "back\\slash\\",
    "\\x00",
    "line\nbreak\r\ttab",
    "nul\x00 esc\x1b del\x7f",
    "#{{ x }}{% y %}",
    "\u2028\x85\u2029\x0b\x0c",
    "é猫😀\u0301",
    "\u202eevil\u202c",
    "\ufeffbom",
    "nbsp\xa0",
    "\\N{BULLET}",
    "x" * 200,
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "None"),
        (True, "True"),
        (False, "False"),
        (0, "0"),
        (-7, "-7"),
        (10**20, "100000000000000000000"),
        (0.001, "0.001"),
        (1e-05, "1e-05"),
        (3e-4, "0.0003"),
        (1e16, "1e16"),
        (-2.5e300, "-2.5e300"),
        (-0.0, "-0.0"),
        ("", '""'),
        ("it's", '"it\'s"'),
        ('say "hi"', "'say \"hi\"'"),
        ("a'\"", '"a\'\\""'),
        ('a""\'', "'a\"\"\\''"),
        ("a\\b\n\t\x00\u2028é猫", '"a\\\\b\\n\\t\\x00\\u2028é猫"'),
        ([], "[]"),
        ((), "()"),
        ({}, "{}"),
        ((1,), "(1,)"),
        ([1, (2, "x")], '[1, (2, "x")]'),
        ({"a": 1, 2: [None]}, '{"a": 1, 2: [None]}'),
    ],
)
def test_py_writes_literals(value, expected):
    assert py(value) == expected
    assert ast.literal_eval(expected) == value


def test_py_splits_what_does_not_fit():
    assert py(list(range(3)), prefix=80) == "[\n    0,\n    1,\n    2,\n]"
    assert py(("a" * 90,)) == '(\n    "' + "a" * 90 + '",\n)'
    value = {"top": PARAMS[:2], "rest": PARAMS}
    assert py(value, prefix=4, suffix=1, indent=4) == "\n".join(
        ["{", '        "top": ["layer3.0.conv1.weight", "layer3.0.conv1.bias"],', '        "rest": [']
        + [f'            "{name}",' for name in PARAMS]
        + ["        ],", "    }"]
    )
    assert py(["x" * 78], prefix=6) == '["' + "x" * 78 + '"]'  # 6 + 82 columns: fits exactly
    assert py(["x" * 78], prefix=6, suffix=1) != '["' + "x" * 78 + '"]'
    assert py(["猫" * 40], prefix=4) == '["' + "猫" * 40 + '"]'  # wide characters count twice
    assert py(["猫" * 41], prefix=4).startswith("[\n")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, TypeError),
        (b"x", TypeError),
        (object(), TypeError),
        (1j, TypeError),
        ([1, {2}], TypeError),
        ({(1, 2): 3}, TypeError),
        ({True: 1}, TypeError),
        ({None: 1}, TypeError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ([-float("inf")], ValueError),
        ("lone \ud800 surrogate", ValueError),
    ],
)
def test_py_refuses_what_is_not_a_plain_value(value, error):
    with pytest.raises(error):
        py(value)


def test_py_refuses_subclasses_of_plain_types():
    class Mode(str, enum.Enum):
        train = "train"

    with pytest.raises(TypeError, match="Mode"):
        py(Mode.train)
    with pytest.raises(TypeError):
        py(enum.IntEnum("Size", "big")(1))


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)


def same(a, b):
    """Equal, with the same types all the way down (True is not 1, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@given(values, st.integers(0, 100), st.integers(0, 3), st.integers(0, 12), st.integers(20, 120))
def test_py_reads_back_exactly(value, prefix, suffix, indent, width):
    text = py(value, prefix=prefix, suffix=suffix, indent=indent, width=width)
    assert same(ast.literal_eval(text), value)
    assert "\n" not in py(value, width=sys.maxsize)


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_any_string_is_one_literal(text):
    literal = py(text)
    [statement] = ast.parse(literal).body
    assert isinstance(statement.value, ast.Constant) and statement.value.value == text
    assert literal.isprintable()  # so no line break, NUL, bidi control or other invisible character


def test_identifier():
    for name in ("head", "_x", "layer4", "match", "case", "type"):
        assert identifier(name) == name
    for bad in ("", "4layer", "class", "None", "a.b", "a b", "é", "x\n", "lambda", 7, None):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            identifier(bad)


def test_comment():
    assert comment("hello") == "# hello"
    assert comment("a\n\n  b  \n", indent=4) == "    # a\n    #\n    #   b"
    assert comment("") == "#"
    assert comment("tab\there\x00\x1b\u202e") == "# tab\there\\x00\\x1b\\u202e"
    assert comment("a\u2028b\x85c\rd\x0ce") == "# a\n# b\n# c\n# d\n# e"


@given(st.text(), st.integers(0, 8))
def test_comment_is_only_comment(text, indent):
    lines = comment(text, indent)
    assert not lines.endswith("\n")
    assert all(line.strip().startswith("#") and line == line.rstrip() for line in lines.split("\n"))
    lines.encode()  # no lone surrogate left
    [statement] = ast.parse(lines + "\nx = 1\n").body
    assert ast.dump(statement) == ast.dump(ast.parse("x = 1").body[0])
    kinds = {token.type for token in tokenize.generate_tokens(io.StringIO(lines + "\n").readline)}
    assert kinds <= {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER}


def test_comment_cannot_declare_an_encoding():
    for text in ("-*- coding: utf-7 -*-", "vim: set fileencoding=latin-1 :", "coding=utf-7"):
        source = (comment(text) + "\n" + comment(text) + '\nx = "+AAo-"\n').encode()
        assert tokenize.detect_encoding(io.BytesIO(source).readline)[0] == "utf-8"


def generated_values():
    """Values like a compiled recipe's, plus strings that test quoting and seeded random nestings."""
    fixed = [
        None,
        True,
        0,
        -3,
        10**30,
        0.001,
        1e-05,
        3e-4,
        1e16,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        *TRICKY[:-1],
        [],
        (),
        {},
        (1,),
        ("a",),
        [()],
        ({},),
        PARAMS,
        PARAMS[:3],
        tuple(PARAMS),
        [PARAMS],
        {"top": PARAMS[:4], "middle": PARAMS[4:], "rest": [], "head": ["fc.weight", "fc.bias"]},
        {"lr": {"head": 3e-3, "top": 1e-3, "middle": 3e-4, "rest": 1e-4}, "epochs": 12, "warmup": 1},
        ((1, 2), (3, (4, (5,)))),
        [[0.1, 0.2]] * 20,
        [TRICKY],
        {text: text for text in TRICKY[:-1]},
        {1: "a", -2: ["b" * 70, ("c",)], 3: {"d": [["e" * 30] * 3] * 2}},
        [["x" * 84]],
        [[[["deep"] * 9] * 2]],
        [(0.6, 1.0), (224, 224)],
        {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    ]
    edges = [["x" * n] for n in range(70, 90)] + [{"k": "x" * n} for n in range(60, 90)]
    edges += [["猫" * n] for n in range(35, 45)] + [["e\u0301" * n] for n in range(75, 90)]
    edges += [list(range(n)) for n in range(20, 40)] + [("y" * n, 1) for n in range(75, 85)]
    rng = random.Random(2024)
    alphabet = "ab_.0 \"'\\\n\t\x00#{}é猫😀\u2028"

    def nest(depth):
        roll = rng.random()
        if depth > 3 or roll < 0.35:
            kind = rng.choice([str, str, str, int, float, None])
            if kind is str:
                return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
            return kind and kind(rng.randrange(-(10**6), 10**6)) / (1 if kind is int else 997)
        items = [nest(depth + 1) for _ in range(rng.randrange(0, 7))]
        if roll < 0.6:
            return items
        if roll < 0.8:
            return tuple(items)
        return {f"k{i}" * rng.randrange(1, 8): item for i, item in enumerate(items)}

    return fixed + edges + [nest(0) for _ in range(400)]


def fits_on_its_line(value, columns):
    """Whether a scalar fits; ruff wraps an over-long right-hand side in parentheses where that makes it fit."""
    return isinstance(value, (list, tuple, dict)) or columns + _width(py(value)) <= 88


def test_generated_code_is_ruff_formatted_and_clean(tmp_path):
    cases = generated_values()
    module = [comment("Generated by the literals test: one assignment per value.\n\nSecond paragraph.")]
    for i, value in enumerate(cases):
        if fits_on_its_line(value, len("V0000 = ")):
            module.append(f"V{i:04d} = {py(value, prefix=len('V0000 = '))}")
    module.append("\n\ndef f(*args, **kwargs):\n    return args, kwargs\n\n\ndef g():")
    for i, value in enumerate(cases):
        module.append(comment(f"case {i}: {TRICKY[i % len(TRICKY)]}", indent=4))
        module.append(f"    a{i} = f(\n        {py(value, prefix=8, suffix=1, indent=8)},\n    )")
        module.append(f"    b{i} = f(\n        1,\n        value={py(value, prefix=14, suffix=1, indent=8)},\n    )")
    module.append("    return locals()\n")
    source = "\n".join(line for line in module if line)
    path = tmp_path / "generated.py"
    path.write_text(source, encoding="utf-8")

    namespace = {}
    exec(compile(source, str(path), "exec"), namespace)
    produced = namespace["g"]()
    for i, value in enumerate(cases):
        assert same(produced[f"a{i}"][0][0], value) and same(produced[f"b{i}"][1]["value"], value)

    for line in source.split("\n"):  # ruff leaves long lines only where there is no bracket to split at
        if _width(line) > 88 and not line.lstrip().startswith("#"):
            tokens = tokenize.generate_tokens(io.StringIO(line.strip()).readline)
            assert not any(token.type == tokenize.OP and token.string in "([{" for token in tokens), line

    ruff = [sys.executable, "-m", "ruff"]
    formatted = subprocess.run([*ruff, "format", "--isolated", "--diff", str(path)], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout[:6000] + formatted.stderr
    checked = subprocess.run(
        [*ruff, "check", "--isolated", "--select", "E,F,W,B,UP,I", "--ignore", "E501", str(path)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout[:6000] + checked.stderr
