"""Latency of the front end and of the model-aware commands, as a user feels them.

Prints one table: each command run as a whole process (median of N runs), next to
the floor it cannot beat (a bare interpreter, and importing torch + torchvision),
parse + validate in-process, and resolving in-process (the model built on the
meta device and run at each image size the recipe feeds it).

The torch-free commands and their floors are run in turn, round after round, so
that a busy machine slows them alike; their fastest run and their CPU time (median)
are printed too. Their second floor is Pydantic's share of any validation: importing
it, creating the recipe's model classes and building the Recipe's validator. Every
command runs once before it is timed, with bytecode caching on (as an installed ftr
has its .pyc files), whatever PYTHONDONTWRITEBYTECODE says.

    python bench/cli_latency.py [--runs 5] [--torch-free]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """recipe "bench-{backbone}"
seed 1

model {{
  backbone {backbone}
  weights default
  head mlp(classes=10, hidden=256, dropout=0.2)
}}

data {{
  train synthetic(classes=10, count=64, size=32)
  val split(0.2)
  batch_size 32
  train_transforms random_resized_crop(224, scale=(0.6, 1.0)), hflip()
  eval_transforms weights
  normalize weights
}}

groups {{
  top = {top}
}}

train {{
  epochs 10
  optimizer adamw(weight_decay=0.05)
  lr head=1e-3, top=1e-4
  schedule cosine(warmup=1)
  freeze all except head
  at epoch 3 unfreeze top warmup=1
  no_weight_decay bias, norm
}}

evaluate {{
  metrics loss, accuracy, top_k(5)
  best accuracy
}}
"""

TOPS = {"resnet50": "layer4", "vit_b_16": "encoder.layers[-2:]"}


# what validating any recipe costs before ftr's own work: importing Pydantic, creating
# the recipe's model classes and building the Recipe's validator (every model in it)
PYDANTIC_FLOOR = "Pydantic: import, models, validator"
# (as the CLI runs it: no plugin discovery, no cyclic collector)
VALIDATORS_ONLY = (
    "import gc, os; gc.disable(); os.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'; "
    "from recipe_lang import cli; cli._skip_plugin_discovery(); "
    "from recipe_lang.recipe import Recipe; Recipe.model_rebuild(force=True)"
)

ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def once(argv: list[str]) -> float:
    return timed(argv)[0]


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall-clock seconds, and the CPU seconds (user + system) the process used: on a
    machine shared with other jobs the CPU time moves less than the wall-clock time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(argv: list[str], runs: int) -> float:
    once(argv)  # writes the .pyc files
    return statistics.median(once(argv) for _ in range(runs))


def interleaved(commands: dict[str, list[str]], runs: int) -> dict[str, list[tuple[float, float]]]:
    """Each command's (wall, CPU) times, the commands run in turn in every round."""
    for argv in commands.values():
        once(argv)
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    return times


def in_process(text: str, runs: int) -> float:
    sys.path.insert(0, str(ROOT))
    import recipe_lang

    recipe_lang.parse(text, "warm.ftr")  # the parser is built once per process
    times = []
    for _ in range(runs * 20):
        start = time.perf_counter()
        recipe_lang.parse(text, "bench.ftr")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def resolve_in_process(text: str, runs: int) -> float:
    sys.path.insert(0, str(ROOT))
    import recipe_lang
    from recipe_lang.resolve import resolve

    resolve(recipe_lang.parse(text, "warm.ftr"))  # torch's first calls are slower
    times = []
    for _ in range(runs):
        recipe = recipe_lang.parse(text, "bench.ftr")
        start = time.perf_counter()
        resolve(recipe)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--torch-free", action="store_true", help="only the commands that never import torch")
    options = parser.parse_args()
    runs = options.runs
    py = sys.executable
    ftr = [py, "-m", "recipe_lang.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for backbone, top in TOPS.items():
            files[backbone] = Path(tmp, f"{backbone}.ftr")
            files[backbone].write_text(RECIPE.format(backbone=backbone, top=top))
        light = interleaved(
            {
                "python -c pass (floor)": [py, "-c", "pass"],
                PYDANTIC_FLOOR: [py, "-c", VALIDATORS_ONLY],
                "ftr check --syntax": ftr + ["check", "--syntax", str(files["resnet50"])],
                "ftr fmt --check": ftr + ["fmt", "--check", str(files["resnet50"])],
            },
            runs,
        )
        interpreter = statistics.median(wall for wall, _ in light["python -c pass (floor)"])
        for name, times in light.items():
            floor = None if name.startswith("python") or name == PYDANTIC_FLOOR else interpreter
            walls = [wall for wall, _ in times]
            cpus = [cpu for _, cpu in times]
            rows.append((name, statistics.median(walls), floor, min(walls), statistics.median(cpus)))
        if not options.torch_free:
            rows += torch_rows(py, ftr, files, runs, tmp)
        parse_time = in_process(files["resnet50"].read_text(), runs)
        resolve_times = {}
        if not options.torch_free:
            resolve_times = {backbone: resolve_in_process(path.read_text(), runs) for backbone, path in files.items()}
    _print(rows, parse_time, resolve_times, runs)


def _print(rows: list[tuple], parse_time: float, resolve_times: dict, runs: int) -> None:
    print(f"{'command':40} {'seconds':>9} {'x floor':>8} {'fastest':>8} {'CPU s':>8}")
    for name, seconds, floor, fastest, cpu in rows:
        ratio = f"{seconds / floor:8.2f}" if floor else f"{'':8}"
        fastest = "" if fastest is None else f"{fastest:8.3f}"
        cpu = "" if cpu is None else f"{cpu:8.3f}"
        print(f"{name:40} {seconds:9.3f} {ratio} {fastest:>8} {cpu:>8}")
    print(f"{'parse + validate, in process':40} {parse_time * 1000:8.2f}ms")
    for backbone, seconds in resolve_times.items():
        print(f"{f'resolve ({backbone}), in process':40} {seconds * 1000:8.0f}ms")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{runs} runs each (median); Python {sys.version.split()[0]}, {_cpus()}, load average {load}")


def torch_rows(py: str, ftr: list[str], files: dict, runs: int, tmp: str) -> list[tuple]:
    torch_import = whole_process([py, "-c", "import torch, torchvision"], runs)
    rows = [("import torch, torchvision (floor)", torch_import, None, None, None)]
    for backbone, path in files.items():
        script = str(Path(tmp, f"{backbone}.py"))
        commands = {
            f"ftr check ({backbone})": ftr + ["check", str(path)],
            f"ftr plan ({backbone})": ftr + ["plan", str(path)],
            f"ftr compile ({backbone})": ftr + ["compile", str(path), "-o", script],
        }
        rows += [(name, whole_process(argv, runs), torch_import, None, None) for name, argv in commands.items()]
    return rows


def _cpus() -> str:
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
