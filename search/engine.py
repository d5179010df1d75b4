"""The search engine: text, video and similar-clip queries over an indexed store, with fusion, re-ranking and paging."""
from __future__ import annotations

import contextvars
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

import numpy as np

from .fusion import best_per_group, evidence_fusion, merge_max, page, reciprocal_rank_fusion, settled_max

# Search channels: "dense" (the model's clip and caption vectors), "keyword" (FTS5 over captions and concept
# tags), "concept" (the query's class weights against each clip's class probabilities) and "lookalike" (the
# frame encoder's pooled features, for video and similar-clip queries) and "clip" (text through the CLIP text tower
# into the look-alike vectors, which are CLIP image embeddings when the frame encoder is CLIP's vision tower). A
# store has the ones its data allows.
DENSE, KEYWORD, CONCEPT, LOOKALIKE, CLIP = "dense", "keyword", "concept", "lookalike", "clip"
CHANNELS = (DENSE, KEYWORD, CONCEPT, LOOKALIKE, CLIP)
TEXT_CHANNELS = (DENSE, KEYWORD, CONCEPT, CLIP)
MODES = (DENSE, KEYWORD, CONCEPT, CLIP, "hybrid")
GROUPS = ("clip", "video")
MAX_K = 100
MAX_OFFSET = 1000  # deepest page start; with MAX_K it bounds the candidates one query can ask for
MAX_QUERY_CHARS = 2000  # longer text is no query a person typed; it is refused rather than cut silently
TEXT_CACHE = 256   # query vectors kept, so paging through one query embeds it once
_CONTROL = {c: " " for c in range(32)} | {127: " "}


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
    sources: list[str] = field(default_factory=list)   # the channels that found it
    similarities: dict[str, float] = field(default_factory=dict)  # each of those channels' own score
    description: str | None = None  # the model's generated description of the clip, if it has one

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """How the model read a text query: `text` in its training words, and what was replaced."""
    query: str
    text: str
    substitutions: tuple = ()          # search.reading.Substitution, in query order
    concepts: tuple = ()               # search.concepts.ConceptMatch: the classes the query's words reached

    @property
    def changed(self) -> bool:
        return self.text != self.query

    def to_dict(self) -> dict:
        """{"text", "substitutions": [{"from", "to", "evidence", "score"}], "concepts": [{"from", "classes",
        "count", "evidence"}]}, as the API and CLI report it."""
        subs = [{"from": s.source, "to": s.target, "evidence": s.evidence, "score": s.score}
                for s in self.substitutions]
        return {"text": self.text, "substitutions": subs, "concepts": [c.to_dict() for c in self.concepts]}


@dataclass
class EngineConfig:
    """How the engine widens, fuses, re-ranks and refreshes."""
    refresh_seconds: float = 2.0     # check the store on disk for a newer index at most this often
    rerank_top: int = 100            # how many first-stage candidates the alignment head re-scores
    rrf_k: int = 60                  # reciprocal rank fusion constant
    depth: int = 100                 # first-stage search depth; deeper only when filters or paging need more
    max_candidates: int = 5000       # widest first-stage search when filters or grouping thin the list
    feature_cache: int = 4096        # clips whose frame features are kept for re-ranking
    # Text results a channel returns must beat chance: dense cosines the best that random letter strings reach
    # in this store (measured on `null_probes` of them); concept scores what a random set of classes of the
    # same total weight gets on average (search.concepts.chance_score). Off (False) returns every candidate.
    cutoffs: bool = True
    null_probes: int = 16
    # The text channels this engine uses, of those the store has (hybrid fuses them; a single mode must be one
    # of them); None: every channel the store has.
    text_channels: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.text_channels is not None:
            self.text_channels = tuple(self.text_channels)
            unknown = [c for c in self.text_channels if c not in TEXT_CHANNELS]
            if unknown:
                raise ValueError(f"text_channels: unknown channel {unknown[0]!r} (the text channels are "
                                 f"{', '.join(TEXT_CHANNELS)})")


