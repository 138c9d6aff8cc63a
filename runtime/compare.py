"""`ftr compare`: the final and best metrics of finished runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path


class CompareError(Exception):
    pass


def read_run(folder: str) -> dict:
    path = Path(folder) / "summary.json"
    if not path.exists():
        reason = "it is not a run folder" if not (Path(folder) / "checkpoint.pt").exists() else "it has not finished"
        raise CompareError(f"{folder} has no summary.json: {reason}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CompareError(f"{path} is not valid JSON: {error}") from None


def compare_table(folders: list[str]) -> str:
    runs = [(folder, read_run(folder)) for folder in folders]
    metrics = _common_metrics([summary["final"] for _, summary in runs])
    header = ["run", "status", "epochs", *metrics, "best", "seconds"]
    rows = [header]
    for folder, summary in runs:
        final = summary["final"]
        best = summary.get("best")
        rows.append(
            [
                Path(folder).name,
                summary["status"],
                f"{summary['epochs']}/{summary['of_epochs']}",
                *[_number(final.get(key)) for key in metrics],
                f"{best['metric']} {best['value']:.4f} @{best['epoch']}" if best else "-",
                f"{summary['seconds']:.1f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _common_metrics(finals: list[dict]) -> list[str]:
    keys = []
    for final in finals:
        keys += [k for k in final if (k == "train_loss" or k.startswith("val_")) and k not in keys]
    return keys


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
