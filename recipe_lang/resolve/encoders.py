"""Hugging Face text encoders: loading them (or only their architecture, on the
meta device), pooling their token states, and the model ftr trains: the encoder's
modules under their own names, with ftr's head beside them.

Shared by the resolver and the runtime, so that the plan's model and the
trained one are the same modules. transformers is imported here only, and
only when a text recipe is resolved or run.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from recipe_lang.resolve.problem import Problem

POOLS = ("cls", "mean", "last")
EXPORT_FOLDER = "encoder"  # ftr export's folder of the encoder's config and tokenizer
MISSING = "task text_classification needs transformers: pip install 'ftr[text]'"


def transformers():
    try:
        import transformers
    except ImportError:
        raise Problem(MISSING, hint="install the text extra, then check again") from None
    transformers.logging.set_verbosity_error()  # its load reports are ftr's to make
    transformers.utils.logging.disable_progress_bar()
    return transformers


def config(path: str):
    """The encoder's configuration, from a local folder (or a hub id where the network allows)."""
    lib = transformers()
    if not os.path.isdir(path) and not _may_be_hub_id(path):
        raise Problem(f"model folder '{path}' does not exist", hint="write the path of a folder with a config.json")
    try:
        return lib.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        hint = "a folder saved with save_pretrained(), holding config.json, the weights and the tokenizer"
        raise Problem(f"cannot read a Hugging Face model from '{path}'", notes=(first,), hint=hint) from None


def _may_be_hub_id(path: str) -> bool:
    """`name` or `org/name`: a hub id, when no such folder is here."""
    return not path.startswith(("/", ".", "~")) and path.count("/") <= 1 and not os.path.exists(path)


def build(path: str, weights: str, on_meta: bool = False) -> nn.Module:
    """The encoder: its pretrained weights (`default`), or a random initialisation of
    the same architecture (`none`, `file`: a checkpoint is loaded over it later).
    Always float32. On the meta device only the architecture is made."""
    lib = transformers()
    cfg = config(path)
    if on_meta:
        with torch.device("meta"):
            encoder = lib.AutoModel.from_config(cfg, dtype=torch.float32)
    elif weights == "default":
        encoder = lib.AutoModel.from_pretrained(path, dtype=torch.float32)
    else:
        encoder = lib.AutoModel.from_config(cfg, dtype=torch.float32)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # BERT's tanh pooler: ftr's head reads the token states through `pool`
    return encoder


def hidden_size(encoder: nn.Module) -> int:
    cfg = encoder.config
    for name in ("hidden_size", "dim", "n_embd", "d_model"):
        if isinstance(getattr(cfg, name, None), int):
            return getattr(cfg, name)
    raise Problem(f"cannot tell the width of {type(encoder).__name__}'s token states")


def tokenizer(path: str):
    """The encoder's tokenizer; a model without a pad token (GPT-2) pads with its end-of-text token."""
    lib = transformers()
    try:
        tok = lib.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise Problem(f"cannot read the tokenizer of '{path}'", notes=(first,)) from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise Problem(f"the tokenizer of '{path}' has neither a pad token nor an end-of-text token")
        tok.pad_token = tok.eos_token
    return tok


def pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per text from its token states (batch, tokens, width)."""
    if how == "cls":
        return states[:, 0]
    if how == "last":  # the last token that is not padding, wherever the padding is
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class TextClassifier(nn.Module):
    """The encoder's modules under their own names (`embeddings`, `encoder.layer.5`),
    and `head`: selectors read as they would on the encoder itself.

    forward takes one batch dict (input_ids, attention_mask) and gives logits."""

    def __init__(self, encoder: nn.Module, head: nn.Module, how: str):
        super().__init__()
        if any(True for _ in encoder.parameters(recurse=False)) or any(True for _ in encoder.buffers(recurse=False)):
            raise Problem(f"{type(encoder).__name__} keeps tensors outside its modules: ftr cannot adopt it")
        object.__setattr__(self, "encoder_model", encoder)  # not registered: its children are
        for name, child in encoder.named_children():
            self.add_module(name, child)
        if "head" in self._modules:
            raise Problem(f"{type(encoder).__name__} has a module named 'head' already")
        self.head = head
        self.pool = how

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder_model.training = mode
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        states = self.encoder_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return self.head(pool(states.last_hidden_state, batch["attention_mask"], self.pool))
