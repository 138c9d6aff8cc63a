"""The canonical layout of a recipe: what `ftr fmt` writes.

Blocks in a fixed order, two-space indentation, one statement a line, values
and selectors printed from the syntax tree (no trailing commas; a tuple of one
item as `(a,)`), and every comment kept next to the
code it was written beside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch
from itertools import groupby

from .nodes import (
    Assign,
    AtEpoch,
    Block,
    Call,
    Comment,
    Document,
    Freeze,
    Gradually,
    HeadStmt,
    Ident,
    Kwarg,
    ListV,
    Lit,
    Num,
    Plain,
    Selectors,
    Statement,
    Str,
    TupleV,
)
from .quoting import quote
from .syntax import parse_document

HEADER_ORDER = ("recipe", "seed", "output", "task")
BLOCK_ORDER = ("model", "teacher", "data", "groups", "train", "evaluate")
INDENT = "  "


def format_text(text: str, filename: str = "<recipe>") -> str:
    """Parse recipe text and return it in canonical form; RecipeError if it does not parse."""
    return format_document(parse_document(text, filename), text)


def format_document(doc: Document, source: str) -> str:
    """The canonical text of a parsed recipe; `source` is the text it was parsed from."""
    return _Layout(doc, source).text()


def canonical_order(items: list) -> list:
    """Top-level items in canonical order: header statements, then blocks (stable)."""
    statements = [item for item in items if not isinstance(item, Block)]
    blocks = [item for item in items if isinstance(item, Block)]
    return sorted(statements, key=lambda s: _rank(HEADER_ORDER, s.keyword)) + sorted(
        blocks, key=lambda b: _rank(BLOCK_ORDER, b.name)
    )


def _rank(order: tuple, name: str) -> int:
    return order.index(name) if name in order else len(order)


# --- values, selectors, statements ---------------------------------------------


@singledispatch
def value_text(value) -> str:
    raise TypeError(f"not a recipe value: {value!r}")


@value_text.register
def _(value: Num) -> str:
    return value.text


@value_text.register
def _(value: Str) -> str:
    return quote(value.value)


@value_text.register
def _(value: Lit) -> str:
    return value.text


@value_text.register
def _(value: Ident) -> str:
    return value.name


@value_text.register
def _(value: Kwarg) -> str:
    return f"{value.name}={value_text(value.value)}"


@value_text.register
def _(value: Call) -> str:
    return f"{value.name}({_joined(value.args)})"


@value_text.register
def _(value: ListV) -> str:
    return f"[{_joined(value.items)}]"


@value_text.register
def _(value: TupleV) -> str:
    return f"({_joined(value.items)},)" if len(value.items) == 1 else f"({_joined(value.items)})"


def _joined(values: list) -> str:
    return ", ".join(value_text(v) for v in values)


def selectors_text(selectors: Selectors) -> str:
    text = ", ".join(s.source for s in selectors.include)
    if selectors.exclude:
        text += " except " + ", ".join(s.source for s in selectors.exclude)
    return text


@singledispatch
def statement_text(stmt: Statement, width: int = 0) -> str:
    raise TypeError(f"not a recipe statement: {stmt!r}")


@statement_text.register
def _(stmt: Plain, width: int = 0) -> str:
    return f"{stmt.keyword} {_joined(stmt.args)}" if stmt.args else stmt.keyword


@statement_text.register
def _(stmt: Assign, width: int = 0) -> str:
    return f"{stmt.keyword.ljust(width)} = {selectors_text(stmt.selectors)}"


@statement_text.register
def _(stmt: Freeze, width: int = 0) -> str:
    return f"freeze {selectors_text(stmt.selectors)}"


@statement_text.register
def _(stmt: AtEpoch, width: int = 0) -> str:
    text = f"at epoch {stmt.epoch.text} {stmt.action} {selectors_text(stmt.selectors)}"
    return text if stmt.warmup is None else f"{text} warmup={value_text(stmt.warmup)}"


@statement_text.register
def _(stmt: Gradually, width: int = 0) -> str:
    stages = ", ".join(s.source for s in stmt.stages)
    return f"unfreeze gradually {stages} from epoch {stmt.start.text} every {stmt.every.text}"


@statement_text.register
def _(stmt: HeadStmt, width: int = 0) -> str:
    text = f"head {value_text(stmt.value)}"
    return text if stmt.at is None else f"{text} at {value_text(stmt.at)}"


# --- where each comment goes -----------------------------------------------------


@dataclass
class _Notes:
    """The comments that belong to one node (a statement, block or the document)."""

    before: list[Comment] = field(default_factory=list)  # full-line comments above it
    inner: list[Comment] = field(default_factory=list)  # inside a statement that gets joined
    trailing: Comment | None = None  # after its (last or opening) line
    closing: Comment | None = None  # after a block's "}"
    end: list[Comment] = field(default_factory=list)  # after a block's or the file's last item


def _place_comments(doc: Document) -> dict[int, _Notes]:
    notes: dict[int, _Notes] = {}
    for comment in sorted(doc.comments, key=lambda c: (c.line, c.column)):
        _place(comment, doc.items, doc, notes)
    return notes


def _notes(notes: dict, node) -> _Notes:
    return notes.setdefault(id(node), _Notes())


def _place(comment: Comment, children: list, owner, notes: dict) -> None:
    for child in children:
        if child.span.line <= comment.line <= child.span.end_line:
            if isinstance(child, Block):
                return _place_in_block(comment, child, notes)
            return _place_on_statement(comment, child, notes)
    following = next((c for c in children if c.span.line > comment.line), None)
    if following is not None:
        _notes(notes, following).before.append(comment)
    else:
        _notes(notes, owner).end.append(comment)


def _place_in_block(comment: Comment, block: Block, notes: dict) -> None:
    on_statement = any(s.span.line <= comment.line <= s.span.end_line for s in block.statements)
    if comment.line == block.span.end_line:
        _notes(notes, block).closing = comment
    elif comment.line == block.span.line and not on_statement:
        _notes(notes, block).trailing = comment
    else:
        _place(comment, block.statements, block, notes)


def _place_on_statement(comment: Comment, stmt: Statement, notes: dict) -> None:
    if comment.line == stmt.span.end_line:
        _notes(notes, stmt).trailing = comment
    else:
        _notes(notes, stmt).inner.append(comment)


# --- layout ----------------------------------------------------------------------


@dataclass
class _Line:
    code: str  # with its indentation; a full-line comment is code here
    comment: str = ""  # a trailing comment

    @property
    def indent(self) -> int:
        return len(self.code) - len(self.code.lstrip(" "))


_BLANK = _Line("")


def _comment_text(comment: Comment | None) -> str:
    return comment.text.rstrip() if comment else ""


class _Layout:
    def __init__(self, doc: Document, source: str):
        self.doc = doc
        self.blank = {n for n, line in enumerate(source.split("\n"), 1) if not line.strip()}
        self.notes = _place_comments(doc)
        self.first = doc.items[0] if doc.items else None  # its comments above go to the very top

    def notes_of(self, node) -> _Notes:
        return self.notes.get(id(node)) or _Notes()

    def gap(self, last: int | None, first: int) -> list[_Line]:
        """A blank line if the source had one between line `last` and line `first`."""
        if last is None or not any(n in self.blank for n in range(last + 1, first)):
            return []
        return [_BLANK]

    def text(self) -> str:
        return _render(self.lines())

    def lines(self) -> list[_Line]:
        items = canonical_order(self.doc.items)
        header = [line for s in items if not isinstance(s, Block) for line in self.header_statement(s)]
        sections = [header] + [self.block(b) for b in items if isinstance(b, Block)]
        sections.append(self.comments(self.notes_of(self.doc).end, ""))
        sections = [s for s in sections if s]
        if sections and self.first is not None:
            sections[0] = self.comments(self.notes_of(self.first).before, "") + sections[0]
        return [line for i, s in enumerate(sections) for line in ([_BLANK] if i else []) + s]

    def comments(self, comments: list[Comment], indent: str) -> list[_Line]:
        """Full-line comments, keeping one blank line where they had some between them."""
        out, last = [], None
        for comment in comments:
            out += self.gap(last, comment.line) + [_Line(indent + _comment_text(comment))]
            last = comment.line
        return out

    def above(self, node) -> list[_Line]:
        """The comments above a top-level item."""
        return [] if node is self.first else self.comments(self.notes_of(node).before, "")

    def statement(self, stmt: Statement, indent: str, width: int = 0) -> list[_Line]:
        """A statement's line, after the comments that were inside it."""
        notes = self.notes_of(stmt)
        inner = [_Line(indent + _comment_text(c)) for c in notes.inner]
        return inner + [_Line(indent + statement_text(stmt, width), _comment_text(notes.trailing))]

    def header_statement(self, stmt: Statement) -> list[_Line]:
        return self.above(stmt) + self.statement(stmt, "")

    def block(self, block: Block) -> list[_Line]:
        notes = self.notes_of(block)
        opening = _Line(f"{block.name} {{", _comment_text(notes.trailing))
        closing = _Line("}", _comment_text(notes.closing))
        return self.above(block) + [opening] + self.body(block) + [closing]

    def body(self, block: Block) -> list[_Line]:
        width = max((len(s.keyword) for s in block.statements if isinstance(s, Assign)), default=0)
        out, last = [], None
        for stmt in block.statements:
            before = self.notes_of(stmt).before
            out += self.indented_comments(last, before)
            last = before[-1].line if before else last
            out += self.gap(last, stmt.span.line) + self.statement(stmt, INDENT, width)
            last = stmt.span.end_line
        return out + self.indented_comments(last, self.notes_of(block).end)

    def indented_comments(self, last: int | None, comments: list[Comment]) -> list[_Line]:
        """Full-line comments in a block, after a blank line if the source had one since line `last`."""
        if not comments:
            return []
        return self.gap(last, comments[0].line) + self.comments(comments, INDENT)


def _render(lines: list[_Line]) -> str:
    """Join lines, aligning the trailing comments of each run of consecutive lines
    that have one and share an indentation."""
    out = []
    for key, run in groupby(lines, key=lambda line: line.indent if line.comment else None):
        run = list(run)
        column = max(len(line.code) for line in run) + 2
        out += [(line.code.ljust(column) + line.comment) if key is not None else line.code for line in run]
    return "".join(line + "\n" for line in out)
