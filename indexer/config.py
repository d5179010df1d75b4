"""Typed store settings: the StoreConfig written as store.json beside every store and kept in its meta table."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

# 2: clips keep their concept probabilities and look-alike vectors; stores without a model.
FORMAT_VERSION = 2
CONFIG_FILE = "store.json"
DB_FILE = "store.db"
CLIP_INDEX_FILE = "clips.faiss"
CAPTION_INDEX_FILE = "captions.faiss"
LOOK_INDEX_FILE = "looks.faiss"
THUMB_DIR = "thumbs"
LOCK_FILE = ".lock"


# Search channels, by the data each needs (see StoreConfig.channels).
DENSE, KEYWORD, CONCEPT, LOOKALIKE, CLIP = "dense", "keyword", "concept", "lookalike", "clip"


class StoreError(Exception):
    """A store that cannot be opened or written as asked; the message names the store and the reason."""


@dataclass
class StoreConfig:
    """Everything that fixes how a store's vectors were made and searched.

    The model identity (path, content hash, name, dim) says which model made the vectors; the sampling
    fields say how frames were sampled and cut into clips; the index fields say how FAISS searches them.
    A store indexed without a trained model has no model identity and dim 0: it has no dense vectors, and
    records only its offline encoders (`frame_encoder`, `text_encoder`), which make its concept
    probabilities and look-alike vectors, and read queries into concepts.
    """

    model_path: str = ""
    model_hash: str = ""
    model_name: str = ""
    dim: int = 0  # of the model's clip and caption vectors; 0 when the store has no model (no dense channel)
    frame_encoder: str = ""  # spec of the frame encoder behind `look_dim` and the concept probabilities
    text_encoder: str = ""  # the sentence encoder that reads queries into concepts (a model dir or name)
    look_dim: int = 0  # of the look-alike vectors (the frame encoder's pooled features); 0: none kept
    concept_classes: int = 0  # classes of the frame encoder's classifier (1000 ImageNet); 0: no concepts kept
    concept_top: int = 50  # most class probabilities kept per clip: those above chance (1 / classes)
    # "auto" (exact while small, IVF past auto_threshold vectors), "flat" (always exact), or a FAISS
    # factory string such as "IVF1024,Flat", "HNSW32", "IVF256,PQ16" (kept exact until it can be trained).
    index_type: str = "auto"
    # Exact search over 50k vectors plus the text encoder stays near 15 ms on two cores; past that IVF wins.
    auto_threshold: int = 50_000
    nprobe: int = 0  # IVF lists probed per query; 0 picks faiss_index.auto_nprobe(nlist)
    ef_search: int = 128  # HNSW search depth
    fps: float = 1.0
    size: int = 224
    square: bool = False
    clip_seconds: float = 4.0
    stride_seconds: float = 4.0
    thumb_size: int = 320  # long side of the JPEG thumbnails, pixels
    # Where the rows live: "" for the SQLite file store.db, else a postgresql+psycopg URL and the schema
    # of this store in that database (indexer.db).
    db: str = ""
    db_schema: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        for name in ("fps", "clip_seconds", "stride_seconds"):
            if not getattr(self, name) > 0:
                raise StoreError(f"StoreConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("size", "thumb_size", "auto_threshold", "ef_search", "concept_top"):
            if not getattr(self, name) > 0:
                raise StoreError(f"StoreConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("dim", "look_dim", "concept_classes"):
            if getattr(self, name) < 0:
                raise StoreError(f"StoreConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.nprobe < 0:
            raise StoreError(f"StoreConfig.nprobe must be >= 0, got {self.nprobe!r}")

    @property
    def has_model(self) -> bool:
        """Whether a trained model made vectors for this store (the dense channel)."""
        return bool(self.model_hash) and self.dim > 0

    def channels(self) -> list[str]:
        """The search channels this store can answer: dense (model vectors), keyword (always: captions and
        tags in FTS5), concept (class probabilities per clip), lookalike (pooled frame features), clip (text
        through the CLIP text tower into the look-alike vectors, when the frame encoder is a CLIP vision tower:
        they are then its image embeddings)."""
        out = [DENSE] if self.has_model else []
        out.append(KEYWORD)
        if self.concept_classes > 0:
            out.append(CONCEPT)
        if self.look_dim > 0:
            out.append(LOOKALIKE)
            if self.frame_encoder.startswith("clip:"):
                out.append(CLIP)
        return out

    def sampling(self):
        """The trainer SamplingConfig that decodes and cuts videos for this store."""
        from trainer.media import SamplingConfig

        return SamplingConfig(fps=float(self.fps), size=int(self.size), square=bool(self.square),
                              clip_seconds=float(self.clip_seconds), stride_seconds=float(self.stride_seconds))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> StoreConfig:
        """Build from a dict, rejecting unknown keys so a typo never passes silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StoreError(f"unknown store settings {unknown}; known: {sorted(names)}")
        return cls(**data)

    def save(self, store_dir: str | os.PathLike) -> Path:
        """Write store.json atomically (temp file, fsync, rename)."""
        path = Path(store_dir) / CONFIG_FILE
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, store_dir: str | os.PathLike) -> StoreConfig:
        """Read store.json from a store directory."""
        path = Path(store_dir) / CONFIG_FILE
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: cannot read store settings ({e})") from None
