"""The committed stand-alone parser is the one grammar.lark makes."""

from lark import Lark

from recipe_lang.parser_gen import GRAMMAR, OPTIONS, TARGET, grammar_digest
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


def _terminal(terminal) -> tuple:
    return terminal.name, repr(terminal.pattern)


def _rule(rule) -> tuple:
    names = tuple(str(symbol.name) for symbol in rule.expansion)
    return str(rule.origin.name), names, rule.alias and str(rule.alias), repr(rule.options)
