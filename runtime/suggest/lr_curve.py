"""The range test's curve as a PNG, drawn on matplotlib's Agg canvas (no pyplot):
each step's loss faint, the smoothed loss over it, the suggestion marked."""

from __future__ import annotations

from recipe_lang.files import atomic_write

from .lr_range import Sweep

MISSING_MATPLOTLIB = "the curve's PNG needs matplotlib: pip install 'ftr[report]'"
SIZE = (6.4, 4.0)  # inches
DPI = 100


def missing_matplotlib() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MISSING_MATPLOTLIB
    return None


def draw_curve(sweep: Sweep, suggested: int, path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(sweep.rates, sweep.losses, color="#bbbbbb", linewidth=0.8, label="loss of each step")
    axes.plot(sweep.rates, sweep.smoothed, color="#1f77b4", linewidth=1.6, label="smoothed loss")
    rate = sweep.rates[suggested]
    axes.axvline(rate, color="#d62728", linestyle="--", linewidth=1.0)
    axes.plot([rate], [sweep.smoothed[suggested]], "o", color="#d62728", label=f"suggested: {rate:.2g}")
    if sweep.stop_rate is not None:
        axes.axvline(sweep.stop_rate, color="#7f7f7f", linestyle=":", linewidth=1.0, label=f"stopped: {sweep.stop}")
    axes.set_xscale("log")
    axes.set_ylim(*_loss_range(sweep))
    axes.set_xlabel("learning rate of the largest group")
    axes.set_ylabel("training loss")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda out: figure.savefig(out, format="png"))


def _loss_range(sweep: Sweep) -> tuple[float, float]:
    """From the lowest smoothed loss to a little above the first: a divergent tail
    would otherwise flatten the part of the curve that matters."""
    low, high = min(sweep.smoothed), max(sweep.smoothed[0], min(sweep.smoothed))
    margin = 0.1 * (high - low) or 0.1 * abs(high) or 0.1
    return low - margin, high + 2 * margin
