"""Calls in generated code, laid out the way `ruff format` leaves them.

A `Call` is a function name chosen by the compiler (never recipe text), with
arguments that are plain values (rendered by `literals.py`), fixed `Code`, or
other calls. It renders on one line when that line fits, and otherwise one
argument per line with a trailing comma, which ruff keeps as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .literals import py

WIDTH = 88  # ruff's default line length: the script is formatted for any project


class CompileError(Exception):
    """A plan the compiler cannot write down faithfully (a bug, never a recipe mistake)."""


@dataclass(frozen=True)
class Code:
    """A piece of code written by the compiler, e.g. `InterpolationMode.BICUBIC`."""

    text: str


class Call:
    def __init__(self, func: str, *args, **kwargs):
        self.func = func
        self.args = args
        self.kwargs = dict(kwargs)

    def render(self, prefix: int = 0, suffix: int = 0, indent: int = 0) -> str:
        inline = self._inline()
        if prefix + len(inline) + suffix <= WIDTH or not (self.args or self.kwargs):
            return inline
        inner = indent + 4
        lines = [f"{self.func}("]
        for name, value in self._arguments():
            label = f"{name}=" if name else ""
            lines.append(" " * inner + label + _value(value, inner + len(label), 1, inner) + ",")
        lines.append(" " * indent + ")")
        return "\n".join(lines)

    def _arguments(self):
        return [(None, a) for a in self.args] + list(self.kwargs.items())

    def _inline(self) -> str:
        parts = [(f"{k}=" if k else "") + _value(v, 0, 0, 0, inline=True) for k, v in self._arguments()]
        return f"{self.func}({', '.join(parts)})"

    def __str__(self) -> str:
        return self._inline()


def _value(value, prefix: int, suffix: int, indent: int, inline: bool = False) -> str:
    if isinstance(value, Code):
        return value.text
    if isinstance(value, Call):
        return value._inline() if inline else value.render(prefix, suffix, indent)
    if inline:
        return py(value, width=10**6)
    return py(value, prefix=prefix, suffix=suffix, indent=indent, width=WIDTH)


def render(value, prefix: int = 0, suffix: int = 0, indent: int = 0) -> str:
    """A Call, Code or plain value as code starting at column `prefix`, followed by `suffix` characters."""
    return _value(value, prefix, suffix, indent)
