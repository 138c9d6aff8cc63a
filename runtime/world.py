"""Which process of a run this is, read from torchrun's environment; no torch here.

`ftr run --nproc N` and `torchrun ... -m recipe_lang.cli run` start N processes that
each find WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE in their environment.
Without WORLD_SIZE, or with WORLD_SIZE=1, a run is the plain single-process run:
nothing in runtime/ then touches torch.distributed (see runtime/distributed.py).

Kept free of torch so that `ftr run --nproc N` can refuse a recipe (its errors, a
batch size that N does not divide) before paying for torch and N processes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    size: int = 1  # WORLD_SIZE: processes in the run, on all machines
    rank: int = 0  # RANK: this process among them; rank 0 writes files and prints
    local_rank: int = 0  # LOCAL_RANK: this process on its machine; its GPU on CUDA
    local_size: int = 1  # LOCAL_WORLD_SIZE: processes on this machine
    launched: bool = False  # started by torchrun (WORLD_SIZE set), even with one process

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> World:
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            size = int(env["WORLD_SIZE"])
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
        except ValueError as error:
            raise ValueError(f"a torchrun variable is not a number: {error}") from None
        if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
            raise ValueError(
                f"inconsistent torchrun environment: WORLD_SIZE={size}, RANK={rank}, "
                f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_size}"
            )
        return cls(size, rank, local_rank, local_size, launched=True)

    @property
    def distributed(self) -> bool:
        """Several processes: DistributedDataParallel. One: the plain run, unchanged."""
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def single_machine(self) -> bool:
        return self.local_size == self.size


def batch_error(batch_size: int, processes: int) -> str | None:
    """Why `batch_size` (the global batch of one optimizer step) cannot be split
    over `processes` processes, or None when each takes batch_size // processes."""
    if processes <= 1 or batch_size % processes == 0:
        return None
    lower = batch_size // processes * processes
    multiples = " or ".join(str(m) for m in (lower, lower + processes) if m > 0)
    return (
        f"batch_size {batch_size} does not split over {processes} processes: it is the batch of all "
        f"processes together, each taking an equal part; use a multiple of {processes} "
        f"(--set data.batch_size={multiples}) or another number of processes"
    )


def resume_hint(world: World) -> str:
    """What to add to `ftr run ... --resume` to continue a run of this world."""
    if not world.distributed:
        return ""
    if world.single_machine:
        return f" --nproc {world.size}"
    return " (under the same torchrun command on every machine)"
