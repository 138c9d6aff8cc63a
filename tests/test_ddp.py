"""`ftr run` in several processes (DistributedDataParallel on torchrun, gloo on the CPU).

The end-to-end tests start real processes: `ftr run --nproc 2`, which starts torchrun,
which starts two `ftr run` processes. Each such run costs ~10 s on a 2-core machine,
mostly importing torch three times, so there are four of them, all on resnet18 at 32 px
with one thread per process. The rest checks pieces in this process, with no process group.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from test_run import CONTRACT
from torch.utils.data import RandomSampler, SequentialSampler

import recipe_lang
from recipe_lang.cli import main
from recipe_lang.resolve import resolve
from runtime import distributed
from runtime.distributed import Distributed, DistributedError, Shard, sync_batchnorm
from runtime.model import build_model
from runtime.run import RunError, RunRequest, run
from runtime.trainer import NonFiniteLoss, Trainer, UnsupportedSetting, WorldMismatch
from runtime.world import World

ROOT = Path(__file__).resolve().parent.parent
ONLY_PROCESS_0_WRITES = set(CONTRACT)

# Two processes must compute what one does: batch 16 as 2 micro-batches of 8 (accumulate
# 2, so no_sync is used), over 32 images: one step per epoch on the whole set, whose
# gradient does not depend on how the images are ordered or split. Deterministic train
# transforms, a linear head, BatchNorm frozen in eval mode: only float error may differ.
# A thaw at epoch 3 of a conv layer (no BatchNorm with it) makes the wrapper change.
EQUAL_RECIPE = """recipe "equal"
seed 0

model {
  backbone resnet18
  weights none
  head linear(classes=4)
}

data {
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 16
  train_transforms resize(36), center_crop(32)
  eval_transforms resize(36), center_crop(32)
}

train {
  epochs 4
  optimizer sgd(momentum=0.9)
  lr 5e-2
  freeze all except head
  at epoch 3 unfreeze layer4.1.conv2
  batchnorm eval
  accumulate 2
}

evaluate {
  metrics loss, accuracy, top_k(2), macro_f1
  best accuracy
}
"""

# Random transforms and dropout (each process draws its own), a split, a thaw: resume
# must restore every process's generators to give the run that never stopped.
RESUME_RECIPE = """recipe "resume"
seed 3

model {
  backbone resnet18
  weights none
  head mlp(classes=4, hidden=16, dropout=0.3)
}

data {
  train imagefolder("big/train")
  val split(0.25)
  batch_size 8
  train_transforms random_resized_crop(32, scale=(0.5, 1.0)), hflip()
  eval_transforms resize(36), center_crop(32)
}

train {
  epochs 4
  optimizer adamw(weight_decay=0.05)
  lr head=3e-3, rest=1e-3
  freeze all except head
  at epoch 3 unfreeze layer4.1.conv2
  batchnorm eval
}

evaluate {
  metrics loss, accuracy, macro_f1
  best accuracy
}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = "1"
    return e


