"""Planning stage of indexing: per file, skip it, note a new mtime, record a duplicate, or decode it."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .discover import Found
from .schema import INDEXED
from .writer import FileState

_HASH_BLOCK = 1 << 20


@dataclass
class Job:
    """One file's planned work. kind: "decode", "alias" (same content as an indexed video), "touch"
    (unchanged content, new mtime), "skip" (unchanged), "fail" (cannot be read), "kept" (rebuilt from the
    store's kept features, indexer.rebuild)."""

    kind: str
    state: FileState
    captions: list = field(default_factory=list)
    reason: str | None = None
    aliases: list[FileState] = field(default_factory=list)  # same content seen later in this run
    kept: object = None  # for "kept": (indexer.rebuild.KeptVideo, trainer.features.VideoFeatures)



def content_hash(path: str) -> str:
    """BLAKE2b-256 of the file's bytes, hex."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()



def plan_jobs(files: Iterable[Found], sink, problems: Iterable[tuple[str, str]] = (),
              pending: Iterable[str] = ()) -> Iterator[Job]:
    """Decide per file: skip if size and mtime match, else hash it; unchanged content is touched, content
    already indexed under another path becomes an alias, anything else is decoded. Lazy: files are
    stat'ed and hashed only as the decoder asks for more work."""
    for path, reason in problems:
        yield Job("fail", FileState(path, None, None), reason=reason)
    redo = set(pending)
    for found in files:
        yield _plan_one(found, sink, found.path in redo)
    for path in redo - {f.path for f in files}:
        if os.path.lexists(path):
            yield _plan_one(Found(path), sink, True)


def _caption_keys(captions) -> set[tuple[str, float | None, float | None]]:
    return {(c.text.strip(), c.start, c.end) for c in captions if c.text.strip()}


def _plan_one(found: Found, sink, redo: bool) -> Job:
    path = found.path
    try:
        st = os.stat(path)
    except OSError as e:
        return Job("fail", FileState(path, None, None), reason=f"cannot stat file ({e.strerror})")
    state = FileState(path, st.st_size, st.st_mtime)
    known = sink.lookup(path)
    wanted = _caption_keys(found.captions)
    new_captions = bool(wanted - sink.caption_keys(known[0])) if known and wanted else bool(wanted)
    fresh = known is not None and known[1] == INDEXED and not redo
    if fresh and (known[2], known[3]) == (st.st_size, st.st_mtime) and not new_captions:
        return Job("skip", state)
    try:
        state.hash = content_hash(path)
    except OSError as e:
        return Job("fail", state, reason=f"cannot read file ({e.strerror or e})")
    if fresh and known[4] == state.hash and not new_captions:
        return Job("touch", state)
    other = sink.find_content(state.hash, committed=True)
    if other is not None and (known is None or known[0] != other) and not (wanted - sink.caption_keys(other)):
        return Job("alias", state)
    return Job("decode", state, captions=list(found.captions))
