"""`ftr plan`: the plan as tables a person reads at a glance."""

from __future__ import annotations

import os

from .plan import Phase, Plan
from .schedule import schedule_factor, warmup_factor


def count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def plan_table(plan: Plan) -> str:
    return "\n\n".join([_header(plan), _groups(plan), _phases(plan) + "\n" + _cache(plan)]) + "\n"


def check_summary(plan: Plan) -> str:
    """What `ftr check` verified, in one line: the model, its groups, its spans of epochs."""
    groups = [g.name for g in plan.groups if g.numel]
    spans = len(plan.phases)
    parts = [
        f"{plan.backbone}, {count(plan.total_params)} parameters",
        f"{len(groups)} group{'s' if len(groups) != 1 else ''} ({', '.join(groups)})",
        f"{spans} span{'s' if spans != 1 else ''} over {plan.epochs} epochs",
    ]
    if plan.classes is not None:
        parts.append(f"{len(plan.classes)} classes in the data")
    return "; ".join(parts)


def _cache(plan: Plan) -> str:
    """Which spans train the head on features computed once, or why none does."""
    spans = [_span(p) for p in plan.phases if p.cache]
    if spans:
        where = plan.classifier.path
        return f"feature cache: epochs {', '.join(spans)} compute the input of {where} once, then train on it"
    if plan.cache_blockers:
        return "feature cache: none; " + "; ".join(plan.cache_blockers)
    return "feature cache: none; more than the head trains, or BatchNorm outside it is in train mode"


def _span(phase: Phase) -> str:
    return str(phase.first) if phase.first == phase.last else f"{phase.first}-{phase.last}"


POOLED = {"cls": "the first token's state", "mean": "the mean token state", "last": "the last token's state"}


def _weights_source(plan: Plan) -> str:
    resolved = plan.weights
    spec = resolved.spec
    if spec.kind == "none":
        return "no pretrained weights"
    if spec.kind == "file":
        return f"weights from {spec.path}"
    if spec.kind == "run":
        origin = f", {resolved.origin}" if resolved.origin else ""
        return f"the weights of run {spec.path} ({os.path.basename(resolved.file)}{origin})"
    if resolved.enum is None:  # a library's own pretrained weights (hf, timm)
        return f"its pretrained weights ({plan.library})"
    return f"{resolved.enum} weights"


def _header(plan: Plan) -> str:
    lines = [f"{plan.name}: {plan.backbone} with {_weights_source(plan)}, {count(plan.total_params)} parameters"]
    lines += _loaded(plan)
    c = plan.classifier
    if plan.head is not None and plan.head.kind == "detection":
        head = plan.head
        background = " and the background" if _has_background(plan) else ""
        lines.append(f"head: new class layers for {head.classes} classes{background}, replace {c.path}")
    elif plan.head is not None:
        head = plan.head
        widths = [c.in_features, *(head.hidden_sizes if head.kind == "mlp" else []), head.classes]
        details = [head.activation] if head.kind == "mlp" else []
        details += [f"dropout {head.dropout:g}"] if head.dropout else []
        details += [f"on {POOLED[plan.pool]}, at most {plan.max_length} tokens a text"] if plan.pool else []
        extra = f" ({', '.join(details)})" if details else ""
        origin = ", with the run's weights" if plan.weights.spec.kind == "run" else ""
        lines.append(f"head: {head.kind} {' -> '.join(map(str, widths))}{extra}, replaces {c.path}{origin}")
    else:
        lines.append(f"head: the builder's own {c.path} ({c.out_features} classes)")
    train = plan.train
    lines.append(
        f"optimizer: {_call(plan.optimizer)}, schedule: {_call(plan.schedule)}, {train.epochs} epochs, "
        f"batchnorm in frozen parts: {train.batchnorm}"
    )
    if plan.classes is not None:
        shown = ", ".join(plan.classes[:6]) + (", ..." if len(plan.classes) > 6 else "")
        lines.append(f"data: {len(plan.classes)} classes ({shown})")
    pseudo = train.pseudo_label
    if pseudo is not None and plan.data.unlabeled is not None:
        at = f"at >= {pseudo.threshold:g}"
        if pseudo.balanced:
            at = f"at >= a class-balanced (FlexMatch) threshold of at most {pseudo.threshold:g}"
        lines.append(
            f"pseudo-labels: from epoch {pseudo.start}, images under {plan.data.unlabeled.path} predicted "
            f"{at} train as that class (loss weight {pseudo.weight:g})"
        )
    lines += _teacher(plan)
    return "\n".join(lines)


def _teacher(plan: Plan) -> list[str]:
    """distill: the teacher and the loss it enters."""
    teacher, distill = plan.teacher, plan.train.distill
    if teacher is None:
        return []
    t, a = distill.temperature, distill.alpha
    return [
        f"teacher: {teacher.described}, weights {teacher.file}; frozen, in eval mode, on the student's batch",
        f"loss: {a:g} * {t:g}^2 * KL(teacher || student at T={t:g}) + {1 - a:g} * cross-entropy",
    ]


