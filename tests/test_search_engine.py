"""Engine logic on an in-memory store with hand-made vectors: modes, fusion, grouping, paging, filters, refresh, threads.

The in-memory store implements the read API of `indexer.Store` with exact inner-product search, so every expected
ranking here can be worked out by hand. The same engine runs on a real indexed store in test_search_store.py.
"""
import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from indexer.store import ClipRecord
from search import Engine, EngineConfig, QueryError, QueryReader, UnknownId
from search.fusion import reciprocal_rank_fusion
from trainer.encoders.efficientnet import imagenet_labels
from trainer.lexicon import caption_vocabulary

DIM = 8


@dataclass
class VideoRec:
    id: int
    path: str
    status: str = "indexed"
    error: str | None = None


def unit(i: int, j: int | None = None, w: float = 0.5) -> np.ndarray:
    """A unit vector on axis i, optionally tilted towards axis j."""
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    if j is not None:
        v[j] = w
    return v / np.linalg.norm(v)


class MemoryStore:
    """Exact in-memory stand-in for the Store read API."""

    def __init__(self):
        self.clip_recs: dict[int, ClipRecord] = {}
        self.vectors: dict[int, np.ndarray] = {}
        self.captions: dict[int, tuple[int, np.ndarray, str]] = {}
        self.pending: list = []
        self.lock = threading.Lock()
        self.config = None

    def add(self, clip_id, video_id, path, start, vector, caption=None, caption_vector=None):
        self.clip_recs[clip_id] = ClipRecord(clip_id, video_id, path, start, start + 4.0, caption, tags=[])
        self.vectors[clip_id] = np.asarray(vector, np.float32)
        if caption is not None:
            vec = caption_vector if caption_vector is not None else vector
            self.captions[1000 + clip_id] = (clip_id, np.asarray(vec, np.float32), caption)

    @staticmethod
    def _search(table: dict, vectors, k):
        ids = np.array(list(table), dtype=np.int64)
        mat = np.stack([table[i] if isinstance(table[i], np.ndarray) else table[i][1] for i in ids]) \
            if len(ids) else np.zeros((0, DIM), np.float32)
        scores = np.full((len(vectors), k), -np.inf, np.float32)
        out = np.full((len(vectors), k), -1, np.int64)
        for q, v in enumerate(np.asarray(vectors, np.float32)):
            sims = mat @ v
            order = np.argsort(-sims, kind="stable")[:k]
            scores[q, :len(order)] = sims[order]
            out[q, :len(order)] = ids[order]
        return scores, out

    def search_clips(self, vectors, k):
        return self._search(self.vectors, vectors, k)

    def search_captions(self, vectors, k):
        return self._search(self.captions, vectors, k)

    def search_looks(self, vectors, k):
        raise AssertionError("this store keeps no look-alike vectors")

    def keyword(self, query, k):
        words = set(query.lower().split())
        scored = [(cid, float(len(words & set(text.lower().split()))))
                  for cid, (_, _, text) in ((c[0], c) for c in self.captions.values())]
        scored = [(cid, s) for cid, s in scored if s > 0]
        return sorted(scored, key=lambda x: (-x[1], x[0]))[:k]

    def clips(self, clip_ids):
        return [self.clip_recs[i] for i in clip_ids if i in self.clip_recs]

    def caption_clip(self, caption_ids):
        return {c: self.captions[c][0] if c in self.captions else None for c in caption_ids}

    def clip_vector(self, clip_id, column="vector"):
        return self.vectors[clip_id]

    def channels(self):
        return ["dense", "keyword"]

    def counts(self):
        return {"videos": len({r.video_id for r in self.clip_recs.values()}), "clips": len(self.clip_recs),
                "failed": 0}

    def videos(self, offset=0, limit=50):
        vids = sorted({(r.video_id, r.video_path) for r in self.clip_recs.values()})
        return [VideoRec(v, p) for v, p in vids][offset:offset + limit]

    def video(self, video_id):
        return next((v for v in self.videos(0, 10**6) if v.id == video_id), None)

    def one_look(self):
        return contextlib.nullcontext()  # nothing is ever removed from this store

    def refresh(self):
        with self.lock:
            if not self.pending:
                return False
            for args in self.pending:
                self.add(*args)
            self.pending.clear()
            return True


