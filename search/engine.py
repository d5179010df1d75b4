"""The search engine: text, video and similar-clip queries over an indexed store, with fusion, re-ranking and paging."""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from .fusion import best_per_group, merge_max, page, reciprocal_rank_fusion, settled_max

MODES = ("dense", "keyword", "hybrid")
GROUPS = ("clip", "video")
MAX_K = 100
MAX_OFFSET = 1000  # deepest page start; with MAX_K it bounds the candidates one query can ask for
TEXT_CACHE = 256   # query vectors kept, so paging through one query embeds it once


class QueryError(ValueError):
    """A query parameter is out of range or malformed; the message names the parameter."""


class UnknownId(KeyError):
    """A clip or video id that the store does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


@dataclass
class Hit:
    """One search result: a clip of an indexed video and its score (higher is better)."""
    clip_id: int
    video_id: int
    video_path: str
    start: float
    end: float
    score: float
    caption: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """How the model read a text query: `text` in its training words, and what was replaced."""
    query: str
    text: str
    substitutions: tuple = ()          # trainer.lexicon.Substitution, in query order

    @property
    def changed(self) -> bool:
        return self.text != self.query

    def to_dict(self) -> dict:
        """{"text", "substitutions": [{"from", "to", "evidence", "score"}]}, as the API and CLI report it."""
        subs = [{"from": s.source, "to": s.target, "evidence": s.evidence, "score": s.score}
                for s in self.substitutions]
        return {"text": self.text, "substitutions": subs}


@dataclass
class EngineConfig:
    """How the engine widens, fuses, re-ranks and refreshes."""
    refresh_seconds: float = 2.0     # check the store on disk for a newer index at most this often
    rerank_top: int = 100            # how many first-stage candidates the alignment head re-scores
    rrf_k: int = 60                  # reciprocal rank fusion constant
    depth: int = 100                 # first-stage search depth; deeper only when filters or paging need more
    max_candidates: int = 5000       # widest first-stage search when filters or grouping thin the list
    feature_cache: int = 4096        # clips whose frame features are kept for re-ranking


# A candidate source: given a depth n, the (clip_id, score) list best first and whether the source ran dry.
Source = Callable[[int], tuple[list[tuple[int, float]], bool]]


class Engine:
    """Answers queries against one store; safe to share between threads."""

    def __init__(self, store, model=None, config: EngineConfig | None = None):
        """`store` is an `indexer.Store` or its directory; `model` defaults to the model recorded in the store."""
        if isinstance(store, (str, os.PathLike)):
            from indexer import Store
            store = Store.open(store, readonly=True)
        self.store = store
        self.model = model if model is not None else _load_recorded_model(store)
        check_model_matches(store, self.model)
        self.config = config or EngineConfig()
        self._lock = _ReadWriteLock()
        self._text_cache: OrderedDict[tuple[str, bool], tuple[Reading, np.ndarray]] = OrderedDict()
        self._text_lock = threading.Lock()
        self._checked = time.monotonic()
        from .rerank import FeatureCache
        self._features = FeatureCache(self.model, self.sampling, self.config.feature_cache)

    @property
    def sampling(self):
        """How query videos are decoded and cut: as the store records it, else as the model expects."""
        config = getattr(self.store, "config", None)
        if config is not None and callable(getattr(config, "sampling", None)):
            return config.sampling()
        return self.model.sampling

    # ---- queries ---------------------------------------------------------------------------------------------
    def text(self, q: str, k: int = 10, offset: int = 0, mode: str = "hybrid", rerank: bool = False,
             group: str = "clip", prefix: str | None = None, rewrite: bool = True) -> list[Hit]:
        """Clips matching a sentence: dense (clip + caption vectors), keyword (FTS5) or hybrid (RRF of both).

        rewrite: the dense side reads the query in the model's training words (see `read`); keyword search
        always matches the words as typed.
        """
        q = _check_text(q)
        _check_page(k, offset, group)
        if mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        reading, vector = (None, None) if mode == "keyword" else self._text_vector(q, rewrite)
        # Re-ranking reorders only the top `rerank_top`: a page past them is the same without it.
        rerank = rerank and offset < self.config.rerank_top
        with self._reading():
            source = self._text_source(q, vector, mode)
            depth = offset + k
            if rerank:
                depth = max(depth, self.config.rerank_top)
            hits = self._collect(source, depth, group, prefix)
        if rerank:
            # Outside the store lock: decoding candidates can take a while and must not hold up a refresh.
            head = self._features.rerank(reading.text if reading else q, hits[: self.config.rerank_top])
            hits = head + hits[self.config.rerank_top:]
        return _shape(hits, group, offset, k)

    def video(self, path, k: int = 10, offset: int = 0, group: str = "clip", prefix: str | None = None) -> list[Hit]:
        """Clips that look like the video file at `path`; raises `trainer.MediaError` if it cannot be decoded."""
        _check_page(k, offset, group)
        vectors = self.embed_video(path)
        with self._reading():
            hits = self._collect(self._vector_source(vectors), offset + k, group, prefix)
        return _shape(hits, group, offset, k)

    def similar(self, clip_id: int, k: int = 10, offset: int = 0, group: str = "clip",
                prefix: str | None = None) -> list[Hit]:
        """Clips whose stored vectors are nearest to the given clip's, the clip itself left out.

        Grouped by video, the query clip's own video is left out too: its other clips are near-duplicates.
        """
        _check_page(k, offset, group)
        clip_id = _check_id(clip_id, "clip")
        with self._reading():
            records = self.store.clips([clip_id])
            if not records:
                raise UnknownId(f"unknown clip id {clip_id}")
            own_video = records[0].video_id if group == "video" else None
            try:
                vector = np.asarray(self.store.clip_vector(clip_id), dtype=np.float32).reshape(1, -1)
            except KeyError:   # removed since the lookup above, or its vector was lost and awaits re-indexing
                raise UnknownId(f"clip {clip_id} has no stored vector") from None
            source = self._vector_source(vector, exclude=clip_id)
            hits = self._collect(source, offset + k, group, prefix, skip_video=own_video)
        return _shape(hits, group, offset, k)

    def read(self, q: str, rewrite: bool = True) -> Reading:
        """How the dense search reads `q`: words the model never saw in training are put into words it did
        (through WordNet, see trainer.lexicon), so that a user can tell when a result answers a rewritten query."""
        return self._text_vector(_check_text(q), rewrite)[0]

    def _text_vector(self, q: str, rewrite: bool) -> tuple[Reading, np.ndarray]:
        """The query's reading and (1, dim) vector, remembered for the next pages of the same query."""
        key = (q, bool(rewrite))
        with self._text_lock:
            cached = self._text_cache.get(key)
            if cached is not None:
                self._text_cache.move_to_end(key)
                return cached
        text, subs = self.model.rewrite(q) if rewrite else (q, [])
        vector = np.asarray(self.model.embed_text([text], rewrite=False), dtype=np.float32).reshape(1, -1)
        entry = (Reading(q, text, tuple(subs)), vector)
        with self._text_lock:
            self._text_cache[key] = entry
            while len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        return entry

    def embed_video(self, path) -> np.ndarray:
        """(Q, dim) vectors of a query video's clips, decoded, cut and embedded the way the indexer embeds clips."""
        from trainer.media import MediaError, decode
        decoded = decode(str(path), self.sampling)
        stacks = clip_features(self.model, decoded, self.sampling)
        if not stacks:
            raise MediaError(str(path), "no frames could be sampled")
        return np.asarray(self.model.embed_clips([f for _, _, f in stacks], features=True), dtype=np.float32)

    # ---- lookups the web layer needs, under the same refresh discipline ---------------------------------------
    def clip(self, clip_id: int):
        """The store's record for one clip; raises `UnknownId`."""
        clip_id = _check_id(clip_id, "clip")
        with self._reading():
            records = self.store.clips([clip_id])
        if not records:
            raise UnknownId(f"unknown clip id {clip_id}")
        return records[0]

    def videos(self, offset: int = 0, limit: int = 50) -> list:
        """A page of the store's video records."""
        with self._reading():
            return self.store.videos(offset=offset, limit=limit)

    def video_record(self, video_id: int):
        """One video's record; raises `UnknownId`."""
        video_id = _check_id(video_id, "video")
        with self._reading():
            record = self.store.video(video_id)
        if record is None:
            raise UnknownId(f"unknown video id {video_id}")
        return record

    def video_clips(self, video_id: int) -> list[int]:
        """Clip ids of a video in time order."""
        video_id = _check_id(video_id, "video")
        with self._reading():
            return list(self.store.video_clips(video_id))

    def counts(self) -> dict:
        """{"videos", "clips", "failed"} as the store counts them now."""
        with self._reading():
            return self.store.counts()

    def refresh(self, force: bool = False) -> bool:
        """Reload the store's view if the index on disk changed; checked at most every `refresh_seconds`."""
        now = time.monotonic()
        if not force and now - self._checked < self.config.refresh_seconds:
            return False
        with self._lock.writing():
            self._checked = time.monotonic()
            changed = bool(self.store.refresh())
        if changed:
            self._features.clear()
        return changed

    # ---- candidate sources -----------------------------------------------------------------------------------
    def _text_source(self, q: str, vector, mode: str) -> Source:
        def dense(n: int):
            clips = _valid(*self.store.search_clips(vector, n), n)
            captions = _valid(*self.store.search_captions(vector, n), n)
            owner = self.store.caption_clip([c for c, _ in captions[0]]) if captions[0] else {}
            mapped = [(owner[c], s) for c, s in captions[0] if owner.get(c) is not None]
            return _settled([clips, captions], merge_max(clips[0], mapped))

        def keyword(n: int):
            found = [(int(c), float(s)) for c, s in self.store.keyword(q, n)]
            return found, len(found) < n

        def hybrid(n: int):
            (d, d_dry), (w, w_dry) = dense(n), keyword(n)
            # Both rankings are cut at the same depth; RRF over them is the usual fixed-depth fusion.
            fused = reciprocal_rank_fusion([[c for c, _ in d], [c for c, _ in w]], k=self.config.rrf_k)
            return fused, d_dry and w_dry

        return {"dense": dense, "keyword": keyword, "hybrid": hybrid}[mode]

    def _vector_source(self, vectors: np.ndarray, exclude: int | None = None) -> Source:
        def source(n: int):
            depth = n + (exclude is not None)
            scores, ids = self.store.search_clips(vectors, depth)
            # A result clip's score is its best similarity to any of the query's clips.
            rows = [_valid(s[None], i[None], depth) for s, i in zip(scores, ids)]
            merged, dry = _settled(rows, merge_max(*(r[0] for r in rows)))
            return [(c, s) for c, s in merged if c != exclude], dry
        return source

    def _collect(self, source: Source, need: int, group: str, prefix: str | None,
                 skip_video: int | None = None) -> list[Hit]:
        """Ungrouped hits, deep enough that after the prefix filter and grouping at least `need` remain."""
        # Results past max_candidates are never produced, so a huge offset costs no more than a deep page.
        n = min(max(2 * need, self.config.depth), self.config.max_candidates)
        while True:
            scored, dry = source(n)
            hits = [h for h in self._hits(scored, prefix) if h.video_id != skip_video]
            kept = best_per_group(hits, lambda h: h.video_id) if group == "video" else hits
            if len(kept) >= need or dry or n >= self.config.max_candidates:
                return hits
            n = min(4 * n, self.config.max_candidates)

    def _hits(self, scored: list[tuple[int, float]], prefix: str | None) -> list[Hit]:
        records = {r.id: r for r in self.store.clips([c for c, _ in scored])} if scored else {}
        hits = []
        for clip_id, score in scored:
            r = records.get(clip_id)
            if r is None or (prefix and not str(r.video_path).startswith(prefix)):
                continue
            hits.append(Hit(clip_id=int(r.id), video_id=int(r.video_id), video_path=str(r.video_path),
                            start=float(r.start), end=float(r.end), score=float(score), caption=r.caption))
        return hits

    @contextmanager
    def _reading(self):
        self.refresh()
        with self._lock.reading():
            yield


