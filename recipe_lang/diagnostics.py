"""Diagnostics: where a mistake is, what it is, and how it is printed.

Every error a user can cause in a recipe becomes a `Diagnostic`; a failed
parse, check or resolve raises one `RecipeError` that carries all of them,
sorted by position.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Span:
    """A region of the source: 1-based line and column, end column exclusive.
    `origin` is (name, text) for a span in another text than the recipe's own
    (a `--set` override)."""

    line: int
    column: int
    end_line: int
    end_column: int
    origin: tuple[str, str] | None = field(default=None, compare=False)

    @classmethod
    def of_token(cls, token) -> Span:
        return cls(token.line, token.column, token.end_line, token.end_column)

    @classmethod
    def of_meta(cls, meta) -> Span:
        return cls(meta.line, meta.column, meta.end_line, meta.end_column)


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    severity: str = "error"
    hint: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def sort_key(self):
        """Source order; a diagnostic without a position after all that have one."""
        return (self.span is None, self.span or Span(0, 0, 0, 0), self.message)

    def render(self, source: str, filename: str, lines: list[str] | None = None) -> str:
        if self.span is None:
            head = f"{filename}: {self.severity}: {self.message}"
            lines = [head] + [f"  = {note}" for note in self.notes]
            if self.hint:
                lines.append(f"  = help: {self.hint}")
            return "\n".join(lines)
        if self.span.origin is not None:
            filename, source = self.span.origin
            lines = None
        return _render_with_source(self, lines if lines is not None else source_lines(source), filename)


def source_lines(source: str) -> list[str]:
    """The lines of a recipe as the parser counts them: split at "\n" only."""
    return [line.removesuffix("\r") for line in source.split("\n")]


def _render_with_source(diag: Diagnostic, text_lines: list[str], filename: str) -> str:
    span = diag.span
    line_text = text_lines[span.line - 1] if 0 < span.line <= len(text_lines) else ""
    line_text = line_text.expandtabs(1)
    gutter = " " * len(str(span.line))
    start = max(span.column, 1)
    if span.end_line == span.line:
        end = max(span.end_column, start + 1)
    else:
        end = max(len(line_text) + 1, start + 1)
    carets = " " * (start - 1) + "^" * (end - start)
    caret_line = f"{gutter} | {carets}"
    if diag.hint:
        caret_line += f" {diag.hint}"
    out = [
        f"{filename}:{span.line}:{span.column}: {diag.severity}: {diag.message}",
        f"{gutter} |",
        f"{span.line} | {line_text}".rstrip(),
        caret_line,
    ]
    out += [f"{gutter} = {note}" for note in diag.notes]
    return "\n".join(out)


MAX_SHOWN = 50


class RecipeError(Exception):
    """A recipe that cannot be used, with every diagnostic found in it."""

    def __init__(self, diagnostics, source: str = "", filename: str = "<recipe>"):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.source = source
        self.filename = filename
        super().__init__(f"{len(self.errors)} error(s) in {filename}")

    def __str__(self) -> str:
        return self.render()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def render(self) -> str:
        """Every diagnostic as design.md prints it (the first MAX_SHOWN of them)."""
        lines = source_lines(self.source)
        shown = [d.render(self.source, self.filename, lines) for d in self.diagnostics[:MAX_SHOWN]]
        if len(self.diagnostics) > MAX_SHOWN:
            shown.append(f"{self.filename}: ... and {len(self.diagnostics) - MAX_SHOWN} more")
        return "\n\n".join(shown)


class UsageError(RecipeError):
    """A mistake on the command line rather than in the recipe (a malformed or
    unknown --set): the command exits 2."""


def did_you_mean(word: str, choices) -> str | None:
    """'did you mean ...?' for the closest of choices, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def one_of(choices) -> str:
    """A readable list: 'a', 'b' or 'c'."""
    quoted = [f"'{c}'" for c in choices]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
