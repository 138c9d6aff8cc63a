"""The two passes of checking a document: syntax and model-free checks (fast,
no torch), then the model-aware check (torch, in the background)."""

from __future__ import annotations

import logging

from .. import parse
from ..diagnostics import Diagnostic, RecipeError
from ..recipe import Recipe

logger = logging.getLogger(__name__)


def syntax_check(text: str, filename: str) -> tuple[Recipe | None, list[Diagnostic]]:
    """The recipe (None where it has errors) and every diagnostic of parsing and checking it."""
    try:
        recipe = parse(text, filename)
    except RecipeError as error:
        return None, error.diagnostics
    return recipe, list(recipe.warnings)


def model_check(recipe: Recipe, outline=None) -> tuple[list[Diagnostic], object]:
    """Every diagnostic of resolving the recipe against its model, and the model's
    outline (the previous one where the model cannot be built).

    Neither the data nor a weights file is opened: an editor checks on every
    pause in typing, and `ftr check` tells about the files."""
    from ..resolve import resolve
    from .model_outline import build_outline, outline_key

    try:
        resolve(recipe, data=False, weights_file=False)
        diagnostics = list(recipe.warnings)
    except RecipeError as error:
        diagnostics = error.diagnostics
    if outline is None or outline.key != outline_key(recipe):
        outline = build_outline(recipe) or outline
    return diagnostics, outline
