"""The syntax tree of a recipe: small dataclasses that keep their source spans.

`to_document` turns Lark's parse tree into these; the builder reads them into a
`Recipe` and the formatter prints them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .diagnostics import Span
from .generated_parser import Token, Transformer, v_args
from .quoting import ESCAPES

# --- values --------------------------------------------------------------------


@dataclass
class Num:
    value: int | float
    text: str
    span: Span


@dataclass
class Str:
    value: str
    text: str
    span: Span


@dataclass
class Lit:
    value: bool | None
    text: str
    span: Span


@dataclass
class Ident:
    name: str
    span: Span


@dataclass
class Kwarg:
    name: str
    name_span: Span
    value: object
    span: Span


@dataclass
class Call:
    name: str
    name_span: Span
    args: list  # values and Kwargs, in source order
    span: Span


@dataclass
class ListV:
    items: list
    span: Span


@dataclass
class TupleV:
    items: list
    span: Span


# --- selectors -----------------------------------------------------------------


@dataclass
class Sel:
    kind: str  # name | path | quoted | slice | index
    text: str  # the name, path or (unquoted) string; the container for slice/index
    source: str  # exactly as written
    span: Span
    quoted: bool = False
    start: int | None = None
    stop: int | None = None
    step: int | None = None
    index: int | None = None


@dataclass
class Selectors:
    include: list[Sel]
    exclude: list[Sel]
    span: Span


# --- statements ----------------------------------------------------------------


@dataclass
class Statement:
    keyword: str
    keyword_span: Span
    span: Span


@dataclass
class Plain(Statement):
    args: list = field(default_factory=list)  # values and Kwargs


@dataclass
class Assign(Statement):
    selectors: Selectors = None


@dataclass
class Freeze(Statement):
    selectors: Selectors = None


@dataclass
class AtEpoch(Statement):
    epoch: Num = None
    action: str = ""
    selectors: Selectors = None
    warmup: object = None


@dataclass
class Gradually(Statement):
    stages: list[Sel] = field(default_factory=list)
    start: Num = None
    every: Num = None


@dataclass
class HeadStmt(Statement):
    value: object = None
    at: object = None


@dataclass
class Block:
    name: str
    name_span: Span
    statements: list[Statement]
    span: Span


@dataclass
class Comment:
    text: str
    line: int
    column: int


@dataclass
class Document:
    items: list  # Statements and Blocks
    comments: list[Comment]


# --- from Lark's tree ----------------------------------------------------------


def unquote(token: Token) -> str:
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in ESCAPES:
                col = token.column + 1 + i
                span = Span(token.line, col, token.line, col + 2)
                hint = 'use \\", \\\\, \\n or \\t; write paths with forward slashes'
                raise NodeProblem(f"invalid escape '\\{nxt}' in string", span, hint)
            out.append(ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def number(token: Token) -> Num:
    text = str(token)
    is_int = not any(c in text for c in ".eE")
    value = int(text) if is_int else float(text)
    if math.isinf(value) or (is_int and abs(value) >= 2**63):
        raise NodeProblem(f"number {text} is too large", Span.of_token(token), "a recipe number fits in 64 bits")
    return Num(value, text, Span.of_token(token))


def _span(meta) -> Span:
    return Span.of_meta(meta)


class NodeProblem(Exception):
    """A mistake the grammar cannot express, found while building the tree."""

    def __init__(self, message: str, span: Span, hint: str | None = None):
        super().__init__(message)
        self.message, self.span, self.hint = message, span, hint


def _int(token) -> int | None:
    if token is None:
        return None
    value = number(token)
    if not isinstance(value.value, int):
        raise NodeProblem(f"invalid index '{token}'", value.span, "an index is a whole number")
    return value.value


@v_args(meta=True)
class _ToNodes(Transformer):
    def start(self, meta, items):
        return list(items)

    # values
    def number(self, meta, children):
        return number(children[0])

    def string(self, meta, children):
        token = children[0]
        return Str(unquote(token), str(token), Span.of_token(token))

    def true(self, meta, children):
        return Lit(True, "true", Span.of_token(children[0]))

    def false(self, meta, children):
        return Lit(False, "false", Span.of_token(children[0]))

    def none(self, meta, children):
        return Lit(None, "none", Span.of_token(children[0]))

    def ident(self, meta, children):
        return Ident(str(children[0]), Span.of_token(children[0]))

    def kwarg(self, meta, children):
        name, value = children
        return Kwarg(str(name), Span.of_token(name), value, _span(meta))

    def args(self, meta, children):
        return list(children)

    call_args = args

    def call(self, meta, children):
        name, args = children
        return Call(str(name), Span.of_token(name), args or [], _span(meta))

    def list(self, meta, children):
        return ListV([c for c in children if c is not None], _span(meta))

    def tuple(self, meta, children):
        return TupleV(list(children), _span(meta))

    # selectors
    def name_sel(self, meta, children):
        token = children[0]
        return Sel("name", str(token), str(token), Span.of_token(token))

    def path_sel(self, meta, children):
        token = children[0]
        return Sel("path", str(token), str(token), Span.of_token(token))

    def quoted_sel(self, meta, children):
        token = children[0]
        return Sel("quoted", unquote(token), str(token), Span.of_token(token), quoted=True)

    def slice_sel(self, meta, children):
        base, start, colon1, stop, colon2, step = children
        quoted = base.type == "STRING"
        text = unquote(base) if quoted else str(base)
        span = _span(meta)
        if colon2 is not None and step is not None and _int(step) == 0:
            raise NodeProblem(
                "slice step cannot be zero", Span.of_token(step), "use a step of 1 or more, or leave it out"
            )
        if colon1 is None and start is None:
            raise NodeProblem("empty index", _span(meta), "write [i] for one child or [a:b] for a slice")
        if colon1 is None:
            sel = Sel("index", text, "", span, quoted=quoted, index=_int(start))
        else:
            sel = Sel("slice", text, "", span, quoted=quoted, start=_int(start), stop=_int(stop), step=_int(step))
        sel.source = _slice_source(str(base), sel, colon2 is not None)
        return sel

    def selectors(self, meta, children):
        include, exclude, target = [], [], None
        target = include
        for child in children:
            if isinstance(child, Token) and child.type == "EXCEPT":
                target = exclude
            elif child is not None:
                target.append(child)
        return Selectors(include, exclude, _span(meta))

    def stages(self, meta, children):
        return list(children)

    # statements
    def plain(self, meta, children):
        name, args = children
        return Plain(str(name), Span.of_token(name), _span(meta), args or [])

    def assign(self, meta, children):
        name, selectors = children
        return Assign(str(name), Span.of_token(name), _span(meta), selectors)

    def freeze(self, meta, children):
        keyword, selectors = children
        return Freeze("freeze", Span.of_token(keyword), _span(meta), selectors)

    def at_epoch(self, meta, children):
        at, _epoch, n, action, selectors, _warmup_kw, warmup = children
        return AtEpoch("at", Span.of_token(at), _span(meta), number(n), str(action), selectors, warmup)

    def gradually(self, meta, children):
        keyword, _g, stages, _from, _epoch, start, _every, every = children
        return Gradually(
            "unfreeze gradually", Span.of_token(keyword), _span(meta), stages, number(start), number(every)
        )

    def head(self, meta, children):
        keyword, value, _at, at = children
        return HeadStmt("head", Span.of_token(keyword), _span(meta), value, at)

    def block(self, meta, children):
        name, *statements, _rbrace = children
        return Block(str(name), Span.of_token(name), statements, _span(meta))


def _slice_source(base: str, sel: Sel, has_step: bool) -> str:
    if sel.kind == "index":
        return f"{base}[{sel.index}]"
    part = lambda n: "" if n is None else str(n)  # noqa: E731
    step = f":{part(sel.step)}" if has_step else ""
    return f"{base}[{part(sel.start)}:{part(sel.stop)}{step}]"


def to_document(tree, comments: list[Token]) -> Document:
    items = _ToNodes().transform(tree)
    return Document(items, [Comment(str(c), c.line, c.column) for c in comments])