class VectorModel:
    """Text embedding by lookup, so queries land exactly where a test wants them."""

    def __init__(self, table):
        from trainer.media import SamplingConfig
        self.table = table
        self.sampling = SamplingConfig()
        self.identity = {"name": "memory", "path": "", "hash": ""}

    def embed_text(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


@pytest.fixture
def store():
    s = MemoryStore()
    # Video 1 (/lib/a/one.mp4): clips 1-3; video 2 (/lib/b/two.mp4): clips 4-5; video 3 (/lib/a/three.mp4): clip 6.
    s.add(1, 1, "/lib/a/one.mp4", 0.0, unit(0, 1, 0.2), "a red circle moves left")
    s.add(2, 1, "/lib/a/one.mp4", 4.0, unit(0, 1, 0.4))
    s.add(3, 1, "/lib/a/one.mp4", 8.0, unit(2))
    s.add(4, 2, "/lib/b/two.mp4", 0.0, unit(0, 1, 0.1), "a blue square spins")
    s.add(5, 2, "/lib/b/two.mp4", 4.0, unit(3), "green triangle bounces", caption_vector=unit(4))
    s.add(6, 3, "/lib/a/three.mp4", 0.0, unit(0, 1, 0.8), "red square falls")
    return s


@pytest.fixture
def engine(store):
    model = VectorModel({"circle": unit(0), "triangle": unit(4), "red square": unit(0, 1, 0.8),
                         "nothing": unit(7), "red diamond": unit(4), "red rhombus": unit(0)})
    # A reader over a one-caption vocabulary: "rhombus" shares a WordNet synset with "diamond".
    reader = QueryReader(caption_vocabulary(["a red diamond", "a circle", "a triangle"]), imagenet_labels())
    return Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False), reader=reader)


def ids(hits):
    return [h.clip_id for h in hits]


def test_dense_ranks_clip_vectors_and_maps_caption_hits_to_their_clip(engine):
    hits = engine.text("circle", k=6, mode="dense")
    assert ids(hits)[:2] == [4, 1]                 # closest to axis 0: clip 4 (tilt 0.1) then clip 1 (0.2)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    # Clip 5's own vector is far from "triangle"; its caption vector is exact, so it comes first via the caption.
    top = engine.text("triangle", k=1, mode="dense")[0]
    assert top.clip_id == 5 and top.score == pytest.approx(1.0) and top.caption == "green triangle bounces"


def test_dense_search_reads_the_query_in_training_words_unless_told_not_to(engine):
    reading = engine.read("red rhombus")
    assert reading.text == "red diamond" and reading.changed and len(reading.substitutions) == 1
    assert not engine.read("red rhombus", rewrite=False).changed and not engine.read("circle").changed
    rewritten = engine.text("red rhombus", k=1, mode="dense")[0]
    as_typed = engine.text("red rhombus", k=1, mode="dense", rewrite=False)[0]
    assert rewritten.clip_id == 5 and as_typed.clip_id == 4      # "red diamond" lies on axis 4, as typed on 0


def test_keyword_mode_uses_caption_words(engine):
    assert ids(engine.text("red square", k=10, mode="keyword")) == [6, 1, 4]
    assert engine.text("zebra", k=10, mode="keyword") == []


def test_hybrid_is_rrf_of_dense_and_keyword(engine, store):
    dense = ids(engine.text("red square", k=6, mode="dense"))
    keyword = ids(engine.text("red square", k=6, mode="keyword"))
    expected = [i for i, _ in reciprocal_rank_fusion([dense, keyword])]
    hybrid = engine.text("red square", k=6)
    assert ids(hybrid) == expected[:6]
    assert hybrid[0].clip_id == 6                  # first in both lists
    assert hybrid[0].score == pytest.approx(2 / 61)


class NullModel(VectorModel):
    """Known texts by lookup; any other text (the random strings that measure chance) on an empty axis."""

    def embed_text(self, texts):
        return np.stack([self.table.get(t, unit(7)) for t in texts]).astype(np.float32)


def test_hybrid_weighs_each_vote_by_its_margin_over_chance():
    # Clip 1 is dense's second, barely above chance (random strings score 0 here), and keyword's first (all
    # three words); clip 2 is dense's first by far and keyword's second (two words). Plain RRF ties them and
    # gives the tie to clip 1; weighed by evidence, clip 2's strong dense vote wins.
    s = MemoryStore()
    s.add(1, 1, "/v/1.mp4", 0.0, unit(6, 0, 0.05), "apple pie orchard")
    s.add(2, 2, "/v/2.mp4", 0.0, unit(0), "apple pie")
    engine = Engine(s, model=NullModel({"apple pie orchard": unit(0)}),
                    config=EngineConfig(refresh_seconds=0.0), reader=None)
    dense = ids(engine.text("apple pie orchard", k=5, mode="dense"))
    keyword = ids(engine.text("apple pie orchard", k=5, mode="keyword"))
    assert dense == [2, 1] and keyword == [1, 2]
    assert [i for i, _ in reciprocal_rank_fusion([dense, keyword])] == [1, 2]
    hybrid = engine.text("apple pie orchard", k=5)
    assert ids(hybrid) == [2, 1]
    assert hybrid[0].similarities == {"dense": pytest.approx(1.0), "keyword": 2.0}
    assert hybrid[1].score < 1 / 61 + 0.1 / 62           # its dense vote is worth a twentieth of a full one


