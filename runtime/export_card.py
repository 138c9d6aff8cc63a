"""README.md of an exported model: a model card written from the run and its config.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from recipe_lang.resolve.table import plan_table

DESCRIBED = {
    "classification": "an image classifier",
    "text_classification": "a text classifier",
    "detection": "an object detector",
}
USAGE = {
    "classification": "python predict.py IMAGE_OR_FOLDER...",
    "text_classification": "python predict.py TEXT_FILE...  # a text a line; CSV or JSON lines with --column",
    "detection": "python predict.py IMAGE_OR_FOLDER... [--threshold 0.5]",
}
LISTED_CLASSES = 50


def model_card(run, config: dict, onnx=None) -> str:
    plan = run.plan
    parts = [
        f"# {plan.name}\n\n{_summary(run, config)}",
        _classes(config["classes"]),
        _metrics(config["metrics"]),
        _data(plan),
        "## What trained\n\nThe plan (`ftr plan`): the groups of the model, and what trained in each span of "
        f"epochs at which rate.\n\n{_fenced(plan_table(plan), 'text')}",
        _usage(run, config),
        _onnx(onnx),
        f"## The recipe\n\n{_fenced(_recipe(run.folder), 'ftr')}",
    ]
    return "\n\n".join(part.rstrip() for part in parts if part) + "\n"


def _summary(run, config: dict) -> str:
    architecture = config["architecture"]
    return (
        f"{DESCRIBED.get(config['task'], config['task'])} fine-tuned with ftr {config['ftr_version']}: "
        f"{architecture['library']}'s `{architecture['backbone']}` with a new head for "
        f"{config['num_labels']} classes. Exported from the run `{run.folder}` "
        f"(`{config['source']['file']}`, the {config['source']['model']} model)."
    )


def _classes(classes: list[str]) -> str:
    shown = ", ".join(f"`{name}`" for name in classes[:LISTED_CLASSES])
    more = (
        f", and {len(classes) - LISTED_CLASSES} more (config.json lists them all)"
        if len(classes) > LISTED_CLASSES
        else ""
    )
    return f"## Classes\n\n{len(classes)}: {shown}{more}."


def _metrics(metrics: dict) -> str:
    lines = ["## Metrics", ""]
    best, final = metrics.get("best"), metrics.get("final")
    if not best and not final:
        return "## Metrics\n\nThe run folder holds no summary.json: no figures are known."
    if metrics.get("epochs") is not None:
        lines += [
            f"Trained {metrics['epochs']} of {metrics.get('of_epochs', '?')} epochs ({metrics.get('status')}).",
            "",
        ]
    if best:
        lines += [f"Best: epoch {best.get('epoch')}, val_{best.get('metric')} {_number(best.get('value'))}.", ""]
    if isinstance(final, dict):
        lines += ["| final | value |", "| --- | --- |"]
        lines += [f"| {key} | {_number(value)} |" for key, value in final.items()]
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _data(plan) -> str:
    data = plan.data
    lines = ["## Data", "", f"- train: `{json.dumps(data.train.model_dump(), ensure_ascii=False)}`"]
    if data.val is not None:
        lines.append(f"- val: `{json.dumps(data.val.model_dump(), ensure_ascii=False)}`")
    return "\n".join(lines)


def _usage(run, config: dict) -> str:
    return f"""## Using it

The folder needs no ftr. From the command line (a tab-separated line per prediction):

{_fenced(USAGE[config["task"]], "sh")}

In Python, with predict.py's builder and the tensors of model.safetensors:

{_fenced(_python(), "python")}

config.json holds the architecture (`architecture`), the classes (`classes`, `id2label`,
`label2id`), the preprocessing (`preprocessing`) and the run's figures (`metrics`)."""


def _python() -> str:
    return """import sys
from safetensors.torch import load_file

sys.path.insert(0, "EXPORT_FOLDER")  # this folder
import predict

model = predict.build_model("EXPORT_FOLDER")  # the architecture, without weights
model.load_state_dict(load_file("EXPORT_FOLDER/model.safetensors"))
model.eval()  # predict.load_model("EXPORT_FOLDER") does these three lines
labels = predict.CLASSES"""


def _onnx(check) -> str:
    if check is None:
        return ""
    fallback = f" (torch.export could not: {check.fallback})" if check.fallback else ""
    return (
        f"## ONNX\n\n`model.onnx`, written by the {check.exporter} exporter{fallback}. Checked against "
        f"onnxruntime on {check.inputs}: {check.figures()}."
    )


def _recipe(folder: str) -> str:
    try:
        return (Path(folder) / "recipe.ftr").read_text(encoding="utf-8")
    except OSError as error:
        return f"(recipe.ftr cannot be read: {error.strerror or error})"


def _fenced(text: str, language: str) -> str:
    """A fenced block longer than any run of backticks in the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
