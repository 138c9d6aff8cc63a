"""Syntax tree to typed Recipe: each statement read into plain data, every value's
position kept under its path in the Recipe, then validated by the Pydantic models.
"""

from __future__ import annotations

from pydantic import ValidationError

from . import nodes as n
from .diagnostics import Diagnostic, RecipeError, Span, did_you_mean
from .recipe import (
    FUNCTION_FAMILIES,
    Distill,
    EarlyStop,
    LayerDecay,
    Normalize,
    PseudoLabel,
    Recipe,
    RunWeights,
    TopK,
    metric_key,
)
from .validation_errors import diagnostics_from_validation

BAD = object()  # a value that already has its diagnostic

HEADER = ("recipe", "seed", "output", "task")
BLOCKS = ("model", "teacher", "data", "groups", "train", "evaluate")
REQUIRED_BLOCKS = ("model", "data", "train")


def family_members(family: str) -> dict[str, type]:
    """The function names a user may write for a family, and their models."""
    members = {}
    for cls in FUNCTION_FAMILIES[family]:
        tag = cls.model_fields["kind"].default
        if tag not in ("enum", "none"):
            members[tag] = cls
    return members


def _parameters(cls) -> list[str]:
    return [name for name in cls.model_fields if name not in ("kind", "at")]


def _describe(value) -> str:
    return {
        n.Num: "a number",
        n.Str: "a string",
        n.Lit: "a literal",
        n.Ident: "a name",
        n.Call: "a call",
        n.ListV: "a list",
        n.TupleV: "a tuple",
        n.Kwarg: "an option",
    }.get(type(value), "a value")