def clip_features(model, decoded, sampling) -> list[tuple[float, float, np.ndarray]]:
    """(start, end, (T, F) frame features) of each clip of a decoded video.

    All frames are encoded in one batch and then cut into clips, as the indexer does, so that query-time and
    index-time vectors of the same file agree.
    """
    if len(decoded.frames) == 0:
        return []
    feats = np.asarray(model.encode_frames(decoded.frames))
    times = np.asarray(decoded.times)
    return [(c.start, c.end, feats[np.searchsorted(times, c.times)]) for c in decoded.clips(sampling)]


def _shape(hits: list[Hit], group: str, offset: int, k: int) -> list[Hit]:
    if group == "video":
        hits = best_per_group(hits, lambda h: h.video_id)
    return page(hits, offset, k)


def _settled(lists, merged):
    """The final-order prefix of a max-merge of (list, dry) pairs, and whether every list ran dry."""
    dry = all(d for _, d in lists)
    return (merged if dry else merged[:settled_max(lists, merged)]), dry


def _valid(scores: np.ndarray, ids: np.ndarray, n: int) -> tuple[list[tuple[int, float]], bool]:
    """Flatten a one-query FAISS answer, dropping -1 padding; dry when it held fewer than n results."""
    pairs = [(int(i), float(s)) for s, i in zip(np.asarray(scores)[0], np.asarray(ids)[0]) if i >= 0]
    return pairs, len(pairs) < n


