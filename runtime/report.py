"""`ftr report RUN...`: one self-contained HTML page of runs, overlaid: their curves
(report_charts.py), thaw and freeze events, best epoch, plan and recipe
(report_html.py). What is read here comes from the run folder alone, as `ftr run`
or a compiled script wrote it; the plan is resolved again from its recipe.ftr."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recipe_lang.files import atomic_write_text

from .run_files import RunFileError, read_json, read_jsonl, read_text

MISSING_MATPLOTLIB = "ftr report needs matplotlib: pip install 'ftr[report]'"
RUN_FOLDER_HINT = "give a folder that `ftr run` or a compiled script wrote (its --out)"
METRICS_HINT = (
    "leave this run out, or, if it is unfinished, write the file again from its checkpoint with `ftr run ... --resume`"
)
SUMMARY_HINT = "finish the run again with `ftr run ... --resume` (delete summary.json first), or leave it out"


class ReportError(Exception):
    pass


@dataclass
class Event:
    epoch: int
    action: str  # thaw | freeze
    names: list[str]  # as the recipe writes them: groups or selectors

    def __str__(self) -> str:
        return f"epoch {self.epoch}: {self.action} {', '.join(self.names)}"


@dataclass
class Run:
    folder: Path
    name: str  # the legend's: the folder's name, or its path where two names are alike
    rows: list[dict]
    summary: dict | None  # None while the run is unfinished
    recipe: str | None
    plan_table: str | None = None
    plan_note: str | None = None  # why the plan is not (or not freshly) shown
    events: list[Event] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        best = (self.summary or {}).get("best")
        if isinstance(best, dict) and isinstance(best.get("epoch"), int) and "metric" in best:
            return best
        return None


def missing_matplotlib() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MISSING_MATPLOTLIB
    return None


def write_report(folders: list[str], output: str | None = None) -> Path:
    """Read the runs, draw them, write the page atomically; return its path."""
    from .report_charts import draw
    from .report_html import page

    runs = [read_run(Path(folder)) for folder in folders]
    _name(runs)
    path = Path(output) if output else runs[0].folder / "report.html"
    text = page(runs, draw(runs))
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def read_run(folder: Path) -> Run:
    rows = _rows(folder)
    run = Run(folder, folder.resolve().name, rows, _summary(folder), recipe=None)
    try:
        run.recipe = read_text(folder / "recipe.ftr") if (folder / "recipe.ftr").exists() else None
    except RunFileError as error:
        run.plan_note = f"{error}: neither the recipe nor the plan can be shown"
        return run
    _add_plan(run)
    return run


def _rows(folder: Path) -> list[dict]:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ReportError(f"{folder} {what}: {RUN_FOLDER_HINT}")
    path = folder / "metrics.jsonl"
    if not path.exists():
        if (folder / "recipe.ftr").exists():
            raise ReportError(f"{folder} has no metrics.jsonl yet: report it once its first epoch has finished")
        raise ReportError(f"{folder} is not a run folder: it has no metrics.jsonl; {RUN_FOLDER_HINT}")
    try:
        rows = read_jsonl(path)
    except RunFileError as error:
        raise ReportError(str(error.with_hint(METRICS_HINT))) from None
    if not rows:
        raise ReportError(f"{path} holds no epoch's row: {METRICS_HINT}")
    return rows


def _summary(folder: Path) -> dict | None:
    path = folder / "summary.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except RunFileError as error:
        raise ReportError(str(error.with_hint(SUMMARY_HINT))) from None


def _add_plan(run: Run) -> None:
    """The plan table and the thaw and freeze events that happened, from the recipe
    resolved again (without data or weight files); else plan.txt, and why."""
    from recipe_lang import parse
    from recipe_lang.diagnostics import RecipeError
    from recipe_lang.resolve import resolve
    from recipe_lang.resolve.from_run import recorded_overrides
    from recipe_lang.resolve.table import plan_table

    if run.recipe is None:
        run.plan_note = f"{run.folder} has no recipe.ftr, so the plan is unknown"
        return
    try:
        recipe = parse(run.recipe, str(run.folder / "recipe.ftr"), recorded_overrides(run.recipe))
        plan = resolve(recipe, data=False, weights_file=False)
    except RecipeError as error:
        run.plan_note = "its recipe.ftr does not resolve any more:\n" + error.render()
        _written_plan(run)
        return
    run.plan_table = plan_table(plan)
    reached = max(row["epoch"] for row in run.rows)
    for phase in plan.phases:
        if 1 < phase.first <= reached:
            run.events += [Event(phase.first, "thaw", phase.thawed)] if phase.thawed else []
            run.events += [Event(phase.first, "freeze", phase.frozen)] if phase.frozen else []


def _written_plan(run: Run) -> None:
    path = run.folder / "plan.txt"
    try:
        run.plan_table = read_text(path) if path.exists() else None
    except RunFileError:
        return
    if run.plan_table is not None:
        run.plan_note += "\nthe plan below is plan.txt, as written when the run started"


def _name(runs: list[Run]) -> None:
    """Each run by its folder's name; by its path where two folders share a name."""
    names = [run.name for run in runs]
    for run in runs:
        run.name = str(run.folder) if names.count(run.name) > 1 else run.name
