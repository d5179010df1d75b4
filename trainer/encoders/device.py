"""Device choice for every model in the pipeline: CUDA when present, CPU otherwise, bf16 autocast on CUDA."""
from __future__ import annotations

import contextlib

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device request ("auto", "cpu", "cuda", "cuda:1" or a torch.device) to a usable torch.device.

    "auto" picks the first CUDA device when one is present and the CPU otherwise. An explicit CUDA request on a
    machine without that device raises ValueError instead of failing later inside a model call.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}")
    elif device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device.strip().lower())
        except RuntimeError as exc:
            raise ValueError(f"device {device!r} is not valid (use 'auto', 'cpu', 'cuda' or 'cuda:N')") from exc
    if resolved.type == "cuda":
        _check_cuda(resolved, device)
    elif resolved.type != "cpu":
        raise ValueError(f"device {device!r} is not supported (use 'auto', 'cpu', 'cuda' or 'cuda:N')")
    return resolved


def _check_cuda(resolved: torch.device, requested) -> None:
    """Fail early, naming the request, when the CUDA device asked for does not exist."""
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(requested)!r} was requested but CUDA is not available on this machine")
    index = resolved.index or 0
    if index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {str(requested)!r} was requested but only {count} CUDA device(s) exist")


def autocast(device: str | torch.device):
    """Mixed-precision context for inference: bf16 autocast on CUDA, a no-op on the CPU.

    bf16 keeps fp32's exponent range, so activations of the pretrained encoders cannot overflow as they can in fp16.
    """
    device = torch.device(device) if isinstance(device, str) else device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
