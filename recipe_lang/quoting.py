"""How a string is written in a recipe: the escapes a string literal may hold.

Apart from the parser, so that the typed recipe can print itself without it."""

from __future__ import annotations

ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def quote(text: str) -> str:
    """A recipe string literal for text."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
