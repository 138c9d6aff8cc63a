"""Keystroke to diagnostics in `ftr lsp`, as an editor sees it.

    python bench/lsp_latency.py [--edits 15] [--debounce 0.25]

Starts the server over stdio, opens a resnet18 recipe and waits for its first
model check (torch imported: the server is warm), then sends didChange edits
that alternate between a broken and a fixed text and times each from the
didChange until the diagnostics that answer it are published:

- syntax error: the first publish (the parse and model-free checks);
- model error (`unfreeze layer5`): the publish of the model check, which waits
  for the debounce first, then resolves the model on the meta device.

Prints the median, minimum and maximum of each in milliseconds, and how long the
server takes to end after `shutdown` and `exit`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recipe_lang.editor.stdio_client import StdioClient, ftr_lsp_command  # noqa: E402

RECIPE = """recipe "r18"

model {
  backbone resnet18
  head linear(classes=10)
}

data {
  train synthetic(classes=10)
  val split(0.1)
}

train {
  epochs 2
  lr 1e-3
  freeze all except layer4, head
}
"""
URI = "file:///bench/r18.ftr"


def timed(client: StdioClient, text: str, version: int, wanted) -> float:
    """Seconds from the didChange to the first publish for this version that `wanted` accepts."""
    start = time.perf_counter()
    client.change(URI, text, version)
    client.diagnostics(URI, timeout=60, until=lambda p: p.get("version") == version and wanted(p["diagnostics"]))
    return time.perf_counter() - start


def messages(diagnostics) -> str:
    return "\n".join(d["message"] for d in diagnostics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=15)
    parser.add_argument("--debounce", type=float, default=0.25, help="FTR_LSP_DEBOUNCE, seconds")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), FTR_LSP_DEBOUNCE=str(args.debounce))
    client = StdioClient(ftr_lsp_command(), env=env, cwd=str(ROOT))
    started = time.perf_counter()
    client.initialize()
    client.open(URI, RECIPE)
    client.diagnostics(URI)
    client.diagnostics(URI, timeout=120)  # the first model check: torch imported
    warmup = time.perf_counter() - started

    syntax_error = RECIPE.replace("epochs 2", "epochs 2 3")
    model_error = RECIPE.replace("layer4, head", "layer5, head")
    times = {"syntax error": [], "model error": [], "fixed (syntax pass)": []}
    version = 1
    for _ in range(args.edits):
        version += 1
        times["syntax error"].append(timed(client, syntax_error, version, lambda d: "unexpected" in messages(d)))
        version += 1
        times["model error"].append(timed(client, model_error, version, lambda d: "layer5" in messages(d)))
        version += 1
        times["fixed (syntax pass)"].append(timed(client, RECIPE, version, lambda d: d == []))
    started = time.perf_counter()
    client.close()  # the last edit's model check is still pending or running
    closing = time.perf_counter() - started

    print(f"server start to first model check (torch import): {warmup * 1000:.0f} ms")
    print(f"shutdown and exit to the process's end, a model check pending: {closing * 1000:.0f} ms")
    print(f"{args.edits} edits each, debounce {args.debounce * 1000:.0f} ms\n")
    print(f"{'didChange -> diagnostics':<28}{'median':>10}{'min':>10}{'max':>10}")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{name:<28}{statistics.median(ms):>8.1f}ms{min(ms):>8.1f}ms{max(ms):>8.1f}ms")


if __name__ == "__main__":
    main()
