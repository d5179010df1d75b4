"""Typed store settings: the StoreConfig written as store.json beside every store and kept in its meta table."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1
CONFIG_FILE = "store.json"
DB_FILE = "store.db"
CLIP_INDEX_FILE = "clips.faiss"
CAPTION_INDEX_FILE = "captions.faiss"
THUMB_DIR = "thumbs"
LOCK_FILE = ".lock"


class StoreError(Exception):
    """A store that cannot be opened or written as asked; the message names the store and the reason."""


@dataclass
class StoreConfig:
    """Everything that fixes how a store's vectors were made and searched.

    The model identity (path, content hash, name, dim) says which model made the vectors; the sampling
    fields say how frames were sampled and cut into clips; the index fields say how FAISS searches them.
    """

    model_path: str = ""
    model_hash: str = ""
    model_name: str = ""
    dim: int = 0
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
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        for name in ("fps", "clip_seconds", "stride_seconds"):
            if not getattr(self, name) > 0:
                raise StoreError(f"StoreConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("size", "thumb_size", "auto_threshold", "ef_search"):
            if not getattr(self, name) > 0:
                raise StoreError(f"StoreConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.nprobe < 0:
            raise StoreError(f"StoreConfig.nprobe must be >= 0, got {self.nprobe!r}")

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