class Builder:
    def __init__(self):
        self.spans: dict[tuple, Span] = {}
        self.keywords: dict[tuple, Span] = {}  # where each statement's keyword stands
        self.diagnostics: list[Diagnostic] = []
        self.bad: list[tuple] = []  # paths whose value was refused with a diagnostic

    def error(self, message: str, span: Span | None, hint: str | None = None, notes=()) -> object:
        self.diagnostics.append(Diagnostic(message, span, hint=hint, notes=tuple(notes)))
        return BAD

    # --- plain values ----------------------------------------------------------

    def plain(self, value, loc: tuple):
        """A value as plain Python data; calls and options are not plain."""
        self.spans[loc] = value.span
        if isinstance(value, (n.Num, n.Str, n.Lit)):
            return value.value
        if isinstance(value, n.Ident):
            return value.name
        if isinstance(value, (n.ListV, n.TupleV)):
            items = [self.plain(item, loc + (i,)) for i, item in enumerate(value.items)]
            return BAD if BAD in items else items
        if isinstance(value, n.Call):
            return self.error(f"unexpected call '{value.name}(...)'", value.span, hint="expected a plain value here")
        return self.error(f"unexpected {_describe(value)}", value.span)

    def function(self, value, family: str, loc: tuple):
        """`name` or `name(args, key=value)` of a family, as a dict with `kind`."""
        self.spans[loc] = value.span
        if isinstance(value, n.Ident):
            name, name_span, args = value.name, value.span, []
        elif isinstance(value, n.Call):
            name, name_span, args = value.name, value.name_span, value.args
        else:
            return self.error(
                f"expected a {family}, found {_describe(value)}",
                value.span,
                hint=f"write one of: {', '.join(family_members(family))}",
            )
        members = family_members(family)
        if name not in members:
            return self.error(
                f"unknown {family} '{name}'",
                name_span,
                hint=did_you_mean(name, members) or f"expected one of: {', '.join(members)}",
            )
        return self.arguments(members[name], name, args, loc)

    def arguments(self, cls, name: str, args: list, loc: tuple):
        parameters = _parameters(cls)
        out = {"kind": cls.model_fields["kind"].default} if "kind" in cls.model_fields else {}
        positional = [a for a in args if not isinstance(a, n.Kwarg)]
        for i, arg in enumerate(positional):
            if i >= len(parameters):
                return self.error(
                    f"too many arguments to {name}",
                    arg.span,
                    hint=f"{name} takes {len(parameters)}: {', '.join(parameters) or 'none'}",
                )
            out[parameters[i]] = self.plain(arg, loc + (parameters[i],))
        for kwarg in (a for a in args if isinstance(a, n.Kwarg)):
            if kwarg.name not in parameters:
                hint = did_you_mean(kwarg.name, parameters) or f"{name} takes: {', '.join(parameters) or 'nothing'}"
                return self.error(f"unknown option '{kwarg.name}' of {name}", kwarg.name_span, hint=hint)
            if kwarg.name in out:
                return self.error(f"'{kwarg.name}' given twice to {name}", kwarg.name_span)
            out[kwarg.name] = self.plain(kwarg.value, loc + (kwarg.name,))
        if BAD in out.values():
            return BAD
        return self.validated(cls, name, out, loc)

    def validated(self, cls, name: str, data: dict, loc: tuple):
        """Check a function's arguments now, so that one bad call does not hide another."""
        try:
            cls.model_validate(data)
        except ValidationError as error:
            self.diagnostics += diagnostics_from_validation(error, data, self.spans, prefix=loc, owner=name)
            return BAD
        return data

    def options(self, cls, statement: n.Plain, loc: tuple):
        """`keyword key=value, ...`: options only."""
        positional = [a for a in statement.args if not isinstance(a, n.Kwarg)]
        if positional:
            names = ", ".join(f"{p}=..." for p in _parameters(cls))
            return self.error(f"'{statement.keyword}' takes options", positional[0].span, hint=f"write {names}")
        self.spans[loc] = statement.keyword_span
        data = self.arguments(cls, statement.keyword, statement.args, loc)
        if data is not BAD:
            data.pop("kind", None)
        return data

    # --- selectors -------------------------------------------------------------

    def selector(self, sel: n.Sel, loc: tuple) -> dict:
        self.spans[loc] = sel.span
        kind = sel.kind
        if kind == "quoted":
            kind = "glob" if any(c in sel.text for c in "*?[") else "path"
        out = {"kind": kind, "text": sel.text}
        for key in ("start", "stop", "step", "index"):
            if getattr(sel, key) is not None:
                out[key] = getattr(sel, key)
        return out

    def selectors(self, sels: n.Selectors, loc: tuple) -> dict:
        self.spans[loc] = sels.span
        return {
            "include": [self.selector(s, loc + ("include", i)) for i, s in enumerate(sels.include)],
            "exclude": [self.selector(s, loc + ("exclude", i)) for i, s in enumerate(sels.exclude)],
        }

    # --- statements ------------------------------------------------------------

    def single(self, statement, loc: tuple):
        """The one value of `keyword value`."""
        if not isinstance(statement, n.Plain):
            return self.error(f"'{statement.keyword}' takes one value", statement.span)
        if not statement.args:
            return self.error(f"'{statement.keyword}' needs a value", statement.keyword_span)
        first, *rest = statement.args
        if rest:
            return self.error(f"'{statement.keyword}' takes one value", rest[0].span, hint="remove the extra values")
        if isinstance(first, n.Kwarg):
            return self.error(f"'{statement.keyword}' takes a value, not an option", first.span)
        return first

    def scalar(self, statement, loc):
        value = self.single(statement, loc)
        return value if value is BAD else self.plain(value, loc)

    def values(self, statement, loc, family: str | None):
        """`keyword a, b, c`: a list of plain values or of a family's functions."""
        if not statement.args:
            return self.error(f"'{statement.keyword}' needs at least one value", statement.keyword_span)
        self.spans[loc] = statement.span
        items = []
        for i, arg in enumerate(statement.args):
            if isinstance(arg, n.Kwarg):
                items.append(self.error(f"unexpected option '{arg.name}='", arg.name_span))
            elif family:
                items.append(self.function(arg, family, loc + (i,)))
            else:
                items.append(self.plain(arg, loc + (i,)))
        return BAD if BAD in items else items

    def weights(self, statement, loc):
        value = self.single(statement, loc)
        if value is BAD:
            return BAD
        self.spans[loc] = value.span
        if isinstance(value, n.Lit) and value.value is None:
            return {"kind": "none"}
        if isinstance(value, n.Str):
            self.spans[loc + ("member",)] = value.span
            return {"kind": "enum", "member": value.value}
        if isinstance(value, n.Ident) and value.name not in family_members("weights"):
            hint = did_you_mean(value.name, ["default", "none"]) or f'write an enum member in quotes: "{value.name}"'
            return self.error(f"unknown weights '{value.name}'", value.span, hint=hint)
        return self.function(value, "weights", loc)

    def head(self, statement, loc):
        if not isinstance(statement, n.HeadStmt):
            return self.error("'head' takes a head: linear(...) or mlp(...)", statement.span)
        data = self.function(statement.value, "head", loc)
        if data is BAD or statement.at is None:
            return data
        if data["kind"] == "detection":
            return self.error(
                "head detection(...) takes no 'at'",
                statement.at.span,
                hint="ftr finds the detector's prediction layers itself: remove at ...",
            )
        if not isinstance(statement.at, n.Str):
            return self.error("'at' takes a module path in quotes", statement.at.span, hint='write at "module.path"')
        self.spans[loc + ("at",)] = statement.at.span
        data["at"] = statement.at.value
        return data

    def backbone(self, statement, loc):
        """A builder's name, or timm("name") / hf("folder")."""
        value = self.single(statement, loc)
        if value is BAD:
            return BAD
        if isinstance(value, n.Call) and value.name not in family_members("backbone"):
            self.spans[loc] = value.span
            return self.error(
                f"unexpected call '{value.name}(...)'",
                value.name_span,
                hint=f'write a torchvision builder by its name (backbone {value.name}), timm("name") or hf("folder")',
            )
        if isinstance(value, n.Call):
            return self.function(value, "backbone", loc)
        return self.plain(value, loc)

    def layer_decay(self, statement, loc):
        """`layer_decay 0.8, over=encoder.layer`."""
        if not isinstance(statement, n.Plain) or not statement.args:
            return self.error(
                "'layer_decay' needs a factor and a container",
                statement.keyword_span,
                hint="write layer_decay 0.8, over=encoder.layer",
            )
        self.spans[loc] = statement.span
        return self.arguments(LayerDecay, "layer_decay", statement.args, loc)

    def eval_transforms(self, statement, loc):
        args = statement.args if isinstance(statement, n.Plain) else []
        if len(args) == 1 and isinstance(args[0], n.Ident) and args[0].name == "weights":
            self.spans[loc] = args[0].span
            return "weights"
        return self.values(statement, loc, "transform")

    def normalize(self, statement, loc):
        args = statement.args if isinstance(statement, n.Plain) else []
        if args and all(isinstance(a, n.Kwarg) for a in args):
            return self.options(Normalize, statement, loc)
        value = self.single(statement, loc)
        if value is BAD:
            return BAD
        self.spans[loc] = value.span
        if isinstance(value, n.Lit) and value.value is None:
            return "none"
        if isinstance(value, n.Ident):
            return value.name
        return self.error(
            f"expected imagenet, none, weights or mean=..., std=..., found {_describe(value)}", value.span
        )

    def rates(self, statement, loc):
        self.spans[loc] = statement.keyword_span
        if not isinstance(statement, n.Plain) or not statement.args:
            return self.error(
                "'lr' needs a rate", statement.keyword_span, hint="write lr 1e-3 or lr head=1e-3, top=1e-4"
            )
        out = {"groups": {}}
        for arg in statement.args:
            if not isinstance(arg, n.Kwarg):
                if "default" in out:
                    return self.error("'lr' takes one default rate", arg.span, hint="name the others: group=rate")
                out["default"] = self.plain(arg, loc + ("default",))
            elif arg.name in out["groups"]:
                return self.error(f"rate of '{arg.name}' given twice", arg.name_span)
            else:
                out["groups"][arg.name] = self.plain(arg.value, loc + ("groups", arg.name))
                self.spans[loc + ("groups", arg.name)] = arg.span
        return BAD if BAD in (out.get("default"), *out["groups"].values()) else out

    def freeze(self, statement, loc):
        return self.selectors(statement.selectors, loc)

    def event(self, statement: n.AtEpoch, loc):
        self.spans[loc] = statement.span
        self.spans[loc + ("epoch",)] = statement.epoch.span
        out = {
            "epoch": statement.epoch.value,
            "action": statement.action,
            "selectors": self.selectors(statement.selectors, loc + ("selectors",)),
        }
        if statement.warmup is not None:
            out["warmup"] = self.plain(statement.warmup, loc + ("warmup",))
        return BAD if BAD in out.values() else out

    def gradually(self, statement: n.Gradually, loc):
        self.spans[loc] = statement.span
        self.spans[loc + ("start",)] = statement.start.span
        self.spans[loc + ("every",)] = statement.every.span
        self.spans[loc + ("stages",)] = statement.span
        return {
            "stages": [self.selector(s, loc + ("stages", i)) for i, s in enumerate(statement.stages)],
            "start": statement.start.value,
            "every": statement.every.value,
        }

    def best(self, statement, loc):
        value = self.single(statement, loc)
        if value is BAD:
            return BAD
        self.spans[loc] = value.span
        if isinstance(value, n.Call):
            metric = self.function(value, "metric", loc)
            if metric is BAD:
                return BAD
            return metric_key(TopK(**metric)) if metric["kind"] == "top_k" else metric["kind"]
        return self.plain(value, loc)


