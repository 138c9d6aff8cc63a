"""`ftr compare`: the final and best metrics of finished runs, side by side."""

from __future__ import annotations

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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _common_metrics(finals: list[dict]) -> list[str]:
    keys = []
    for final in finals:
        keys += [k for k in final if (k == "train_loss" or k.startswith("val_")) and k not in keys]
    return keys


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
