"""Kill soak: SIGKILL one run at random moments, resume it each time, and compare its
final model.pt with an uninterrupted run's, bit for bit.

    python bench/kill_soak.py [--kills 16] [--ddp-kills 4] [--seed 0]

One process: kills at start-up (before the first checkpoint), mid-epoch, inside a
checkpoint write (as soon as its temporary file appears) and inside the feature
cache's pass (just after the start files appear; the cache pass comes first), each
followed by `ftr run --resume`. Then the same under `--nproc 2` (every process of the
group killed at once). Not part of the test suite: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_image_folder  # noqa: E402

RECIPE = """recipe "soak"
seed 5

model {
  backbone resnet18
  weights none
  head linear(classes=4)
}

data {
  train imagefolder("data/train")
  val imagefolder("data/val")
  batch_size 16
  train_transforms resize(32)
  eval_transforms resize(32)
}

train {
  epochs 10
  optimizer sgd(momentum=0.9)
  lr 1e-2
  freeze all except head
  at epoch 5 unfreeze "layer4.*.conv*"
  batchnorm eval
}

evaluate {
  metrics loss, accuracy
  best loss
}
"""
KINDS = ("start-up", "mid-epoch", "checkpoint write", "feature cache pass")


def environment() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def command(out: str, nproc: int, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "recipe_lang.cli", "run", "r.ftr", "--out", out, "--device", "cpu", "--quiet"]
    return args + (["--nproc", str(nproc)] if nproc > 1 else []) + (["--resume"] if resume else [])


def start(folder: Path, out: str, nproc: int, resume: bool) -> subprocess.Popen:
    return subprocess.Popen(
        command(out, nproc, resume),
        cwd=folder,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: torchrun's processes are killed with it
    )


def checkpoint_time(out: Path) -> int:
    path = out / "checkpoint.pt"
    return path.stat().st_mtime_ns if path.exists() else 0


def wait_for(process: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Poll until ready() (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.001)
    return False


def temporary_checkpoint(out: Path) -> bool:
    return any(name.startswith(".checkpoint.pt.") for name in os.listdir(out)) if out.exists() else False


def kill_at(kind: str, process: subprocess.Popen, out: Path, rng: random.Random) -> bool:
    """Wait for the moment of `kind`, then SIGKILL the process group; False if it finished first."""
    before = checkpoint_time(out)
    if kind == "start-up":
        ready = wait_for(process, lambda: True) and (time.sleep(rng.uniform(0.2, 5.0)) or True)
    elif kind == "mid-epoch":
        ready = wait_for(process, lambda: checkpoint_time(out) != before)
        time.sleep(rng.uniform(0.05, 0.6))
    elif kind == "checkpoint write":
        ready = wait_for(process, lambda: temporary_checkpoint(out))
    else:  # the cache pass runs right after the start files (or the resume's reading)
        ready = wait_for(process, lambda: (out / "recipe.ftr").exists())
        time.sleep(rng.uniform(0.0, 0.3))
    if process.poll() is not None or not ready:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return True


def started(out: Path) -> bool:
    return (out / "checkpoint.pt").exists() or (out / "checkpoint.previous.pt").exists()


def finish(folder: Path, out: str, nproc: int) -> tuple[int, str]:
    process = start(folder, out, nproc, resume=started(folder / out))
    _, err = process.communicate(timeout=600)
    return process.returncode, err.decode()


def soak(folder: Path, out: str, nproc: int, kinds: list[str], rng: random.Random) -> list[dict]:
    rows = []
    for kind in kinds:
        process = start(folder, out, nproc, started(folder / out))
        killed = kill_at(kind, process, folder / out, rng)
        err = process.stderr.read().decode() if not killed else ""
        if not killed:
            process.wait()
        failed = "Traceback" in err or (not killed and process.returncode != 0)
        rows.append({"kind": kind, "killed": killed, "error": failed})
    code, err = finish(folder, out, nproc)
    resumed_ok = code == 0 and "Traceback" not in err
    for row in rows:
        row["resumed_ok"] = resumed_ok and not row["error"]
    if not resumed_ok:
        print(err[-2000:], file=sys.stderr)
    return rows


def same_model(a: Path, b: Path) -> bool:
    x, y = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def table(rows: list[dict], equal: dict) -> str:
    counts = Counter((r["nproc"], r["kind"]) for r in rows)
    lines = [
        "| kill moment | processes | kills | resumed ok | final model.pt bit-equal |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for (nproc, kind), count in counts.items():
        mine = [r for r in rows if r["nproc"] == nproc and r["kind"] == kind]
        killed = sum(r["killed"] for r in mine)
        ok = sum(r["resumed_ok"] for r in mine if r["killed"])
        lines.append(f"| {kind} | {nproc} | {killed} of {count} | {ok} | {'yes' if equal[nproc] else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=16)
    parser.add_argument("--ddp-kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill_soak.") as tmp:
        folder = Path(tmp)
        make_image_folder(folder / "data" / "train", per_class=24, size=40, seed=1)
        make_image_folder(folder / "data" / "val", per_class=6, size=40, seed=2)
        (folder / "r.ftr").write_text(RECIPE)
        rows, equal = [], {}
        for nproc, count in ((1, args.kills), (2, args.ddp_kills)):
            if count == 0:
                continue
            kinds = [KINDS[i % len(KINDS)] for i in range(count)] if nproc == 1 else ["start-up", "mid-epoch"] * count
            kinds = kinds[:count]
            rng.shuffle(kinds)
            code, err = finish(folder, f"full{nproc}", nproc)
            assert code == 0, err
            chain = soak(folder, f"killed{nproc}", nproc, kinds, rng)
            rows += [dict(row, nproc=nproc) for row in chain]
            equal[nproc] = same_model(folder / f"killed{nproc}" / "model.pt", folder / f"full{nproc}" / "model.pt")
            print(table(rows, equal), f"\n({time.perf_counter() - began:.0f} s)\n", flush=True)
    print(f"{sum(r['killed'] for r in rows)} SIGKILLs in {time.perf_counter() - began:.0f} s")
    return 0 if all(equal.values()) and all(r["resumed_ok"] for r in rows if r["killed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
