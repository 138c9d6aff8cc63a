"""What the runtime does differently per task, behind one small interface.

Each task is a module with a `Task(plan)` class; the trainer calls only these:

- `build_model()`: the model with its weights and new head, drawing from the
  global generator in the order reference/seed_loop.py does.
- `datasets()`: runtime.data.Datasets (train, val, classes, skipped).
- `collate`: the loaders' collate function, or None for torch's default.
- `to_device(batch, device, layout)`: (inputs, targets) on the device.
- `count(targets)`: how many items a batch holds.
- `loss(forward, inputs, targets)`: the training loss of a batch.
- `evaluation(classes)`: an accumulator of one validation pass with `loss_sum`, `seen`,
  `result()` ({"val_<metric>": value}), `details()` (per-class figures or None)
  and `reduce(dist)` (sums or gathers it over processes).
- `evaluate_batch(model, forward, inputs, targets, evaluation, autocast)`: adds
  a batch to the evaluation and returns its mean loss, without changing any
  state of the model or of the random generators.
"""

from __future__ import annotations

import importlib


def runtime_task(plan):
    return importlib.import_module(f"{__name__}.{plan.task}").Task(plan)