# A candidate source: given a depth n, the (clip_id, score) list best first, whether the source ran dry, and per
# clip the channels that found it with their own scores.
Found = tuple[list[tuple[int, float]], bool, dict[int, dict[str, float]]]
Source = Callable[[int], Found]

# Where `Engine.text(..., timings=d)` adds each stage's milliseconds while that query runs (None: not timed).
_STAGE_TIMES: ContextVar[dict | None] = ContextVar("stage_times", default=None)


class StageTimes(dict):
    """A `timings` dict that reads its own clock: `StageTimes(time.thread_time)` adds up the CPU time the
    query's own thread spent in each stage, which other work on a busy machine does not inflate as it does
    wall time (a plain dict gets wall time)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.clock = clock


@contextmanager
def stage(name: str):
    """Time the block as stage `name` of the query being timed, if any (repeated stages add up)."""
    into = _STAGE_TIMES.get()
    if into is None:
        yield
        return
    clock = getattr(into, "clock", time.perf_counter)
    start = clock()
    try:
        yield
    finally:
        into[name] = into.get(name, 0.0) + (clock() - start) * 1e3


class Engine:
    """Answers queries against one store; safe to share between threads."""

    def __init__(self, store, model=None, config: EngineConfig | None = None, sentences=None,
                 reader=None):
        """`store` is an `indexer.Store` or its directory; `model` defaults to the model recorded in the store
        (a store indexed without one has none, and no dense channel). `sentences` (texts -> (N, D) unit rows)
        is the sentence encoder that reads words into concepts; by default the one the store records. `reader` (a
        `search.QueryReader`) puts queries into the model's training words for the dense channel; by default the one
        made from the vocabulary files in the model's directory (none if it has none)."""
        if isinstance(store, (str, os.PathLike)):
            from indexer import Store
            store = Store.open(store, readonly=True)
        self.store = store
        if DENSE in store.channels():
            self.model = model if model is not None else _load_recorded_model(store)
            check_model_matches(store, self.model)
        elif model is not None:
            raise ValueError(f"the store {getattr(store, 'dir', '')} has no model vectors; index it with "
                             "--model to add them, or search it without a model")
        else:
            self.model = None
        # Built now, not on the first query: the reader loads WordNet, which takes seconds.
        self.reader = reader if reader is not None else (_model_reader(self.model) if self.model is not None
                                                         else None)
        self.config = config or EngineConfig()
        self._lock = _ReadWriteLock()
        self._text_cache: OrderedDict[tuple[str, bool], tuple[Reading, np.ndarray]] = OrderedDict()
        self._text_lock = threading.Lock()
        self._checked = time.monotonic()
        self._floors: dict[str, float] = {}
        self._offline = None
        self._concepts = None
        self._sentences = sentences
        from .rerank import FeatureCache
        self._features = FeatureCache(self.model, self.sampling, self.config.feature_cache) if self.model else None
        from trainer.encoders.device import usable_cores
        self._cores = usable_cores()
        self._flying = 0                   # queries in progress
        self._flight_lock = threading.Lock()
        self._spare: ThreadPoolExecutor | None = None
        self._spare_pid = 0

    @property
    def channels(self) -> list[str]:
        """The channels this store answers, in CHANNELS order."""
        return list(self.store.channels())

    def _encoders(self):
        """The store's offline encoders (frame and sentence), made on first use."""
        if self._offline is None:
            from indexer.offline import store_encoders
            self._offline = store_encoders(self.store.config)
        return self._offline

    def _concept_reader(self):
        if self._concepts is None:
            from indexer.offline import text_encoder_path

            from .concepts import ConceptReader
            if self._sentences is not None:
                encode = self._sentences
                key = f"{getattr(encode, '__module__', '')}.{getattr(encode, '__qualname__', type(encode).__name__)}"
            else:
                encoders = self._encoders()
                encode, key = encoders.sentence_vectors, text_encoder_path(encoders.text_spec)
            self._concepts = ConceptReader(encode, key, classes=self.store.config.concept_classes)
        return self._concepts

    @property
    def sampling(self):
        """How query videos are decoded and cut: as the store records it, else as the model expects."""
        config = getattr(self.store, "config", None)
        if config is not None and callable(getattr(config, "sampling", None)):
            return config.sampling()
        return self.model.sampling

    def _text_channels(self, mode: str) -> list[str]:
        """The channels a text query in `mode` uses; QueryError if the store lacks the one asked for."""
        have = [c for c in TEXT_CHANNELS if c in self.channels]
        chosen = self.config.text_channels
        if chosen is not None and mode in have and mode not in chosen:
            raise QueryError(f"mode {mode!r}: the {mode} channel is switched off in this engine "
                             f"(it uses {', '.join(c for c in have if c in chosen) or 'no text channel'})")
        if chosen is not None:
            have = [c for c in have if c in chosen]
        if mode == "hybrid":
            return have
        if mode not in have:
            raise QueryError(f"mode {mode!r}: this store has no {mode} channel (it has {', '.join(have)}; "
                             "a store gets dense vectors from a trained model: `vidsearch index --model`)")
        return [mode]

    # ---- queries ---------------------------------------------------------------------------------------------
    def text(self, q: str, k: int = 10, offset: int = 0, mode: str = "hybrid", rerank: bool = False,
             group: str = "clip", prefix: str | None = None, rewrite: bool = True,
             timings: dict | None = None) -> list[Hit]:
        """Clips matching a sentence: dense (clip + caption vectors), keyword (FTS5), concept (ImageNet classes)
        or hybrid (RRF of the channels the store has). Each channel keeps only results that beat chance
        (`EngineConfig.cutoffs`), so a query no channel finds evidence for has no results.

        rewrite: the dense side reads the query in the model's training words (see `read`); keyword and concept
        search always read the words as typed. timings: a dict that receives the milliseconds of each stage the
        query runs (read, encode, concept read, dense, keyword, concept, clip, fuse, hits), to show where its time
        goes.
        """
        token = _STAGE_TIMES.set(timings)
        try:
            return self._text(q, k, offset, mode, rerank, group, prefix, rewrite)
        finally:
            _STAGE_TIMES.reset(token)

    def _text(self, q, k, offset, mode, rerank, group, prefix, rewrite) -> list[Hit]:
        q = _check_text(q)
        _check_page(k, offset, group)
        if mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        use = self._text_channels(mode)
        if rerank and self.model is None:
            raise QueryError("rerank needs a trained model, and this store has none")
        with self._flight() as alone:
            beside = self._beside(spread=alone and len(use) > 1)
            later = None
            if DENSE in use:
                cached = self._cached_text(q, rewrite)    # a later page: nothing to hand over
                later = (lambda: cached) if cached is not None else beside(self._text_vector, q, rewrite)
            with stage("concept read"):
                weights = self._concept_reader().read(q).weights if CONCEPT in use else None
            clip_vector = self._encoders().clip_text_vectors([q]) if CLIP in use else None
            # Re-ranking reorders only the top `rerank_top`: a page past them is the same without it.
            rerank = rerank and offset < self.config.rerank_top
            with self._reading():
                source = self._text_source(q, later, weights, use, clip_vector, beside)
                depth = offset + k
                if rerank:
                    depth = max(depth, self.config.rerank_top)
                hits = self._collect(source, depth, group, prefix)
        if rerank:
            # Outside the store lock: decoding candidates can take a while and must not hold up a refresh.
            reading = later()[0] if later is not None else None
            head = self._features.rerank(reading.text if reading else q, hits[: self.config.rerank_top])
            hits = head + hits[self.config.rerank_top:]
        return _shape(hits, group, offset, k)

    @contextmanager
    def _flight(self):
        """Count the query in progress for the block; yields whether it is the only one."""
        with self._flight_lock:
            self._flying += 1
            alone = self._flying == 1
        try:
            yield alone
        finally:
            with self._flight_lock:
                self._flying -= 1

    def _beside(self, spread: bool) -> Callable[..., Callable]:
        """`beside(fn, *args)` -> a call that returns fn(*args). With `spread`, on a machine of two cores or more,
        fn runs on the engine's spare thread while the caller goes on: a lone query's text tower runs beside its
        keyword and concept search, and its caption search beside its clip search. Queries that overlap run
        everything on their own threads and leave the cores to each other, so that a loaded server spends no CPU
        handing work over."""
        if not spread or self._cores < 2:
            return _now
        with self._flight_lock:
            # A child process forked from this one inherits the executor but not its thread: it makes its own.
            if self._spare is None or self._spare_pid != os.getpid():
                self._spare, self._spare_pid = ThreadPoolExecutor(1, thread_name_prefix="vidsearch-spare"), os.getpid()

        def spare(fn, *args):
            # The copied context carries the query's stage timings and the store's one look at removals.
            return self._spare.submit(contextvars.copy_context().run, _budgeted, fn, *args).result
        return spare

    def video(self, path, k: int = 10, offset: int = 0, group: str = "clip", prefix: str | None = None) -> list[Hit]:
        """Clips that look like the video file at `path`; raises `trainer.MediaError` if it cannot be decoded."""
        _check_page(k, offset, group)
        vectors = self._video_vectors(path)
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
            vectors = {}
            for channel, column in ((DENSE, "vector"), (LOOKALIKE, "look")):
                if channel in self.channels:
                    try:
                        vectors[channel] = np.asarray(self.store.clip_vector(clip_id, column),
                                                      dtype=np.float32).reshape(1, -1)
                    except KeyError:  # removed since the lookup above, or lost and awaiting re-indexing
                        pass
            if not vectors:
                raise UnknownId(f"clip {clip_id} has no stored vector")
            source = self._vector_source(vectors, exclude=clip_id)
            hits = self._collect(source, offset + k, group, prefix, skip_video=own_video)
        return _shape(hits, group, offset, k)

    def warm(self) -> None:
        """Run one query through every stage, so that what they load on first use (the query reader's
        dictionary, tokenizer, ONNX sessions, index pages) is loaded now and the first user query is no slower
        than the tenth. Its words are everyday ones, likely outside a training vocabulary, so reading runs. The
        concept channel's class embeddings are loaded (or, for a sentence encoder they do not ship for, built), and
        WordNet with them."""
        if CONCEPT in self._text_channels("hybrid"):
            self._concept_reader().warm()
        self.text("someone walks outside with a small dog", k=1)
        with self._text_lock:
            self._text_cache.clear()

    def read(self, q: str, rewrite: bool = True) -> Reading:
        """How search reads `q`: for the dense channel, words the model never saw in training put into words it
        did (through WordNet, see search.reading), and for the concept channel, the ImageNet classes the words
        reach; so that a user can tell when a result answers a query read differently from how it was typed."""
        q = _check_text(q)
        reading = self._text_vector(q, rewrite)[0] if DENSE in self.channels else Reading(q, q)
        if CONCEPT in self.channels:
            from dataclasses import replace
            reading = replace(reading, concepts=self._concept_reader().read(q).matches)
        return reading

    def _cached_text(self, q: str, rewrite: bool) -> tuple[Reading, np.ndarray] | None:
        """The remembered reading and vector of the query, if an earlier page made them."""
        key = (q, bool(rewrite))
        with self._text_lock:
            cached = self._text_cache.get(key)
            if cached is not None:
                self._text_cache.move_to_end(key)
            return cached

    def _text_vector(self, q: str, rewrite: bool) -> tuple[Reading, np.ndarray]:
        """The query's reading and (1, dim) vector, remembered for the next pages of the same query."""
        cached = self._cached_text(q, rewrite)
        if cached is not None:
            return cached
        with stage("read"):
            text, subs = self.reader.read(q) if rewrite and self.reader is not None else (q, [])
        with stage("encode"):
            vector = np.asarray(self.model.embed_text([text]), dtype=np.float32).reshape(1, -1)
        entry = (Reading(q, text, tuple(subs)), vector)
        with self._text_lock:
            self._text_cache[(q, bool(rewrite))] = entry
            while len(self._text_cache) > TEXT_CACHE:
                self._text_cache.popitem(last=False)
        return entry

    def embed_video(self, path) -> np.ndarray:
        """(Q, dim) vectors of a query video's clips, decoded, cut and embedded the way the indexer embeds clips."""
        if self.model is None:
            raise QueryError("this store has no model, so no dense vectors to embed a video into")
        return self._video_vectors(path)[DENSE]

    def _video_vectors(self, path) -> dict[str, np.ndarray]:
        """Per vector channel of the store, (Q, d) vectors of a query video's clips, decoded, cut and embedded
        the way the indexer embeds clips."""
        from indexer.encode import clip_look, look_width
        from trainer.media import MediaError, decode
        encoder = self.model if self.model is not None else self._encoders()
        decoded = decode(str(path), self.sampling)
        stacks = clip_features(encoder, decoded, self.sampling)
        if not stacks:
            raise MediaError(str(path), "no frames could be sampled")
        feats = [f for _, _, f in stacks]
        out = {}
        if self.model is not None:
            out[DENSE] = np.asarray(self.model.embed_clips(feats, features=True), dtype=np.float32)
        width = look_width(encoder)
        if LOOKALIKE in self.channels and width == self.store.config.look_dim:
            out[LOOKALIKE] = np.stack([clip_look(f, width) for f in feats])
        return out

    # ---- lookups the web layer needs, under the same refresh discipline ---------------------------------------
    def clip(self, clip_id: int):
        """The store's record for one clip; raises `UnknownId`."""
        clip_id = _check_id(clip_id, "clip")
        with self._reading():
            records = self.store.clips([clip_id])
        if not records:
            raise UnknownId(f"unknown clip id {clip_id}")
        return records[0]

    def thumbnail(self, clip_id: int) -> bytes | None:
        """One clip's thumbnail JPEG, None if it has none; raises `UnknownId`."""
        clip_id = _check_id(clip_id, "clip")
        with self._reading():
            jpeg = self.store.thumbnail(clip_id)
        if jpeg is None:
            self.clip(clip_id)  # an unknown id is the client's mistake, a clip without a thumbnail is not
        return jpeg

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

    def video_captions(self, video_id: int) -> list:
        """A video's captions and subtitles (indexer.store.CaptionRecord) in time order; raises `UnknownId`."""
        self.video_record(video_id)
        with self._reading():
            return list(self.store.video_captions(int(video_id)))

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
                self._floors = {}  # the library changed: measure chance again
        if changed and self._features is not None:
            self._features.clear()
        return changed

    # ---- candidate sources -----------------------------------------------------------------------------------
    def _text_source(self, q: str, later, weights, use: list[str], clip_vector, beside) -> Source:
        """The candidate source of a text query over the channels in `use` (RRF when there are several);
        `later()` gives the query's reading and vector, which only the dense channel waits for, and `beside`
        (`_beside`) may run the dense channel's caption search beside its clip search."""
        from .concepts import chance_score, query_words

        floors = {DENSE: lambda: self._chance(DENSE), CLIP: lambda: self._chance(CLIP),
                  # Any keyword match is evidence (BM25 and ts_rank are positive for a match).
                  KEYWORD: lambda: 0.0 if self.config.cutoffs else -np.inf,
                  CONCEPT: lambda: (chance_score(weights, self.store.config.concept_classes)
                                    if self.config.cutoffs else -np.inf)}

        def dense(n: int):
            vector = later()[1]
            with stage(DENSE):
                captions = beside(self.store.search_captions, vector, n)
                clips = _valid(*self.store.search_clips(vector, n), n)
                captions = _valid(*captions(), n)
                owner = self.store.caption_clip([c for c, _ in captions[0]]) if captions[0] else {}
                mapped = [(owner[c], s) for c, s in captions[0] if owner.get(c) is not None]
                return _cut(*_settled([clips, captions], merge_max(clips[0], mapped)), floors[DENSE]())

        words = " ".join(query_words(q))   # function words alone are no evidence of anything

        def keyword(n: int):
            with stage(KEYWORD):
                found = [(int(c), float(s)) for c, s in self.store.keyword(words, n)] if words else []
                return found, len(found) < n

        def concept(n: int):
            with stage(CONCEPT):
                found = self.store.search_concepts(weights, n) if weights else []
                return _cut(found, len(found) < n, floors[CONCEPT]())

        def clip(n: int):
            with stage(CLIP):
                return _cut(*_valid(*self.store.search_looks(clip_vector, n), n), floors[CLIP]())

        channels = {DENSE: dense, KEYWORD: keyword, CONCEPT: concept, CLIP: clip}
        return _fused([(name, channels[name]) for name in use], self.config.rrf_k,
                      floors=[floors[name] for name in use], last=DENSE)

    def _chance(self, channel: str) -> float:
        """The best cosine that random letter strings reach in this store through a vector channel (dense:
        the model's text vectors against clips and captions; clip: CLIP text vectors against the clips' image
        embeddings): real matches must beat it."""
        if not self.config.cutoffs or self.config.null_probes <= 0:
            return -np.inf
        if channel not in self._floors:
            from .concepts import random_strings
            probes = random_strings(self.config.null_probes)
            if channel == DENSE:
                vectors = np.asarray(self.model.embed_text(probes), dtype=np.float32)
                best = [self.store.search_clips(vectors, 1)[0], self.store.search_captions(vectors, 1)[0]]
            else:
                best = [self.store.search_looks(self._encoders().clip_text_vectors(probes), 1)[0]]
            top = np.concatenate([b.ravel() for b in best])
            self._floors[channel] = float(top[np.isfinite(top)].max()) if np.isfinite(top).any() else -np.inf
        return self._floors[channel]

    def _vector_source(self, vectors: dict[str, np.ndarray], exclude: int | None = None) -> Source:
        """Candidates for query vectors per channel (dense, lookalike): each result clip scores its best
        similarity to any of the query's clips; several channels are fused by RRF."""
        search = {DENSE: self.store.search_clips, LOOKALIKE: self.store.search_looks}

        def channel(name: str):
            def source(n: int):
                depth = n + (exclude is not None)
                scores, ids = search[name](vectors[name], depth)
                rows = [_valid(s[None], i[None], depth) for s, i in zip(scores, ids)]
                merged, dry = _settled(rows, merge_max(*(r[0] for r in rows)))
                return [(c, s) for c, s in merged if c != exclude], dry
            return source

        return _fused([(name, channel(name)) for name in (DENSE, LOOKALIKE) if name in vectors], self.config.rrf_k)

    def _collect(self, source: Source, need: int, group: str, prefix: str | None,
                 skip_video: int | None = None) -> list[Hit]:
        """Ungrouped hits, deep enough that after the prefix filter and grouping at least `need` remain."""
        # Results past max_candidates are never produced, so a huge offset costs no more than a deep page.
        n = min(max(2 * need, self.config.depth), self.config.max_candidates)
        while True:
            scored, dry, evidence = source(n)
            with stage("hits"):
                hits = self._enough_hits(scored, evidence, need, group, prefix, skip_video)
            kept = best_per_group(hits, lambda h: h.video_id) if group == "video" else hits
            if len(kept) >= need or dry or n >= self.config.max_candidates:
                return hits
            n = min(4 * n, self.config.max_candidates)

    def _enough_hits(self, scored: list[tuple[int, float]], evidence: dict, need: int, group: str,
                     prefix: str | None, skip_video: int | None) -> list[Hit]:
        """Hits of the first scored candidates, in rank order, made only until `need` of them (videos, when
        grouped) pass the filters: the first stage ranks a hundred candidates or more, and reading every one's
        record from the store cost more than the rest of a query. Blocks double, so a filter that drops most
        candidates still takes few store round trips."""
        hits: list[Hit] = []
        videos: set[int] = set()
        start, size = 0, max(1, need)
        while start < len(scored):
            for hit in self._hits(scored[start:start + size], evidence, prefix):
                if hit.video_id != skip_video:
                    hits.append(hit)
                    videos.add(hit.video_id)
            start += size
            if (len(videos) if group == "video" else len(hits)) >= need:
                break
            size *= 2
        return hits

    def _hits(self, scored: list[tuple[int, float]], evidence: dict, prefix: str | None) -> list[Hit]:
        records = {r.id: r for r in self.store.clips([c for c, _ in scored])} if scored else {}
        hits = []
        for clip_id, score in scored:
            r = records.get(clip_id)
            if r is None or (prefix and not str(r.video_path).startswith(prefix)):
                continue
            found = evidence.get(clip_id, {})
            hits.append(Hit(clip_id=int(r.id), video_id=int(r.video_id), video_path=str(r.video_path),
                            start=float(r.start), end=float(r.end), score=float(score), caption=r.caption,
                            sources=list(found), similarities={c: round(float(v), 4) for c, v in found.items()},
                            description=r.description))
        return hits

    @contextmanager
    def _reading(self):
        from trainer.encoders.device import use_thread_budget
        use_thread_budget()                 # FAISS's thread count is per thread: apply the server's budget here
        self.refresh()
        with self._lock.reading(), self.store.one_look():  # the channels share one look at removals
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


