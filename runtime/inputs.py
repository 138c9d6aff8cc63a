"""What `ftr predict` is given, made into items: image files (folders walked
recursively), or texts (a file of lines, or a column of a CSV or JSON-lines file).

An input that does not exist, or a text file that cannot be read, is named in
`missing` and left out; the caller reports and counts it."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

from torchvision.datasets.folder import IMG_EXTENSIONS


@dataclass
class Inputs:
    names: list[str] = field(default_factory=list)  # one per item, what the output's `input` column says
    items: list = field(default_factory=list)  # file paths, or texts
    missing: dict[str, str] = field(default_factory=dict)  # input -> why it was left out


def image_files(inputs: list[str]) -> Inputs:
    """Files as given (whatever their extension: an unreadable one is found when read);
    folders walked recursively, in sorted order, for files with an image extension."""
    found = Inputs()
    for given in inputs:
        if os.path.isdir(given):
            files = _images_under(given)
            if not files:
                found.missing[given] = "a folder without image files"
            found.items += files
        elif os.path.isfile(given):
            found.items.append(given)
        else:
            found.missing[given] = "no such file or folder"
    found.names = list(found.items)
    return found


def _images_under(folder: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS)]
    return files


def texts(inputs: list[str], column: str) -> Inputs:
    """Each input: a .csv file (its `column`), a .jsonl file (each line's `column` key), or
    any other text file (each non-blank line a text). Named `path:N`, N the line number."""
    found = Inputs()
    for given in inputs:
        try:
            pairs = list(_texts_of(given, column))
        except OSError as error:
            found.missing[given] = error.strerror or str(error)
            continue
        except (UnicodeDecodeError, ValueError) as error:
            found.missing[given] = str(error)
            continue
        found.names += [f"{given}:{line}" for line, _ in pairs]
        found.items += [text for _, text in pairs]
    return found


def _texts_of(path: str, column: str):
    if os.path.isdir(path):
        raise ValueError("a folder: give text files (a line each), or CSV or JSON-lines files")
    with open(path, encoding="utf-8-sig", newline="") as file:
        if path.lower().endswith(".csv"):
            yield from _csv_texts(file, column)
        elif path.lower().endswith((".jsonl", ".ndjson")):
            yield from _jsonl_texts(file, column)
        else:
            for number, line in enumerate(file, 1):
                if line.strip():
                    yield number, line.rstrip("\r\n")


def _csv_texts(file, column: str):
    reader = csv.DictReader(file)
    if column not in (reader.fieldnames or []):
        raise ValueError(f"no column '{column}' (it has {', '.join(reader.fieldnames or [])}): name it with --column")
    for row in reader:
        yield reader.line_num, row[column] or ""


def _jsonl_texts(file, column: str):
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get(column), str):
            raise ValueError(f"line {number} has no text under '{column}': name the key with --column")
        yield number, record[column]
