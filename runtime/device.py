"""Which device a run uses: the one asked for, checked before anything is made, or the fastest."""

from __future__ import annotations

import torch


def device_error(requested: str) -> str | None:
    """Why `--device requested` cannot run here, or None."""
    try:
        device = torch.device(requested)
    except RuntimeError:
        return f"unknown device '{requested}': use cpu, cuda, cuda:N or mps"
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {requested}: CUDA is not available on this machine; use --device cpu"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"--device {requested}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        return None
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps and mps.is_available() else f"--device {requested}: MPS is not available on this machine"
    return f"--device {requested}: ftr runs on cpu, cuda or mps"


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