def _early_stop(builder: Builder, statement, loc):
    return builder.options(EarlyStop, statement, loc)


def _pseudo_label(builder: Builder, statement, loc):
    """`pseudo_label` alone (the defaults) or `pseudo_label threshold=0.95, weight=1, start=4`."""
    if isinstance(statement, n.Plain) and not statement.args:
        builder.spans[loc] = statement.keyword_span
        return {}
    return builder.options(PseudoLabel, statement, loc)


def _distill(builder: Builder, statement, loc):
    return builder.options(Distill, statement, loc)


def _teacher_run(builder: Builder, statement, loc):
    """`run "folder"` or `run "folder", model=best`: a finished run, as weights run(...) reads it."""
    if not isinstance(statement, n.Plain) or not statement.args:
        return builder.error("'run' needs a run folder", statement.keyword_span, hint='write run "runs/name"')
    builder.spans[loc] = statement.span
    return builder.arguments(RunWeights, "run", statement.args, loc)


# keyword -> (field, reader) per block
def _statements():
    return {
        "model": {
            "backbone": ("backbone", Builder.backbone),
            "weights": ("weights", Builder.weights),
            "head": ("head", Builder.head),
            "min_size": ("min_size", Builder.scalar),
            "max_size": ("max_size", Builder.scalar),
            "pool": ("pool", Builder.scalar),
            "head_init": ("head_init", Builder.scalar),
        },
        "teacher": {
            "run": ("run", _teacher_run),
            "backbone": ("backbone", Builder.backbone),
            "weights": ("weights", Builder.weights),
            "head": ("head", Builder.head),
        },
        "data": {
            "train": ("train", _function("data source")),
            "val": ("val", _function("validation source")),
            "batch_size": ("batch_size", Builder.scalar),
            "eval_batch_size": ("eval_batch_size", Builder.scalar),
            "workers": ("workers", Builder.scalar),
            "train_transforms": ("train_transforms", _list("transform")),
            "eval_transforms": ("eval_transforms", Builder.eval_transforms),
            "normalize": ("normalize", Builder.normalize),
            "skip_bad_images": ("skip_bad_images", Builder.scalar),
            "max_length": ("max_length", Builder.scalar),
            "group_by_length": ("group_by_length", Builder.scalar),
            "unlabeled": ("unlabeled", _function("unlabeled source")),
        },
        "train": {
            "epochs": ("epochs", Builder.scalar),
            "optimizer": ("optimizer", _function("optimizer")),
            "lr": ("lr", Builder.rates),
            "schedule": ("schedule", _function("schedule")),
            "freeze": ("freeze", Builder.freeze),
            "unfreeze gradually": ("gradually", Builder.gradually),
            "layer_decay": ("layer_decay", Builder.layer_decay),
            "batchnorm": ("batchnorm", Builder.scalar),
            "no_weight_decay": ("no_weight_decay", _list(None)),
            "label_smoothing": ("label_smoothing", Builder.scalar),
            "clip_grad_norm": ("clip_grad_norm", Builder.scalar),
            "accumulate": ("accumulate", Builder.scalar),
            "precision": ("precision", Builder.scalar),
            "cache": ("cache", Builder.scalar),
            "channels_last": ("channels_last", Builder.scalar),
            "compile": ("compile", Builder.scalar),
            "pseudo_label": ("pseudo_label", _pseudo_label),
            "distill": ("distill", _distill),
        },
        "evaluate": {
            "metrics": ("metrics", _list("metric")),
            "every": ("every", Builder.scalar),
            "best": ("best", Builder.best),
            "early_stop": ("early_stop", _early_stop),
        },
    }


