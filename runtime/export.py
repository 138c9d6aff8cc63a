"""`ftr export RUN -o DIR`: a trained run's model as a folder that describes itself.

DIR holds model.safetensors (the state dict), config.json (task, architecture,
classes, preprocessing, origin, metrics: what rebuilding and using the model
needs), README.md (a model card), predict.py (runs without ftr) and whatever
else the task's model needs beside it (a text encoder's config and tokenizer);
with onnx, model.onnx checked against onnxruntime (runtime/export_onnx.py).

The folder is written whole into a temporary folder beside DIR and renamed into
place: an interrupted export leaves no half folder, and an existing DIR is
replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recipe_lang import __version__

from .export_card import model_card
from .trained import TrainedRun

CONFIG_FORMAT = 1


class ExportError(Exception):
    """An export that cannot be made: what is wrong, and what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f"; {hint}" if hint else ""))


@dataclass
class ExportSummary:
    folder: str
    files: list[str] = field(default_factory=list)
    onnx: object = None  # export_onnx.OnnxCheck, when asked for
    onnx_failure: str | None = None  # why model.onnx is not there


def check_target(out: str, overwrite: bool) -> None:
    """Refuse an existing DIR that holds files (unless overwrite), or a file named DIR."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ExportError(f"'{out}' is a file, not a folder", "name a folder for the export with -o")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ExportError(f"'{out}' exists and is not empty", "give another folder, or --overwrite to replace it")


def export(run: TrainedRun, out: str, onnx: bool = False, overwrite: bool = False) -> ExportSummary:
    """Write the export folder of `run` at `out` (see the module's docstring)."""
    check_target(out, overwrite)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        summary = _write(run, temp, onnx)
        _replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    summary.folder = str(target)
    return summary


def _write(run: TrainedRun, folder: Path, onnx: bool) -> ExportSummary:
    from templates.predict_script import predict_script

    summary = ExportSummary(str(folder))
    write_safetensors(run.model, folder / "model.safetensors")
    run.task.export_files(str(folder))
    config = export_config(run)
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    parameters = sum(p.numel() for p in run.model.parameters())
    script = predict_script(run.plan, run.classes, parameters, f"{run.folder} ({os.path.basename(run.model_file)})")
    (folder / "predict.py").write_text(script, encoding="utf-8")
    if onnx:
        from .export_onnx import OnnxExportError, write_onnx

        try:
            summary.onnx = write_onnx(run, folder / "model.onnx")
        except OnnxExportError as error:
            summary.onnx_failure = str(error)
    (folder / "README.md").write_text(model_card(run, config, summary.onnx), encoding="utf-8")
    summary.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return summary


def _replace(temp: Path, target: Path) -> None:
    """temp renamed to target; an existing target is moved aside first, then removed."""
    mask = _umask()  # mkdtemp makes 0700 and safetensors 0600: give what plain writes would
    os.chmod(temp, 0o777 & ~mask)
    for path in temp.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() or path.name == "predict.py" else 0o666) & ~mask)
    if not target.exists():
        os.rename(temp, target)
        return
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.rename(target, aside / "old")
    os.rename(temp, target)
    shutil.rmtree(aside, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- the files -----------------------------------------------------------------


def write_safetensors(model: torch.nn.Module, path: Path) -> None:
    """The state dict, each tensor contiguous and on its own: a tensor that shares
    memory with one written before it (tied weights) is written as a copy, so that
    load_file + load_state_dict(strict=True) gives the model back."""
    from safetensors.torch import save_file

    state, storages = {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        shared = tensor.numel() > 0 and storage in storages
        storages.add(storage)
        state[name] = tensor.clone(memory_format=torch.contiguous_format) if shared else tensor.contiguous()
    save_file(state, str(path), metadata={"format": "pt", "ftr": __version__})


def export_config(run: TrainedRun) -> dict:
    """config.json: what rebuilding and using the model needs, and where it came from."""
    plan = run.plan
    classes = list(run.classes)
    return {
        "format": CONFIG_FORMAT,
        "ftr_version": __version__,
        "name": plan.name,
        "task": plan.task,
        "architecture": {**architecture(plan), **run.task.export_architecture()},
        "classes": classes,
        "num_labels": len(classes),
        "id2label": {str(i): name for i, name in enumerate(classes)},
        "label2id": {name: i for i, name in enumerate(classes)},
        "preprocessing": run.task.export_preprocessing(),
        "source": {
            "run": os.path.abspath(run.folder),
            "model": run.which,
            "file": os.path.basename(run.model_file),
            "overrides": run_overrides(run.folder),
        },
        "metrics": run_metrics(run.folder),
    }


def architecture(plan) -> dict:
    """The parts every task's model has: who builds it, with what, and its head."""
    classifier = plan.classifier
    return {
        "library": plan.library,
        "backbone": plan.backbone,
        "builder_kwargs": dict(plan.builder_kwargs),
        "weights": plan.weights.enum,
        "head": plan.head.model_dump() if plan.head is not None else None,
        "classifier": {"path": classifier.path, "in_features": classifier.in_features, "adapter": classifier.adapter},
    }


def run_overrides(folder: str) -> list[str]:
    summary = _read_json(Path(folder) / "summary.json")
    return list(summary.get("overrides", [])) if summary else []


def run_metrics(folder: str) -> dict:
    """The run's best and final figures (summary.json) and its last epoch's row of
    metrics.jsonl; what a file lacks is left out."""
    summary = _read_json(Path(folder) / "summary.json") or {}
    out = {key: summary[key] for key in ("status", "epochs", "of_epochs", "best", "final") if key in summary}
    try:
        lines = (Path(folder) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        rows = []
    if rows:
        out["last_epoch"] = rows[-1]
    return out


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