def _has_background(plan: Plan) -> bool:
    from .detectors import background_slot

    return background_slot(plan.backbone)


def _loaded(plan: Plan) -> list[str]:
    """What an opened weights file gives the model, and what it drops."""
    w = plan.weights
    if w.loaded is None:
        return []
    line = f"weights: {_tensors(len(w.loaded))} loaded from {w.file}"
    if w.spec.kind == "run":
        return [line + ", the head included"]
    dropped = [(w.ignored_keys, f"replaced by the new head at {plan.classifier.path}")]
    dropped += [(w.unexpected, "not in the model"), (w.misshapen, "misshapen")]
    parts = [f"{compact(keys)} ({why})" for keys, why in dropped if keys]
    lines = [line + ("; dropped: " + "; ".join(parts) if parts else "; nothing dropped")]
    if w.missing:
        lines.append(f"weights: not in the file, left as built: {compact(w.missing)}")
    return lines


def compact(keys: list[str], limit: int = 4) -> str:
    """Tensor names; more than `limit` as module prefixes with counts (by top-level module)."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split(".")[0], []).append(key)
    shown = [names[0] if len(names) == 1 else f"{_common(names)}.* ({len(names)})" for names in groups.values()]
    more = f", ... ({len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _common(names: list[str]) -> str:
    """The longest dotted prefix of all names: layer3.1 of layer3.1.conv1.weight and layer3.1.bn1.bias."""
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _call(spec) -> str:
    """A recipe function as written, with the options that differ from their defaults."""
    options = spec.model_dump(exclude={"kind"}, exclude_defaults=True)
    if not options:
        return spec.kind
    return (
        f"{spec.kind}("
        + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())
        + ")"
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _tensors(n: int) -> str:
    return f"{n} tensor" + ("" if n == 1 else "s")


def _percent(part: int, whole: int) -> str:
    share = 100 * part / max(whole, 1)
    return "<0.1%" if 0 < share < 0.1 else f"{share:.1f}%"


def _groups(plan: Plan) -> str:
    no_decay = {p for g in plan.optimizer_groups if g.weight_decay == 0 for p in g.params}
    decays = bool(plan.train.no_weight_decay) and any(g.weight_decay > 0 for g in plan.optimizer_groups)
    rows = [["group", "covers", "params", "rate"] + (["no decay"] if decays else [])]
    for g in plan.groups:
        if g.name == "rest" and not g.params:
            continue
        row = [g.name, g.covers, count(g.numel), rate(g.lr)]
        if decays:
            row.append(_tensors(sum(1 for p in g.params if p in no_decay)))
        rows.append(row)
    return _table(rows)


def _phases(plan: Plan) -> str:
    rows = [["epochs", "trains", "trainable", "rates at start", "frozen BatchNorm", "changes"]]
    for phase in plan.phases:
        rows.append(
            [
                _span(phase),
                _training_groups(plan, phase),
                f"{count(phase.numel)} ({_percent(phase.numel, plan.total_params)})",
                _rates(plan, phase),
                _bn(plan, phase),
                _changes(phase),
            ]
        )
    return _table(rows)


def _training_groups(plan: Plan, phase: Phase) -> str:
    trainable = set(phase.trainable)
    names = []
    for g in plan.groups:
        inside = sum(1 for p in g.params if p in trainable)
        if inside == len(g.params) and inside:
            names.append(g.name)
        elif inside:
            names.append(f"{g.name} (part)")
    return ", ".join(names)


def _rates(plan: Plan, phase: Phase) -> str:
    """Each training group's rate at the start of the span; during a warmup, the
    rate it ramps up to, marked as such."""
    t = phase.first - 1
    warmup = getattr(plan.schedule, "warmup", 0.0)
    ramping = t < warmup
    factor = schedule_factor(plan.schedule, max(t, warmup), plan.epochs)
    trainable = set(phase.trainable)
    parts = []
    for g in plan.groups:
        if g.lr is None or not trainable & set(g.params):
            continue
        warm = [og for og in plan.optimizer_groups if og.group == g.name and og.warmups]
        thawing = any(warmup_factor(og.warmups, t) < 1 for og in warm)
        parts.append(f"{g.name} {rate(g.lr * factor)}" + (" (warmup)" if ramping or thawing else ""))
    return ", ".join(parts)


def _bn(plan: Plan, phase: Phase) -> str:
    if plan.train.batchnorm != "eval":
        return plan.train.batchnorm
    return f"eval ({len(phase.bn_eval)})" if phase.bn_eval else "-"


def _changes(phase: Phase) -> str:
    parts = [f"+{t}" for t in phase.thawed] + [f"-{t}" for t in phase.frozen]
    return " ".join(parts)
