"""Several processes for one run: DistributedDataParallel on torchrun.

`ftr run --nproc N` starts torch's own launcher (torch.distributed.run, in this
process: see `launch`), which starts N processes of `ftr run` with the same
arguments; `torchrun ... -m recipe_lang.cli run ...` starts them just as well, on
one machine or several. Each finds its place in the environment (runtime/world.py).
With one process (WORLD_SIZE unset or 1) nothing here runs and the run is the plain
one, number for number.

With several, what changes and why:

- The process group: gloo on the CPU, nccl on CUDA with process r on
  cuda:LOCAL_RANK; made before the run folder is touched, destroyed at the end,
  on errors too (`Distributed.session`).
- `batch_size` is the global batch, the one an optimizer step averages over: each
  process takes batch_size // N, and a batch_size that N does not divide is refused.
  Train data: a DistributedSampler (shuffled with the recipe's seed, set_epoch every
  epoch; it repeats a few items so that all processes take as many batches). Val
  data: process r evaluates items r, r + N, r + 2N, ... (`Shard`, no repeats), and
  every metric is summed over the processes (Evaluation.pack / unpack), so val
  metrics count each val item exactly once; train_loss likewise (sums of loss x n
  and of n).
- Randomness: every process seeds as the plain run does, so all build the same
  model; then process r > 0 reseeds its global generators with `rank_seed(seed, r)`,
  so that random transforms and dropout differ between processes (process 0 keeps
  the plain run's stream). A checkpoint keeps the generators of every process.
- Decisions (best, early stop, a non-finite loss) are made from the summed metrics
  or summed flags, so every process takes them at the same step: a non-finite loss
  in any process stops all of them, each with the same message, none waiting on
  another.
- Files: only process 0 writes them and prints; the others take its decisions on
  the run folder (`broadcast`) and meet it at a barrier at the end.
- Signals: torchrun stops every process with SIGTERM when one fails or when it is
  stopped itself, and forwards Ctrl-C (SIGINT); processes also get SIGTERM when the
  launcher dies, even by SIGKILL (`as_worker`). SIGTERM raises `Stopped`, a
  KeyboardInterrupt: files are written atomically, and a write that is cut short
  removes its temporary file, so nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import inspect
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from .world import World

LAUNCHER_PID = "FTR_LAUNCHER_PID"  # set by `launch`: a process whose launcher is gone stops at once


class DistributedError(Exception):
    """A setting several processes cannot run, with what to do instead.

    `local`: this process's alone (the others may go on), so it says it itself."""

    def __init__(self, message: str, local: bool = False):
        super().__init__(message)
        self.local = local


class Stopped(KeyboardInterrupt):
    """SIGTERM: torchrun stops the processes (one failed, or it was stopped), or the launcher died."""


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s generators: the recipe's seed for process 0 (the
    plain run's stream), a well-mixed other one for each other process."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"ftr:{seed}:{rank}".encode()).digest()[:8], "little") >> 1


