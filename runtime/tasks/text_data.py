"""Texts tokenized once, batches padded to their own longest text, and the
length-grouped order of `group_by_length`."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

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


class LengthGrouped(Sampler):
    """transformers' LengthGroupedSampler order: a seeded permutation cut into
    mega-batches of 50 batches, each sorted longest first, the longest item of all
    moved to the very first batch (an out-of-memory error shows at once)."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator):
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = 50 * self.batch_size
        megas = [order[i : i + size] for i in range(0, len(order), size)]
        megas = [sorted(mega, key=lambda i: self.lengths[i], reverse=True) for mega in megas]
        longest = max(range(len(megas)), key=lambda m: self.lengths[megas[m][0]])
        megas[0][0], megas[longest][0] = megas[longest][0], megas[0][0]
        return iter([i for mega in megas for i in mega])