def ftr_process(*args, cwd, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "recipe_lang.cli", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def ftr_run(*args, cwd) -> tuple[int, str]:
    process = ftr_process("run", *args, cwd=cwd)
    _, err = process.communicate(timeout=240)
    return process.returncode, err.decode()


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def compared(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds" and not k.startswith("lr/")}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


# --- 1. two processes compute what one does ------------------------------------------------


def test_two_processes_give_the_numbers_of_one(tmp_path, capsys, monkeypatch):
    make_image_folder(tmp_path / "data" / "train", per_class=8, size=40, seed=1)
    make_image_folder(tmp_path / "data" / "val", per_class=3, size=40, seed=2)  # 12: 6 per process
    (tmp_path / "r.ftr").write_text(EQUAL_RECIPE)
    two = ftr_process("run", "r.ftr", "--out", "two", "--device", "cpu", "--quiet", "--nproc", "2", cwd=tmp_path)

    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.ftr", "--out", "one", "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err
    _, err = two.communicate(timeout=240)
    err = err.decode()
    assert two.returncode == 0, err

    one, both = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [row["epoch"] for row in both] == [row["epoch"] for row in one] == [1, 2, 3, 4]
    worst = {}
    for a, b in zip(one, both, strict=True):
        a, b = compared(a), compared(b)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=2e-2), (a["epoch"], key)
            worst[key] = max(worst.get(key, 0.0), relative(a[key], b[key]))
    print("\nlargest relative difference, 1 vs 2 processes:", {k: f"{v:.1e}" for k, v in worst.items()})
    # the runs are equal in exact arithmetic: anything beyond float error is a bug
    # (gradients averaged twice, an item validated twice, a micro-batch lost)
    assert max(worst.values()) < 1e-4, worst
    assert one[0]["train_loss"] != one[-1]["train_loss"]  # it trained

    # only process 0 wrote: the contract's files, once; no temporary file; one line per epoch
    assert {p.name for p in (tmp_path / "two").iterdir()} == ONLY_PROCESS_0_WRITES
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 4
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["processes"] == 2 and summary["device"] == "cpu"
    # only process 0 printed: one line per epoch
    assert len([line for line in err.splitlines() if line.startswith("epoch ")]) == 4, err
    assert "Traceback" not in err and "torch.distributed" not in err, err

    # checkpoints hold the model itself, not its DistributedDataParallel wrapper
    state = weights(tmp_path / "two" / "checkpoint.pt")
    assert not [key for key in state["model"] if key.startswith("module.")]
    assert state["world"] == 2 and len(state["rng_ranks"]) == 2
    assert weights(tmp_path / "two" / "model.pt").keys() == weights(tmp_path / "one" / "model.pt").keys()


# --- 2. killed, then resumed -----------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_then_resume_gives_the_uninterrupted_run(tmp_path):
    make_image_folder(tmp_path / "big" / "train", per_class=16, size=40, seed=3)
    (tmp_path / "r.ftr").write_text(RESUME_RECIPE)
    killed = tmp_path / "killed"
    # the run that is never stopped, meanwhile: the two overlap in importing torch
    full = ftr_process("run", "r.ftr", "--out", "full", "--device", "cpu", "--quiet", "--nproc", "2", cwd=tmp_path)

    launcher = ftr_process("run", "r.ftr", "--out", killed, "--device", "cpu", "--quiet", "--nproc", "2", cwd=tmp_path,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while launcher.poll() is None and not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert launcher.poll() is None, launcher.stderr.read().decode()
        workers = children(launcher.pid)
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group: torchrun put the workers in their own
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
    assert len(workers) == 2
    # the workers stop with their launcher, and write nothing after it
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "a process of the run outlived its launcher"
    assert not (killed / "summary.json").exists()
    assert not list(killed.glob(".*.tmp")), "a temporary file was left behind"
    done = len(metrics(killed))
    assert 1 <= done < 4, "the run should be killed in the middle"

    code, err = ftr_run("r.ftr", "--out", killed, "--device", "cpu", "--nproc", "2", "--resume", cwd=tmp_path)
    assert code == 0, err
    assert f"resuming {killed} at epoch {done + 1} of 4" in err
    _, err = full.communicate(timeout=240)
    assert full.returncode == 0, err.decode()

    resumed, full = metrics(killed), metrics(tmp_path / "full")
    assert [row["epoch"] for row in resumed] == [row["epoch"] for row in full] == [1, 2, 3, 4]
    for a, b in zip(resumed, full, strict=True):
        a, b = compared(a), compared(b)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-12), (a["epoch"], key)
    for name in ("model.pt", "best.pt"):
        got, expected = weights(killed / name), weights(tmp_path / "full" / name)
        assert all(torch.equal(got[k], expected[k]) for k in expected), name


# --- 3. errors ---------------------------------------------------------------------------------


def test_batch_size_not_divisible_is_a_clear_error(image_data):
    text = EQUAL_RECIPE.replace("batch_size 16", "batch_size 10")
    (image_data / "r.ftr").write_text(text)
    code, err = ftr_run("r.ftr", "--out", "out", "--device", "cpu", "--nproc", "4", cwd=image_data)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("ftr run: error: batch_size 10 does not split over 4 processes"), err
    assert "--set data.batch_size=8 or 12" in err
    assert not (image_data / "out").exists()


def test_a_process_of_torchrun_refuses_the_batch_size_before_anything(image_data, monkeypatch):
    """The same check where torchrun (not --nproc) started the processes: before the
    process group, the run folder or the model."""
    monkeypatch.chdir(image_data)
    (image_data / "r.ftr").write_text(EQUAL_RECIPE.replace("batch_size 16", "batch_size 10"))
    world = World(size=3, rank=1, local_rank=1, local_size=3, launched=True)
    with pytest.raises(RunError, match="batch_size 10 does not split over 3 processes"):
        run(RunRequest("r.ftr", "out", device="cpu"), Distributed(world))
    assert not (image_data / "out").exists()
    assert not torch.distributed.is_initialized()


def test_nproc_under_torchrun_is_a_usage_error(image_data, capsys, monkeypatch):
    monkeypatch.chdir(image_data)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["run", "r.ftr", "--nproc", "2"])
    assert code == 2 and "--nproc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "r.ftr", "--nproc", "0"])