def _now(fn, *args) -> Callable:
    """fn(*args), run now, as a call that returns its result (`Engine._beside` without a spare core)."""
    done = fn(*args)
    return lambda: done


def _budgeted(fn, *args):
    """fn(*args) on a thread with the server's thread budget applied (FAISS keeps its count per thread)."""
    from trainer.encoders.device import use_thread_budget
    use_thread_budget()
    return fn(*args)


def _fused(channels: list[tuple[str, Callable]], rrf_k: int,
           floors: list[Callable[[], float]] | None = None, last: str | None = None) -> Source:
    """One source over named channel sources ((scored, dry) at depth n): a lone channel as it ranks, several
    fused by RRF at the same depth; the evidence names the channels that found each clip, with their scores.

    With `floors` (per channel, its chance floor), each vote weighs the clip's margin over its channel's floor
    relative to the query's best in that channel (search.fusion.evidence_fusion); without, plain RRF."""
    def source(n: int) -> Found:
        # Channel `last` runs after the others (it may wait for work they overlap with); fusion keeps their order.
        ran = {name: fn(n) for name, fn in sorted(channels, key=lambda c: c[0] == last)}
        lists = [(name, *ran[name]) for name, _ in channels]
        with stage("fuse"):
            evidence: dict[int, dict[str, float]] = {}
            for name, scored, _ in lists:
                for c, s in scored:
                    evidence.setdefault(c, {})[name] = s
            dry = all(d for _, _, d in lists)
            if len(lists) == 1:
                return lists[0][1], dry, evidence
            # Every ranking is cut at the same depth; RRF over them is the usual fixed-depth fusion.
            if floors is None:
                fused = reciprocal_rank_fusion([[c for c, _ in scored] for _, scored, _ in lists], k=rrf_k)
            else:
                fused = evidence_fusion([scored for _, scored, _ in lists], [f() for f in floors], k=rrf_k)
            return fused, dry, evidence
    return source