def _function(family):
    def read(builder, statement, loc):
        value = builder.single(statement, loc)
        return value if value is BAD else builder.function(value, family, loc)

    return read


def _list(family):
    def read(builder, statement, loc):
        if not isinstance(statement, n.Plain):
            return builder.error(f"'{statement.keyword}' takes a list of values", statement.span)
        return builder.values(statement, loc, family)

    return read


STATEMENTS = _statements()
TOP_LEVEL = {"recipe": "name", "seed": "seed", "output": "output", "task": "task"}
NOT_BUILT_TASKS = ()


def statement_home(keyword: str) -> str | None:
    """The block a statement belongs in, for 'it belongs in ...' hints."""
    if keyword == "at":
        return "train"
    for block, table in STATEMENTS.items():
        if keyword in table:
            return block
    return None


# --- the document --------------------------------------------------------------


def build(doc: n.Document, source: str, filename: str) -> Recipe:
    """Read a Document into a Recipe, or raise RecipeError with every mistake."""
    builder = Builder()
    data = _read_document(builder, doc)
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        builder.diagnostics += diagnostics_from_validation(error, data, builder.spans, skip=builder.bad)
    if builder.diagnostics:
        raise RecipeError(builder.diagnostics, source, filename)
    recipe._spans = builder.spans
    recipe._keyword_spans = builder.keywords
    recipe._source = source
    recipe._filename = filename
    return recipe


