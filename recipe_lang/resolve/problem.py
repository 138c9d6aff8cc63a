"""A mistake found while resolving, before the resolver knows where it points."""

from __future__ import annotations


class Problem(Exception):
    """Raised (or collected) by the model-aware checks; the resolver attaches
    the recipe position of the statement that caused it and turns it into a
    Diagnostic."""

    def __init__(self, message: str, hint: str | None = None, notes=(), severity: str = "error"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.notes = tuple(notes)
        self.severity = severity
