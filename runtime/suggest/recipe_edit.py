"""A recipe written back with some statements of its `train` block replaced, every
other line and comment kept.

The recipe is first put in canonical form (`ftr fmt`: one statement a line), the
chosen statements' lines are replaced by new ones with the evidence as comments
above them, and the result is formatted again and parsed, so that what is written
is `ftr fmt`-clean and valid. On a recipe that was `ftr fmt`-clean already, only
the replaced lines and their evidence differ.

Evidence lines start with `# suggest <what>:`; a second suggestion of the same
kind replaces them instead of adding more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import recipe_lang
from recipe_lang.files import atomic_write_text
from recipe_lang.formatter import INDENT, format_text
from recipe_lang.nodes import Block, Document, Statement
from recipe_lang.syntax import parse_document

from .measuring import SuggestError


def evidence_mark(what: str) -> str:
    return f"# suggest {what}:"


def replace_in_train(
    source: str,
    filename: str,
    chosen: Callable[[Statement], bool],
    new: list[str],
    evidence: list[str],
    what: str,
    after: Callable[[Statement], bool] | None = None,
) -> str:
    """The recipe with the `train` statements `chosen` selects replaced by the lines `new`
    (statement texts), `evidence` as comments above them.

    Where none is chosen, the new lines go after the last statement `after` selects,
    else at the end of the block. A trailing comment of a replaced statement is kept:
    on the new line when one line replaces one, else as a comment above the new lines."""
    text = format_text(source, filename)
    document = parse_document(text, filename)
    block = _train(document, filename)
    lines = text.split("\n")
    hits = [s for s in block.statements if chosen(s)]
    dropped = {n for s in hits for n in range(s.span.line, s.span.end_line + 1)}
    kept = [c.text.rstrip() for c in document.comments if c.line in dropped]
    dropped |= _old_evidence(document, block, lines, evidence_mark(what))
    mark = evidence_mark(what)
    body = [f"{INDENT}{mark} {line}".rstrip() for line in evidence]
    if len(hits) == len(new) == len(kept) == 1:
        body.append(f"{INDENT}{new[0]}  {kept[0]}")
    else:
        body += [INDENT + comment for comment in kept] + [INDENT + line for line in new]
    at = _insertion_line(block, hits, after)
    out = []
    for number, line in enumerate(lines, 1):
        if number == at:
            out += body
        if number not in dropped:
            out.append(line)
    result = format_text("\n".join(out), filename)
    recipe_lang.parse(result, filename)  # raises RecipeError if the edit broke the recipe
    return result


def train_statements(source: str, filename: str) -> list[Statement]:
    """The statements of the recipe's `train` block, as its source writes them."""
    return _train(parse_document(source, filename), filename).statements


def write_recipe(path, text: str) -> None:
    atomic_write_text(path, text)


def check_writable(path, option: str) -> None:
    """Refuse an output whose folder cannot take it, before any time is spent measuring."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise SuggestError(f"{option} {path}: there is no folder '{folder}': create it, or write elsewhere")
    if not os.access(folder, os.W_OK):
        raise SuggestError(f"{option} {path}: the folder '{folder}' is not writable: write elsewhere")


def _train(document: Document, filename: str) -> Block:
    for item in document.items:
        if isinstance(item, Block) and item.name == "train":
            return item
    raise ValueError(f"{filename} has no train block")  # load() refuses such a recipe first


def _old_evidence(document: Document, block: Block, lines: list[str], mark: str) -> set[int]:
    """The lines of the block that hold nothing but an earlier suggestion's evidence."""
    inside = range(block.span.line + 1, block.span.end_line)
    return {
        c.line
        for c in document.comments
        if c.line in inside and c.text.startswith(mark) and lines[c.line - 1].strip() == c.text.strip()
    }


def _insertion_line(block: Block, hits: list[Statement], after) -> int:
    """The line before which the new lines go."""
    if hits:
        return hits[0].span.line
    anchors = [s for s in block.statements if after is not None and after(s)]
    return anchors[-1].span.end_line + 1 if anchors else block.span.end_line