def test_training_batchnorm_on_the_cpu_is_refused(image_data, monkeypatch):
    """torch's SyncBatchNorm runs only on CUDA; plain BatchNorm over part of the batch is
    another run than the recipe's. The message says what to do."""
    monkeypatch.chdir(image_data)
    text = EQUAL_RECIPE.replace("at epoch 3 unfreeze layer4.1.conv2", "at epoch 3 unfreeze layer4")
    (image_data / "r.ftr").write_text(text)
    plan = resolve(recipe_lang.load("r.ftr"))
    with pytest.raises(DistributedError, match=r"'layer4.0.bn1' in epochs 3-4.*only on CUDA.*batchnorm eval"):
        sync_batchnorm(plan, build_model(plan), torch.device("cpu"))
    world = World(size=2, rank=0, local_rank=0, local_size=2, launched=True)
    with pytest.raises(UnsupportedSetting, match="SyncBatchNorm"):
        Trainer(plan, image_data / "out", "cpu", dist=Distributed(world)).setup()
    # frozen BatchNorm in eval mode throughout: nothing to synchronize, the model unchanged
    (image_data / "frozen.ftr").write_text(EQUAL_RECIPE)
    plan = resolve(recipe_lang.load("frozen.ftr"))
    model = build_model(plan)
    assert sync_batchnorm(plan, model, torch.device("cpu")) is model


# --- 4. pieces, in this process --------------------------------------------------------------


def test_a_world_of_one_is_the_plain_run(image_data, capsys, monkeypatch):
    """WORLD_SIZE unset or 1: no process group, no wrapper, no sampler of DDP: the very
    loaders and model of the plain run, and the same numbers."""
    monkeypatch.chdir(image_data)
    (image_data / "r.ftr").write_text(EQUAL_RECIPE.replace("epochs 4", "epochs 3"))
    for environ in ({}, {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}):
        world = World.from_env(environ)
        assert not world.distributed and world.main and not Distributed(world).enabled
    assert World.from_env({"WORLD_SIZE": "1"}).launched and not World.from_env({}).launched

    plan = resolve(recipe_lang.load("r.ftr"))
    trainer = Trainer(plan, image_data / "out", "cpu")
    trainer.setup()
    assert trainer.net is trainer.model and isinstance(trainer.model, torch.nn.Module)
    assert isinstance(trainer.train_loader.sampler, RandomSampler)
    assert isinstance(trainer.val_loader.sampler, SequentialSampler)
    assert trainer.train_loader.batch_size == 16

    # under torchrun with one process: the same run as without torchrun, number for number
    monkeypatch.setattr(distributed, "as_worker", lambda: None)  # no SIGTERM handler in pytest
    assert main(["run", "r.ftr", "--out", "plain", "--device", "cpu", "--quiet"]) == 0
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "r.ftr", "--out", "torchrun", "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err
    assert not torch.distributed.is_initialized()
    plain, launched = metrics(image_data / "plain"), metrics(image_data / "torchrun")
    assert [compared(r) for r in plain] == [compared(r) for r in launched]
    assert "processes" not in json.loads((image_data / "torchrun" / "summary.json").read_text())
    assert "world" not in weights(image_data / "torchrun" / "checkpoint.pt")

    # and its checkpoint resumes in one process only: two would draw other data and numbers
    two = Trainer(plan, image_data / "plain", "cpu", dist=Distributed(World(2, 0, 0, 2, launched=True)))
    two.setup()
    with pytest.raises(WorldMismatch, match="a run of 1 process, and this one has 2.*resume it in one process"):
        two.resume()


