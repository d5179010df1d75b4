"""The front door to a trained model: `load(model_dir)` -> VideoSearchModel, used by the indexer and search.

One `embed_text` and one `embed_clips` serve bulk indexing and single queries alike, so index-time and
query-time vectors come from the same code path.
"""
from __future__ import annotations

import copy
import json
import threading

import numpy as np
import torch

from .caption_training import load_captioner
from .captioner import decode_text
from .captioner import generate as generate_captions
from .card import FRAME_ENCODER_FILE, check_model_dir, model_hash
from .encoders.onnx_runtime import resolve_runtime
from .media import SamplingConfig
from .modeling import VideoBertForPreTraining, video_state_mask
from .training import resample_frames
from .vocab import VisualVocabulary


def load(model_dir, device="auto", runtime: str = "auto") -> "VideoSearchModel":
    """Load a model dir written by `trainer.train`; raises FileNotFoundError naming what is missing.

    runtime: "torch", "onnx" (ONNX Runtime for the frame encoder and the text tower, CPU only) or "auto"
    (ONNX Runtime on the CPU, torch on CUDA; the VIDSEARCH_RUNTIME environment variable overrides it).
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .encoders import load_frame_encoder, pick_device

    path = check_model_dir(model_dir)
    dev = pick_device(device)
    hf_logging.disable_progress_bar()
    model = VideoBertForPreTraining.from_pretrained(path).to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = VisualVocabulary.load(path)
    spec = json.loads((path / FRAME_ENCODER_FILE).read_text())
    encoder = load_frame_encoder(spec["spec"], dev, runtime=runtime)
    if encoder.dim != model.config.feature_dim:
        raise ValueError(f"{path}: frame encoder {spec['spec']!r} gives {encoder.dim}-d features, "
                         f"the model expects {model.config.feature_dim}")
    identity = {"path": str(path), "hash": model_hash(path), "name": path.name}
    return VideoSearchModel(model, tokenizer, vocab, encoder, identity, dev, captioner=load_captioner(path, dev),
                            runtime=runtime)


class VideoSearchModel:
    """A trained VideoBERT with its tokenizer, visual words and frame encoder, ready for inference."""

    def __init__(self, model: VideoBertForPreTraining, tokenizer, vocab: VisualVocabulary, frame_encoder,
                 identity: dict, device: torch.device, batch_size: int = 64, max_text: int = 64,
                 captioner=None, runtime: str = "auto"):
        self.model = model
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.frame_encoder = frame_encoder
        self.identity = identity
        self.device = device
        self.batch_size = batch_size
        self.max_text = max_text
        self.dim = model.config.hidden_size
        self.sampling = SamplingConfig(**model.config.sampling) if model.config.sampling else SamplingConfig()
        self.captioner = captioner          # caption decoder (trainer.captioner), None for a model without one
        self._onnx = resolve_runtime(runtime, device) == "onnx"
        self._text_tower = _TextTower.runner(model.videobert) if self._onnx else None
        self._video_tower = None            # made on first use: a search process may never embed a clip
        self._bf16_captioner = None         # describe(fast=True)'s copy of the decoder, made on first use
        self._lazy_lock = threading.Lock()  # guards making those two, once, from any thread

    @property
    def can_describe(self) -> bool:
        """Whether the model has a caption decoder, so that `describe` works."""
        return self.captioner is not None

    def __repr__(self) -> str:
        return f"VideoSearchModel({self.identity['path']!r}, dim={self.dim}, device={str(self.device)!r})"

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, F) float32 frame features."""
        return self.frame_encoder.encode(frames)

    def _clip_features(self, clips, features: bool) -> list[np.ndarray]:
        """Each clip as (T, F) float32 features, subsampled to the model's frame count."""
        clips = list(clips)
        out = []
        for i, clip in enumerate(clips):
            arr = np.asarray(clip)
            if arr.ndim == 3 and not features:
                arr = arr[None]                                  # one frame as a one-frame clip
            if len(arr) == 0:
                raise ValueError(f"clip {i} has no frames")
            if features and (arr.ndim != 2 or arr.shape[1] != self.model.config.feature_dim):
                raise ValueError(f"clip {i}: expected (T, {self.model.config.feature_dim}) features, got {arr.shape}")
            out.append(resample_frames(arr, self.model.config.max_frames))
        if not features:
            # One encoder pass over the frames of all clips, then split back per clip.
            sizes = [len(c) for c in out]
            feats = self.encode_frames(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)
            out = np.split(feats, np.cumsum(sizes)[:-1]) if out else []
        return [np.asarray(f, dtype=np.float32) for f in out]

    def _video_batch(self, feats: list[np.ndarray]) -> dict:
        t = max(len(f) for f in feats)
        dim = feats[0].shape[1]
        x = torch.zeros(len(feats), t, dim)
        ids = torch.zeros(len(feats), t, dtype=torch.long)
        mask = torch.zeros(len(feats), t, dtype=torch.bool)
        for row, f in enumerate(feats):
            x[row, :len(f)] = torch.from_numpy(f)
            ids[row, :len(f)] = torch.from_numpy(self.vocab.quantize(f))
            mask[row, :len(f)] = True
        return {"visual_ids": ids.to(self.device), "features": x.to(self.device), "frame_mask": mask.to(self.device)}

    def _text_batch(self, texts: list[str]) -> dict:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text, return_tensors="pt")
        return {"text_ids": tok["input_ids"].to(self.device), "text_mask": tok["attention_mask"].to(self.device)}

    def _video_pass(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """VideoBERT's video-only pass over a `_video_batch`: (clip embeddings (B, H), hidden states `[CLS] frames
        [SEP]` (B, T + 2, H)); on ONNX Runtime where the model runs there (the CPU), else in torch."""
        if not self._onnx:
            return self.model.videobert.video_pass(**batch)
        with self._lazy_lock:
            if self._video_tower is None:
                self._video_tower = _VideoTower.runner(self.model.videobert)
        emb, hidden = self._video_tower.run(*(batch[k].numpy() for k in _VideoTower.inputs))
        return torch.from_numpy(emb), torch.from_numpy(hidden)

    def _video_states(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden states `[CLS] frames [SEP]` of a `_video_batch` and their mask: what the decoder reads."""
        return self._video_pass(batch)[1], video_state_mask(batch["frame_mask"])

    def embed_clips(self, clips, features: bool = False) -> np.ndarray:
        """Clips as (T, H, W, 3) uint8 frame stacks (or (T, F) features with features=True) -> (N, dim) unit vectors."""
        feats = self._clip_features(clips, features)
        out = np.zeros((len(feats), self.dim), dtype=np.float32)
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, len(feats), self.batch_size):
                emb, _ = self._video_pass(self._video_batch(feats[s:s + self.batch_size]))
                out[s:s + len(emb)] = emb.float().cpu().numpy()
        return out

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Sentences -> (N, dim) float32 unit vectors in the same space as `embed_clips`, read as written (search
        reads queries into training words first, see search.reading)."""
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if self._text_tower is not None:
            for s in range(0, len(texts), self.batch_size):
                tok = self.tokenizer(texts[s:s + self.batch_size], padding=True, truncation=True,
                                     max_length=self.max_text, return_tensors="np")
                plain, adapted = self._text_tower.run(tok["input_ids"].astype(np.int64),
                                                      tok["attention_mask"].astype(np.int64))
                out[s:s + len(plain)] = adapted
            return out
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, len(texts), self.batch_size):
                batch = self._text_batch(texts[s:s + self.batch_size])
                emb = self.model.videobert.get_text_embeddings(**batch)
                out[s:s + len(emb)] = emb.float().cpu().numpy()
        return out

    def describe(self, clips, features: bool = False, num_beams: int | None = None, max_length: int | None = None,
                 fast: bool = False, rerank: bool = True, **generation) -> list[str]:
        """One generated sentence per clip (frame stacks, or (T, F) features with features=True).

        Beam search through `generate()`; num_beams, max_length and other generation settings (e.g.
        no_repeat_ngram_size, length_penalty) override those saved with the decoder. With more than one beam and
        `rerank`, the beam search's finished sentences are ranked by the model's own text-video similarity (their
        `embed_text` against the clip's `embed_clips`), and the closest is kept: the decoder's likeliest sentence
        leans on the phrasings it saw most, while the retrieval model reads motion and colour from the whole clip
        (BENCHMARKS.md, "Captioning"). `fast`: on a CPU that computes bfloat16 itself (AVX512-BF16), the decoder's
        language model runs in bfloat16, about 1.5x the captions/s with the same sentence for 94-98% of clips
        (BENCHMARKS.md, "Indexing"); elsewhere it changes nothing. Raises ValueError for a model trained without a
        caption decoder.
        """
        if self.captioner is None:
            raise ValueError(f"model {self.identity['path']} has no caption decoder (it was trained with "
                             "--no-captioner or before captioning existed); add one with `vidsearch train "
                             "MANIFEST --out MODEL --caption-only`")
        decoder = self._fast_captioner() if fast else self.captioner
        beams = num_beams or decoder.generation_config.num_beams or 1
        candidates = beams if rerank and beams > 1 else 1
        feats = self._clip_features(clips, features)
        out: list[str] = []
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, len(feats), self.batch_size):
                batch = self._video_batch(feats[s:s + self.batch_size])
                clip_vecs, states = self._video_pass(batch)
                memory, memory_mask = decoder.memory(states, video_state_mask(batch["frame_mask"]), batch["features"],
                                                     batch["frame_mask"])
                ids = generate_captions(decoder, memory, memory_mask, num_beams=num_beams, max_length=max_length,
                                        num_return_sequences=candidates, **generation)
                texts = decode_text(self.tokenizer, ids)
                out += self._closest(texts, clip_vecs) if candidates > 1 else texts
        return out

    def _closest(self, texts: list[str], clip_vecs: torch.Tensor) -> list[str]:
        """Of each clip's candidate sentences (`texts`, the same number per clip, clip by clip), the one whose text
        embedding is closest to the clip's embedding (`clip_vecs`, (B, dim) unit vectors)."""
        clip_vecs = clip_vecs.float().cpu().numpy()
        per_clip = len(texts) // len(clip_vecs)
        similarity = np.einsum("bkd,bd->bk", self.embed_text(texts).reshape(len(clip_vecs), per_clip, -1), clip_vecs)
        return [texts[row * per_clip + int(best)] for row, best in enumerate(similarity.argmax(1))]

    def _fast_captioner(self):
        """The caption decoder with its language model in bfloat16 (made once), on a CPU with bfloat16
        arithmetic of its own; the decoder itself anywhere else, where bfloat16 would be emulated and slower."""
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        if self.device.type != "cpu" or not native():
            return self.captioner
        with self._lazy_lock:
            if self._bf16_captioner is None:
                fast = copy.deepcopy(self.captioner)
                fast.lm = fast.lm.to(torch.bfloat16)    # the frame memory's projection stays in float32
                self._bf16_captioner = fast
        return self._bf16_captioner

    def video_states(self, clips, features: bool = False) -> list[np.ndarray]:
        """VideoBERT's video-only hidden states `[CLS] frames [SEP]` of each clip -> (T + 2, H) float32 each:
        what the caption decoder cross-attends to."""
        feats = self._clip_features(clips, features)
        out: list[np.ndarray] = []
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, len(feats), self.batch_size):
                states, mask = self._video_states(self._video_batch(feats[s:s + self.batch_size]))
                states = states.float().cpu().numpy()
                out += [row[m] for row, m in zip(states, mask.cpu().numpy())]
        return out

    def match(self, texts: list[str], clips, features: bool = False) -> np.ndarray:
        """Cross-encoder alignment probability of text i with clip i -> (N,) float32 in [0, 1]."""
        texts = _check_texts(texts)
        feats = self._clip_features(clips, features)
        if len(texts) != len(feats):
            raise ValueError(f"match needs one clip per text, got {len(texts)} texts and {len(feats)} clips")
        out = np.zeros(len(texts), dtype=np.float32)
        with torch.inference_mode(), _autocast(self.device):
            for s in range(0, len(texts), self.batch_size):
                batch = {**self._text_batch(texts[s:s + self.batch_size]),
                         **self._video_batch(feats[s:s + self.batch_size])}
                logits = self.model.alignment_logits(**batch)
                out[s:s + len(logits)] = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def tags(self, frames: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
        """ImageNet concepts of a clip: per-frame label probabilities averaged over its frames, best first.

        Frame encoders without ImageNet labels (e.g. CLIP) give an empty list.
        """
        labels = getattr(self.frame_encoder, "labels", None)
        if labels is None or len(frames) == 0:
            return []
        scores: dict[str, float] = {}
        per_frame = labels(np.asarray(frames), top=top)
        for row in per_frame:
            for name, p in row:
                scores[name] = scores.get(name, 0.0) + p / len(per_frame)
        return sorted(scores.items(), key=lambda kv: -kv[1])[:top]


class _TextTower(torch.nn.Module):
    """VideoBERT's text-only path, (B, L) ids and mask -> (sentence vectors, adapted vectors), both (B, H) unit
    vectors: what one text query needs, exported to ONNX in one piece."""

    def __init__(self, videobert):
        super().__init__()
        self.videobert = videobert

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor):
        plain = self.videobert.get_text_embeddings(text_ids, text_mask, adapt=False)
        if self.videobert.text_adapter is None:
            return plain, plain
        return plain, self.videobert.get_text_embeddings(text_ids, text_mask, adapt=True)

    @classmethod
    def runner(cls, videobert):
        from .encoders.onnx_runtime import OrtModule

        # Two rows of different lengths, so the traced graph keeps the padding mask general.
        ids = torch.tensor([[101, 1037, 2417, 102, 0, 0], [101, 1037, 2417, 4418, 5829, 102]])
        mask = (ids != 0).long()
        ids = ids % int(videobert.config.vocab_size)   # any ids the vocabulary holds; only the shapes matter
        axes = {name: {0: "batch", 1: "length"} for name in ("text_ids", "text_mask")}
        axes.update({"plain": {0: "batch"}, "adapted": {0: "batch"}})
        return OrtModule(cls(videobert).eval(), (ids, mask), ["text_ids", "text_mask"], ["plain", "adapted"], axes,
                         name="videobert-text")


