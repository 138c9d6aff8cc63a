"""What the typed recipe says about each statement and option: the blocks'
statements, the values a statement takes, and documentation from the same
field descriptions and constraints as `ftr schema` (the JSON Schema)."""

from __future__ import annotations

import functools
import types
import typing

from pydantic import BaseModel

from ..build import BLOCKS, STATEMENTS, TOP_LEVEL
from ..recipe import FUNCTION_FAMILIES, Distill, EarlyStop, Normalize, Recipe

# statements written as options only (`early_stop patience=3`), and their model
OPTION_STATEMENTS = {
    ("evaluate", "early_stop"): EarlyStop,
    ("data", "normalize"): Normalize,
    ("train", "distill"): Distill,
}
NOT_WRITTEN = ("kind", "at")  # fields that are not options of a call


def block_class(block: str) -> type[BaseModel] | None:
    if block not in BLOCKS or block == "groups":
        return None
    annotation = Recipe.model_fields[block].annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return members[0] if len(members) == 1 else annotation  # `teacher`: TeacherSpec | None


def statements_of(block: str | None) -> list[str]:
    """The statements a block takes (the header's at top level)."""
    if block is None:
        return list(TOP_LEVEL)
    names = list(STATEMENTS.get(block, {}))
    return names + ["at epoch"] if block == "train" else names


def statement_field(block: str | None, keyword: str) -> tuple[type[BaseModel], str] | None:
    """The model and field a statement sets."""
    if block is None:
        return (Recipe, TOP_LEVEL[keyword]) if keyword in TOP_LEVEL else None
    cls = block_class(block)
    if block == "train" and keyword in ("at", "at epoch"):
        return cls, "events"
    entry = STATEMENTS.get(block, {}).get(keyword)
    if cls is None or entry is None:
        return None
    return cls, entry[0]


def value_models(annotation) -> list[type[BaseModel]]:
    """The function models (with a `kind`) a field takes, in declaration order."""
    found = []
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields:
            found.append(arg)
    return found


def value_choices(annotation) -> list[str]:
    """What may follow a statement's keyword: function names, literal words, true/false."""
    choices = []
    for arg in _flatten(annotation):
        if arg is bool:
            choices += ["true", "false"]
        elif typing.get_origin(arg) is typing.Literal:
            choices += [_literal(value) for value in typing.get_args(arg)]
        elif isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields:
            tag = arg.model_fields["kind"].default
            if tag != "enum":  # an enum member is a quoted string
                choices.append(tag)
    return list(dict.fromkeys(choices))


def function_model(name: str, annotation=None) -> type[BaseModel] | None:
    """The model of function `name`: the field's own first, else any family's."""
    candidates = value_models(annotation) if annotation is not None else []
    candidates += [cls for family in FUNCTION_FAMILIES.values() for cls in family]
    return next((cls for cls in candidates if cls.model_fields["kind"].default == name), None)


def options_of(cls: type[BaseModel]) -> list[str]:
    return [name for name in cls.model_fields if name not in NOT_WRITTEN]


def describe_field(cls: type[BaseModel], name: str, title: str) -> str:
    """Markdown for one field: what it is, its type and bounds, its default."""
    schema = _schema(cls)["properties"][name]
    lines = [f"**{title}**"]
    if schema.get("description"):
        lines.append(schema["description"])
    lines.append(_kind(schema, _schema(cls).get("$defs", {})))
    if name in _schema(cls).get("required", []):
        lines.append("required")
    elif "default" in schema:
        lines.append(f"default: `{_written(schema['default'])}`")
    return "\n\n".join(line for line in lines if line)


def describe_function(cls: type[BaseModel], family: str | None = None) -> str:
    """Markdown for a function: its name and options with defaults."""
    name = cls.model_fields["kind"].default
    schema = _schema(cls)
    parts = []
    for option in options_of(cls):
        prop = schema["properties"][option]
        default = "" if option in schema.get("required", []) else f"={_written(prop.get('default'))}"
        parts.append(f"{option}{default}")
    article = "an" if family and family[0] in "aeiou" else "a"
    head = f"**{name}**({', '.join(parts)})" + (f" — {article} {family}" if family else "")
    docs = [f"- `{o}`: {schema['properties'][o]['description']}" for o in options_of(cls) if _has_doc(schema, o)]
    return "\n\n".join([head, "\n".join(docs)]) if docs else head


def family_of(cls: type[BaseModel]) -> str | None:
    return next((family for family, members in FUNCTION_FAMILIES.items() if cls in members), None)


@functools.cache
def _schema(cls: type[BaseModel]) -> dict:
    return cls.model_json_schema()


def _has_doc(schema: dict, option: str) -> bool:
    return bool(schema["properties"][option].get("description"))


def _kind(schema: dict, defs: dict) -> str:
    """A short reading of a JSON Schema: `integer, 1 to 100000`, `one of ...`."""
    if "$ref" in schema:
        return _kind(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    if schema.get("title") == "SelectorList":
        return "selectors: module paths, globs, slices, groups, head, backbone, all"
    if "discriminator" in schema:
        return "one of: " + ", ".join(schema["discriminator"]["mapping"])
    if "anyOf" in schema or "oneOf" in schema:
        kinds = [_kind(s, defs) for s in schema.get("anyOf", schema.get("oneOf", [])) if s.get("type") != "null"]
        return " or ".join(k for k in kinds if k)
    if "enum" in schema:
        return "one of: " + ", ".join(_written(v) for v in schema["enum"])
    if "const" in schema:
        return f"`{_written(schema['const'])}`"
    kind = schema.get("type", "")
    if kind == "array":
        kind = f"list of {_kind(schema.get('items', {}), defs) or 'values'}"
    elif kind == "object" and "properties" in schema:
        kind = "options: " + ", ".join(p for p in schema["properties"] if p != "kind")
    bounds = _bounds(schema)
    return f"{kind}, {bounds}" if bounds else kind


def _bounds(schema: dict) -> str:
    signs = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
    return ", ".join(f"{sign} {schema[key]}" for key, sign in signs if key in schema)


def _written(value) -> str:
    """A value as a recipe writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return value.get("kind", "...")
    if isinstance(value, list):
        return "[" + ", ".join(_written(v) for v in value) + "]"
    return str(value)


def _literal(value) -> str:
    return _written(value)


def _flatten(annotation) -> list:
    """The alternatives inside Annotated, unions and lists."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        return [leaf for arg in typing.get_args(annotation) for leaf in _flatten(arg)]
    return [annotation]