def _cut(scored: list[tuple[int, float]], dry: bool, floor: float) -> tuple[list[tuple[int, float]], bool]:
    """Drop results scoring under `floor` (best first, so the rest would too: the channel is then dry)."""
    kept = [(c, s) for c, s in scored if s >= floor]
    return kept, dry or len(kept) < len(scored)


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
    """The query text, stripped, with control characters as spaces; QueryError for none, too long or not text."""
    if not isinstance(q, str) or not q.strip():
        raise QueryError("q must be a non-empty query text")
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"q must be at most {MAX_QUERY_CHARS} characters, got {len(q)}")
    try:
        q.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: not text any encoder or SQLite can take
        raise QueryError("q must be valid Unicode text (it holds an unpaired surrogate)") from None
    q = q.translate(_CONTROL).strip()
    if not q:
        raise QueryError("q must be a non-empty query text")
    return q


def _check_page(k, offset, group) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset must be an integer between 0 and {MAX_OFFSET}, got {offset!r}")
    if group not in GROUPS:
        raise QueryError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")


def _model_reader(model):
    """The query reader made from the vocabulary files in `model`'s directory, or None where it has none."""
    from .reading import QueryReader
    path = model.identity.get("path")
    return QueryReader.load(path) if path and os.path.isdir(path) else None


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