class Shard(Sampler):
    """Items rank, rank + world, rank + 2 * world, ... of a dataset of `length` items:
    the processes together take every item exactly once (no padding, unlike
    DistributedSampler), so summed val metrics are those of the whole val set."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = range(rank, length, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Distributed:
    """This process's part in a run, and the collective operations the runtime uses.

    With a world of one process every operation is the identity (sum returns its
    input, broadcast its object, gather a list of one) and no process group exists."""

    def __init__(self, world: World | None = None):
        self.world = world or World()
        self.device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        return self.world.distributed

    @property
    def main(self) -> bool:
        return self.world.main

    # --- the process group ------------------------------------------------------

    def pick_device(self, requested: str | None) -> torch.device:
        """cuda:LOCAL_RANK on CUDA, else the CPU; nothing else runs several processes."""
        from .device import pick_device

        if not self.enabled:
            return pick_device(requested)
        if requested is None:
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = torch.device(requested)
            kind = device.type
            if kind == "cuda" and device.index is not None:
                raise DistributedError(
                    f"--device {requested} names one GPU, but each of the {self.world.size} processes takes "
                    "the GPU of its LOCAL_RANK; pass --device cuda (CUDA_VISIBLE_DEVICES picks which GPUs)"
                )
        if kind == "cpu":
            return torch.device("cpu")
        if kind != "cuda":
            raise DistributedError(f"several processes run on cuda or cpu, not {kind}; pass --device cpu")
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda, but CUDA is not available here")
        if self.world.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"process {self.world.rank} has LOCAL_RANK {self.world.local_rank}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): start at most that many processes per machine",
                local=True,
            )
        return torch.device("cuda", self.world.local_rank)

    @contextlib.contextmanager
    def session(self, device: torch.device):
        """The process group for `device` (gloo on CPU, nccl on CUDA), destroyed on leaving."""
        if not self.enabled:
            yield self
            return
        self.device = device
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        try:
            yield self
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    # --- what processes share ----------------------------------------------------

    def sum(self, values) -> torch.Tensor:
        """The elementwise sum over all processes of `values` (float64, on the CPU)."""
        tensor = torch.as_tensor(values, dtype=torch.float64)
        if not self.enabled:
            return tensor
        tensor = tensor.to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu()

    def broadcast(self, obj):
        """Process 0's `obj`, in every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order, in every process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    # --- the model --------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in a new DistributedDataParallel, for the parameters that train now.

        The trainer calls it at the start of each span of epochs in which the same
        parameters train (after enter_phase), and on resume: DDP's reducer takes the
        parameters that require a gradient when it is made, and expects a gradient
        for each of them in every backward. A parameter that thaws later would never
        have its gradient averaged (the processes' copies drift apart silently), and
        one that freezes would make the next step fail. Made anew, the reducer
        averages exactly the gradients that exist. The old wrapper is dropped; its
        reducer removes its hooks when it goes. Making one costs a broadcast of the
        model from process 0 (whose weights all processes already hold) and the
        bucket layout: a few times per run at most.

        Rejected: one wrapper over every parameter with find_unused_parameters=True
        traverses the autograd graph every step and all-reduces the (zero) gradients
        of every frozen parameter, the whole backbone while only a head trains;
        averaging gradients by hand is the home-made DDP that design.md rules out.

        broadcast_buffers=False: DDP would otherwise send process 0's BatchNorm
        statistics to all before every forward. They are equal everywhere without
        it: frozen BatchNorm layers in eval mode do not change them, and training
        ones are SyncBatchNorm (on CUDA; refused on the CPU), whose statistics come
        from the whole global batch in every process."""
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        # torch 2.14 renames broadcast_buffers (still syncing buffers once, when made); torch 2.6 has only the old name
        new_name = "forward_sync_buffers" in inspect.signature(ddp).parameters
        return ddp(model, device_ids=ids, **{"forward_sync_buffers" if new_name else "broadcast_buffers": False})


def training_batchnorm(plan, model: nn.Module) -> tuple[str, str] | None:
    """(a BatchNorm layer that trains in some span of epochs, that span) or None.

    A BatchNorm layer in train mode normalizes with its batch's statistics: split
    over processes, each would see only its part of the batch, hence SyncBatchNorm."""
    layers = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for phase in plan.phases:
        kept = set(phase.bn_eval)
        for name in layers:
            if name not in kept:
                span = f"epoch {phase.first}" if phase.first == phase.last else f"epochs {phase.first}-{phase.last}"
                return name, span
    return None


def sync_batchnorm(plan, model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with SyncBatchNorm layers when BatchNorm layers train (CUDA only).

    torch's SyncBatchNorm runs only on GPU modules: with gloo on the CPU,
    DistributedDataParallel refuses it ("SyncBatchNorm layers only work with GPU
    modules"), and its forward raises in train mode. Plain BatchNorm would
    normalize each process's part of the batch on its own, a run different from
    the recipe's; so that combination is refused, with what to do instead."""
    found = training_batchnorm(plan, model)
    if found is None:
        return model
    if device.type != "cuda":
        layer, span = found
        raise DistributedError(
            f"BatchNorm layers train with several processes (e.g. '{layer}' in {span}), which needs "
            "SyncBatchNorm, and torch's SyncBatchNorm runs only on CUDA; on the CPU run one process, "
            "or keep every BatchNorm layer in eval mode (freeze them with `batchnorm eval`)"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


# --- processes ------------------------------------------------------------------


def lost_peers(error: BaseException) -> bool:
    """Whether `error` is a collective operation failing because another process is
    gone (gloo: "Connection closed by peer", a plain RuntimeError raised in
    torch.distributed or in DDP), rather than a failure of this process's own."""
    if isinstance(error, dist.DistError):
        return True
    if not isinstance(error, RuntimeError) or error.__traceback__ is None:
        return False
    where = traceback.extract_tb(error.__traceback__)[-1].filename.replace(os.sep, "/")
    return "/torch/distributed/" in where or "/torch/nn/parallel/" in where


def _stop(signum, frame):
    raise Stopped()


def as_worker() -> None:
    """Set up a process started by torchrun: SIGTERM raises Stopped, and the process
    gets SIGTERM when its launcher dies (Linux), even by SIGKILL.

    torchrun starts each process in its own session, so signals sent to the
    launcher's process group never reach them: without this, killing the launcher
    would leave them training on and writing to the run folder."""
    signal.signal(signal.SIGTERM, _stop)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        launcher = os.environ.get(LAUNCHER_PID)
        if launcher and str(os.getppid()) != launcher:  # it died before prctl
            raise Stopped()


_QUIET = ("torch.distributed.run", "torch.distributed.launcher", "torch.distributed.elastic")


class _QuietLauncher(logging.Filter):
    """Keeps torchrun's own log lines (its OMP_NUM_THREADS notice, each worker's exit,
    the signals it forwards) off the terminal of `ftr run --nproc`: each process
    prints its own errors, and `launch` says what torchrun reports, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_QUIET) or record.levelno >= logging.CRITICAL


def too_few_gpus(nproc: int, device: str | None) -> str | None:
    """Why `nproc` processes on `device` (None: CUDA when there is some) cannot each
    have a GPU of this machine, or None."""
    try:
        if device is not None and torch.device(device).type != "cuda":
            return None
    except RuntimeError:  # not a device: each process says so
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0 or nproc <= count:
        return None
    return (
        f"--nproc {nproc} on CUDA takes a GPU per process, and this machine has {count}; "
        f"use --nproc {count}, or --device cpu"
    )


def launch(worker_args: list[str], nproc: int) -> int:
    """Run `python -m recipe_lang.cli WORKER_ARGS` in `nproc` processes on this machine
    through torch's launcher (`torchrun --standalone --nproc_per_node NPROC -m
    recipe_lang.cli ...`, called in this process so that its failures become an exit
    status and one line, not its traceback); return the exit status.

    0 when every process finished; else the status of the first process that failed
    (1 for an error it printed), or 128 + the signal that stopped the launcher or
    killed a process (130 for Ctrl-C)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    quiet = _QuietLauncher()
    handlers = [h for name in ("", "torch", "torch.distributed") for h in logging.getLogger(name).handlers]
    for handler in handlers:
        handler.addFilter(quiet)
    os.environ[LAUNCHER_PID] = str(os.getpid())
    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "recipe_lang.cli", *worker_args])
    try:
        torchrun.run(args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        if failure.exitcode < 0:
            name = signal.Signals(-failure.exitcode).name
            print(f"ftr run: error: process {rank} of {nproc} was killed by {name}", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode
    except SignalException as error:
        return 128 + int(error.sigval)
    finally:
        os.environ.pop(LAUNCHER_PID, None)
        for handler in handlers:
            handler.removeFilter(quiet)
    return 0
