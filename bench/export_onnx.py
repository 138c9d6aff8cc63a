"""ONNX Runtime against PyTorch on this CPU: the digits demo's model (resnet18 with a
5-class head at 32 px), a batch of 32, median of 20 runs after 5 of warm-up, and the
parity figures of `ftr export --format onnx`'s check.

    python bench/export_onnx.py [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
import torchvision

from runtime.export_onnx import OnnxCheck, OnnxGraph, compare, export_graph

BATCH, RUNS, WARMUP = 32, 20, 5


class Top1:
    def onnx_top1(self, outputs):
        return outputs[0].argmax(1).tolist()


def median_ms(call) -> float:
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(BATCH, 3, 32, 32)
    graph = OnnxGraph(model, ["images"], ["logits"], {"images": {0: "batch"}})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with torch.no_grad():
            exporter, _ = export_graph(graph, (images[:2],), path)
        check = OnnxCheck(exporter, None, f"{BATCH} seeded random images")
        compare(graph, [(images,)], path, Top1(), check)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"images": images.numpy()}
        with torch.inference_mode():
            torch_ms = median_ms(lambda: model(images))
        ort_ms = median_ms(lambda: session.run(None, feed))
    print(f"resnet18, 5 classes, 32 px, batch {BATCH}, {threads} thread(s), median of {RUNS} after {WARMUP} warm-up")
    print(f"{'backend':<22}{'ms / batch':>12}{'images / s':>12}")
    for name, ms in (("PyTorch (eager)", torch_ms), (f"ONNX Runtime ({exporter})", ort_ms)):
        print(f"{name:<22}{ms:>12.2f}{BATCH / ms * 1000:>12.0f}")
    print(f"speed-up {torch_ms / ort_ms:.2f}x; parity: {check.figures()}; within tolerance: {check.ok}")


if __name__ == "__main__":
    main()
