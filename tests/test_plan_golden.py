"""`ftr plan` of every recipe in recipes/, compared with tests/expected_plans/<stem>.txt.

The table is what a user reads before a run (groups, sizes, rates, what trains
when), so any change to it must be seen and meant. The data is not looked at
and no `weights file(...)` is opened (`resolve(..., data=False, weights_file=False)`).

After an intended change, regenerate the expected files and read the diff:

    FTR_UPDATE_GOLDEN=1 python -m pytest tests/test_plan_golden.py
    git diff tests/expected_plans

Every recipe is also checked here for what the repository promises about it:
canonical under `ftr fmt`, passing `ftr check --syntax`, and a plan in which each
parameter is in exactly one group and each trainable one in one optimizer group.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.formatter import format_text
from recipe_lang.resolve import resolve
from recipe_lang.resolve.plan import Plan
from recipe_lang.resolve.table import plan_table

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.ftr"))
EXPECTED = Path(__file__).resolve().parent / "expected_plans"
UPDATE = os.environ.get("FTR_UPDATE_GOLDEN") == "1"


@functools.cache
def plan_of(path: Path) -> Plan:
    return resolve(recipe_lang.load(path), data=False, weights_file=False)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_plan_table_matches_the_expected_file(path):
    table = plan_table(plan_of(path))
    expected = EXPECTED / f"{path.stem}.txt"
    if UPDATE:
        EXPECTED.mkdir(exist_ok=True)
        expected.write_text(table, encoding="utf-8", newline="\n")
        return
    assert expected.exists(), f"no {expected.name}: run FTR_UPDATE_GOLDEN=1 python -m pytest {Path(__file__).name}"
    assert table == expected.read_text(encoding="utf-8")


def test_every_expected_plan_has_its_recipe():
    stems = {p.stem for p in RECIPES}
    orphans = sorted(p.name for p in EXPECTED.glob("*.txt") if p.stem not in stems)
    assert not orphans, f"expected plans without a recipe: {orphans}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_canonical(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_passes_the_syntax_check(path, capsys):
    assert main(["check", "--syntax", str(path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_plan_is_consistent(path):
    plan = plan_of(path)
    owned = [name for group in plan.groups for name in group.params]
    assert len(owned) == len(set(owned)), "a parameter is in two groups"
    assert sum(group.numel for group in plan.groups) == plan.total_params
    grouped = [name for og in plan.optimizer_groups for name in og.params]
    assert len(grouped) == len(set(grouped)), "a parameter is in two optimizer groups"
    assert {name for phase in plan.phases for name in phase.trainable} <= set(grouped)
    assert plan.phases[0].first == 1 and plan.phases[-1].last == plan.epochs
    assert all(a.last + 1 == b.first for a, b in zip(plan.phases[:-1], plan.phases[1:], strict=True))
    assert plan.warnings == []
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
