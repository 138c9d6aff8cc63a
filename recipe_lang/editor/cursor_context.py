"""Where the cursor is in a recipe, read from the tokens before it.

A recipe being typed rarely parses, so completion and hover do not use the
syntax tree: they read the tokens before the cursor as the grammar would group
them (blocks, statements, calls) and stop at the cursor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(
    r'(?P<string>"([^"\\\n]|\\[^\n])*"?)'
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]*)*)"
    r"|(?P<number>[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)"
    r"|(?P<newline>\n)"
    r"|(?P<space>[ \t\f\r]+)"
    r"|(?P<punct>.)"
)
WORD_CHARS = re.compile(r"[A-Za-z0-9_.]*$")
WORD_AFTER = re.compile(r"^[A-Za-z0-9_.]*")
SELECTOR_KEYWORDS = ("freeze", "unfreeze", "gradually", "except")


@dataclass
class Call:
    """An open parenthesis: `name(` of a call (name None for a tuple or a list)."""

    name: str | None
    options: list[str] = field(default_factory=list)


@dataclass
class Context:
    blocks: list[str] = field(default_factory=list)  # enclosing blocks, outermost first
    statement: list[str] = field(default_factory=list)  # the statement's tokens before the prefix
    calls: list[Call] = field(default_factory=list)  # open parentheses and brackets of the statement
    prefix: str = ""  # the word being typed, up to the cursor
    quiet: bool = False  # in a comment or a string: nothing to complete or explain

    @property
    def block(self) -> str | None:
        return self.blocks[-1] if self.blocks else None

    @property
    def keyword(self) -> str | None:
        """The statement's keyword (`unfreeze gradually` and `at` are one keyword each)."""
        if not self.statement:
            return None
        if self.statement[:2] == ["unfreeze", "gradually"]:
            return "unfreeze gradually"
        return self.statement[0]

    @property
    def previous(self) -> str | None:
        return self.statement[-1] if self.statement else None

    @property
    def call(self) -> Call | None:
        return self.calls[-1] if self.calls else None

    def in_selectors(self) -> bool:
        """The cursor is where a selector goes: after freeze, unfreeze, except, a
        group's `=`, or a comma of a selector list."""
        words = self.statement
        if self.calls or not words:
            return False
        selector_statement = (
            words[0] == "freeze"
            or words[0] == "at"
            and any(w in ("freeze", "unfreeze") for w in words)
            or self.keyword == "unfreeze gradually"
            and "from" not in words
            or self.block == "groups"
            and len(words) >= 2
            and words[1] == "="
        )
        if not selector_statement or "warmup" in words:
            return False
        return self.previous in SELECTOR_KEYWORDS + (",", "=")


def context_at(text: str, offset: int) -> Context:
    """The context of the cursor at a code point offset of text."""
    before = text[:offset]
    prefix = WORD_CHARS.search(before).group()
    if prefix and not re.match(r"[A-Za-z_]", prefix):
        prefix = ""  # a number, not a word
    context = Context(prefix=prefix, quiet=_in_comment_or_string(before))
    for match in TOKEN.finditer(before[: len(before) - len(prefix)]):
        _feed(context, match.lastgroup, match.group())
    return context


def word_at(text: str, offset: int) -> tuple[int, int]:
    """The (start, end) code point offsets of the dotted word under the cursor."""
    start = offset - len(WORD_CHARS.search(text[:offset]).group())
    end = offset + len(WORD_AFTER.match(text[offset:]).group())
    return start, end


def _in_comment_or_string(before: str) -> bool:
    tokens = list(TOKEN.finditer(before))
    last = tokens[-1] if tokens else None
    if last is None or last.end() != len(before):
        return False
    token = last.group()
    return last.lastgroup == "comment" or last.lastgroup == "string" and (len(token) == 1 or not token.endswith('"'))


def _feed(context: Context, kind: str, value: str) -> None:
    if kind in ("space", "comment"):
        return
    if kind == "newline":
        if not context.calls and context.previous not in (",", None, "{"):
            context.statement = []
        return
    if value == "{":
        if context.statement:
            context.blocks.append(context.statement[0])
        context.statement, context.calls = [], []
        return
    if value == "}":
        if context.blocks:
            context.blocks.pop()
        context.statement, context.calls = [], []
        return
    if value in "([":
        name = context.previous if value == "(" and kind == "punct" and _is_word(context.previous) else None
        context.calls.append(Call(name))
    elif value in ")]" and context.calls:
        context.calls.pop()
    elif value == "=" and context.calls and _is_word(context.previous):
        context.calls[-1].options.append(context.previous)
    context.statement.append(value)


def _is_word(token: str | None) -> bool:
    return bool(token) and re.match(r"[A-Za-z_]", token) is not None
