"""`ftr suggest freeze RECIPE`: which blocks of the backbone to train, from their
relative gradient norms (rgn.py), written back as the recipe's freeze line.

The rule: a block trains when its RGN is at least `fraction` (default 0.5) of the
largest block's and every parameter of it has a rate in the recipe's `lr` (a
block whose group has none stays frozen: giving it one is the user's call); the
other blocks freeze, and so does whatever no block holds; the head always trains.
The recipe's `freeze`, `at epoch` and `unfreeze gradually` lines are replaced by
one `freeze all except head, ...` line (none when every block trains), the table
of measurements above it as comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import recipe_lang
from recipe_lang.formatter import statement_text
from recipe_lang.nodes import AtEpoch, Freeze, Gradually, Statement
from recipe_lang.quoting import quote
from recipe_lang.resolve import resolve

from .measuring import SuggestError, setup
from .recipe_edit import check_writable, replace_in_train, train_statements, write_recipe
from .rgn import Block, backbone_blocks, relative_gradient_norms

FRACTION = 0.5
BATCHES = 8
RESERVED = {"all", "head", "backbone", "rest"}
_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


@dataclass
class FreezeRequest:
    recipe: str
    output: str | None = None  # the recipe to write; None: the caller prints it
    batches: int = BATCHES  # at most; no more than an epoch has
    fraction: float = FRACTION
    device: str = "cpu"


@dataclass
class Row:
    block: Block
    rgn: float
    share: float  # of the largest block's RGN
    rated: bool  # every parameter has a rate
    trains: bool


@dataclass
class FreezeSuggestion:
    text: str  # the new recipe
    rows: list[Row]
    head: float  # the head's RGN
    line: str | None  # the freeze line written, None when everything trains
    replaced: list[str]  # the lines it replaces

    def summary(self, output: str | None) -> list[str]:
        table = ", ".join(f"{row.block.name} {row.share:.2f}" for row in self.rows)
        lines = [f"RGN of each block over the largest: {table}", self.line or "every block trains: no freeze line"]
        return lines + ([f"wrote {output}"] if output else [])


def suggest_freeze(request: FreezeRequest) -> FreezeSuggestion:
    """Raises RecipeError (the recipe) or SuggestError (the measurement)."""
    if not 0 < request.fraction <= 1:
        raise SuggestError(f"--fraction {request.fraction:g}: give a fraction of the largest RGN in (0, 1]")
    recipe = recipe_lang.load(request.recipe)
    plan = resolve(recipe)
    if request.output:
        check_writable(request.output, "-o")
    measured = setup(plan, request.device)
    head_path = plan.classifier.path
    blocks = backbone_blocks(measured.model, head_path)
    if not blocks:
        raise SuggestError(f"the model has no block outside its head ({head_path}) to measure")
    head = Block.of(measured.model.get_submodule(head_path), head_path)
    batches = min(request.batches, len(measured.loader))
    *norms, head_rgn = relative_gradient_norms(measured, blocks + [head], batches)
    largest = max(norms)
    if largest <= 0:
        raise SuggestError("no block of the backbone gets a gradient: check that the model's loss depends on it")
    rated = {p for group in plan.groups if group.lr is not None for p in group.params}
    rows = [_row(block, rgn, largest, rated, request.fraction) for block, rgn in zip(blocks, norms, strict=True)]
    line = _freeze_line(rows, {frozenset(group.params): group.name for group in plan.groups})
    replaced = _replaced(recipe)
    evidence = _evidence(rows, Row(head, head_rgn, 0.0, True, True), batches, request.fraction, replaced)
    text = replace_in_train(
        recipe.source, recipe.filename, _freezing, [line] if line else [], evidence, "freeze", _after_lr
    )
    resolve(recipe_lang.parse(text, recipe.filename))  # `ftr check` on what is written
    if request.output:
        write_recipe(request.output, text)
    return FreezeSuggestion(text, rows, head_rgn, line, replaced)


def _row(block: Block, rgn: float, largest: float, rated: set[str], fraction: float) -> Row:
    share = rgn / largest
    has_rate = all(p in rated for p in block.params)
    return Row(block, rgn, share, has_rate, has_rate and share >= fraction)


def _freeze_line(rows: list[Row], groups: dict[frozenset, str]) -> str | None:
    """`freeze all except head, ...` with the blocks that train, each by the name of the
    recipe's group that is exactly that block, else by its modules."""
    if all(row.trains for row in rows):
        return None
    names = set(groups.values())
    trained = []
    for row in rows:
        if row.trains:
            group = groups.get(frozenset(row.block.params))
            trained += [group] if group else [_selector(path, names) for path in row.block.modules]
    return "freeze all except " + ", ".join(["head", *trained])


def _selector(path: str, groups: set[str]) -> str:
    """A module path as a selector: bare where it cannot be read as a group or reserved name."""
    bare = _PATH.fullmatch(path) and ("." in path or path not in RESERVED | groups)
    return path if bare else quote(path)


def _freezing(statement: Statement) -> bool:
    return isinstance(statement, (Freeze, AtEpoch, Gradually))


def _after_lr(statement: Statement) -> bool:
    return statement.keyword == "lr"


def _replaced(recipe) -> list[str]:
    """The recipe's freeze lines, in canonical form."""
    return [statement_text(s) for s in train_statements(recipe.source, recipe.filename) if _freezing(s)]


def _evidence(rows: list[Row], head: Row, batches: int, fraction: float, replaced: list[str]) -> list[str]:
    head_name = f"{head.block.name} (head)"
    width = max(len(head_name), *(len(row.block.name) for row in rows))
    lines = [
        "the relative gradient norm |g|/|w| of each block of the backbone (Auto-RGN, Lee et al.,",
        f"ICLR 2023), everything trainable, the gradient of {batches} train batches; rule: train the",
        f"blocks at {fraction:g} of the largest or more, freeze the others; the head always trains",
        f"  {'block'.ljust(width)}  {'values':>10}  {'|g|/|w|':>8}  {'share':>5}",
    ]
    for row in rows:
        verdict = "train" if row.trains else "freeze" if row.rated else "freeze (its group has no rate)"
        lines.append(
            f"  {row.block.name.ljust(width)}  {row.block.numel:>10,}  {row.rgn:>8.2e}  {row.share:>5.2f}  {verdict}"
        )
    lines.append(f"  {head_name.ljust(width)}  {head.block.numel:>10,}  {head.rgn:>8.2e}  {'':>5}  train")
    lines.append(f"replaces: {'; '.join(replaced)}" if replaced else "the recipe froze nothing before")
    return lines
