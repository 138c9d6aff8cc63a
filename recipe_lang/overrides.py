"""`--set key=value`: replace or add a statement before the recipe is built.

The value is parsed by the recipe grammar, as the statement `key value`, so an
override is checked exactly like the line it replaces; its diagnostics point
into the override's own text.
"""

from __future__ import annotations

import dataclasses
import re

from . import nodes as n
from .build import BLOCKS, STATEMENTS, TOP_LEVEL
from .diagnostics import Diagnostic, RecipeError, Span, UsageError, did_you_mean
from .syntax import parse_document


def override_keys() -> list[str]:
    keys = list(TOP_LEVEL)
    for block, table in STATEMENTS.items():
        keys += [f"{block}.{keyword}" for keyword in table if " " not in keyword]
    return keys + ["groups.NAME"]


def apply_overrides(doc: n.Document, overrides: list[str]) -> n.Document:
    items = list(doc.items)
    problems = []
    for text in overrides:
        try:
            items = _apply(items, text)
        except RecipeError as error:
            problems += error.diagnostics
    if problems:  # the command line is wrong, whatever the recipe says
        raise UsageError(problems, "", "--set")
    return n.Document(items, doc.comments)


def _apply(items: list, text: str) -> list:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError([Diagnostic(f"invalid --set '{text}'", hint="write --set key=value, e.g. train.epochs=3")])
    if "\n" in value or "\r" in value:
        raise RecipeError([Diagnostic(f"--set {key}: the value spans several lines", hint="give it on one line")])
    block, _, keyword = key.rpartition(".")
    if not _known(block, keyword):
        hint = did_you_mean(key, override_keys()) or "keys are: " + ", ".join(override_keys())
        raise RecipeError([Diagnostic(f"unknown key '{key}' in --set", hint=hint)])
    line = f"{keyword} = {value.strip()}" if block == "groups" else f"{keyword} {value.strip()}"
    origin = (f"--set {key}", line)
    try:
        statement = _retag(parse_document(line, origin[0]).items[0], origin)
    except RecipeError as error:
        raise RecipeError([_retag(d, origin) for d in error.diagnostics]) from None
    if not block:
        return _replace(items, statement)
    return _replace_in_block(items, block, statement, origin)


def _known(block: str, keyword: str) -> bool:
    if not block:
        return keyword in TOP_LEVEL
    if block == "groups":
        return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", keyword) is not None
    return block in STATEMENTS and keyword in STATEMENTS[block] and " " not in keyword


def _replace(statements: list, statement) -> list:
    out, done = [], False
    for item in statements:
        same = not isinstance(item, n.Block) and item.keyword == statement.keyword
        if same and not done:
            out.append(statement)
            done = True
        elif not same:
            out.append(item)
    return out if done else out + [statement]


def _replace_in_block(items: list, block: str, statement, origin) -> list:
    for i, item in enumerate(items):
        if isinstance(item, n.Block) and item.name == block:
            updated = dataclasses.replace(item, statements=_replace(item.statements, statement))
            return items[:i] + [updated] + items[i + 1 :]
    assert block in BLOCKS
    return items + [n.Block(block, statement.keyword_span, [statement], statement.span)]


def _retag(node, origin):
    """The same node with every span marked as coming from the override's text."""
    if isinstance(node, Span):
        return dataclasses.replace(node, origin=origin)
    if isinstance(node, list):
        return [_retag(item, origin) for item in node]
    if dataclasses.is_dataclass(node):
        changes = {f.name: _retag(getattr(node, f.name), origin) for f in dataclasses.fields(node)}
        return dataclasses.replace(node, **changes)
    return node
