"""Jinja filters that write values into the generated training script.

This module is the only door from recipe values into generated code: a template never pastes a
recipe value with `{{ value }}` but with `{{ value | py }}`, `{{ name | identifier }}` or
`{{ text | comment }}`. Each filter either returns text that Python reads back as exactly the
value given (a literal, a plain identifier, a comment that contains no code) or raises.

No formatter runs when a script is compiled, so `py` already writes what `ruff format` (default
configuration, 88 columns) leaves unchanged: double quotes unless the string holds more `"` than
`'`, floats as `repr` writes them (minus the `+` of an exponent), and a collection on one line when
it fits, else one item per line, each followed by a comma.
"""

import ast
import keyword
import math
import re
import sys
import unicodedata

__all__ = ["comment", "identifier", "py"]


def py(value, prefix: int = 0, suffix: int = 0, indent: int = 0, width: int = 88) -> str:
    """`value` as a Python literal that `ast.literal_eval` reads back as `value`.

    Accepts None, bool, int, finite float, str, and lists, tuples and dicts (str or int keys) of
    these. The literal starts at column `prefix` of a line indented by `indent` spaces, and `suffix`
    characters follow it on that line; a collection that would not fit in `width` columns is split
    one item per line, its items split in turn where they do not fit.
    """
    kind = type(value)
    if value is None or kind in (bool, int):
        return repr(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no Python literal; only finite floats can go into generated code")
        return repr(value).replace("e+", "e")  # ruff writes 1e16, not 1e+16
    if kind is str:
        return _string(value)
    if kind is dict:
        for key in value:
            if type(key) not in (str, int):
                raise TypeError(f"dict key {key!r} is a {type(key).__name__}; only str and int keys can be written")
        items = [(py(key) + ": ", item) for key, item in value.items()]
    elif kind in (list, tuple):
        items = [("", item) for item in value]
    else:
        raise TypeError(f"cannot write a {kind.__name__} into generated code: {value!r:.80}")
    opening, closing = {dict: "{}", list: "[]", tuple: "()"}[kind]

    inline = ", ".join(key + py(item, width=sys.maxsize) for key, item in items)
    inline = opening + inline + ("," if kind is tuple and len(items) == 1 else "") + closing
    if not items or prefix + _width(inline) + suffix <= width:
        return inline
    pad = " " * (indent + 4)
    lines = [
        pad + key + py(item, prefix=len(pad) + _width(key), suffix=1, indent=indent + 4, width=width) + ","
        for key, item in items
    ]
    return opening + "\n" + "\n".join(lines) + "\n" + " " * indent + closing


def identifier(text: str) -> str:
    """`text` itself if it is an ASCII Python identifier and not a keyword, else ValueError."""
    if not (isinstance(text, str) and text.isascii() and text.isidentifier() and not keyword.iskeyword(text)):
        raise ValueError(f"{text!r} cannot be used as a Python name in generated code")
    return text


def comment(text: str, indent: int = 0) -> str:
    """`text` as `# ` comment lines indented by `indent` spaces, without a trailing newline.

    Every line break that `str.splitlines` knows starts a new comment line; characters that are not
    printable (tab aside) are written as their escape, so no NUL, bidi control or stray line break
    reaches the file; a `coding:` that could be read as an encoding declaration gets a space.
    """
    lines = []
    for line in text.splitlines() or [""]:
        line = "".join(c if c == "\t" or c.isprintable() else repr(c)[1:-1] for c in line)
        line = re.sub(r"coding(?=[:=])", "coding ", line).rstrip()
        lines.append(" " * indent + ("# " + line if line else "#"))
    return "\n".join(lines)


def _string(text: str) -> str:
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise ValueError(f"string {text!r:.80} holds a lone surrogate, which no source file can")
    quote = "'" if text.count('"') > text.count("'") else '"'  # ruff's choice: fewer escapes, tie -> "
    body = "".join("\\" + c if c in (quote, "\\") else c if c.isprintable() else repr(c)[1:-1] for c in text)
    literal = quote + body + quote
    if ast.literal_eval(literal) != text:  # not an assert: it must hold under python -O too
        raise AssertionError(f"string literal {literal!r} does not read back as {text!r}")
    return literal


def _width(text: str) -> int:
    """Columns `text` takes as ruff counts them (wide East Asian characters 2, combining marks 0)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.category(c) in ("Mn", "Me") or "\u1160" <= c <= "\u11ff" or "\ud7b0" <= c <= "\ud7ff":
        return 0  # combining marks, Hangul vowel and final jamo
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
