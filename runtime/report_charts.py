"""The charts of `ftr report`, drawn on matplotlib's Agg canvas (no pyplot: no window,
no global backend): one chart per metric with a line per run and its best epoch
marked, then each run's rate per group with its thaw and freeze events."""

from __future__ import annotations

import io
from dataclasses import dataclass

from .report import Run

SIZE = (7.0, 3.6)  # inches, at DPI
DPI = 96
SPLITS = ("train", "val")


@dataclass
class Chart:
    title: str
    png: bytes


PSEUDO_KEYS = ("pseudo_share", "pseudo_accuracy")


def draw(runs: list[Run]) -> list[Chart]:
    charts = [_metric_chart(runs, metric) for metric in metric_names(runs)]
    if any(key in row for run in runs for row in run.rows for key in PSEUDO_KEYS):
        charts.append(_pseudo_chart(runs))
    return charts + [_rates_chart(run) for run in runs if rate_keys(run)]


def metric_names(runs: list[Run]) -> list[str]:
    """loss first (train_loss and val_loss share a chart), then the others as the rows name them."""
    names = ["loss"]
    for run in runs:
        for row in run.rows:
            names += [key.split("_", 1)[1] for key in row if key.startswith(("train_", "val_"))]
    return list(dict.fromkeys(names))


def rate_keys(run: Run) -> list[str]:
    return list(dict.fromkeys(key for row in run.rows for key in row if key.startswith("lr/")))


def _series(run: Run, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows that have `key`: val_ keys only where the epoch was evaluated."""
    rows = [row for row in run.rows if isinstance(row.get(key), (int, float))]
    return [row["epoch"] for row in rows], [row[key] for row in rows]


def _metric_chart(runs: list[Run], metric: str) -> Chart:
    figure, axes = _figure()
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        for split, style in zip(SPLITS, ("-", "--"), strict=True):
            epochs, values = _series(run, f"{split}_{metric}")
            if epochs:
                axes.plot(epochs, values, style, color=colour, marker=".", label=f"{run.name} {split}")
        _mark_best(axes, run, metric, colour)
    title = f"{metric} per epoch"
    return _finish(figure, axes, title, metric)


def _pseudo_chart(runs: list[Run]) -> Chart:
    """pseudo_label: the share of unlabeled images selected, and how many of them carry
    their true class where the folder says it, per epoch."""
    figure, axes = _figure()
    for i, run in enumerate(runs):
        for key, style in zip(PSEUDO_KEYS, ("-", "--"), strict=True):
            epochs, values = _series(run, key)
            if epochs:
                axes.plot(epochs, values, style, color=f"C{i % 10}", marker=".", label=f"{run.name} {key}")
    axes.set_ylim(0, 1.02)
    return _finish(figure, axes, "pseudo-labels per epoch", "share / accuracy")


def _mark_best(axes, run: Run, metric: str, colour: str) -> None:
    """A dotted line at the best epoch; a star on the curve of the metric that chose it."""
    best = run.best
    if best is None:
        return
    axes.axvline(best["epoch"], color=colour, linestyle=":", label=f"{run.name} best epoch {best['epoch']}")
    if best["metric"] == metric and isinstance(best.get("value"), (int, float)):
        axes.plot([best["epoch"]], [best["value"]], "*", color=colour, markersize=14)


def _rates_chart(run: Run) -> Chart:
    figure, axes = _figure()
    for key in rate_keys(run):
        epochs, values = _series(run, key)
        axes.plot(epochs, values, marker=".", label=key.removeprefix("lr/"))
    for event in run.events:
        axes.axvline(event.epoch, color="grey", linestyle="--")
        axes.annotate(
            f"{event.action} {', '.join(event.names)}",
            (event.epoch, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="dimgrey",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    return _finish(figure, axes, f"{run.name}: learning rate per group", "learning rate")


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _finish(figure, axes, title: str, ylabel: str) -> Chart:
    from matplotlib.ticker import MaxNLocator

    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return Chart(title, png.getvalue())
