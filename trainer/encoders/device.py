"""Device choice for every model in the pipeline: CUDA when present, CPU otherwise, bf16 autocast on CUDA."""
from __future__ import annotations

import contextlib
import threading

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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under `taskset` or a container's cpuset)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:            # not on Linux
        return max(1, os.cpu_count() or 1)


_budget: dict[str, int] = {}            # {"threads": n} once set_thread_budget ran
_applied = threading.local()


def set_thread_budget(workers: int, cores: int | None = None) -> int:
    """Give each of `workers` concurrent callers (a server's request threads) its share of the cores.

    torch's intra-op pool and FAISS's OpenMP pool default to one thread per core *per calling thread*, so four
    request threads on two cores would run eight compute threads that spin against each other. This sets both
    pools (and the ONNX Runtime sessions made afterwards, which read torch's count) to max(1, cores // workers)
    threads, and returns that number. Call it before the models load.
    """
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = max(1, (cores or usable_cores()) // int(workers))
    torch.set_num_threads(threads)          # torch hands its count on to threads started later
    _budget["threads"] = threads
    use_thread_budget()
    return threads


def use_thread_budget() -> None:
    """Apply the budget to FAISS's OpenMP pool in the calling thread, once per thread.

    OpenMP keeps its thread count per calling thread, and a thread started later (a server's request thread)
    begins with one per core again; so each thread that searches calls this first. A no-op without a budget.
    """
    threads = _budget.get("threads")
    if threads is None or getattr(_applied, "threads", None) == threads:
        return
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass
    _applied.threads = threads
