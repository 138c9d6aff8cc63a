"""Positions between ftr and LSP.

ftr counts 1-based lines and 1-based columns in code points, with lines split at
"\\n" only; LSP counts 0-based lines and 0-based columns in code units of the
negotiated encoding: UTF-16 unless the client offers another. In UTF-16 a
character outside the Basic Multilingual Plane (most emoji) is two units; in
UTF-8 anything outside ASCII is two to four.
"""

from __future__ import annotations

from ..diagnostics import Span, source_lines

UTF16, UTF8, UTF32 = "utf-16", "utf-8", "utf-32"


def char_units(char: str, encoding: str = UTF16) -> int:
    if encoding == UTF8:
        return len(char.encode("utf-8"))
    if encoding == UTF32:
        return 1
    return 2 if ord(char) > 0xFFFF else 1


def units(text: str, encoding: str = UTF16) -> int:
    """The length of text in code units."""
    if encoding == UTF32:
        return len(text)
    return sum(char_units(char, encoding) for char in text)


def to_units(line_text: str, column: int, encoding: str = UTF16) -> int:
    """The code unit offset of a 0-based code point column (clamped to the line)."""
    return units(line_text[: max(column, 0)], encoding)


def from_units(line_text: str, character: int, encoding: str = UTF16) -> int:
    """The 0-based code point column of a code unit offset (clamped to the line; an
    offset inside a character's units means that character)."""
    count = 0
    for column, char in enumerate(line_text):
        count += char_units(char, encoding)
        if count > character:
            return column
    return len(line_text)


Point = tuple[int, int]  # 0-based line, code unit character


def span_to_range(span: Span | None, lines: list[str], encoding: str = UTF16) -> tuple[Point, Point]:
    """An ftr span as LSP's (start, end). A diagnostic without a position (or in
    another text, such as an override) marks the first line."""
    if span is None or span.origin is not None or span.line < 1:
        first = lines[0] if lines else ""
        return (0, 0), (0, units(first, encoding))
    start = _point(lines, span.line, span.column, encoding)
    end = _point(lines, span.end_line, span.end_column, encoding)
    return start, max(start, end)


def _point(lines: list[str], line: int, column: int, encoding: str) -> Point:
    if line > len(lines):
        return len(lines) - 1, units(lines[-1], encoding)
    return line - 1, to_units(lines[line - 1], column - 1, encoding)


def offset_of(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """The code point offset in text of an LSP position."""
    raw = text.split("\n")
    line = min(max(line, 0), len(raw) - 1)
    start = sum(len(previous) + 1 for previous in raw[:line])
    return start + from_units(source_lines(text)[line], character, encoding)


def point_of(text: str, offset: int, encoding: str = UTF16) -> Point:
    """The LSP position of a code point offset in text."""
    before = text[:offset]
    line = before.count("\n")
    return line, units(before[before.rfind("\n") + 1 :], encoding)


def whole_text_range(text: str, encoding: str = UTF16) -> tuple[Point, Point]:
    return (0, 0), point_of(text, len(text), encoding)