def test_group_by_video_keeps_best_clip_per_video(engine):
    hits = engine.text("circle", k=10, mode="dense", group="video")
    assert ids(hits) == [4, 1, 6]
    assert len({h.video_id for h in hits}) == len(hits)


def test_pages_tile_the_full_ranking(engine):
    full = ids(engine.text("circle", k=6, mode="dense"))
    pages = [ids(engine.text("circle", k=2, offset=o, mode="dense")) for o in (0, 2, 4, 6)]
    assert sum(pages, []) == full and pages[-1] == []


def test_prefix_filter_widens_until_enough_results(store):
    # More clips under /lib/b/ closer to the query than the one clip under /lib/a/ than the first search reaches.
    for i in range(150):
        store.add(1000 + i, 50 + i, f"/lib/b/x{i}.mp4", 0.0, unit(6, 7, 0.003 * i))
    store.add(2000, 999, "/lib/a/far.mp4", 0.0, unit(6, 7, 1.0))
    engine = Engine(store, model=VectorModel({"q": unit(6)}), config=EngineConfig(depth=20, cutoffs=False))
    hits = engine.text("q", k=1, mode="dense", prefix="/lib/a/")
    assert ids(hits) == [2000]
    assert all(h.video_path.startswith("/lib/b/") for h in engine.text("q", k=100, mode="dense", prefix="/lib/b"))


def test_similar_leaves_out_the_clip_and_grouped_its_video(engine):
    hits = engine.similar(1, k=10)
    assert 1 not in ids(hits) and ids(hits)[0] == 4
    grouped = engine.similar(1, k=10, group="video")
    assert all(h.video_id != 1 for h in grouped)
    with pytest.raises(UnknownId):
        engine.similar(999)


def test_bad_parameters_raise_query_errors(engine):
    for kwargs in ({"k": 0}, {"k": 101}, {"offset": -1}, {"offset": 1001}, {"mode": "fuzzy"}, {"group": "scene"}):
        with pytest.raises(QueryError):
            engine.text("circle", **kwargs)
    with pytest.raises(QueryError, match="q must be"):
        engine.text("   ")


def test_refresh_picks_up_new_clips_no_more_often_than_configured(store):
    model = VectorModel({"q": unit(5)})
    slow = Engine(store, model=model, config=EngineConfig(refresh_seconds=3600, cutoffs=False))
    fast = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    assert 7 not in ids(fast.text("q", k=3, mode="dense"))
    store.pending.append((7, 4, "/lib/c/new.mp4", 0.0, unit(5), "new clip"))
    assert ids(slow.text("q", k=1, mode="dense")) != [7] or not store.pending
    assert ids(fast.text("q", k=1, mode="dense")) == [7]
    assert slow.refresh(force=True) is False      # the fast engine already applied the change to the shared store


def test_concurrent_queries_during_refreshes(store):
    engine = Engine(store, model=VectorModel({"q": unit(0)}), config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    errors, stop = [], threading.Event()

    def search():
        try:
            while not stop.is_set():
                hits = engine.text("q", k=5)
                assert hits and all(h.video_path.startswith("/lib/") for h in hits)
        except Exception as e:   # surfaced below; a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(30):
        store.pending.append((300 + i, 300 + i, f"/lib/d/{i}.mp4", 0.0, unit(0, 2, 0.05 * i), f"added {i}"))
        engine.refresh(force=True)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert engine.counts()["clips"] == 36


def test_engine_refuses_a_model_the_store_was_not_built_with(store):
    from types import SimpleNamespace
    model = VectorModel({})
    model.dim = DIM
    store.config = SimpleNamespace(dim=DIM, model_hash="aaa", model_path="/models/a")
    model.identity = {"hash": "bbb", "path": "/models/b"}
    with pytest.raises(ValueError, match="re-index"):
        Engine(store, model=model)
    model.identity = {"hash": "aaa", "path": "/models/a-moved"}
    model.dim = DIM * 2
    with pytest.raises(ValueError, match="16-d vectors"):
        Engine(store, model=model)
    model.dim = DIM
    assert Engine(store, model=model).model is model
