"""indexer: build and read a video store (SQLite or PostgreSQL + FAISS); the names below are its front door.

A store is one directory:
    store.db          SQLite, WAL, foreign keys on: videos, video_paths, clips, thumbnails (a JPEG per clip),
                      captions, meta, clip_text (FTS5)
    clips.faiss       IndexIDMap2 of clip embeddings; FAISS id == clips.id
    captions.faiss    IndexIDMap2 of caption embeddings; FAISS id == captions.id (no model: neither file)
    looks.faiss       IndexIDMap2 of look-alike vectors (pooled frame features); FAISS id == clips.id
    features/         features.sqlite: each video's kept frame features (indexer.features)
    store.json        StoreConfig: model path + hash + dim, offline encoders, channels' data, sampling, index type
    .lock             held by the one process writing (flock; on PostgreSQL an advisory lock)
With --db the tables live in a PostgreSQL schema of their own (indexer.db); `--ray` decodes and embeds on a
Ray cluster (indexer.ray_index); `--build-ondisk` merges FAISS from shards with memory-mapped lists
(indexer.shards).
Vectors are also kept as float32 blobs in clips.vector / clips.look / captions.vector, the source the FAISS
files are repaired or rebuilt from; clips.concepts keeps each clip's top class probabilities.
"""
from __future__ import annotations

import importlib

# Public name -> defining module, loaded on first use so that `vidsearch --help` (which imports
# indexer.cli) never pulls in faiss, SQLAlchemy or torch.
_EXPORTS = {
    "index_paths": "indexer.api",
    "remove_paths": "indexer.api",
    "prune_store": "indexer.api",
    "store_config": "indexer.api",
    "StoreConfig": "indexer.config",
    "OfflineEncoders": "indexer.offline",
    "StoreError": "indexer.config",
    "IndexReport": "indexer.pipeline",
    "run_pipeline": "indexer.pipeline",
    "EXIT_OK": "indexer.pipeline",
    "EXIT_ERROR": "indexer.pipeline",
    "EXIT_USAGE": "indexer.pipeline",
    "EXIT_FAILED": "indexer.pipeline",
    "Store": "indexer.store",
    "ClipRecord": "indexer.store",
    "VideoRecord": "indexer.store",
    "StoreWriter": "indexer.writer",
    "check_store": "indexer.check",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'indexer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
