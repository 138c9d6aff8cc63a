"""Text to syntax tree: the Lark parser, its post-lexer, and syntax errors in words."""

from __future__ import annotations

import math
import re
from collections import deque
from functools import lru_cache

from .diagnostics import Diagnostic, RecipeError, Span, did_you_mean, source_lines
from .generated_parser import (
    Lark,
    Lark_StandAlone,
    Token,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from .nodes import Document, NodeProblem, to_document

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_SYNTAX_ERRORS = 20

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}
_SWALLOW_NEWLINE_AFTER = {None, "_NL", "COMMA", "LBRACE"}


class _TooDeep(Exception):
    def __init__(self, token: Token):
        self.token = token


class _Newlines:
    """Statements end at a newline, except inside ( ) or [ ], after a comma or
    an opening brace; a closing brace and the end of the file end one too."""

    always_accept = ("_NL", "RBRACE")

    def __init__(self):
        self.open: list[Token] = []  # brackets open at the last token read
        self.continued: Token | None = None  # the comma that ends a line of the statement being read
        self.recent: deque[Token] = deque(maxlen=3)  # the last tokens read, the newest last

    def process(self, stream):
        self.open, self.continued = [], None
        self.recent.clear()
        prev, last = None, None
        for token in stream:
            if token.type == "_NL":
                if not self.open and prev not in _SWALLOW_NEWLINE_AFTER:
                    self.continued = None
                    yield token
                    prev = "_NL"
                elif not self.open and prev == "COMMA":
                    self.continued = last
                continue
            self.recent.append(token)
            if token.type in _OPEN:
                self.open.append(token)
                if len(self.open) > MAX_DEPTH:
                    raise _TooDeep(token)
            elif token.type in _CLOSE and self.open:
                self.open.pop()
            elif token.type == "RBRACE" and prev not in ("_NL", "LBRACE"):
                yield Token.new_borrow_pos("_NL", "", token)
            yield token
            prev, last = token.type, token
        if prev not in (None, "_NL"):
            yield Token(
                "_NL",
                "",
                end_pos=last.end_pos,
                line=last.end_line,
                column=last.end_column,
                end_line=last.end_line,
                end_column=last.end_column,
            )


@lru_cache(maxsize=1)
def _parser() -> tuple[Lark, list, _Newlines]:
    comments: list = []
    newlines = _Newlines()
    parser = Lark_StandAlone(postlex=newlines, lexer_callbacks={"COMMENT": comments.append})
    return parser, comments, newlines