def test_val_shards_take_every_item_once():
    for length in (0, 1, 5, 12, 13):
        for world in (1, 2, 3, 5):
            shards = [list(Shard(length, rank, world)) for rank in range(world)]
            assert sorted(i for shard in shards for i in shard) == list(range(length))
            assert [len(Shard(length, rank, world)) for rank in range(world)] == [len(s) for s in shards]


class _Peer(Distributed):
    """Process 0 of two, the other one simulated: every sum adds the peer's vector.
    `nan_at`: the peer's loss is NaN at that micro-batch of training (counted from 1)."""

    def __init__(self, nan_at: int):
        super().__init__(World(size=2, rank=0, local_rank=0, local_size=2, launched=True))
        self.nan_at, self.sums = nan_at, 0

    def sum(self, values):
        tensor = torch.as_tensor(values, dtype=torch.float64)
        if tensor.numel() == 4:  # a training micro-batch: [non-finite, its value, loss x n, n]
            self.sums += 1
            peer = [1.0, math.nan, 0.0, 0.0] if self.sums == self.nan_at else [0.0, 0.0, tensor[2].item(), tensor[3]]
            return tensor + torch.tensor(peer, dtype=torch.float64)
        return tensor * 2

    def gather(self, obj):
        return [obj, obj]

    def wrap(self, model):
        return _NoSync(model)


class _NoSync(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, x):
        return self.module(x)

    def no_sync(self):
        return contextlib.nullcontext()


def test_a_non_finite_loss_in_another_process_stops_this_one(image_data, monkeypatch):
    """Process 0's own loss is finite, the other's is NaN at the 3rd micro-batch: process 0
    stops there too, before its backward (which would wait for the other forever), with
    the message of a one-process run."""
    monkeypatch.chdir(image_data)
    (image_data / "r.ftr").write_text(EQUAL_RECIPE)
    plan = resolve(recipe_lang.load("r.ftr"))
    trainer = Trainer(plan, image_data / "out", "cpu", dist=_Peer(nan_at=3))
    trainer.setup()
    (image_data / "out").mkdir()
    with pytest.raises(NonFiniteLoss, match=r"the loss is nan at epoch 2, step 1\b"):
        trainer.train()
    assert [row["epoch"] for row in metrics(image_data / "out")] == [1]
    assert trainer.global_step == 1  # epoch 1's one step; none in epoch 2


def test_an_interrupt_inside_a_write_is_an_interrupt(tmp_path):
    """SIGTERM (raised as Stopped) or Ctrl-C inside torch.save makes its zip writer fail
    with a RuntimeError on the way out: the write must end as the interrupt, so that the
    process says how to resume, and leave neither the old file damaged nor a temporary one."""
    from recipe_lang.files import atomic_write

    (tmp_path / "checkpoint.pt").write_bytes(b"old")

    def write(out):
        try:
            out.write(b"half")
            raise distributed.Stopped()
        finally:
            raise RuntimeError("unexpected pos 35341440 vs 35341336")  # what torch.save raises then

    with pytest.raises(distributed.Stopped):
        atomic_write(tmp_path / "checkpoint.pt", write)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"old"


def test_more_processes_than_gpus_is_refused_before_starting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "--nproc 4 on CUDA takes a GPU per process, and this machine has 2" in distributed.too_few_gpus(4, None)
    assert distributed.too_few_gpus(4, "cuda") and distributed.too_few_gpus(2, "cuda") is None
    assert distributed.too_few_gpus(4, "cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.too_few_gpus(4, None) is None  # the CPU then
