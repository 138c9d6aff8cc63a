"""Reading the files of a run folder, whatever they hold: a damaged, empty, foreign
or hostile file is a RunFileError that names it and says what is wrong, never a
traceback, and nothing in it runs (torch.load with weights_only=True only).

Writing them is recipe_lang/files.py's (atomic) and checkpoint.py's (rotation)."""

from __future__ import annotations

import errno
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

_UNREADABLE = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EIO)
CUT_SHORT = "cut short (a copy that stopped, or a disk that filled)"


class RunFileError(Exception):
    """A run file that cannot be used: `problem` says what is wrong with it, `hint` what to do."""

    def __init__(self, path: Path, problem: str, hint: str = ""):
        self.path, self.problem, self.hint = Path(path), problem, hint
        super().__init__(f"{path} {problem}" + (f"; {hint}" if hint else ""))

    def with_hint(self, hint: str) -> RunFileError:
        return RunFileError(self.path, self.problem, hint)


def read_bytes_check(path: Path) -> None:
    """The file exists, is a file and is not empty."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(path, "does not exist")
    if not path.is_file():
        raise RunFileError(path, "is not a file")
    if path.stat().st_size == 0:
        raise RunFileError(path, f"is empty: {CUT_SHORT}")


def read_tensors(path: Path):
    """What torch.save wrote: tensors and plain containers, never other objects."""
    read_bytes_check(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of a foreign file
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (it refers to '{refused.group(1)}')" if refused else ""
        raise RunFileError(
            path, f"holds objects other than tensors{what}: it was refused unread, and nothing in it ran"
        ) from None
    except OSError as error:
        if error.errno in _UNREADABLE:
            raise RunFileError(path, f"cannot be read: {error.strerror or error}") from None
        raise RunFileError(path, f"is damaged: {CUT_SHORT}") from None
    except Exception as error:  # a damaged zip: RuntimeError, EOFError, KeyError, ...
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if "central directory" in first or isinstance(error, EOFError):
            raise RunFileError(path, f"is damaged: {CUT_SHORT}") from None
        raise RunFileError(path, "is not a file torch.save wrote, or is damaged") from None


def read_text(path: Path) -> str:
    read_bytes_check(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunFileError(path, f"is not UTF-8 text (byte {error.start}): damaged, or another file") from None
    except OSError as error:
        raise RunFileError(path, f"cannot be read: {error.strerror or error}") from None


def read_json(path: Path, kind: type = dict):
    """One JSON value of type `kind`, strict: NaN and Infinity are not JSON."""
    text = read_text(path)
    try:
        value = json.loads(text, parse_constant=_not_json)
    except ValueError as error:
        raise RunFileError(path, f"is not valid JSON ({_where(error)}): {CUT_SHORT}, or another file") from None
    if not isinstance(value, kind):
        raise RunFileError(path, f"holds a JSON {type(value).__name__}, not the {kind.__name__} ftr writes")
    return value


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object a line; a missing file is no rows."""
    if not Path(path).exists():
        return []
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_not_json)
        except ValueError as error:
            raise RunFileError(path, f"line {number} is not valid JSON ({_where(error)}): {CUT_SHORT}") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunFileError(path, f"line {number} is not an epoch's row (an object with an epoch)")
        rows.append(row)
    return rows


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _where(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    return str(error)
