"""Model references: tell a local model directory from a Hugging Face id, so local loads never reach the network."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def quiet_loading():
    """Hide transformers' progress bars and load reports while a model loads, so the CLI's own output stays
    readable; callers check the loading info themselves. Previous settings are restored afterwards."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def from_pretrained(load, ref: str, local: bool, **kwargs):
    """Call a transformers `from_pretrained` cache-first: a local dir or an id already in the Hugging Face cache
    loads without the network; only an id not cached yet is fetched from the hub."""
    try:
        return load(ref, local_files_only=True, **kwargs)
    except OSError:
        if local:
            raise
    return load(ref, **kwargs)
