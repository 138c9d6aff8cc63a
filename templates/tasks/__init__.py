"""What the compiled script does differently per task, behind one small interface.

A task has a package here, `templates/tasks/<task>/`: its module (the package's
__init__.py) and its template parts (`_*.py.jinja`) side by side. The shared
templates (settings, data loaders, the model's spans, optimizer and rates,
processes, checkpoints, the loop, the run folder) know no task: at fixed points
they include the task's parts, chosen by `plan.task`, and the compiler asks the
task's module for what those parts read. A new task adds its package (and its
name to pyproject.toml's packages); nothing shared changes.

The module has:

- `meta_model(plan)`: the plan's model on the meta device, its new head in place
  (the names the script's parameter lists are written against).
- `context(plan, model)`: a dict the task's parts read as `task`; its `imports`
  are the import statements the task's code needs (merged with the shared ones
  into the script's import block), its `requires` what the script needs besides
  the standard library (the docstring says it), and `per_class` whether an
  evaluation also gives per-class figures (written to per_class.jsonl).

The task's template parts are included by the shared parts at fixed points
(`{% include "tasks/" ~ plan.task ~ "/_run_step.py.jinja" %}`); a part named
`_X.py.jinja` or `_X_Y.py.jinja` belongs to the shared part `_X.py.jinja`:

- `_settings_inputs.py.jinja`: the settings of the inputs (their transforms).
- `_settings_loss.py.jinja`: the settings of the loss.
- `_data.py.jinja`: the data sources, the datasets with their pipelines
  (`datasets(root, train_path, val_path)` -> train set, val set or None, class
  names) and `collate(items)` -> (inputs, labels, unreadable items).
- `_model.py.jinja`: `build_model(root)`: the model, its weights and its new
  head, spending the seed as the runtime's task does.
- `_training_metrics.py.jinja`: helpers of the metrics.
- `_training_evaluate.py.jinja`: `evaluate(...)`, the val_<metric> values of one
  pass over the val set (with `per_class`, and the figures per class).
- `_run_setup.py.jinja`: lines of Training.__init__ (a criterion).
- `_run_step.py.jinja`: the training step's batch on the device and its `loss`.
- `_run_evaluate.py.jinja`: the evaluation of an epoch in the loop: `row` gets
  its values (with `per_class`, `self.details` a row of per_class.jsonl).

Shared template code that several tasks use (`_images.py.jinja`: reading
images; `_split.py.jinja`: a seeded hold-out) is included by their parts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..code import CompileError


def task_module(plan) -> ModuleType:
    try:
        return importlib.import_module(f"{__name__}.{plan.task}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{plan.task}":
            raise
        raise CompileError(f"ftr compile writes no script for task {plan.task} yet") from None
