"""The .ftr recipe language: parse, validate, format, resolve."""

from __future__ import annotations

from pathlib import Path

from .build import build
from .checks import check_recipe
from .diagnostics import Diagnostic, RecipeError, Span
from .overrides import apply_overrides
from .recipe import Recipe
from .syntax import parse_document

__all__ = ["Diagnostic", "Recipe", "RecipeError", "Span", "load", "parse"]
__version__ = "0.1.0"


def parse(text: str, filename: str = "<recipe>", overrides=()) -> Recipe:
    """Parse and validate recipe text (no model needed); raise RecipeError with
    every mistake. `overrides` are `key=value` strings, as `--set` takes them."""
    document = parse_document(text, filename)
    if overrides:
        document = apply_overrides(document, list(overrides))
    recipe = build(document, text, filename)
    check_recipe(recipe)
    return recipe


def read_source(path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise RecipeError([Diagnostic(f"cannot read recipe: {reason}")], "", str(path)) from None


def load(path, overrides=()) -> Recipe:
    """Read and parse a recipe file."""
    return parse(read_source(path), str(path), overrides)
