"""Hover: the documentation of the statement, function or option under the
cursor (from the recipe's field descriptions, as `ftr schema` prints them), or
what a selector covers in the last model the server built."""

from __future__ import annotations

import re

from ..build import BLOCKS
from ..recipe import Selector
from .cursor_context import Context, context_at, word_at
from .schema_docs import (
    OPTION_STATEMENTS,
    describe_field,
    describe_function,
    family_of,
    function_model,
    statement_field,
    statements_of,
    value_choices,
    value_models,
)

NOT_RESOLVED = "the model has not been built yet: the recipe must check without errors once"


def hover(text: str, offset: int, outline=None) -> tuple[str, tuple[int, int]] | None:
    """Markdown for the word at a code point offset, and the word's (start, end) offsets."""
    start, end = word_at(text, offset)
    word = text[start:end].rstrip(".")
    if not word or not re.match(r"[A-Za-z_]", word):
        return None
    context = context_at(text, start)
    if context.quiet:
        return None
    after = text[end:].lstrip(" \t")[:1]
    following = text[end:].split(None, 1)[0] if text[end:].strip() else ""
    markdown = _explain(context, word, after, following, outline)
    return (markdown, (start, start + len(word))) if markdown else None


def _explain(context: Context, word: str, after: str, following: str, outline) -> str | None:
    if context.block == "groups" and not context.statement:
        return _selector(word, outline, "group")
    if not context.statement:
        return _statement(context.block, word, after, following)
    if context.calls:
        return _option(context, word, after)
    if context.in_selectors():
        return _selector(word, outline, "selector")
    if after == "=" and (context.block, context.keyword) in OPTION_STATEMENTS:
        return describe_field(OPTION_STATEMENTS[(context.block, context.keyword)], word, f"{context.keyword} {word}=")
    return _value(context, word)


def _statement(block: str | None, word: str, after: str, following: str) -> str | None:
    if block is None and after == "{" and word in BLOCKS:
        statements = ", ".join(statements_of(word)) or "name = selectors, ..."
        return f"**{word}** block\n\nstatements: {statements}"
    keyword = "unfreeze gradually" if word == "unfreeze" and following.startswith("gradually") else word
    where = statement_field(block, keyword)
    if where is None:
        return None
    return describe_field(*where, f"{keyword}" + (f" (in {block})" if block else ""))


def _option(context: Context, word: str, after: str) -> str | None:
    call = context.call
    if call.name is None:
        return None
    annotation = _annotation(context)
    if after == "=":
        cls = function_model(call.name, annotation)
        if cls is None or word not in cls.model_fields:
            return None
        return describe_field(cls, word, f"{call.name}({word}=...)")
    return _function(word, annotation)


def _value(context: Context, word: str) -> str | None:
    annotation = _annotation(context)
    if annotation is None or word not in value_choices(annotation):
        return None
    functions = [cls for cls in value_models(annotation) if cls.model_fields["kind"].default == word]
    if functions:  # a function of this statement; a plain choice (`task detection`) is described by its field
        return describe_function(functions[0], family_of(functions[0]))
    return describe_field(*statement_field(context.block, context.keyword), word)


def _function(word: str, annotation) -> str | None:
    cls = function_model(word, annotation)
    return describe_function(cls, family_of(cls)) if cls is not None else None


def _selector(word: str, outline, what: str) -> str | None:
    if outline is None:
        return f"**{word}** ({what})\n\n{NOT_RESOLVED}"
    selector = Selector(kind="path" if "." in word else "name", text=word)
    covered = outline.coverage(selector)
    if covered is None:
        return f"**{word}**: no module or group of that name in the model"
    kind = outline.module_type(word) if word not in outline.names else what
    modules = ", ".join(covered.modules[:8]) + (" ..." if len(covered.modules) > 8 else "")
    return f"**{word}** ({kind})\n\n{covered.numel:,} parameters in {covered.params} tensors" + (
        f"\n\nmodules: {modules}" if modules and modules != word else ""
    )


def _annotation(context: Context):
    where = statement_field(context.block, context.keyword) if context.keyword else None
    return where[0].model_fields[where[1]].annotation if where else None