def _read_document(builder: Builder, doc: n.Document) -> dict:
    data: dict = {}
    seen: dict[str, Span] = {}
    for position, item in enumerate(doc.items):
        if isinstance(item, n.Block):
            _read_block(builder, item, data, seen)
        else:
            _read_top_statement(builder, item, position, data, seen)
    if "recipe" not in seen:
        builder.error("missing 'recipe \"name\"'", None, hint='start the file with recipe "a-name"')
    for block in REQUIRED_BLOCKS:
        if block not in seen:
            builder.error(f"missing block '{block}'", None, hint=f"add {block} {{ ... }}")
    return {key: value for key, value in data.items() if value is not BAD}


def _first_time(builder: Builder, kind: str, key: str, span: Span, seen: dict) -> bool:
    if key in seen:
        builder.error(f"{kind} '{key}' given twice", span, notes=(f"first given at line {seen[key].line}",))
        return False
    seen[key] = span
    return True


def _read_top_statement(builder, statement, position, data, seen):
    keyword = statement.keyword
    if keyword not in TOP_LEVEL:
        home = statement_home(keyword)
        if home:
            builder.error(
                f"'{keyword}' is a statement of {home}", statement.keyword_span, hint=f"move it into the {home} block"
            )
        else:
            hint = did_you_mean(keyword, list(TOP_LEVEL) + list(BLOCKS))
            builder.error(f"unknown statement '{keyword}'", statement.keyword_span, hint=hint)
        return
    if not _first_time(builder, "statement", keyword, statement.keyword_span, seen):
        return
    if keyword == "recipe" and position != 0:
        builder.error(
            "'recipe' must be the first statement", statement.keyword_span, hint="move it to the top of the file"
        )
    loc = (TOP_LEVEL[keyword],)
    builder.spans[loc] = statement.span
    builder.keywords[loc] = statement.keyword_span
    data[TOP_LEVEL[keyword]] = builder.scalar(statement, loc)
    if data[TOP_LEVEL[keyword]] is BAD:
        builder.bad.append(loc)
    elif keyword == "task" and data["task"] in NOT_BUILT_TASKS:
        builder.error(
            f"task {data['task']} is not built yet",
            builder.spans[loc],
            hint="it arrives with its own issue; write task classification or task detection",
        )


