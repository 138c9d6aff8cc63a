"""`ftr fmt`: the canonical layout, and that formatting is idempotent and keeps meaning and comments."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from recipe_lang.diagnostics import RecipeError
from recipe_lang.formatter import canonical_order, format_text
from recipe_lang.nodes import Str
from recipe_lang.syntax import parse_document

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("**/*.ftr"))
FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("**/*.ftr"))


def _dedent(text: str) -> str:
    """Test texts are written with a `|` margin; lines without one are left out."""
    return "".join(re.sub(r"^ *\|", "", line) for line in text.splitlines(keepends=True) if re.match(r" *\|", line))


# (name, input, expected output)
CASES = [
    (
        "header order",
        """
        |output "runs/x"
        |extra 1
        |seed 2
        |recipe "x"
        """,
        """
        |recipe "x"
        |seed 2
        |output "runs/x"
        |extra 1
        """,
    ),
    (
        "blocks reordered with their comments",
        """
        |recipe "x"
        |# how it is measured
        |evaluate {
        |  metrics loss
        |}
        |
        |train {  # the loop
        |  epochs 1
        |}  # end of train
        |# where the images are
        |data {
        |  train imagefolder("d")
        |}
        |model {
        |  backbone resnet18
        |}
        """,
        """
        |recipe "x"
        |
        |model {
        |  backbone resnet18
        |}
        |
        |# where the images are
        |data {
        |  train imagefolder("d")
        |}
        |
        |train {  # the loop
        |  epochs 1
        |}  # end of train
        |
        |# how it is measured
        |evaluate {
        |  metrics loss
        |}
        """,
    ),
    (
        "unknown blocks last, in source order; header statements move up",
        """
        |zeta {
        |}
        |model {
        |}
        |# about the seed
        |seed 1
        |alpha {
        |}
        |groups {
        |}
        |recipe "x"
        """,
        """
        |recipe "x"
        |# about the seed
        |seed 1
        |
        |model {
        |}
        |
        |groups {
        |}
        |
        |zeta {
        |}
        |
        |alpha {
        |}
        """,
    ),
    (
        "top comments stay at the top",
        """
        |
        |# Licence.
        |
        |
        |# What this recipe is.
        |
        |model {
        |}
        |recipe "x"
        """,
        """
        |# Licence.
        |
        |# What this recipe is.
        |recipe "x"
        |
        |model {
        |}
        """,
    ),
    (
        "continuation lines joined",
        """
        |data {
        |  train_transforms random_resized_crop(224,
        |                                       scale=(0.6, 1.0)),
        |      hflip(),
        |
        |      color_jitter(
        |        brightness=0.2)
        |  batch_size 8
        |}
        """,
        """
        |data {
        |  train_transforms random_resized_crop(224, scale=(0.6, 1.0)), hflip(), color_jitter(brightness=0.2)
        |  batch_size 8
        |}
        """,
    ),
    (
        "comments inside a joined statement go above it",
        """
        |train {
        |  epochs 3
        |
        |  lr head=1e-3,  # the new head
        |     # the backbone, slower
        |     backbone=1e-4  # last line
        |}
        """,
        """
        |train {
        |  epochs 3
        |
        |  # the new head
        |  # the backbone, slower
        |  lr head=1e-3, backbone=1e-4  # last line
        |}
        """,
    ),
    (
        "group names aligned",
        """
        |groups {
        |  top=layer4
        |  middle   =   layer3
        |  # the rest
        |  base = conv1,bn1 , layer1
        |}
        """,
        """
        |groups {
        |  top    = layer4
        |  middle = layer3
        |  # the rest
        |  base   = conv1, bn1, layer1
        |}
        """,
    ),
    (
        "trailing comments aligned per run",
        """
        |recipe "x" # name
        |seed 1 # seed
        |
        |model {
        |  backbone resnet18 # a
        |  weights default    # b
        |  head linear(classes=2)
        |  nothing 1 #c
        |  longer_name 2  # d
        |
        |  after_blank 3 # e
        |}
        """,
        """
        |recipe "x"  # name
        |seed 1      # seed
        |
        |model {
        |  backbone resnet18  # a
        |  weights default    # b
        |  head linear(classes=2)
        |  nothing 1      #c
        |  longer_name 2  # d
        |
        |  after_blank 3  # e
        |}
        """,
    ),
    (
        "blank lines collapsed",
        """
        |
        |
        |recipe "x"
        |
        |seed 1
        |model {
        |
        |  backbone resnet18
        |
        |
        |
        |  # on its own
        |
        |
        |  weights none
        |
        |}
        |
        |
        |
        |data {
        |  batch_size 2
        |
        |  # at the end
        |
        |}
        |
        |
        """,
        """
        |recipe "x"
        |seed 1
        |
        |model {
        |  backbone resnet18
        |
        |  # on its own
        |
        |  weights none
        |}
        |
        |data {
        |  batch_size 2
        |
        |  # at the end
        |}
        """,
    ),
    (
        "comments at the end of the file",
        """
        |recipe "x"
        |# one
        |
        |
        |# two
        """,
        """
        |recipe "x"
        |
        |# one
        |
        |# two
        """,
    ),
    (
        "strings re-quoted",
        """
        |recipe "a\\"b\\\\c\\nd\\te\tf"
        |output "plain"
        """,
        """
        |recipe "a\\"b\\\\c\\nd\\te\\tf"
        |output "plain"
        """,
    ),
    (
        "empty blocks",
        """
        |model {}
        |data {
        |
        |}
        |train {  # nothing yet
        |}
        """,
        """
        |model {
        |}
        |
        |data {
        |}
        |
        |train {  # nothing yet
        |}
        """,
    ),
    (
        "values",
        """
        |x {
        |  numbers 3e-3, 3E-4, -2, .5, 1., +7
        |  literals true, false, none
        |  call f( 1 ,k = [ 1,2 ] , t=( 0.6,1.0 ) , one=(1), empty=[ ] )
        |  nested f(g(h(x=1)))
        |  kw a = 1, b= "s"
        |  bare
        |}
        """,
        """
        |x {
        |  numbers 3e-3, 3E-4, -2, .5, 1., +7
        |  literals true, false, none
        |  call f(1, k=[1, 2], t=(0.6, 1.0), one=(1,), empty=[])
        |  nested f(g(h(x=1)))
        |  kw a=1, b="s"
        |  bare
        |}
        """,
    ),
    (
        "trailing commas inside brackets dropped; a call over several lines joined",
        """
        |model {
        |  head linear(
        |    classes=7,
        |    dropout=0.5,
        |  )
        |}
        |data {
        |  train_transforms random_resized_crop(224, scale=[0.6, 1.0,],), hflip(p=0.5,)
        |  x f(t=(1,), u=(1, 2,), v=[1,])
        |}
        """,
        """
        |model {
        |  head linear(classes=7, dropout=0.5)
        |}
        |
        |data {
        |  train_transforms random_resized_crop(224, scale=[0.6, 1.0]), hflip(p=0.5)
        |  x f(t=(1,), u=(1, 2), v=[1])
        |}
        """,
    ),
    (
        "comments inside a call over several lines go above it",
        """
        |model {
        |  head mlp(  # the new head
        |    classes=7,  # one per breed
        |    hidden=[512, 256,],
        |  )  # replaces fc
        |}
        """,
        """
        |model {
        |  # the new head
        |  # one per breed
        |  head mlp(classes=7, hidden=[512, 256])  # replaces fc
        |}
        """,
    ),
    (
        "statement shapes",
        """
        |model {
        |  head   mlp(classes=3)   at   "classifier.1"
        |  head linear(classes=3)
        |}
        |train {
        |  freeze all   except head ,top
        |  at epoch 3   unfreeze top,"blocks.0"  warmup = 0.5
        |  at epoch 5 freeze features[ 10 : ], layer4[-1], x[::2] except layer4.1
        |  unfreeze gradually layer4 ,layer3,  "layer*"  from epoch 2 every   3
        |}
        """,
        """
        |model {
        |  head mlp(classes=3) at "classifier.1"
        |  head linear(classes=3)
        |}
        |
        |train {
        |  freeze all except head, top
        |  at epoch 3 unfreeze top, "blocks.0" warmup=0.5
        |  at epoch 5 freeze features[10:], layer4[-1], x[::2] except layer4.1
        |  unfreeze gradually layer4, layer3, "layer*" from epoch 2 every 3
        |}
        """,
    ),
    (
        "a statement on the opening line moves down",
        """
        |model { backbone resnet18  # on the brace line
        |  weights none
        |}
        """,
        """
        |model {
        |  backbone resnet18  # on the brace line
        |  weights none
        |}
        """,
    ),
    (
        "comment text kept, trailing spaces dropped",
        """
        |#no space   \t
        |recipe "x"  ##  two hashes  
        |model {
        |  #	tab inside
        |}
        """,
        """
        |#no space
        |recipe "x"  ##  two hashes
        |
        |model {
        |  #	tab inside
        |}
        """,
    ),
    (
        "only comments",
        """
        |# a
        |
        |# b
        """,
        """
        |# a
        |
        |# b
        """,
    ),
    ("empty file", "\n\n", ""),
    (
        "task right after recipe, seed and output; detection statements as written",
        """
        |model { backbone fasterrcnn_resnet50_fpn
        |  head detection( classes = 20, )
        |  min_size 480
        |  max_size   640 }
        |task detection  # boxes
        |output "runs/voc"
        |recipe "voc"
        |data {
        |  train voc("data/VOC2007",
        |            split = "trainval", classes = [ "cat", "dog", ])
        |  val coco( "val.json", images="val" )
        |}
        |evaluate { metrics loss,map,map50,map75 }
        """,
        """
        |recipe "voc"
        |output "runs/voc"
        |task detection  # boxes
        |
        |model {
        |  backbone fasterrcnn_resnet50_fpn
        |  head detection(classes=20)
        |  min_size 480
        |  max_size 640
        |}
        |
        |data {
        |  train voc("data/VOC2007", split="trainval", classes=["cat", "dog"])
        |  val coco("val.json", images="val")
        |}
        |
        |evaluate {
        |  metrics loss, map, map50, map75
        |}
        """,
    ),
]

INPUTS = [_dedent(source) for _, source, _ in CASES]


@pytest.mark.parametrize(
    ("source", "expected"), [(_dedent(s), _dedent(e)) for _, s, e in CASES], ids=[name for name, _, _ in CASES]
)
def test_canonical_layout(source, expected):
    assert format_text(source) == expected


def test_windows_line_endings():
    source = 'recipe "x"  # name\r\n\r\n\r\nmodel {\r\n  backbone resnet18,\r\n    # c\r\n    x  \r\n}\r\n'
    expected = 'recipe "x"  # name\n\nmodel {\n  # c\n  backbone resnet18, x\n}\n'
    assert format_text(source) == expected


def test_syntax_errors_propagate():
    with pytest.raises(RecipeError):
        format_text("model {\n  backbone (\n}\n")


# --- properties, over the cases above and every recipe file ----------------------


def _plain(node):
    """A node without positions: nested tuples and dicts that compare by content."""
    if isinstance(node, Str):
        return ("Str", node.value)
    if is_dataclass(node):
        return (
            type(node).__name__,
            {f.name: _plain(getattr(node, f.name)) for f in fields(node) if not f.name.endswith("span")},
        )
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _comments(text: str) -> Counter:
    return Counter(c.text.rstrip() for c in parse_document(text).comments)


def _check_properties(source: str) -> None:
    formatted = format_text(source)
    assert format_text(formatted) == formatted, "not idempotent"
    assert formatted == "" or (formatted.endswith("\n") and not formatted.endswith("\n\n"))
    before, after = parse_document(source), parse_document(formatted)
    assert _plain(after.items) == _plain(canonical_order(before.items)), "meaning changed"
    assert _comments(formatted) == _comments(source), "comments lost or duplicated"
    _check_recipe_meaning(source, formatted)


def _check_recipe_meaning(source: str, formatted: str) -> None:
    import recipe_lang

    parse = getattr(recipe_lang, "parse", None)
    if parse is None:
        return
    try:
        recipe = parse(source, "x.ftr")
    except RecipeError:  # formatting may mend it ('recipe' must come first), or not
        return
    assert parse(formatted, "x.ftr").model_dump() == recipe.model_dump()


@pytest.mark.parametrize("source", INPUTS, ids=[name for name, _, _ in CASES])
def test_properties_of_cases(source):
    _check_properties(source)
    _check_properties(source.replace("\n", "\r\n"))


def _parses(path: Path) -> bool:
    try:
        parse_document(path.read_text(encoding="utf-8"), str(path))
    except RecipeError:
        return False
    return True


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipes_parse_and_keep_meaning(path):
    source = path.read_text(encoding="utf-8")
    parse_document(source, str(path))
    _check_properties(source)


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipes_are_canonical(path):
    source = path.read_text(encoding="utf-8")
    assert format_text(source, str(path)) == source


PARSING_FIXTURES = [p for p in FIXTURES if _parses(p)]  # syntax-error fixtures have nothing to format


@pytest.mark.parametrize("path", PARSING_FIXTURES, ids=_ids(PARSING_FIXTURES))
def test_fixtures_keep_meaning(path):
    _check_properties(path.read_text(encoding="utf-8"))


# --- the same properties over seeded variations of the texts above ---------------


def _commas(line: str) -> list[int]:
    """Positions of the commas of a line that are outside strings."""
    out, quoted = [], False
    for i, ch in enumerate(line):
        quoted ^= ch == '"' and line[i - 1 : i] != "\\"
        if ch == "," and not quoted:
            out.append(i)
    return out


def _continued(line: str, rng) -> str:
    for i in reversed(_commas(line)):
        if rng.random() < 0.5:
            comment = f"  # in{rng.randrange(99)}" if rng.random() < 0.3 else ""
            line = f"{line[: i + 1]}{comment}\n{'' if rng.random() < 0.7 else chr(10)}     {line[i + 1 :].lstrip()}"
    return line


def _variation(text: str, rng) -> str:
    """Blocks shuffled (sometimes); lines continued after commas, given trailing comments,
    and separated by comments and blank lines."""
    chunks = text.split("\n\n")
    if rng.random() < 0.5:
        rng.shuffle(chunks)
    out = []
    for line in "\n\n".join(chunks).split("\n"):
        if "#" not in line and line.strip() and rng.random() < 0.3:
            line = _continued(line, rng)
        if "#" not in line and line.strip() and rng.random() < 0.3:
            line += " " * rng.randrange(1, 6) + f"# t{rng.randrange(99)}"
        if rng.random() < 0.2:
            out.append("\n" * rng.randrange(3) + "  " * rng.randrange(2) + f"# full{rng.randrange(99)}")
        if rng.random() < 0.2:
            out.append("")
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_properties_of_variations(seed):
    rng = random.Random(seed)
    sources = INPUTS + [p.read_text(encoding="utf-8") for p in RECIPES] * 5
    checked = 0
    for _ in range(100):
        source = _variation(rng.choice(sources), rng)
        try:
            parse_document(source)
        except RecipeError:
            continue
        _check_properties(source)
        checked += 1
    assert checked > 50
