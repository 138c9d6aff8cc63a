"""predict.py of an exported model (`ftr export`): the run's plan rendered through
templates/export/predict.py.jinja and the task's `_export_*.py.jinja` parts.

The model is built by the task's `_model.py.jinja`, the compiled script's own
build_model, given a context in which no weights are read (the task module's
`export_context`): model.safetensors then fills it. The script is checked with
`ast.parse` before it is returned.
"""

from __future__ import annotations

import ast
import re

from recipe_lang import __version__
from recipe_lang.resolve.plan import Plan

from . import tasks
from .code import CompileError
from .compiler import environment
from .imports import import_block

SHARED_IMPORTS = (
    "import argparse",
    "import os",
    "import sys",
    "import torch",
    "from safetensors.torch import load_file",
)
# imported only where the rendered code uses them
USED_IMPORTS = {r"\bnn\.": "from torch import nn", r"\bmath\.": "import math"}

USAGE = {
    "classification": ("[--top K]", "Prints a line per image: its path, label and probability, tab-separated."),
    "text_classification": (
        "[--column NAME] [--top K]",
        "Prints a line per text (named path:line): name, label and probability, tab-separated.",
    ),
    "detection": (
        "[--threshold P]",
        "Prints a line per box scored at least P (default 0.5): the image's path, label,\n"
        "score, and x1 y1 x2 y2 in the image's pixels, tab-separated.",
    ),
}


def predict_script(plan: Plan, classes: list[str], parameters: int, source: str) -> str:
    """The script; `source` says where the model came from (a line of its header)."""
    module = tasks.task_module(plan)
    task = module.export_context(plan)
    usage, prints = USAGE[plan.task]
    context = {
        "header": f"{plan.name}: exported by ftr {__version__} from {source}",
        "plan": plan,
        "task": task,
        "classes": list(classes),
        "parameters": parameters,
        "weights": {"file": None, "run_file": None},
        "usage": usage,
        "prints": prints,
        "imports": "{imports}",
    }
    template = environment().get_template("export/predict.py.jinja")
    body = template.render(context)
    statements = list(SHARED_IMPORTS) + list(task["imports"])
    statements += [line for pattern, line in USED_IMPORTS.items() if re.search(pattern, body)]
    script = body.replace("{imports}", import_block(statements), 1).rstrip("\n") + "\n"
    try:
        ast.parse(script)
    except SyntaxError as error:
        raise CompileError(f"the generated predict.py does not parse: {error}") from error
    return script
