"""`ftr merge RUN... -o OUT`: weight averaging of runs that share a starting point.

- uniform soup: the mean of the runs' tensors;
- greedy soup (Wortsman et al., ICML 2022): the runs in order of their own held-out
  score, best first, each added only if the soup's held-out score does not drop;
- WiSE-FT (`--wise A`, Wortsman et al., CVPR 2022): A * fine-tuned + (1 - A) * the
  starting weights, the model the run's recipe builds before its first step (its
  pretrained or file weights, and its head as initialised with its seed).

Held out means the first run's val data, measured as `ftr evaluate` measures it.
BatchNorm's running statistics are averaged like every other tensor (`--bn average`),
or recomputed (`--bn recompute`) over the first run's train data, in train mode with
a cumulative average (torch.optim.swa_utils.update_bn); step counters
(num_batches_tracked) are taken from the first run. The output is a run folder
(recipe.ftr and classes.json of the first run, model.pt, summary.json, merge.json)
that predict, evaluate and export accept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from recipe_lang.files import atomic_write_text

from . import checkpoint as ckpt
from .evaluation_data import EvaluateError
from .metrics import better
from .trained import TrainedRun


class MergeError(Exception):
    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f"; {hint}" if hint else ""))


# --- a shared starting point -------------------------------------------------------


def starting_point(run: TrainedRun) -> dict:
    """What decides a run's weights before its first step."""
    plan = run.plan
    point = {
        "task": plan.task,
        "backbone": f"{plan.library} {plan.backbone}",
        "weights": plan.weights.spec.model_dump_json(),
        "head": plan.head.model_dump_json() if plan.head else "the builder's own",
        "head_init": plan.head_init,
        "classes": run.classes,
    }
    if plan.weights.spec.kind == "none" or plan.head_init != "probe":
        point["seed"] = plan.seed  # the random initialisation of the backbone or of the new head
    return point


def check_shared_start(runs: list[TrainedRun]) -> None:
    first = starting_point(runs[0])
    for run in runs[1:]:
        other = starting_point(run)
        for key, value in first.items():
            if other.get(key) != value:
                raise MergeError(
                    f"{run.folder} and {runs[0].folder} do not share a starting point: their {key} differs "
                    f"({_short(other.get(key))} against {_short(value)})",
                    "average runs of one recipe that differ in their training only (rates, epochs, "
                    "augmentation, data order) and start from the same weights: same weights, head and seed",
                )


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- averaging ----------------------------------------------------------------------


def average(states: list[dict], weights: list[float] | None = None) -> dict:
    """The weighted mean of floating tensors; other tensors (step counters) from the first."""
    weights = weights or [1 / len(states)] * len(states)
    out = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        total = sum(w * state[key].to(torch.float64) for w, state in zip(weights, states, strict=True))
        out[key] = total.to(first.dtype)
    return out


def starting_weights(run: TrainedRun) -> dict:
    """The model the run's recipe builds before its first step, as `ftr run` builds it."""
    torch.manual_seed(run.plan.seed)
    return {k: v.detach().clone() for k, v in run.task.build_model().state_dict().items()}


def held_out(run: TrainedRun, state: dict, metric: str) -> float:
    """`metric` of `state` on the run's val data, as ftr evaluate measures it."""
    from recipe_lang.resolve.problem import Problem

    from .evaluate import evaluate

    run.model.load_state_dict(state)
    try:
        return evaluate(run, None, worst=0).metrics[metric]
    except (EvaluateError, Problem, ValueError, OSError) as error:
        raise MergeError(
            f"cannot measure on {run.folder}'s val data: {getattr(error, 'message', error)}",
            "run ftr merge where the runs' recipes find their data (their paths are relative)",
        ) from None


def score_metric(run: TrainedRun) -> str:
    """The metric greedy soups keep: the recipe's `best`, else its first metric, else loss."""
    evaluate = run.plan.evaluate
    if evaluate.best:
        return evaluate.best
    others = [k for k in evaluate.metric_keys if k != "loss"]
    return others[0] if others else "loss"


