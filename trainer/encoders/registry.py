"""Frame-encoder registry: turns a spec string ("efficientnet-lite0", "clip:<id or dir>") into a loaded encoder."""
from __future__ import annotations

from ..card import DEFAULT_FRAME_ENCODER, LITE0_OPTIONS, spec_options
from .base import FrameEncoder

KNOWN_SPECS = ("'efficientnet-lite0', 'efficientnet-lite0:grid=N,colour=0|1|2' or "
               "'clip:<hf id or local dir>'")


def load_frame_encoder(spec: str = DEFAULT_FRAME_ENCODER, device="auto", batch_size: int = 32,
                       runtime: str = "auto") -> FrameEncoder:
    """Build the frame encoder named by `spec` on `device`; the encoder's own `.spec` loads it again identically.

    runtime: "torch", "onnx" (ONNX Runtime, CPU only) or "auto" (see `onnx_runtime.resolve_runtime`); encoders
    without an ONNX export (CLIP) always run in torch.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"frame encoder spec must be a non-empty string, one of {KNOWN_SPECS}; got {spec!r}")
    name, _, arg = spec.strip().partition(":")
    if name == "efficientnet-lite0":
        from .efficientnet import EfficientNetLite0Encoder

        options = spec_options(spec, arg, LITE0_OPTIONS)
        return EfficientNetLite0Encoder(device=device, batch_size=batch_size, runtime=runtime, **options)
    if name == "clip":
        from .clip import ClipVisionEncoder

        if not arg.strip():
            raise ValueError(f"frame encoder spec {spec!r} names no model; use 'clip:<hf id or local dir>'")
        return ClipVisionEncoder(arg.strip(), device=device, batch_size=batch_size)
    raise ValueError(f"unknown frame encoder spec {spec!r}; expected {KNOWN_SPECS}")
