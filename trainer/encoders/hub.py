"""Model references: tell a local model directory from a Hugging Face id, so local loads never reach the network."""
from __future__ import annotations

import os


def resolve_model_ref(name_or_path: str, what: str) -> tuple[str, bool]:
    """Return (reference, is_local_dir) for a Hugging Face id or a local directory.

    Something written as a path ("/", "./", "../", "~") must exist as a directory: otherwise transformers would
    take it for a hub id and fail later with a less helpful message, possibly after a network timeout.
    """
    ref = str(name_or_path).strip()
    if not ref:
        raise ValueError(f"{what}: empty model name; give a Hugging Face id or a local directory")
    expanded = os.path.expanduser(ref)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded), True
    if ref.startswith(("/", "./", "../", "~")) or os.path.exists(expanded):
        raise ValueError(f"{what}: model directory {ref!r} does not exist or is not a directory")
    return ref, False
