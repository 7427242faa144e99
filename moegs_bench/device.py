"""The one place that decides where tensors live: CUDA when present, CPU otherwise (the
renderer backend follows the tensors: render/backend.py)."""

from __future__ import annotations

import torch

from .errors import DeviceError


def has_cuda() -> bool:
    return torch.cuda.is_available()


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda") if has_cuda() else torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None -> default_device(); 'cuda' fails with one clear line without a GPU."""
    if name in (None, "auto"):
        return default_device()
    dev = torch.device(name)
    if dev.type == "cuda" and not has_cuda():
        raise DeviceError("--device cuda: no CUDA device is available on this machine")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
