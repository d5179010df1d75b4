"""trainer: decoding, encoders, synthetic data and the VideoBERT model; the names below are its front door."""
from __future__ import annotations

import importlib

# Public name -> defining module. Loaded on first use, so that importing a light module (a decoder
# worker, `vidsearch --help`) never pulls in torch.
_EXPORTS = {
    "MediaError": "trainer.media",
    "VIDEO_EXTENSIONS": "trainer.media",
    "VideoInfo": "trainer.media",
    "SamplingConfig": "trainer.media",
    "Clip": "trainer.media",
    "DecodedVideo": "trainer.media",
    "probe": "trainer.media",
    "decode": "trainer.media",
    "cut_clips": "trainer.media",
    "DecodePool": "trainer.media",
    "VideoChunk": "trainer.media",
    "generate": "trainer.synth",
    "generate_split": "trainer.synth",
    "SynthSpec": "trainer.synth",
    "Caption": "trainer.captions",
    "CaptionError": "trainer.captions",
    "read_manifest": "trainer.captions",
    "read_sidecar": "trainer.captions",
    "pick_device": "trainer.encoders",
    "set_thread_budget": "trainer.encoders",
    "FrameEncoder": "trainer.encoders",
    "load_frame_encoder": "trainer.encoders",
    "TextEncoder": "trainer.encoders",
    "default_text_model_dir": "trainer.encoders",
    "load": "trainer.api",
    "VideoSearchModel": "trainer.api",
    "train": "trainer.training",
    "TrainConfig": "trainer.train_config",
    "VideoBertConfig": "trainer.modeling",
    "VideoBertModel": "trainer.modeling",
    "VideoBertForPreTraining": "trainer.modeling",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
