"""`ftr export --format onnx`: model.onnx, checked against onnxruntime before it is kept.

The task says what the graph is (`onnx_graph`: a module taking tensors, the names
and dynamic axes of its inputs and outputs), what a batch of example inputs is
(`onnx_batches`, from items of the run's data where it can be read here, else
seeded random ones) and what an output's top-1 is (`onnx_top1`). This module
exports with torch.export (dynamo) first and the TorchScript exporter where that
fails, runs the file on onnxruntime, and compares: every output within rtol 1e-3
and atol 1e-5 of PyTorch's, the same top-1. A file that fails the check is not kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

MISSING = "ftr export --format onnx needs onnx and onnxruntime: pip install 'ftr[onnx]'"
RTOL, ATOL = 1e-3, 1e-5
EXAMPLES = 8  # inputs the file is checked on
OPSET = 18
REL_FLOOR = 1e-3  # relative differences are taken to max(|x|, this): near 0 only atol speaks


class OnnxExportError(Exception):
    """model.onnx could not be written, or does not match the model: the reason, in words."""


@dataclass
class OnnxGraph:
    module: nn.Module  # forward(*tensors) -> a tensor or a tuple of tensors
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]  # input name -> {axis: axis name}


@dataclass
class OnnxCheck:
    exporter: str  # "dynamo" or "torchscript"
    fallback: str | None  # why the dynamo exporter was not used
    inputs: str  # what the file was checked on
    max_abs: float = 0.0
    max_rel: float = 0.0
    top1_same: int = 0
    top1_total: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def figures(self) -> str:
        return (
            f"max abs diff {self.max_abs:.3g}, max rel diff {self.max_rel:.3g}, "
            f"top-1 agreement {self.top1_same}/{self.top1_total}"
        )


def noise_images(count: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> list:
    """Seeded random RGB PIL images: inputs to check on where the run's data cannot be read."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (count, size[1], size[0], 3), dtype=torch.uint8, generator=generator)
    return [Image.fromarray(p.numpy()) for p in pixels]


def missing() -> str | None:
    """MISSING when onnx or onnxruntime cannot be imported, else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return MISSING
    return None


def write_onnx(run, path: Path) -> OnnxCheck:
    """model.onnx of the run's model at `path`, checked; OnnxExportError if it cannot be."""
    task, model = run.task, run.model
    items, source = example_items(task)
    example, batches = task.onnx_batches(items, EXAMPLES)
    graph = task.onnx_graph(model)
    with torch.no_grad():
        exporter, fallback = export_graph(graph, example, path)
    graph.module.eval()  # an exporter restores the mode it found, which may not be eval's
    check = OnnxCheck(exporter, fallback, source)
    compare(graph, batches, path, task, check)
    if not check.ok:
        path.unlink(missing_ok=True)
        raise OnnxExportError(
            f"model.onnx ({exporter} exporter) does not match the model on {source}: "
            f"{'; '.join(check.problems)} ({check.figures()})"
        )
    return check


def example_items(task) -> tuple[list | None, str]:
    """Up to EXAMPLES items of the run's val data (else its train data) through its eval
    pipeline, with words saying what they are; (None, why not) where the data cannot be
    read here (the recipe's paths are relative to the folder it ran in)."""
    try:
        data = task.datasets()
    except Exception as error:  # whatever stops the data from loading: the check uses random inputs
        reason = getattr(error, "message", None) or str(error).strip().splitlines()[0]
        return None, f"{EXAMPLES} seeded random inputs (the run's data cannot be read here: {reason})"
    dataset, which = (data.val, "val") if data.val is not None else (data.train, "train")
    count = min(EXAMPLES, len(dataset))
    items = [dataset[i] for i in range(count)]
    return items, f"{count} items of the run's {which} data"


def export_graph(graph: OnnxGraph, example: tuple, path: Path) -> tuple[str, str | None]:
    """("dynamo", None), or ("torchscript", why dynamo failed); OnnxExportError when
    neither exporter can write the graph."""
    try:
        _dynamo(graph, example, path)
        return "dynamo", None
    except Exception as error:  # the exporter fails in many ways; its reason is reported
        fallback = reason_of(error)
    try:
        _torchscript(graph, example, path)
    except Exception as error:
        raise OnnxExportError(
            f"neither ONNX exporter can write this model: torch.export (dynamo): {fallback}; "
            f"TorchScript: {reason_of(error)}"
        ) from None
    return "torchscript", fallback


def _dynamo(graph: OnnxGraph, example: tuple, path: Path) -> None:
    dims = {name: {axis: torch.export.Dim.DYNAMIC for axis in axes} for name, axes in graph.dynamic.items()}
    shapes = tuple(dims.get(name) for name in graph.inputs)
    with quiet():
        program = torch.onnx.export(
            graph.module,
            example,
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=graph.inputs,
            output_names=graph.outputs,
            opset_version=OPSET,
            verbose=False,
        )
        program.save(str(path))


def _torchscript(graph: OnnxGraph, example: tuple, path: Path) -> None:
    axes = {name: dict(spec) for name, spec in graph.dynamic.items()}
    with quiet():
        torch.onnx.export(
            graph.module,
            example,
            str(path),
            dynamo=False,
            input_names=graph.inputs,
            output_names=graph.outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def reason_of(error: BaseException) -> str:
    """The first line that says why, of an exporter's error or of what caused it."""
    causes = []
    while error is not None and len(causes) < 5:
        causes.append(error)
        error = error.__cause__ or error.__context__
    for cause in reversed(causes):
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
        if text:
            first = text.splitlines()[0].strip()
            return f"{type(cause).__name__}: {first[:300]}"
    return type(causes[-1]).__name__


@contextlib.contextmanager
def quiet():
    """The exporters' own output (progress, graph dumps on failure, warnings) kept off the
    terminal: file descriptors 1 and 2 point at a scratch file meanwhile."""
    with tempfile.TemporaryFile() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = [os.dup(1), os.dup(2)]
        for stream in (1, 2):
            _flush()
            os.dup2(scratch.fileno(), stream)
        try:
            yield
        finally:
            _flush()
            for stream, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, stream)
                os.close(copy)


def _flush() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


def compare(graph: OnnxGraph, batches: list[tuple], path: Path, task, check: OnnxCheck) -> None:
    """Each batch through PyTorch and onnxruntime: differences, top-1, problems into `check`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        with torch.no_grad():
            expected = graph.module(*batch)
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        got = session.run(None, {name: t.numpy() for name, t in zip(graph.inputs, batch, strict=True)})
        _compare_outputs(graph.outputs, expected, got, check)
        same = [a == b for a, b in zip(task.onnx_top1(expected), task.onnx_top1(got), strict=True)]
        check.top1_same += sum(same)
        check.top1_total += len(same)
    if check.top1_same != check.top1_total:
        check.problems.append("top-1 differs")


def _compare_outputs(names: list[str], expected: list, got: list, check: OnnxCheck) -> None:
    for name, want, have in zip(names, expected, got, strict=True):
        if want.shape != have.shape:
            check.problems.append(f"{name} has shape {list(have.shape)}, not {list(want.shape)}")
            continue
        if want.size == 0:
            continue
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        scale = np.abs(want.astype(np.float64))
        check.max_abs = max(check.max_abs, float(diff.max()))
        check.max_rel = max(check.max_rel, float((diff / np.maximum(scale, REL_FLOOR)).max()))
        if not np.all(diff <= ATOL + RTOL * scale):
            check.problems.append(f"{name} differs beyond rtol {RTOL:g}, atol {ATOL:g}")
