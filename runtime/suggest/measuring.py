"""The run's own model, optimizer and train loader, made as `ftr run` makes them, for
measurements whose training is thrown away.

The random draws come in the trainer's order (seeds, data, model, loaders), all
from the plan's seed, so that a measurement is the same every time it is made.
Nothing is read from or written to the recipe's output folder.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from recipe_lang.resolve.plan import Plan

from ..data import BadImage, loaders
from ..optim import build_optimizer
from ..tasks import runtime_task


class SuggestError(Exception):
    """A measurement that cannot be made, with what to do about it."""


@dataclass
class Setup:
    plan: Plan
    task: object  # the runtime task (runtime/tasks)
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: torch.utils.data.DataLoader
    device: torch.device

    def batches(self) -> Iterator:
        """The train loader's batches, on the device, pass after pass without end."""
        while True:
            passed = False
            for batch in _readable(self.loader):
                passed = True
                yield self.task.to_device(batch, self.device, torch.contiguous_format)
            if not passed:
                raise SuggestError("the train data has no batch: give the recipe some training data")

    def loss(self, inputs, targets) -> torch.Tensor:
        return self.task.loss(self.model, inputs, targets)


def setup(plan: Plan, device: str = "cpu") -> Setup:
    device = torch.device(device)
    torch.manual_seed(plan.seed)
    random.seed(plan.seed)
    task = runtime_task(plan)
    data = task.datasets()
    model = task.build_model().to(device)
    optimizer = build_optimizer(plan, model)
    train, _ = loaders(plan, data, plan.seed, pin_memory=device.type == "cuda", collate=task.collate)
    return Setup(plan, task, model, optimizer, train, device)


def _readable(loader) -> Iterator:
    try:
        yield from loader
    except BadImage as error:  # its message names the file and what to do
        raise SuggestError(str(error)) from None
