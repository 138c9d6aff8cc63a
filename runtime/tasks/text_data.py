"""Texts tokenized once, and batches padded to their own longest text."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from recipe_lang.resolve import texts


class Tokenized(Dataset):
    """Items (token ids, class index); the texts were tokenized once, without padding."""

    def __init__(self, ids: list[list[int]], targets: list[int]):
        self.ids, self.targets = ids, targets

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        return self.ids[index], self.targets[index]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]


def read_source(source, tokenizer, max_length: int | None, classes: list[str] | None = None):
    """(Tokenized, classes) of a csv/jsonl source; classes given, or its labels sorted."""
    read = texts.read(source)
    classes = classes if classes is not None else read.classes
    index = {name: i for i, name in enumerate(classes)}
    ids = tokenizer(read.texts, truncation=max_length is not None, max_length=max_length)["input_ids"]
    return Tokenized(ids, [index[label] for label in read.labels]), classes


def pad_batch(items, pad_id: int):
    """({input_ids, attention_mask}, labels): right-padded to the batch's longest text."""
    longest = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for row, (ids, _) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask}, labels
