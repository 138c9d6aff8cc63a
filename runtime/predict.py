"""`ftr predict RUN INPUT...`: a run's model on new inputs, through its eval preprocessing.

The task says what an input is (image files, texts), how a batch becomes predictions
and how a prediction becomes rows; this module batches, shows progress, writes CSV or
JSON lines (to a file atomically: an interrupted predict leaves no half file) and
counts what it could not read."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from recipe_lang.files import atomic_write

from .trained import TrainedRun


@dataclass
class PredictOptions:
    top: int | None = None  # classification: labels per input (default 1); detection: boxes per image (all)
    fmt: str = "csv"
    output: str | None = None  # None: standard output
    batch_size: int = 32
    device: str = "cpu"
    column: str | None = None  # text: the CSV column or JSON key of the texts
    threshold: float | None = None  # detection: the lowest score reported
    progress: bool = False
    draw: str | None = None  # detection: a folder for copies of the images with their boxes drawn


@dataclass
class PredictSummary:
    predicted: int = 0
    rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # input -> reason


def predict(run: TrainedRun, inputs: list[str], options: PredictOptions) -> PredictSummary:
    task = run.task
    if options.threshold is not None:
        task.threshold = options.threshold
    found = task.prediction_inputs(inputs, options.column)
    summary = PredictSummary(skipped=dict(found.missing))
    if not found.items:
        return summary
    loader = DataLoader(
        task.prediction_dataset(found),
        batch_size=options.batch_size,
        num_workers=run.plan.data.workers,
        collate_fn=task.prediction_collate,
    )
    top = options.top if options.top is not None else task.default_top
    device = torch.device(options.device)
    model = run.model.to(device)
    writer = _RowWriter(options.fmt)
    drawn = _Drawings(options.draw)

    def write(out) -> None:
        batches = tqdm(loader, unit="batch", file=sys.stderr, disable=not options.progress, leave=False)
        with torch.inference_mode():
            for batch in batches:
                summary.skipped.update({u.path: u.reason for u in getattr(batch, "skipped", ())})
                if batch[0] is None:  # every image of the batch was unreadable
                    continue
                indices, predictions = task.predict_batch(model, batch, device, top)
                for index, prediction in zip(indices, predictions, strict=True):
                    rows = task.prediction_rows(found.names[index], prediction, run.classes)
                    summary.predicted += 1
                    summary.rows += len(rows)
                    out.write(writer.encode(rows))
                    if options.draw:
                        drawn.put(task, found.items[index], prediction, run.classes)

    if options.output is None:
        write(_StdoutBytes())
    else:
        atomic_write(options.output, write)
    return summary


class _Drawings:
    """Copies of the images with what was found drawn, one file each in `folder`, named
    after the image (a second image of the same name gets -2, -3, ...)."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self.taken: set[str] = set()
        if folder:
            os.makedirs(folder, exist_ok=True)

    def put(self, task, file: str, prediction, classes: list[str]) -> None:
        stem = os.path.splitext(os.path.basename(file))[0]
        name, n = f"{stem}.png", 1
        while name in self.taken:
            n += 1
            name = f"{stem}-{n}.png"
        self.taken.add(name)
        task.draw(file, prediction, classes, os.path.join(self.folder, name))


class _RowWriter:
    """Rows as CSV (a header first, from the first row's keys) or as JSON lines, in bytes."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.header: list[str] | None = None

    def encode(self, rows: list[dict]) -> bytes:
        if self.fmt == "jsonl":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        for row in rows:
            if self.header is None:
                self.header = list(row)
                out.writerow(self.header)
            out.writerow([_cell(row.get(key)) for key in self.header])
        return text.getvalue().encode("utf-8")


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) else value


class _StdoutBytes:
    def write(self, data: bytes) -> None:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
