"""Trailing commas: allowed after the last item inside brackets, never at the end of a statement."""

from __future__ import annotations

import pytest

from recipe_lang import RecipeError, parse

RECIPE = """recipe "pets"

model {{
  backbone resnet18
  head {head}
}}

data {{
  train synthetic(classes=7)
  train_transforms {transforms}
}}

train {{
  epochs 2
  lr 1e-3
}}
"""

HEAD = "mlp(classes=7, hidden=[256, 128], dropout=0.5)"
CROP = "random_resized_crop(32, scale=(0.6, 1.0))"
ONE_LINE = RECIPE.format(head=HEAD, transforms=CROP)


@pytest.mark.parametrize(
    ("head", "transforms"),
    [
        ("mlp(\n    classes=7,\n    hidden=[256, 128],\n    dropout=0.5,\n  )", CROP),
        ("mlp(classes=7, hidden=[256, 128,], dropout=0.5,)", "random_resized_crop(32, scale=(0.6, 1.0,),)"),
        (
            "mlp(\n    classes=7,\n    hidden=[\n      256,\n      128,\n    ],\n    dropout=0.5)",
            "random_resized_crop(\n    32,\n    scale=(0.6, 1.0),\n  )",
        ),
    ],
    ids=["call over lines", "on one line", "nested"],
)
def test_trailing_commas_inside_brackets_change_nothing(head, transforms):
    assert parse(RECIPE.format(head=head, transforms=transforms)).model_dump() == parse(ONE_LINE).model_dump()


def test_one_item_tuple_with_or_without_comma():
    with_comma = parse(RECIPE.format(head="mlp(classes=7, hidden=(256,))", transforms="resize((32, 32,))"))
    without = parse(RECIPE.format(head="mlp(classes=7, hidden=(256))", transforms="resize((32, 32))"))
    assert with_comma.model_dump() == without.model_dump()
    assert with_comma.model.head.hidden_sizes == [256]


@pytest.mark.parametrize(
    ("head", "position", "message"),
    [
        ("linear(classes=7,,)", (5, 25), "unexpected ','"),
        ("linear(,)", (5, 15), "unexpected ','"),
        ("linear(classes=[1,,])", (5, 26), "unexpected ','"),
        ("linear(classes=7),", (5, 25), "unexpected ','"),
    ],
)
def test_a_comma_with_no_item_before_it_is_named(head, position, message):
    with pytest.raises(RecipeError) as info:
        parse(RECIPE.format(head=head, transforms="hflip"))
    (error,) = info.value.errors
    assert ((error.span.line, error.span.column), error.message) == (position, message)
