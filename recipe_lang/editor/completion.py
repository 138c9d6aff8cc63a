"""Completion: what may be written at the cursor, from the statements and
options of the typed recipe and, where a selector goes, the modules of the
last model the server built."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..build import BLOCKS
from .cursor_context import Context, context_at
from .schema_docs import (
    OPTION_STATEMENTS,
    describe_field,
    describe_function,
    family_of,
    function_model,
    options_of,
    statement_field,
    statements_of,
    value_choices,
)


@dataclass(frozen=True)
class Item:
    label: str
    kind: str  # keyword, option, function, value, module, group
    insert: str | None = None  # text to write instead of the label
    detail: str | None = None
    documentation: str | None = None


def complete(text: str, offset: int, outline=None) -> tuple[list[Item], str]:
    """The items for the cursor at a code point offset, and the prefix they replace."""
    context = context_at(text, offset)
    if context.quiet:
        return [], context.prefix
    return _items(context, outline), context.prefix


def _items(context: Context, outline) -> list[Item]:
    if context.calls:
        return _call_options(context)
    if context.in_selectors():
        return _selectors(context.prefix, outline, context.block == "groups")
    if not context.statement:
        return _statements(context.block)
    return _after_keyword(context, outline)


def _statements(block: str | None) -> list[Item]:
    if block == "groups":
        return []  # a group's name is the user's to choose
    items = [_statement_item(block, keyword) for keyword in statements_of(block)]
    if block is None:
        items += [Item(name, "keyword", detail="block") for name in BLOCKS]
    return items


def _statement_item(block: str | None, keyword: str) -> Item:
    where = statement_field(block, keyword)
    docs = describe_field(*where, keyword) if where else None
    return Item(keyword, "keyword", detail=f"statement of {block}" if block else "statement", documentation=docs)


def _call_options(context: Context) -> list[Item]:
    call = context.call
    if call.name is None or context.previous not in ("(", ","):
        return []
    cls = function_model(call.name, _annotation(context))
    if cls is None:
        return []
    return [
        Item(option, "option", insert=f"{option}=", detail=f"option of {call.name}")
        for option in options_of(cls)
        if option not in call.options
    ]


def _selectors(prefix: str, outline, in_groups: bool) -> list[Item]:
    if outline is None:
        return []
    if "." in prefix:
        parent = prefix.rsplit(".", 1)[0]
        return [_module_item(outline, path) for path in outline.children(parent)]
    names = [name for name in outline.names if not (in_groups and name == "rest")]
    groups = [Item(name, "group", detail="group") for name in names]
    return groups + [_module_item(outline, path) for path in outline.children("")]


def _module_item(outline, path: str) -> Item:
    return Item(path, "module", detail=outline.module_type(path))


def _after_keyword(context: Context, outline) -> list[Item]:
    keyword, block, previous = context.keyword, context.block, context.previous
    if keyword == "at" or previous not in (keyword.split()[-1], ","):
        return _event_words(context)
    if (block, keyword) in OPTION_STATEMENTS:
        cls = OPTION_STATEMENTS[(block, keyword)]
        options = [Item(o, "option", insert=f"{o}=", detail=f"option of {keyword}") for o in options_of(cls)]
        return options + _values(context) if previous == keyword else options
    if (block, keyword) == ("train", "lr"):
        groups = outline.groups if outline is not None else ("rest",)
        return [Item(name, "group", insert=f"{name}=", detail="rate of a group") for name in ["head", *groups]]
    if (block, keyword) == ("model", "backbone") and "recipe_lang.resolve.architectures" in sys.modules:
        names = sys.modules["recipe_lang.resolve.architectures"].backbone_names()
        return [Item(name, "value", detail="torchvision model") for name in names]
    return _values(context)


def _values(context: Context) -> list[Item]:
    annotation = _annotation(context)
    if annotation is None:
        return []
    items = []
    for choice in value_choices(annotation):
        cls = function_model(choice, annotation)
        if cls is not None and options_of(cls) and choice not in ("none", "default"):
            items.append(Item(choice, "function", detail=family_of(cls), documentation=describe_function(cls)))
        else:
            items.append(Item(choice, "value"))
    return items


def _event_words(context: Context) -> list[Item]:
    """`at epoch N freeze|unfreeze ...` and `unfreeze gradually ... from epoch N every K`, word by word."""
    words = context.statement
    if words == ["at"]:
        return [Item("epoch", "keyword")]
    if words[0] == "at" and len(words) == 3:
        return [Item("freeze", "keyword"), Item("unfreeze", "keyword")]
    if context.keyword == "unfreeze gradually" and "from" not in words and len(words) > 2:
        return [Item("from", "keyword")]
    return []


def _annotation(context: Context):
    where = statement_field(context.block, context.keyword) if context.keyword else None
    if where is None:
        return None
    cls, field = where
    return cls.model_fields[field].annotation
