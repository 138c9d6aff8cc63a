"""The committed stand-alone parser is the one grammar.lark makes."""

from lark import Lark

from recipe_lang.parser_gen import GRAMMAR, OPTIONS, TARGET, generate, grammar_digest
from recipe_lang.syntax import _parser

REGENERATE = "grammar.lark changed: run python -m recipe_lang.parser_gen"


def test_generated_parser_is_of_the_current_grammar():
    recorded = TARGET.read_text(encoding="utf-8").splitlines()[1]
    assert recorded == f"# grammar sha256 {grammar_digest(GRAMMAR.read_text(encoding='utf-8'))}", REGENERATE


def test_generated_parser_has_the_grammars_terminals_and_rules():
    fresh = Lark(GRAMMAR.read_text(encoding="utf-8"), **OPTIONS)
    generated = _parser()[0]
    assert set(map(_terminal, generated.terminals)) == set(map(_terminal, fresh.terminals))
    assert set(map(_rule, generated.rules)) == set(map(_rule, fresh.rules))


def test_generated_code_is_what_parser_gen_writes_now():
    """Lark's stand-alone code with parser_gen's replacements (no regex, logging or pickle
    import), line for line: no hand edit. The parse tables are left out of the comparison:
    Lark orders their sets differently in every process; the test above compares them."""
    assert _code(TARGET.read_text(encoding="utf-8")) == _code(generate()), REGENERATE


def _code(text: str) -> list[str]:
    """The lines of a generated parser, without its DATA and MEMO literals."""
    lines = text.splitlines()
    return [line for before, line in zip(["", *lines], lines, strict=False) if before not in ("DATA = (", "MEMO = (")]


def _terminal(terminal) -> tuple:
    return terminal.name, repr(terminal.pattern)


def _rule(rule) -> tuple:
    names = tuple(str(symbol.name) for symbol in rule.expansion)
    return str(rule.origin.name), names, rule.alias and str(rule.alias), repr(rule.options)
