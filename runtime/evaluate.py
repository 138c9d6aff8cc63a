"""`ftr evaluate RUN [SOURCE]`: a run's model measured on data, as its training measured it.

The task gives the data (the run's own val, or another source read the way the run
read its val), the evaluation accumulator and the loss (the same ones the trainer
uses, in the same batches: on the run's own val the numbers are those it logged),
and what a per-class table and the worst mistakes are. This module runs the pass,
keeps each item's outputs beside its name, and writes the files."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field

import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from tqdm import tqdm

from recipe_lang.diagnostics import Diagnostic, RecipeError, UsageError
from recipe_lang.files import atomic_write_text
from recipe_lang.resolve import from_run

from .evaluation_data import EvaluateError
from .trained import TrainedRun


@dataclass
class EvaluateResult:
    described: str
    metrics: dict[str, float]  # loss, accuracy, ... (the recipe's metric names)
    per_class: list[dict]  # a row per class
    confusion: list[list[int]] | None  # [label][prediction], classification only
    mistakes: list[dict]  # the worst, worst first
    evaluated: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def evaluate(run: TrainedRun, source: str | None, device: str = "cpu", worst: int = 20, progress=False):
    task = run.task
    data = task.evaluation_data(source, run.classes)
    batch_size = run.plan.data.eval_batch_size or run.plan.data.batch_size
    loader = DataLoader(
        data.dataset, batch_size=batch_size, num_workers=run.plan.data.workers, collate_fn=task.evaluation_collate
    )
    order = BatchSampler(SequentialSampler(data.dataset), batch_size, drop_last=False)
    evaluation = task.evaluation(run.classes, confusion=True)
    model = run.model.to(torch.device(device))
    layout = torch.channels_last if run.plan.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout) if layout is torch.channels_last else model
    autocast = _autocast(run.plan.train.precision, torch.device(device))
    records, skipped = [], {}
    batches = tqdm(
        zip(order, loader, strict=True),
        total=len(order),
        unit="batch",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with torch.no_grad():
        for indices, batch in batches:
            gone = {u.path: u.reason for u in getattr(batch, "skipped", ())}
            skipped.update(gone)
            if batch[0] is None:
                continue
            inputs, targets = task.to_device(batch, torch.device(device), layout)
            outputs = []

            def forward(x, outputs=outputs):
                outputs.append(model(x))
                return outputs[-1]

            task.evaluate_batch(model, forward, inputs, targets, evaluation, autocast)
            kept = [i for i in indices if data.names[i] not in gone]
            records.append((kept, outputs, targets))
    if evaluation.seen == 0:
        raise EvaluateError(f"{data.described}: no item could be read", "check the paths the source names")
    metrics = {key.removeprefix("val_"): value for key, value in evaluation.result().items()}
    return EvaluateResult(
        described=data.described,
        metrics=metrics,
        per_class=task.per_class(evaluation, run.classes),
        confusion=task.confusion(evaluation),
        mistakes=task.mistakes(evaluation, records, data.names, run.classes, worst),
        evaluated=evaluation.seen,
        skipped=skipped,
    )


def _autocast(precision: str, device: torch.device):
    """The run's precision, as its evaluations had it (runtime/trainer.py)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


# --- SOURCE: as a recipe writes it, or a plain path ------------------------------

_CALL = re.compile(r"\s*[A-Za-z_]\w*\s*\(")


def data_source(run: TrainedRun, text: str | None):
    """The source SOURCE names, checked as the recipe's `val` line would be; None: the run's own val."""
    if text is None:
        return None
    expression = text if _CALL.match(text) else source_expression(run.plan, text)
    from recipe_lang import parse

    recipe_file = os.path.join(run.folder, "recipe.ftr")
    with open(recipe_file, encoding="utf-8") as file:
        recipe_text = file.read()
    overrides = from_run.recorded_overrides(recipe_text) + [f"data.val={expression}"]
    try:
        return parse(recipe_text, recipe_file, overrides).data.val
    except RecipeError as error:  # in SOURCE (checked as the line `val SOURCE`), or the run's recipe
        diagnostics = [_named_source(d) for d in error.diagnostics]
        if all(d.span is not None and d.span.origin and d.span.origin[0] == "SOURCE" for d in diagnostics):
            raise UsageError(diagnostics, "", "SOURCE") from None
        raise RecipeError(diagnostics, error.source, error.filename) from None