def parse_document(text: str, filename: str = "<recipe>") -> Document:
    """Parse recipe text into a Document, or raise RecipeError with every syntax error."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise RecipeError(
            [
                Diagnostic(
                    f"recipe is larger than {MAX_BYTES // 1024} KiB",
                    hint="a recipe is a short text; split data lists into a CSV file",
                )
            ],
            text,
            filename,
        )
    text = text.removeprefix("\ufeff")
    diagnostics: list[Diagnostic] = []
    current = text
    for _ in range(MAX_SYNTAX_ERRORS):
        try:
            return _parse_once(current, diagnostics, text, filename)
        except _Recover as recover:
            if diagnostics and recover.diagnostic.span == diagnostics[-1].span:
                break
            diagnostics.append(recover.diagnostic)
            if recover.text is not None:
                current = recover.text
            elif recover.line is None:
                break
            else:
                current = _blank_line(current, recover.line)
    raise RecipeError(diagnostics, text, filename)


class _Recover(Exception):
    """A syntax error, and how to go on: blank `line`, or parse `text` instead (None: stop)."""

    def __init__(self, diagnostic: Diagnostic, line: int | None, text: str | None = None):
        self.diagnostic, self.line, self.text = diagnostic, line, text


def _parse_once(current: str, diagnostics: list, text: str, filename: str) -> Document:
    parser, comments, newlines = _parser()
    comments.clear()
    try:
        tree = parser.parse(current)
        if diagnostics:
            raise RecipeError(diagnostics, text, filename)
        return to_document(tree, list(comments))
    except _TooDeep as deep:
        raise _Recover(
            Diagnostic(
                f"brackets nested deeper than {MAX_DEPTH} levels",
                Span.of_token(deep.token),
                hint="a recipe value needs only a few levels",
            ),
            None,
        ) from None
    except UnexpectedInput as error:
        if isinstance(error.__context__, _TooDeep) or isinstance(getattr(error, "orig_exc", None), _TooDeep):
            deep = error.__context__
            raise _Recover(
                Diagnostic(f"brackets nested deeper than {MAX_DEPTH} levels", Span.of_token(deep.token)), None
            ) from None
        open_brackets = list(newlines.open)
        comma = _misplaced_comma(error, current, newlines)
        if comma:
            raise comma from None
        unclosed = _unclosed_bracket(error, open_brackets, current)
        if unclosed:
            raise _Recover(unclosed, None) from None
        block = _unclosed_block_at(error, current)
        if block:
            raise block from None
        line = None if isinstance(error, UnexpectedEOF) or _at_end(error, current) else error.line
        raise _Recover(syntax_diagnostic(error, current), line) from None
    except VisitError as error:
        problem = error.orig_exc
        if not isinstance(problem, NodeProblem):
            raise
        diagnostic = Diagnostic(problem.message, problem.span, hint=problem.hint)
        raise _Recover(diagnostic, problem.span.line) from None


_CLOSING = {"(": ")", "[": "]"}


def _open_blocks(text: str) -> tuple[Token, Token | None] | None:
    """The first block left open: its name, and the name of the block that starts
    inside it (None: it is still open at the end). Blocks do not nest."""
    parser, _, _ = _parser()
    name = opened = None
    try:
        for token in parser.lex(text):
            if token.type == "LBRACE":
                if opened is not None:
                    return opened, name
                opened = name
            elif token.type == "RBRACE":
                opened = None
            name = token if token.type == "NAME" else None
    except (UnexpectedInput, _TooDeep):
        return None
    return (opened, None) if opened is not None else None


def _unclosed_block_at(error: UnexpectedInput, text: str) -> _Recover | None:
    """A missing '}': named at the block it leaves open, if the parse failed where
    the next block starts or at the end of the file."""
    found = _open_blocks(text)
    if found is None:
        return None
    opened, following = found
    token = getattr(error, "token", None)
    failed_at = (token.line or 0) if token is not None and token.type not in ("$END",) else None
    at_end = isinstance(error, UnexpectedEOF) or failed_at is None or _at_end(error, text)
    if following is None and not at_end or following is not None and (at_end or failed_at < following.line):
        return None
    span = Span(opened.line, opened.column, opened.line, opened.end_column)
    message = f"block '{opened}' opened on line {opened.line} is never closed"
    if following is None:
        return _Recover(Diagnostic(message, span, hint="close it with '}' at the end of the file"), None)
    diagnostic = Diagnostic(message, span, hint=f"close it with '}}' before '{following} {{' on line {following.line}")
    recovered = _closed_before(text, following.line) if following.line > opened.line else None
    return _Recover(diagnostic, None, recovered)


def _closed_before(text: str, line: int) -> str | None:
    """The text with the missing '}' added on the line before `line`, every other
    position unchanged; None where that line may hold a comment."""
    lines = text.split("\n")
    before = lines[line - 2]
    if "#" in before:
        return None
    lines[line - 2] = before + " }" if before.strip() else before + "}"
    return "\n".join(lines)


def _unclosed_bracket(error: UnexpectedInput, open_brackets: list[Token], text: str) -> Diagnostic | None:
    if not open_brackets or isinstance(error, UnexpectedCharacters):
        return None
    bracket = open_brackets[-1]
    token = getattr(error, "token", None)
    ends = isinstance(error, UnexpectedEOF) or token is None or token.type in ("RBRACE", "$END", "_NL")
    if not ends and (token.line or 0) <= bracket.line or _closed(bracket, text):
        return None
    return Diagnostic(
        f"'{bracket}' is never closed", Span.of_token(bracket), hint=f"close it with '{_CLOSING[bracket]}'"
    )


def _closed(bracket: Token, text: str) -> bool:
    """Whether a bracket is closed before the block or the file ends."""
    parser, _, _ = _parser()
    depth = 0
    try:
        for token in parser.lex(text):
            if (token.start_pos or 0) < bracket.start_pos:
                continue
            depth += (token.type in _OPEN) - (token.type in _CLOSE)
            if depth == 0 or token.type in ("LBRACE", "RBRACE"):
                return depth == 0
    except (UnexpectedInput, _TooDeep):
        pass
    return False


def _misplaced_comma(error: UnexpectedInput, text: str, newlines: _Newlines) -> _Recover | None:
    """A comma that ends a statement, or comes before `except` or `from`: named
    at the comma, and parsing goes on without it."""
    if isinstance(error, UnexpectedCharacters):
        return None
    comma, hint = newlines.continued, "remove it: a ',' at the end of a line continues the statement on the next line"
    message = "trailing ',' at the end of the statement"
    token = getattr(error, "token", None)
    read = [t for t in newlines.recent if t is not token][-2:]  # the error token may not have reached the post-lexer
    if len(read) == 2 and read[0].type == "COMMA" and str(read[1]) in _NO_COMMA_BEFORE:
        comma, message = read[0], f"unexpected ',' before '{read[1]}'"
        hint = f"remove it: {_NO_COMMA_BEFORE[str(read[1])]}"
    elif comma is None:
        return None
    without = text[: comma.start_pos] + " " + text[comma.end_pos :]
    if not _parses_further(without, error):
        return None
    return _Recover(Diagnostic(message, Span.of_token(comma), hint=hint), None, without)


_NO_COMMA_BEFORE = {"except": "write a, b except c", "from": "write unfreeze gradually a, b from epoch N every K"}


def _parses_further(text: str, error: UnexpectedInput) -> bool:
    parser, _, _ = _parser()
    try:
        parser.parse(text)
    except UnexpectedInput as later:
        return _position(later) > _position(error)
    except _TooDeep:
        return False
    return True


def _position(error: UnexpectedInput) -> tuple[float, float]:
    token = getattr(error, "token", None)
    if isinstance(error, UnexpectedEOF) or token is not None and token.type == "$END":
        return math.inf, math.inf
    return error.line, error.column


def _at_end(error: UnexpectedInput, text: str) -> bool:
    token = getattr(error, "token", None)
    return token is not None and (
        token.type == "$END"
        or (token.type == "_NL" and token.value == "" and getattr(token, "end_pos", 0) >= len(text.rstrip()))
    )


def _blank_line(text: str, line: int) -> str:
    """The text with the statement at `line` blanked out (keeping line and column
    numbers, braces and a block's `name {`), so parsing can go on after an error."""
    lines = text.split("\n")
    while 1 < line <= len(lines) and re.search(r",\s*(#.*)?$", lines[line - 2]):
        lines[line - 2] = re.sub(r"[^{}]", " ", lines[line - 2])  # the statement began above
        line -= 1
    return _blank_one(lines, line)


def _blank_one(lines: list[str], line: int) -> str:
    if 0 < line <= len(lines):
        opening = re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*\{", lines[line - 1])
        keep = opening.end() if opening else 0
        rest = re.sub(r"[^}]", " ", lines[line - 1][keep:])
        lines[line - 1] = lines[line - 1][:keep] + rest
    return "\n".join(lines)


# --- syntax errors in words ----------------------------------------------------

_WORDS = {
    "NAME": "a name",
    "PATH": "a module path",
    "NUMBER": "a number",
    "STRING": "a string",
    "_NL": "the end of the line",
    "$END": "the end of the file",
    "COMMA": "','",
    "EQUAL": "'='",
    "COLON": "':'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
}
_VALUE_START = {"NUMBER", "STRING", "NAME", "LSQB", "LPAR"}
_SELECTOR_START = {"NAME", "PATH", "STRING"}
_KEYWORD_STATEMENTS = ("freeze", "unfreeze", "at", "head")


def _word(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    return f"'{terminal.lower()}'"


def expected_words(expected) -> list[str]:
    expected = set(expected)
    words = []
    if expected & {"RPAR", "RSQB"}:
        expected.discard("_NL")
    if _VALUE_START <= expected:
        words.append("a value")
        expected -= _VALUE_START | {"TRUE", "FALSE", "NONE", "PATH"}  # a module path is a value too
    elif _SELECTOR_START <= expected:
        words.append("a module name, path or group")
        expected -= _SELECTOR_START
    words += sorted(_word(t) for t in expected if not t.startswith("__"))
    if len(words) > 5:
        words = words[:5] + ["..."]
    return words


def _describe(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    if token.type == "$END":
        return "end of file"
    if token.type in ("NAME", "PATH"):
        return f"name '{token}'"
    if token.type == "NUMBER":
        return f"number {token}"
    if token.type == "STRING":
        return f"string {token}"
    return f"'{token}'"


def syntax_diagnostic(error: UnexpectedInput, text: str) -> Diagnostic:
    if isinstance(error, UnexpectedCharacters):
        return _unexpected_character(error, text)
    if isinstance(error, UnexpectedEOF):
        line, col = _end_of_text(text)
        return Diagnostic(
            "unexpected end of file", Span(line, col, line, col + 1), hint=_expected_hint(_acceptable(error))
        )
    token = error.token
    typo = _statement_typo(text, token)
    if typo:
        return typo
    if _before_brace(token, text):
        span = Span(token.line, token.column, token.line, token.column + 1)
        return Diagnostic("unexpected '}'", span, hint=_expected_hint(_acceptable(error)))
    if token.type == "$END" or (token.type == "_NL" and not token.value):
        line, col = token.line or 1, token.column or 1
        if token.type == "$END" or line > len(source_lines(text)):
            line, col = _end_of_text(text)
        if _unclosed_block(error):
            return Diagnostic(
                "unexpected end of file: a block is not closed", Span(line, col, line, col + 1), hint="add '}'"
            )
        return Diagnostic(
            "unexpected end of file", Span(line, col, line, col + 1), hint=_expected_hint(_acceptable(error))
        )
    span = Span.of_token(token)
    if token.type == "_NL":
        span = Span(token.line, token.column, token.line, token.column + 1)
    hint = _shape_hint(text, token, _acceptable(error)) or _expected_hint(_acceptable(error))
    return Diagnostic(f"unexpected {_describe(token)}", span, hint=hint)


def _before_brace(token: Token, text: str) -> bool:
    """Whether a token is the line end the post-lexer adds before a `}`."""
    start = token.start_pos
    return token.type == "_NL" and not token.value and start is not None and text[start : start + 1] == "}"


def _shape_hint(text: str, token: Token, acceptable: set) -> str | None:
    """Plain words for shapes people reach for: `key = value`, a bare `unfreeze`,
    a `}` too many and a comma that starts a line."""
    lines = source_lines(text)
    line = lines[token.line - 1] if 0 < (token.line or 0) <= len(lines) else ""
    assigned = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
    if assigned and _SELECTOR_START <= acceptable and token.type not in _SELECTOR_START:
        name, value = assigned.group(1), line.split("=", 1)[1].split("#", 1)[0].strip() or "VALUE"
        return f"a statement takes no '=': write {name} {value} ('=' defines a group)"
    if acceptable == {"GRADUALLY"}:
        return "write at epoch N unfreeze ..., or unfreeze gradually A, B from epoch N every K"
    if token.type == "RBRACE" and "RBRACE" not in acceptable:
        return "no block is open here: remove it"
    if token.type == "COMMA" and not line[: token.column - 1].strip():
        return "a statement goes on to the next line only after a ',' at the end of its line: move the ',' there"
    return None


def _end_of_text(text: str) -> tuple[int, int]:
    """Where the text ends, on its last line that is not blank."""
    lines = source_lines(text)
    line = max((i + 1 for i, s in enumerate(lines) if s.strip()), default=1)
    return line, len(lines[line - 1]) + 1


def _unclosed_block(error: UnexpectedToken) -> bool:
    return "RBRACE" in (error.expected or ()) or "NAME" in (error.expected or ()) and "RBRACE" in error.expected


def _acceptable(error: UnexpectedInput) -> set:
    return set(getattr(error, "accepts", None) or error.expected or ())


def _expected_hint(expected) -> str | None:
    words = expected_words(expected or ())
    if not words:
        return None
    if len(words) == 1:
        return f"expected {words[0]}"
    return "expected " + ", ".join(words[:-1]) + " or " + words[-1]


def _unexpected_character(error: UnexpectedCharacters, text: str) -> Diagnostic:
    line, col = error.line, error.column
    char = error.char
    span = Span(line, col, line, col + 1)
    if char == '"':
        line_text = source_lines(text)[line - 1]
        return Diagnostic(
            "unterminated string", Span(line, col, line, len(line_text) + 1), hint="close it with '\"' on the same line"
        )
    if char == "\t":
        return Diagnostic("unexpected tab", span)
    if char == "'":
        shown = '"\'"'
    else:
        shown = "'" + (char if char.isprintable() else char.encode("unicode_escape").decode("ascii")) + "'"
    hint = None
    if char == "'":
        hint = "strings use double quotes"
    elif char in "=:":
        hint = _expected_hint(error.allowed)
    return Diagnostic(f"unexpected character {shown}", span, hint=hint)


def _statement_typo(text: str, token: Token) -> Diagnostic | None:
    """A misspelt keyword statement (`freez all except head`) fails later on the
    line; say what the first word was meant to be instead."""
    if token.line is None or token.type in ("$END",):
        return None
    lines = source_lines(text)
    if not 0 < token.line <= len(lines):
        return None
    match = re.match(r"(\s*)([A-Za-z_][A-Za-z0-9_]*)", lines[token.line - 1])
    if not match or match.group(2) in _KEYWORD_STATEMENTS or len(match.group(2)) < 3:
        return None
    word = match.group(2)
    hint = did_you_mean(word, _KEYWORD_STATEMENTS)
    if hint is None or (token.line, token.column) == (token.line, len(match.group(1)) + 1):
        return None
    col = len(match.group(1)) + 1
    return Diagnostic(f"unknown statement '{word}'", Span(token.line, col, token.line, col + len(word)), hint=hint)
