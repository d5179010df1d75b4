"""Training settings of `vidsearch train`: one typed dataclass, light to import (no torch), saved beside the model."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .card import DEFAULT_FRAME_ENCODER
from .media.types import SamplingConfig


@dataclass
class TrainConfig:
    """Everything `vidsearch train` can set; saved as train_config.json beside the model."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3                  # new parameters (visual words, projections, heads)
    encoder_lr: float = 5e-5          # pretrained encoder layers, when trainable_layers > 0
    weight_decay: float = 0.01
    warmup: float = 0.1               # fraction of optimizer steps spent warming up
    grad_clip: float = 1.0
    grad_accum: int = 1
    fps: float = 1.0
    frames: int = 4                   # frames per clip the model sees (longer clips are subsampled)
    clip_seconds: float = 4.0
    size: int = 224                   # decode size (short side); the frame encoder resizes to its own input
    branching: int = 12               # visual vocabulary: branching ** depth words
    depth: int = 2
    frame_encoder: str = DEFAULT_FRAME_ENCODER
    text_model: str | None = None     # BERT to start from (tokenizer + weights); None = bundled MiniLM
    random_init: bool = False         # keep only the tokenizer of text_model; initialise the encoder at random
    fusion_layers: int = 0            # trainable layers over joint inputs (the encoder's own layers are frozen)
    model: dict = field(default_factory=dict)   # VideoBertConfig overrides (e.g. hidden_size for tiny models)
    captioner: str | None = "bert"    # caption decoder trained after VideoBERT: "bert" (from MiniLM), "bart"; None = none
    caption_epochs: int = 16          # passes of the caption decoder over the captions (on the frozen encoder)
    caption_lr: float = 3e-4
    caption_model: dict = field(default_factory=dict)   # decoder config overrides (e.g. num_hidden_layers)
    caption_frames: bool = True       # the decoder also attends to the clip's projected frame features
    # > 0: the decoder trains with VideoBERT's objectives instead of after them, its loss weighted by this
    # and its gradient reaching VideoBERT's trainable weights (0: a second stage on the frozen encoder)
    caption_weight: float = 0.0
    # Chance, per clip and step, that the caption decoder sees only the colour slots of its memory (the video
    # states and the network-feature slots hidden), so that it learns to name colour from them (BENCHMARKS.md,
    # "Captioning": colour 0.875 against 0.79 and 0.76, on two decoder seeds)
    caption_memory_drop: float = 0.3
    mask_prob: float = 0.15
    word_dropout: float = 0.2         # chance of dropping each caption word per step (phrasing robustness)
    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None
    workers: int = 2                  # decoder processes
    threads: int | None = None        # torch CPU threads per process (default: cores / processes)
    resume: bool = False
    progress: bool = True
    log_every: int = 10               # optimizer steps between metrics lines
    stop_after_epoch: int | None = None   # end the run after this epoch's checkpoint (to test resuming)

    def sampling(self) -> SamplingConfig:
        """The sampling this model is trained with, and expects at index time."""
        return SamplingConfig(fps=self.fps, size=self.size, clip_seconds=self.clip_seconds,
                              stride_seconds=self.clip_seconds)

    def check(self) -> None:
        """Reject nonsense early, naming the parameter."""
        for name in ("epochs", "batch_size", "grad_accum", "frames", "branching", "depth"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "fps", "clip_seconds"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if int(self.fusion_layers) < 0:
            raise ValueError(f"TrainConfig.fusion_layers must be >= 0, got {self.fusion_layers!r}")
        if self.captioner is not None and self.captioner not in ("bert", "bart"):
            raise ValueError(f"TrainConfig.captioner must be 'bert', 'bart' or None, got {self.captioner!r}")
        if self.captioner is not None and (int(self.caption_epochs) < 1 or not float(self.caption_lr) > 0):
            raise ValueError(f"TrainConfig.caption_epochs must be >= 1 and caption_lr > 0, got "
                             f"{self.caption_epochs!r} and {self.caption_lr!r}")
        if not float(self.caption_weight) >= 0:
            raise ValueError(f"TrainConfig.caption_weight must be >= 0, got {self.caption_weight!r}")
        if not 0.0 <= float(self.caption_memory_drop) < 1.0:
            raise ValueError(f"TrainConfig.caption_memory_drop must be in [0, 1), got {self.caption_memory_drop!r}")
        for name in ("mask_prob", "word_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")


def defaults() -> dict:
    """Field name -> default value (for the CLI, which must not import torch to show --help)."""
    out = {}
    for f in fields(TrainConfig):
        out[f.name] = f.default_factory() if callable(f.default_factory) else f.default
    return out
