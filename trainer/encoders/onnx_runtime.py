"""ONNX Runtime execution of the encoders on the CPU: a torch module exported once, cached on disk, run by ORT.

On two CPU cores ONNX Runtime runs the frozen encoders (EfficientNet-Lite0, the BERT text tower) two to three
times faster than eager torch with the same float32 outputs (to about 1e-5), mostly because it fuses the
element-wise work between convolutions and matrix products and drops the per-op Python overhead. The torch
module stays the source of truth: the ONNX file is exported from it, keyed by a hash of its weights, and
rebuilt whenever they change. The plain torch path stays the default where CUDA is present.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("auto", "torch", "onnx")
RUNTIME_ENV = "VIDSEARCH_RUNTIME"      # "torch" or "onnx": what runtime="auto" picks, when set
CACHE_ENV = "VIDSEARCH_CACHE"           # the project's cache root, as for frame features
OPSET = 17
_export_lock = threading.Lock()


def onnx_available() -> bool:
    """True when onnxruntime and the onnx package (which the exporter needs) are installed.

    Found, not imported: importing onnx costs about a second, paid by every process that picks a runtime,
    while it is needed only to export a module whose ONNX file is not cached yet."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """"torch" or "onnx" for a request of "auto", "torch" or "onnx" on `device`.

    "auto" means ONNX Runtime on the CPU (when installed) and torch on CUDA; the VIDSEARCH_RUNTIME environment
    variable overrides that choice, so a benchmark or a user can run the reference torch path without new flags.
    """
    choice = str(runtime).strip().lower()
    if choice not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if choice == "auto":
        choice = os.environ.get(RUNTIME_ENV, "").strip().lower() or "auto"
        if choice not in RUNTIMES:
            raise ValueError(f"{RUNTIME_ENV} must be one of {', '.join(RUNTIMES)}, got {choice!r}")
    if choice == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    if choice == "onnx":
        if device.type != "cpu":
            raise ValueError(f"runtime 'onnx' runs on the CPU only; device is {device}")
        if not onnx_available():
            raise ValueError("runtime 'onnx' needs the onnxruntime and onnx packages (pip install onnxruntime onnx)")
    return choice


def cache_dir() -> Path:
    """Where exported ONNX files are kept: $VIDSEARCH_CACHE (else ~/.cache/vidsearch), plus /onnx."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vidsearch"
    return Path(root).expanduser() / "onnx"


def module_key(module: torch.nn.Module, *parts: str) -> str:
    """A hash of the module's class, weights and buffers, the versions that shape the export, and `parts`."""
    import onnxruntime

    h = hashlib.sha256()
    for part in (type(module).__qualname__, torch.__version__, onnxruntime.__version__, str(OPSET), *parts):
        h.update(part.encode() + b"\0")
    for name, tensor in module.state_dict().items():
        h.update(name.encode() + str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
           output_names: Sequence[str], dynamic_axes: dict) -> Path:
    """Export `module` to `path` (atomically: written beside it, then moved into place)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")     # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(module.eval(), example, tmp, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=OPSET,
                              dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OrtModule:
    """A frozen torch module run by ONNX Runtime: `run(*arrays)` -> list of float32 numpy outputs.

    The ONNX file is exported on first use and cached under `cache_dir()` by `module_key`, so a second process
    loads it in a fraction of a second. `threads` (default: torch's current intra-op thread count, which the
    server's thread budget sets) is fixed when the session is made. `run` is safe to call from several threads.
    """

    def __init__(self, module: torch.nn.Module, example: tuple[torch.Tensor, ...], input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_axes: dict, name: str, threads: int | None = None):
        import onnxruntime as ort

        self.input_names = list(input_names)
        key = module_key(module, name, repr(sorted(dynamic_axes.items())),
                         *(f"{tuple(t.shape)}{t.dtype}" for t in example))
        self.path = cache_dir() / f"{name}-{key}.onnx"
        with _export_lock:
            if not self.path.is_file():
                export(module, example, self.path, input_names, output_names, dynamic_axes)
        options = ort.SessionOptions()
        self.threads = max(1, int(threads or torch.get_num_threads()))
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads > 1:
            # Spinning workers burn the other requests' core while they wait; on a busy server that costs more
            # than the microseconds spinning saves.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception:   # onnxruntime's own error types: a truncated or foreign cache file; export again, once
            with _export_lock:
                export(module, example, self.path, input_names, output_names, dynamic_axes)
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run the session on inputs given in `input_names` order."""
        return self.session.run(None, dict(zip(self.input_names, arrays)))

    def __repr__(self) -> str:
        return f"OrtModule({self.path.name!r}, threads={self.threads})"