def _read_block(builder, block: n.Block, data, seen):
    if block.name not in BLOCKS:
        hint = did_you_mean(block.name, BLOCKS) or f"blocks are: {', '.join(BLOCKS)}"
        builder.error(f"unknown block '{block.name}'", block.name_span, hint=hint)
        return
    if not _first_time(builder, "block", block.name, block.name_span, seen):
        return
    builder.spans[(block.name,)] = block.name_span
    if block.name == "groups":
        data["groups"] = _read_groups(builder, block)
        return
    table = STATEMENTS[block.name]
    fields: dict = {}
    block_seen: dict[str, Span] = {}
    for statement in block.statements:
        _read_statement(builder, block.name, table, statement, fields, block_seen)
    if block.name == "teacher":
        _teacher_form(builder, block, fields, block_seen)
    data[block.name] = {key: value for key, value in fields.items() if value is not BAD}


MODEL_LIKE = ("backbone", "weights", "head")


def _teacher_form(builder, block: n.Block, fields: dict, seen: dict[str, Span]) -> None:
    """One of the two forms: `run "folder"`, or backbone, weights and head as in model."""
    model_like = [k for k in seen if k in MODEL_LIKE]  # in the order written
    if "run" in seen and model_like:
        builder.error(
            f"a teacher is given by 'run' or by {', '.join(repr(k) for k in model_like)}, not both",
            seen["run"],
            hint="a run folder names its model already: remove run, or the model's statements",
        )
        fields["run"] = BAD
        builder.bad.append(("teacher", "run"))
    elif model_like and "backbone" not in seen:
        builder.error(
            "a teacher given as in model needs 'backbone'",
            seen[model_like[0]],
            hint="write backbone NAME, weights file(...) and head linear(classes=N), as in model",
        )
    elif not seen:
        builder.error(
            "a teacher needs a model",
            block.name_span,
            hint='write run "runs/name" (a finished run), or backbone, weights and head as in model',
        )


def _read_statement(builder, block_name, table, statement, fields, block_seen):
    keyword = statement.keyword
    if isinstance(statement, n.Assign):
        builder.error(
            f"'{keyword} = ...' defines a group", statement.keyword_span, hint="define groups in the groups block"
        )
        return
    if isinstance(statement, n.AtEpoch) and block_name == "train":
        events = fields.setdefault("events", [])
        loc = ("train", "events", len(events))
        events.append(builder.event(statement, loc))
        if events[-1] is BAD:
            builder.bad.append(loc)
        return
    if keyword not in table:
        _unknown_statement(builder, block_name, table, statement)
        return
    if not _first_time(builder, "statement", keyword, statement.keyword_span, block_seen):
        return
    field, read = table[keyword]
    loc = (block_name, field)
    builder.spans[loc] = statement.span
    builder.keywords[loc] = statement.keyword_span
    fields[field] = read(builder, statement, loc)
    if fields[field] is BAD:
        builder.bad.append(loc)


def _unknown_statement(builder, block_name, table, statement):
    keyword = statement.keyword
    home = statement_home(keyword)
    if home and home != block_name:
        builder.error(
            f"'{keyword}' is not a statement of {block_name}",
            statement.keyword_span,
            hint=f"it belongs in the {home} block",
        )
        return
    hint = did_you_mean(keyword, table) or f"statements of {block_name}: {', '.join(table)}"
    if keyword in TOP_LEVEL:
        hint = f"'{keyword}' is a top-level statement: move it above the blocks"
    builder.error(f"unknown statement '{keyword}' in {block_name}", statement.keyword_span, hint=hint)


def _read_groups(builder, block: n.Block) -> dict:
    groups: dict = {}
    seen: dict[str, Span] = {}
    for statement in block.statements:
        if not isinstance(statement, n.Assign):
            builder.error(
                f"unexpected '{statement.keyword}' in groups",
                statement.keyword_span,
                hint="a group is written: name = selector, selector, ...",
            )
            continue
        if not _first_time(builder, "group", statement.keyword, statement.keyword_span, seen):
            continue
        loc = ("groups", statement.keyword)
        groups[statement.keyword] = builder.selectors(statement.selectors, loc)
        builder.spans[loc] = statement.keyword_span
    return groups