def _named_source(diagnostic: Diagnostic) -> Diagnostic:
    span = diagnostic.span
    if span is None or span.origin is None or span.origin[0] != "--set data.val":
        return diagnostic
    return dataclasses.replace(diagnostic, span=dataclasses.replace(span, origin=("SOURCE", span.origin[1])))


def source_expression(plan, path: str) -> str:
    """A plain path as a source of the kind the run trained on: a folder of class folders
    (or a VOC folder), a CSV or JSON-lines file with the run's column names."""
    train = plan.data.train
    quoted = json.dumps(path)
    if os.path.isdir(path):
        if train.kind == "voc":
            split = plan.data.val.split if getattr(plan.data.val, "kind", None) == "voc" else "test"
            return f'voc({quoted}, split="{split}")'
        return f"imagefolder({quoted})"
    lowered = path.lower()
    if lowered.endswith(".csv"):
        columns = {
            k: getattr(train, k) for k in ("image", "label", "text") if train.kind == "csv" and getattr(train, k)
        }
        return f"csv({quoted}" + "".join(f", {k}={json.dumps(v)}" for k, v in columns.items()) + ")"
    if lowered.endswith((".jsonl", ".ndjson")):
        keys = {k: getattr(train, k) for k in ("text", "label")} if train.kind == "jsonl" else {}
        return f"jsonl({quoted}" + "".join(f", {k}={json.dumps(v)}" for k, v in keys.items()) + ")"
    if os.path.exists(path):
        raise EvaluateError(
            f"cannot tell what kind of data '{path}' is",
            'write the source as a recipe does, e.g. \'coco("val.json", images="images")\'',
        )
    raise EvaluateError(f"'{path}' does not exist", "give a folder or file of labelled data")


# --- what it prints and writes ---------------------------------------------------


def summary_text(run: TrainedRun, result: EvaluateResult) -> str:
    lines = [f"{run.model_file} on {result.described}: {result.evaluated} items"]
    lines += [f"  {key:<12} {value:.4f}" for key, value in result.metrics.items()]
    if result.per_class:
        lines += ["", _table(result.per_class)]
    if result.mistakes:
        lines += ["", f"worst {len(result.mistakes)} mistakes:", _table(result.mistakes)]
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [keys] + [[_shown(row[k]) for k in keys] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _shown(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_folder(folder: str, run: TrainedRun, result: EvaluateResult) -> list[str]:
    """metrics.json, per_class.csv, mistakes.csv, and for classification confusion.csv and
    confusion.png (when matplotlib is installed); returns the files written."""
    os.makedirs(folder, exist_ok=True)
    written = []

    def put(name: str, text: str) -> None:
        atomic_write_text(os.path.join(folder, name), text)
        written.append(name)

    about = {"run": run.folder, "model": os.path.basename(run.model_file), "data": result.described}
    put("metrics.json", json.dumps({**result.metrics, "items": result.evaluated, **about}, indent=2) + "\n")
    if result.per_class:
        put("per_class.csv", _csv(result.per_class))
    put("mistakes.csv", _csv(result.mistakes) if result.mistakes else "")
    if result.confusion is not None:
        put("confusion.csv", _csv(_confusion_rows(result.confusion, run.classes)))
        if _confusion_png(os.path.join(folder, "confusion.png"), result.confusion, run.classes):
            written.append("confusion.png")
        else:
            print("ftr evaluate: confusion.png needs matplotlib: pip install 'ftr[report]'", file=sys.stderr)
    return written


def _csv(rows: list[dict]) -> str:
    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    return text.getvalue()


def _confusion_rows(confusion: list[list[int]], classes: list[str]) -> list[dict]:
    return [
        {"label": name, **dict(zip(classes, row, strict=True))} for name, row in zip(classes, confusion, strict=True)
    ]


def _confusion_png(path: str, confusion: list[list[int]], classes: list[str]) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot

    side = min(2 + 0.45 * len(classes), 24)
    figure, axes = pyplot.subplots(figsize=(side, side))
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=90)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("label")
    if len(classes) <= 30:
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    from recipe_lang.files import atomic_write

    atomic_write(path, lambda out: out.write(buffer.getvalue()))
    return True
