"""The order of `group_by_length`: training batches of items of similar length."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


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
