"""indexer: build and read a video store (SQLite + FAISS); the names below are its front door."""
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
