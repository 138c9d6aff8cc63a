"""The README and docs/language.md name only commands and flags that exist.

Three rules, over every code span and code block of the two pages:
- a command written out (`ftr run --nproc 2 r.ftr`) is an `ftr` command, and every
  flag in it is one of that command's;
- in a table row that starts with a command (`ftr run FILE` | ... `--resume` ...),
  every flag in the row is one of that command's;
- any other flag in backticks belongs to some `ftr` command, to the compiled script
  (the flags of its argument parser in templates/), to a tool named in FOREIGN, or
  to the program whose command line the span is (`python bench/x.py --runs 5`).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from recipe_lang.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "docs" / "language.md"]
SCRIPT_TEMPLATE = ROOT / "templates" / "_run.py.jinja"

# flags the pages mention that belong to other programs
FOREIGN = {
    "--nproc_per_node": "torchrun",
    "--standalone": "torchrun",
    "--index-url": "pip",
    "--logdir": "tensorboard",
}
# a span that starts with another program's command line: its flags are that program's
OTHER_PROGRAM = re.compile(r"\s*(python (-m \S+|\S+\.py)|ruff|pytest|pip|git|make|bash|npm|npx)\b")

FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """A command's flags, with those of its own subcommands (`suggest freeze --fraction`)."""
    nested = [_all_flags(sub) for sub in _subcommands(parser).values()]
    return set(parser._option_string_actions).union(*nested)


def _commands() -> dict[str, set[str]]:
    return {name: _all_flags(sub) for name, sub in _subcommands(_parser()).items()}


COMMANDS = _commands()
SCRIPT_FLAGS = set(re.findall(r'add_argument\("(--[\w-]+)"', SCRIPT_TEMPLATE.read_text(encoding="utf-8")))


def _spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return inline + [line for block in blocks for line in block.splitlines()]


def _invocations(span: str) -> list[list[str]]:
    """Each `ftr ...` command in a span (several when joined by && or |)."""
    found = []
    for part in re.split(r"&&|\||;", span):
        try:
            words = shlex.split(part.strip())
        except ValueError:
            continue
        # a bare `ftr` is the name of the program; `ftr predict: ...` a line it printed
        if words[:1] == ["ftr"] and len(words) > 1 and not words[1].endswith(":"):
            found.append(words[1:])
    return found


def _flags(words) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("-") and FLAG.fullmatch(w.split("=")[0])]


def _cases():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for span in _spans(text):
            for words in _invocations(span):
                yield pytest.param(page.name, words, id=f"{page.name}:{' '.join(words)[:40]}")


@pytest.mark.parametrize("page, words", list(_cases()))
def test_every_command_written_out_exists_with_its_flags(page, words):
    command = words[0]
    if command.startswith("-"):
        assert command in ("--version", "-h", "--help"), f"{page}: ftr {command}"
        return
    assert command in COMMANDS, f"{page}: 'ftr {command}' is not a command ({', '.join(COMMANDS)})"
    unknown = [flag for flag in _flags(words[1:]) if flag not in COMMANDS[command]]
    assert not unknown, f"{page}: ftr {command} has no {unknown}"


def _command_rows():
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            first = line.strip().strip("|").split("|")[0].strip() if line.startswith("|") else ""
            match = re.fullmatch(r"`ftr (\w+)[^`]*`", first)
            if match:
                yield pytest.param(page.name, match.group(1), line, id=f"{page.name}:{match.group(1)}")


@pytest.mark.parametrize("page, command, row", list(_command_rows()))
def test_every_flag_in_a_command_row_is_that_commands(page, command, row):
    assert command in COMMANDS, f"{page}: 'ftr {command}' is not a command"
    flags = {flag for span in re.findall(r"`([^`]+)`", row) for flag in FLAG.findall(span) if flag.startswith("--")}
    unknown = sorted(flags - COMMANDS[command])
    assert not unknown, f"{page}: ftr {command} has no {unknown}"


def test_every_flag_mentioned_belongs_to_something():
    known = set().union(*COMMANDS.values()) | SCRIPT_FLAGS | set(FOREIGN)
    unknown = set()
    for page in PAGES:
        for span in _spans(page.read_text(encoding="utf-8")):
            if OTHER_PROGRAM.match(span):
                continue
            unknown |= {(page.name, f) for f in FLAG.findall(span) if f.startswith("--") and f not in known}
    assert not unknown, sorted(unknown)


def test_the_rules_see_the_pages():
    """The three rules find what they check: the command table, and commands written out."""
    rows = {case.values[1] for case in _command_rows()}
    assert {"check", "plan", "fmt", "run", "compile", "compare", "schema"} <= rows
    assert sum(1 for _ in _cases()) >= 20
    assert {"--root", "--train", "--val", "--epochs"} <= SCRIPT_FLAGS
    assert {"--fraction", "--batches"} <= COMMANDS["suggest"]