def _check_id(value, kind: str) -> int:
    """A row id as SQLite can hold it; anything else cannot name a stored row."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise UnknownId(f"unknown {kind} id {value!r}") from None
    if not 0 <= value < 2 ** 63:
        raise UnknownId(f"unknown {kind} id {value}")
    return value


def _check_text(q) -> str:
    if not isinstance(q, str) or not q.strip():
        raise QueryError("q must be a non-empty query text")
    return q.strip()


def _check_page(k, offset, group) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset must be an integer between 0 and {MAX_OFFSET}, got {offset!r}")
    if group not in GROUPS:
        raise QueryError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")


def _load_recorded_model(store):
    """Load the model whose path the store recorded when it was built."""
    import trainer
    path = recorded_model_path(store)
    if not path:
        raise ValueError("the store records no model path; pass a model explicitly")
    return trainer.load(path)


def check_model_matches(store, model) -> None:
    """Refuse a model whose vectors cannot be compared with the store's: another dimension or another model."""
    config = getattr(store, "config", None)
    dim = getattr(config, "dim", 0)
    if dim and getattr(model, "dim", dim) != dim:
        raise ValueError(f"the model makes {model.dim}-d vectors but the store {getattr(store, 'dir', '')} holds "
                         f"{dim}-d ones; search it with the model it was indexed with")
    recorded = getattr(config, "model_hash", "")
    actual = (getattr(model, "identity", None) or {}).get("hash", "")
    if recorded and actual and recorded != actual:
        raise ValueError(f"model {model.identity.get('path', '')} is not the one the store "
                         f"{getattr(store, 'dir', '')} was indexed with ({getattr(config, 'model_path', '')}); "
                         f"search with that model or re-index with `vidsearch index --reindex`")


def recorded_model_path(store) -> str | None:
    """The model directory a store was indexed with, as the store's config records it."""
    config = getattr(store, "config", None)
    for name in ("model_path", "model_dir", "model"):
        value = getattr(config, name, None)
        if isinstance(value, (str, os.PathLike)) and value:
            return str(value)
    return None


class _ReadWriteLock:
    """Many concurrent searches, or one refresh; a waiting refresh holds back new searches so it cannot starve."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextmanager
    def reading(self):
        """Hold a shared read lock for the block."""
        with self._cond:
            while self._writing or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self):
        """Hold the exclusive lock for the block, once current readers are done."""
        with self._cond:
            self._waiting_writers += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
