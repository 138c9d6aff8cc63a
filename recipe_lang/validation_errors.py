"""Pydantic's validation errors, rewritten as diagnostics at recipe positions."""

from __future__ import annotations

from pydantic import ValidationError

from .diagnostics import Diagnostic, Span, did_you_mean

# when a value fails every branch of a union, the most telling error wins
_PREFERENCE = [
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "literal_error",
    "string_too_short",
    "missing",
    "int_from_float",
]


def diagnostics_from_validation(
    error: ValidationError, data: dict, spans: dict, prefix: tuple = (), skip=(), owner: str | None = None
) -> list[Diagnostic]:
    """One diagnostic per failing value; `data` is what was validated, found at
    `prefix` in the recipe; errors at or under a path in `skip` are already told;
    `owner` names the function whose arguments `data` holds."""
    chosen: dict[tuple, dict] = {}
    for item in error.errors(include_url=False):
        if item["type"] == "missing" and len(item["loc"]) == 1 and not prefix:
            continue  # a missing block or `recipe` line: the builder has said so
        loc = prefix + clean_loc(data, item["loc"], item["type"] == "missing")
        if any(loc[: len(bad)] == bad or bad[: len(loc)] == loc for bad in skip):
            continue
        best = chosen.get(loc)
        if best is None or _rank(item) < _rank(best):
            chosen[loc] = item
    return [_diagnostic(loc, item, spans, owner) for loc, item in chosen.items()]


def _rank(item: dict) -> int:
    kind = item["type"]
    return _PREFERENCE.index(kind) if kind in _PREFERENCE else len(_PREFERENCE)


def clean_loc(data, loc, missing: bool) -> tuple:
    """Pydantic's loc without union tags and branch names: a path into data."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and node.get("kind") == part:
            continue
        else:
            if missing and part == loc[-1]:
                path.append(part)
            break
    return tuple(path)


def span_for(loc: tuple, spans: dict) -> Span | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in spans:
            return spans[loc[:end]]
    return None


def _name(loc: tuple) -> str:
    if loc[:3] == ("train", "lr", "groups") and len(loc) > 3:
        return f"lr of '{loc[3]}'"
    if loc[:2] == ("train", "lr"):
        return "lr"
    names = [str(p) for p in loc if isinstance(p, str)]
    return names[-1] if names else "value"


def _diagnostic(loc: tuple, item: dict, spans: dict, owner: str | None) -> Diagnostic:
    kind, ctx = item["type"], item.get("ctx") or {}
    name = _name(loc)
    if kind == "missing":
        owner = owner or (_name(loc[:-1]) if len(loc) > 1 else "recipe")
        where = f"in {owner}" if len(loc) == 2 else f"of {owner}"
        noun = "statement" if len(loc) == 2 else "option"
        return Diagnostic(
            f"missing {noun} '{name}' {where}",
            span_for(loc[:-1], spans),
            hint=f"add {name}" if noun == "statement" else f"add {name}=...",
        )
    hint = None
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        words = [w.strip(" '") for w in expected.replace(" or ", ", ").split(",")]
        hint = did_you_mean(str(item.get("input")), words)
        message = f"invalid {name}: expected {expected}"
    else:
        message = f"invalid {name}: {_reason(kind, ctx, item)}"
    return Diagnostic(message, span_for(loc, spans), hint=hint)


def _reason(kind: str, ctx: dict, item: dict) -> str:
    reasons = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "too_short": "needs at least {min_length} {min_length_items}",
        "too_long": "takes at most {max_length} {max_length_items}",
        "string_too_short": "must not be empty",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be options",
        "model_type": "must be options",
    }
    template = reasons.get(kind)
    if template is None:
        return item["msg"][0].lower() + item["msg"][1:]
    values = {key: _number(value) for key, value in ctx.items()}
    for key in ("min_length", "max_length"):
        values[f"{key}_items"] = "item" if values.get(key) == 1 else "items"
    return template.format(**values)


def _number(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value