def greedy(runs: list[TrainedRun], states: list[dict], metric: str, say) -> tuple[dict, list[int], dict]:
    """(the soup, the indices of the runs in it, each run's and the soup's held-out score)."""
    first = runs[0]
    scores = [held_out(first, state, metric) for state in states]
    order = sorted(range(len(runs)), key=lambda i: scores[i], reverse=metric != "loss")
    chosen, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        candidate = held_out(first, average([states[j] for j in [*chosen, i]]), metric)
        kept = not better(metric, best, candidate)  # kept unless the soup gets worse
        say(f"  {runs[i].folder}: alone {scores[i]:.4f}, soup with it {candidate:.4f}: {'in' if kept else 'out'}")
        if kept:
            chosen.append(i)
            best = candidate
    return average([states[j] for j in chosen]), chosen, {"runs": scores, "soup": best}


def recompute_batchnorm(run: TrainedRun, state: dict) -> dict:
    """The running statistics of every BatchNorm, from the train data in train mode."""
    from torch.optim.swa_utils import update_bn
    from torch.utils.data import DataLoader

    model = run.model
    model.load_state_dict(state)
    data = run.task.datasets()
    loader = DataLoader(data.train, batch_size=run.plan.data.batch_size, collate_fn=run.task.collate)
    inputs = (run.task.to_device(batch, torch.device("cpu"), torch.contiguous_format)[0] for batch in loader)
    torch.manual_seed(run.plan.seed)
    try:
        update_bn(inputs, model)
    except (TypeError, ValueError, AssertionError) as error:
        raise MergeError(
            f"--bn recompute: the model does not run on its inputs alone in train mode ({error})",
            "use --bn average",
        ) from None
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the run folder ------------------------------------------------------------------


def write_run(out: str, first: TrainedRun, state: dict, about: dict) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("recipe.ftr", "classes.json"):
        shutil.copyfile(os.path.join(first.folder, name), folder / name)
    ckpt.save_tensors(folder / "model.pt", state)
    atomic_write_text(folder / "merge.json", json.dumps(about, indent=2) + "\n")
    summary = {
        "status": "merged",
        "epochs": first.plan.epochs,
        "of_epochs": first.plan.epochs,
        "final": about.get("held_out", {}),
        "best": None,
        "seconds": 0.0,
    }
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")


def check_out(out: str, overwrite: bool) -> None:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise MergeError(f"'{out}' exists and is not empty", "give another folder, or --overwrite to replace it")


def merge(runs: list[TrainedRun], out: str, method: str, wise: float | None, bn: str, say) -> dict:
    """Write the merged run at `out`; returns what merge.json says."""
    if wise is not None and len(runs) != 1:
        raise MergeError("--wise takes one run: it moves between that run and its starting weights")
    check_shared_start(runs)
    states = [{k: v.detach().clone() for k, v in run.model.state_dict().items()} for run in runs]
    metric = score_metric(runs[0])
    about = {"runs": [run.folder for run in runs], "models": [run.which for run in runs], "bn": bn}
    if wise is not None:
        state = average([states[0], starting_weights(runs[0])], [wise, 1 - wise])
        about |= {"method": "wise", "alpha": wise}
    elif method == "greedy":
        state, chosen, scores = greedy(runs, states, metric, say)
        about |= {"method": "greedy", "metric": metric, "kept": [runs[i].folder for i in chosen], "scores": scores}
    else:
        state = average(states)
        about |= {"method": "uniform"}
    if bn == "recompute":
        state = recompute_batchnorm(runs[0], state)
    try:
        about["held_out"] = {f"val_{metric}": held_out(runs[0], state, metric)}
    except MergeError as error:  # the soup is made all the same; only its score is missing
        say(f"ftr merge: no held-out score: {error.message}")
        about["held_out"] = {}
    write_run(out, runs[0], state, about)
    return about
