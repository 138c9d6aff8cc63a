"""`ftr compare`: the final and best metrics of finished runs, side by side, or with
`--mean` their mean and sample standard deviation per recipe."""

from __future__ import annotations

import statistics
from pathlib import Path

from .run_files import RunFileError, read_json

_SUMMARY_KEYS = {"status": str, "epochs": int, "of_epochs": int, "final": dict, "seconds": (int, float)}


class CompareError(Exception):
    pass


def read_run(folder: str) -> dict:
    path = Path(folder) / "summary.json"
    if not path.exists():
        reason = "it is not a run folder" if not (Path(folder) / "checkpoint.pt").exists() else "it has not finished"
        raise CompareError(f"{folder} has no summary.json: {reason}")
    hint = "finish the run again with `ftr run ... --resume` (delete summary.json first), or leave it out"
    try:
        summary = read_json(path)
    except RunFileError as error:
        raise CompareError(str(error.with_hint(hint))) from None
    wrong = [key for key, kind in _SUMMARY_KEYS.items() if not isinstance(summary.get(key), kind)]
    best = summary.get("best")
    if best is not None and not (isinstance(best, dict) and {"metric", "value", "epoch"} <= best.keys()):
        wrong.append("best")
    if wrong:
        raise CompareError(f"{path} is not a summary ftr wrote: {', '.join(wrong)} missing or of another type; {hint}")
    return summary


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
    return _layout(rows)


def mean_table(folders: list[str]) -> str:
    """One row per recipe name: each final metric, the best value and the seconds as
    mean ± sample standard deviation over that recipe's runs, and the best epochs' range."""
    groups: dict[str, list[dict]] = {}
    for folder in folders:
        summary = read_run(folder)
        if "recipe" not in summary:
            raise CompareError(f"{folder}/summary.json names no recipe: rerun it with this version of ftr")
        groups.setdefault(summary["recipe"], []).append(summary)
    metrics = _common_metrics([s["final"] for runs in groups.values() for s in runs])
    header = ["recipe", "runs", *metrics, "best", "best epoch", "seconds"]
    rows = [header]
    for name, runs in groups.items():
        bests = [s["best"] for s in runs if s.get("best")]
        rows.append(
            [
                name,
                _runs(runs),
                *[_spread([s["final"].get(key) for s in runs]) for key in metrics],
                f"{bests[0]['metric']} {_spread([b['value'] for b in bests])}" if bests else "-",
                _range([b["epoch"] for b in bests]),
                _spread([s["seconds"] for s in runs], digits=1),
            ]
        )
    note = "mean ± sd: the mean and sample standard deviation over a recipe's runs; best epoch: min-max"
    return _layout(rows) + "\n" + note


def _runs(runs: list[dict]) -> str:
    unfinished = sum(1 for s in runs if s["status"] != "finished")
    return f"{len(runs)}" + (f" ({unfinished} stopped early)" if unfinished else "")


def _spread(values: list, digits: int = 4) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else "-"
    return f"{statistics.fmean(values):.{digits}f} ± {sd}"


def _range(values: list[int]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def _layout(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _common_metrics(finals: list[dict]) -> list[str]:
    """The losses and metrics, then pseudo_share and pseudo_accuracy where a run logs them."""
    keys = []
    for final in finals:
        keys += [k for k in final if (k == "train_loss" or k.startswith("val_")) and k not in keys]
    for final in finals:
        keys += [k for k in final if k.startswith("pseudo_") and k not in keys]
    return keys


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