class _VideoTower(torch.nn.Module):
    """VideoBERT's video-only pass, (visual ids, features, frame mask) -> (clip embeddings, hidden states): what
    indexing a clip and describing it need, exported to ONNX in one piece."""

    inputs = ("visual_ids", "features", "frame_mask")

    def __init__(self, videobert):
        super().__init__()
        self.videobert = videobert

    def forward(self, visual_ids: torch.Tensor, features: torch.Tensor, frame_mask: torch.Tensor):
        return self.videobert.video_pass(visual_ids, features, frame_mask)

    @classmethod
    def runner(cls, videobert):
        from .encoders.onnx_runtime import OrtModule

        # Two clips of different lengths, so the traced graph keeps the frame mask general.
        frames = min(2, int(videobert.config.max_frames))
        mask = torch.ones(2, frames, dtype=torch.bool)
        mask[1, 1:] = False
        example = (torch.zeros(2, frames, dtype=torch.long), torch.zeros(2, frames, videobert.config.feature_dim), mask)
        axes = {name: {0: "batch", 1: "frames"} for name in cls.inputs}
        axes.update({"embedding": {0: "batch"}, "hidden": {0: "batch", 1: "positions"}})
        return OrtModule(cls(videobert).eval(), example, list(cls.inputs), ["embedding", "hidden"], axes,
                         name="videobert-video")


def _autocast(device: torch.device):
    from .encoders import autocast

    return autocast(device)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single str; wrap it in a list")
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must all be strings")
    return texts
