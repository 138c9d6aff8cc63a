"""The keyword sets every highlighter of .ftr shares, taken from the language itself."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from ..build import BLOCKS, STATEMENTS, TOP_LEVEL
from ..checks import RESERVED_GROUPS

LITERALS = ("true", "false", "none")


@lru_cache(maxsize=1)
def grammar_keywords() -> tuple[str, ...]:
    """The words grammar.lark matches as their own terminals (`FREEZE: "freeze"`), literals excluded."""
    grammar = resources.files("recipe_lang").joinpath("grammar.lark").read_text(encoding="utf-8")
    words = re.findall(r'^[A-Z]+: "([a-z]+)"$', grammar, flags=re.MULTILINE)
    return tuple(sorted(set(words) - set(LITERALS)))


def statement_keywords() -> tuple[str, ...]:
    """Every word that can begin a statement: top-level ones and those of each block."""
    words = set(TOP_LEVEL)
    for table in STATEMENTS.values():
        words.update(keyword.split()[0] for keyword in table)
    words.add("at")  # `at epoch` lines are filed under no table key of their own
    return tuple(sorted(words))


def block_names() -> tuple[str, ...]:
    return tuple(BLOCKS)


def selector_names() -> tuple[str, ...]:
    """Names that mean a part of every model in selectors: `all`, `head`, `backbone`, `rest`."""
    return tuple(RESERVED_GROUPS)
