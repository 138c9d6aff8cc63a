"""Labelled texts from a CSV or JSON-lines file, read the same way by `ftr check`
and by the run: every row is read and checked, and a bad one is named by its line.

Imports neither torch nor transformers."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from ..diagnostics import did_you_mean
from .problem import Problem


@dataclass(frozen=True)
class Texts:
    texts: list[str]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def read(source) -> Texts:
    """The texts and labels of a `csv(..., text=...)` or `jsonl(...)` source."""
    if not os.path.isfile(source.path):
        kind = "csv file" if source.kind == "csv" else "jsonl file"
        raise Problem(
            f"{kind} '{source.path}' does not exist",
            hint=f"paths in a recipe are relative to the working directory (now '{os.getcwd()}')",
        )
    rows = _csv_rows(source) if source.kind == "csv" else _jsonl_rows(source)
    texts, labels = [], []
    for line, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise Problem(f"line {line} of '{source.path}' has an empty {source.text}", hint="remove the line")
        if label is None or label == "":
            raise Problem(f"line {line} of '{source.path}' has no {source.label}", hint="remove the line")
        texts.append(text)
        labels.append(str(label))
    if not texts:
        raise Problem(f"'{source.path}' has no rows")
    return Texts(texts, labels)


def _csv_rows(source):
    # utf-8-sig: spreadsheet exports often start with a byte-order mark
    with open(source.path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        _require_columns(source, reader.fieldnames or [], "column")
        for row in reader:
            yield reader.line_num, row[source.text], row[source.label]


def _jsonl_rows(source):
    with open(source.path, encoding="utf-8-sig") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as error:
                raise Problem(f"line {line} of '{source.path}' is not JSON", notes=(str(error),)) from None
            if not isinstance(row, dict):
                raise Problem(f"line {line} of '{source.path}' is not a JSON object")
            _require_columns(source, list(row), "key", line)
            yield line, row[source.text], row[source.label]


def _require_columns(source, columns: list[str], word: str, line: int | None = None) -> None:
    for column in (source.text, source.label):
        if column not in columns:
            where = f"line {line} of " if line is not None else ""
            raise Problem(
                f"{where}{source.kind} file '{source.path}' has no {word} '{column}'",
                hint=did_you_mean(column, columns) or f'write {"text" if column == source.text else "label"}="..."',
                notes=(f"{word}s: {', '.join(columns)}",),
            )
