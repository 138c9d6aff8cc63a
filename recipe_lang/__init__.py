"""The .ftr recipe language: parse, validate, format, resolve.

Importing the package is cheap: the parser (Lark) and the typed recipe
(Pydantic) are imported by the first call that needs them, so `ftr fmt` never
loads Pydantic and no command loads either before it knows what it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .diagnostics import Diagnostic, RecipeError, Span

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = ["Diagnostic", "Recipe", "RecipeError", "Span", "load", "parse"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Recipe":
        from .recipe import Recipe

        return Recipe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse(text: str, filename: str = "<recipe>", overrides=()) -> Recipe:
    """Parse and validate recipe text (no model needed); raise RecipeError with
    every mistake. `overrides` are `key=value` strings, as `--set` takes them."""
    from .syntax import parse_document

    document = parse_document(text, filename)  # a syntax error is reported before Pydantic is loaded
    from .build import build
    from .checks import check_recipe
    from .overrides import apply_overrides

    if overrides:
        document = apply_overrides(document, list(overrides))
    recipe = build(document, text, filename)
    check_recipe(recipe)
    return recipe


def read_source(path) -> str:
    """A recipe file's text; never reads more than the parser would accept."""
    from .syntax import MAX_BYTES

    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
        return data[: MAX_BYTES + 1].decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as error:
        message = f"recipe is not UTF-8 text (byte {error.start})"
        raise RecipeError([Diagnostic(message, hint="save it as UTF-8")], "", str(path)) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise RecipeError([Diagnostic(f"cannot read recipe: {reason}")], "", str(path)) from None


def load(path, overrides=()) -> Recipe:
    """Read and parse a recipe file."""
    return parse(read_source(path), str(path), overrides)
