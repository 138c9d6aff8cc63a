"""A Pygments lexer for .ftr recipes (`pygmentize -l ftr`), registered as a `pygments.lexers` entry point.

Its keywords come from the language's own tables, so it cannot fall behind them. Error tokens mark what the
recipe parser refuses as text: a character no token starts with, an unterminated string, an invalid escape.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, default, include
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from .keywords import LITERALS, block_names, grammar_keywords, selector_names, statement_keywords

_END = r"(?![A-Za-z0-9_])"
_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = _ID + r"(?:\.[A-Za-z0-9_]+)+"
_EXPONENT = r"[eE][+-]?[0-9]+"
_FLOAT = rf"[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:{_EXPONENT})?|[0-9]+{_EXPONENT})"
_BLANK = r"[ \t\f]"


def _words(*names: str) -> str:
    return "(?:" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + ")" + _END


# keywords of `at epoch` lines, `freeze`, `unfreeze gradually` and selector lists; `warmup` only before `=`
_SELECTOR_KEYWORDS = tuple(sorted(set(grammar_keywords()) - {"at", "head", "warmup"}))


class FtrLexer(RegexLexer):
    """Recipes of the ftr fine-tuning language."""

    name = "ftr"
    aliases = ["ftr"]
    filenames = ["*.ftr"]
    mimetypes = ["text/x-ftr"]

    tokens = {
        # the start of a statement, or between statements
        "root": [
            (rf"{_BLANK}+|\r?\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r"[{}]", Punctuation),
            (rf"({_words(*block_names())})({_BLANK}*)(\{{)", bygroups(Keyword.Namespace, Whitespace, Punctuation)),
            (rf"({_ID})({_BLANK}*)(\{{)", bygroups(Name, Whitespace, Punctuation)),
            (_words("at", "freeze", "unfreeze"), Keyword, "selectors"),
            (rf"({_ID})({_BLANK}*)(=)", bygroups(Name.Variable, Whitespace, Operator), "selectors"),
            (_words("head"), Keyword, "head"),
            (_words(*statement_keywords()), Keyword, "args"),
            (rf"{_PATH}|{_ID}", Name, "args"),
            default("args"),
        ],
        # the rest of a statement: it ends at a newline or a `}`
        "args": [
            include("statement"),
            include("value"),
        ],
        "head": [
            (_words("at"), Keyword),
            include("args"),
        ],
        "selectors": [
            include("statement"),
            (_words(*_SELECTOR_KEYWORDS), Keyword),
            (rf"(warmup)({_BLANK}*)(=)", bygroups(Keyword, Whitespace, Operator)),
            (_PATH, Name.Namespace),  # `backbone.body` is a module path, not the selector `backbone`
            (_words(*selector_names()), Name.Builtin),
            include("value"),
        ],
        "statement": [
            (rf"{_BLANK}+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r"\r?\n", Whitespace, "#pop"),
            (r"\}", Punctuation, "#pop"),
            (r",", Punctuation, "continued"),
        ],
        # after a comma, newlines and comments do not end the statement
        "continued": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            default("#pop"),
        ],
        # inside ( ) or [ ]: newlines do not end the statement
        "brackets": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r"[)\]]", Punctuation, "#pop"),
            (r"[,{}]", Punctuation),
            include("value"),
        ],
        "value": [
            (r'"(?=(?:[^"\\\n]|\\[^\n])*")', String.Double, "string"),
            (r'"[^\n]*', Error),
            (_words(*LITERALS), Keyword.Constant),
            (rf"({_ID})({_BLANK}*)(\()", bygroups(Name.Function, Whitespace, Punctuation), "brackets"),
            (rf"({_ID})({_BLANK}*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (_PATH, Name.Namespace),
            (_ID, Name),
            (_FLOAT, Number.Float),
            (r"[+-]?[0-9]+", Number.Integer),
            (r"[(\[]", Punctuation, "brackets"),
            (r"[:{)\]]", Punctuation),  # a stray closing bracket is the parser's error, not the lexer's
            (r"=", Operator),
        ],
        "string": [
            (r'\\["\\nt]', String.Escape),
            (r"\\[^\n]", Error),
            (r'[^"\\\n]+', String.Double),
            (r'"', String.Double, "#pop"),
        ],
    }
