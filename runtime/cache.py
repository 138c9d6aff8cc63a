"""The feature cache: the head's input for every train and val image, computed
once at the start of a span that recipe_lang/resolve/cache.py allows.

The cached loaders batch and shuffle exactly as the image loaders do: the train
loader draws from the same generator object (its base seed, then its
permutation), the val loader from the global generator, as the image loaders
would. So the head sees the same batches, and everything after the span
continues from the same random state as an uncached run.

Features stay in memory up to `MEMORY_LIMIT` bytes; past it they go to a file
in a hidden folder of the run folder, mapped into memory, removed at the end.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from .data import CheckedLoader, Skipped, seed_worker

MEMORY_LIMIT = 4 * 2**30


class _Captured(Exception):
    """Raised by the head's pre-hook: the rest of the forward is not needed."""


@dataclass
class CachedSpan:
    first: int  # the span's first epoch
    train: DataLoader
    val: DataLoader | None


class FeatureCache:
    def __init__(self, folder: Path, limit: int | None = None):
        self.folder = Path(folder)
        self.limit = MEMORY_LIMIT if limit is None else limit
        self.files: list[Path] = []

    def span(self, first, model, head_path, data, spec, generator, device, autocast, task) -> CachedSpan:
        """Features of the train and val sets, and their loaders for the span starting at `first`;
        `task` (runtime.tasks) collates and moves the batches."""
        self.close()
        train_set = self.features(model, head_path, data.train, spec, device, autocast, task)
        train = _loader(train_set, spec.batch_size, generator)
        val = None
        if data.val is not None:
            val_set = self.features(model, head_path, data.val, spec, device, autocast, task)
            val = _loader(val_set, spec.eval_batch_size or spec.batch_size, None)
        return CachedSpan(first, train, val)

    def features(self, model: nn.Module, head_path: str, dataset, spec, device, autocast, task) -> TensorDataset:
        """(inputs of the head, labels) for every item of dataset, in order."""
        extra = dict(num_workers=spec.workers, worker_init_fn=seed_worker) if spec.workers else {}
        extra |= dict(
            batch_size=spec.eval_batch_size or spec.batch_size,
            generator=torch.Generator(),  # draws nothing from the global generator
        )
        if task.collate is not None:
            loader = DataLoader(dataset, collate_fn=task.collate, **extra)
        else:
            loader = CheckedLoader(dataset, skip=False, skipped=Skipped(), **extra)
        captured = []

        def capture(module, args):
            captured.append(args[0])
            raise _Captured

        handle = model.get_submodule(head_path).register_forward_pre_hook(capture)
        features = labels = None
        done = 0
        model.eval()
        try:
            with torch.no_grad():
                for inputs, targets in loader:
                    with autocast():
                        try:
                            model(task.to_device((inputs, targets), device, torch.contiguous_format)[0])
                        except _Captured:
                            pass
                    batch = captured.pop().detach().cpu()
                    if features is None:
                        features = self._storage((len(dataset), *batch.shape[1:]), batch.dtype)
                        labels = torch.empty(len(dataset), dtype=torch.int64)
                    features[done : done + len(batch)] = batch
                    labels[done : done + len(batch)] = targets
                    done += len(batch)
        finally:
            handle.remove()
        return TensorDataset(features, labels)

    def _storage(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        numel = 1
        for size in shape:
            numel *= size
        if numel * dtype.itemsize <= self.limit:
            return torch.empty(shape, dtype=dtype)
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.folder, prefix=".features.", suffix=".bin")
        self.files.append(Path(name))
        with open(handle, "wb"):
            pass
        return torch.from_file(name, shared=True, size=numel, dtype=dtype).view(shape)

    def close(self) -> None:
        """Remove the files of features kept on disk."""
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files = []


def _loader(dataset: TensorDataset, batch_size: int, generator: torch.Generator | None) -> DataLoader:
    """Batches of whole tensors, in the order DataLoader(shuffle=generator is not None) gives."""
    if generator is not None:
        sampler = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False)
    else:
        sampler = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False)
    return DataLoader(dataset, batch_size=None, sampler=sampler, generator=generator)
