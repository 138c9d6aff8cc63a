"""The page of `ftr report`: one HTML file that needs nothing else (charts as base64
PNG, the style inline, no script), every text from the run folder escaped."""

from __future__ import annotations

import base64
from html import escape

from .report import Run
from .report_charts import Chart

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
img { max-width: 100%; }
.note { color: #a33; }
"""


def page(runs: list[Run], charts: list[Chart]) -> str:
    names = ", ".join(run.name for run in runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ftr report: {escape(names)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>ftr report: {escape(names)}</h1>",
        "<h2>Curves</h2>",
        *(_image(chart) for chart in charts),
        *(_run_section(run) for run in runs),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _image(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(chart.title)}"></figure>'


def _run_section(run: Run) -> str:
    parts = [f"<h2>Run {escape(run.name)}</h2>", _facts(run)]
    if run.events:
        parts += ["<h3>Thaw and freeze events</h3>", "<ul>"]
        parts += [f"<li>{escape(str(event))}</li>" for event in run.events]
        parts.append("</ul>")
    parts.append("<h3>Plan</h3>")
    if run.plan_note:
        parts.append(f'<pre class="note">{escape(run.plan_note)}</pre>')
    if run.plan_table:
        parts.append(f"<pre>{escape(run.plan_table)}</pre>")
    if run.recipe is not None:
        parts += ["<h3>Recipe</h3>", f"<pre>{escape(run.recipe)}</pre>"]
    return "\n".join(parts)


def _facts(run: Run) -> str:
    last = run.rows[-1]
    summary = run.summary
    status = summary.get("status", "-") if summary else "unfinished (no summary.json)"
    rows = [("folder", str(run.folder)), ("status", status), ("epochs", _epochs(run))]
    best = run.best
    if best is not None:
        value = best.get("value")
        shown = f" ({value:.4f})" if isinstance(value, (int, float)) else ""
        rows.append(("best epoch", f"{best['epoch']}, by val_{best['metric']}{shown}"))
    rows += [(f"last {key}", _number(value)) for key, value in last.items() if key != "epoch"]
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _epochs(run: Run) -> str:
    done = run.rows[-1]["epoch"]
    of = (run.summary or {}).get("of_epochs")
    return f"{done} of {of}" if isinstance(of, int) else str(done)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
