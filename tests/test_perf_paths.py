"""Query-path timing hooks, the start-up warm-up, the server's thread budget and `fast` index sampling."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from indexer import Store, index_paths
from search import Engine, EngineConfig
from tests.fixtures.store import FakeModel, make_mp4
from tests.test_search_engine import VectorModel, store, unit  # noqa: F401  (store: a fixture)


class CountingModel(VectorModel):
    """A VectorModel that answers any text (axis 0 unless listed) and counts how often it encodes a query."""

    def __init__(self, table):
        super().__init__(table)
        self.reads = 0

    def embed_text(self, texts, rewrite=True):
        self.reads += 1
        return np.stack([self.table.get(t, unit(0)) for t in texts]).astype(np.float32)


@pytest.fixture
def engine(store):  # noqa: F811
    model = CountingModel({"triangle": unit(4)})
    return Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0))


def test_stage_timings_cover_each_stage_the_mode_runs(engine):
    plain = engine.text("triangle", k=3)
    timings: dict[str, float] = {}
    timed = engine.text("triangle square", k=3, timings=timings)
    used = set(engine._text_channels("hybrid"))
    assert {"dense", "keyword"} <= used                 # the fixture store answers both, so fusion runs
    assert {"read", "encode", "fuse", "hits"} | used <= set(timings)
    assert all(ms >= 0.0 for ms in timings.values())
    keyword: dict[str, float] = {}
    engine.text("triangle", k=3, mode="keyword", timings=keyword)
    assert {"keyword", "hits"} <= set(keyword)
    assert not {"read", "encode", "dense", "concept"} & set(keyword)
    assert [h.clip_id for h in engine.text("triangle", k=3, timings={})] == [h.clip_id for h in plain]
    assert timed  # hybrid still answers while timed


def test_stage_times_read_the_clock_they_are_given(engine):
    from search import StageTimes

    engine._cores = 1  # the text tower on the query's own thread: each stage reads the ticking clock twice in a row
    ticks = iter(range(10_000))
    timings = StageTimes(lambda: float(next(ticks)))         # every reading of the clock is one second on
    engine.text("triangle square", k=3, timings=timings)
    # Each stage read the clock twice around its own block, so it holds whole seconds: 1 s per time it ran.
    assert timings and all(ms >= 1000.0 and ms % 1000.0 == 0.0 for ms in timings.values())
    assert timings["read"] == timings["encode"] == 1000.0


def test_timings_belong_to_their_own_query_only(engine):
    """Concurrent queries each fill their own dict."""
    results: list[dict] = []

    def worker(i):
        t: dict[str, float] = {}
        engine.text(f"triangle {i}", k=2, timings=t)
        results.append(t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r["read"] >= 0 and r["encode"] >= 0 for r in results)


def test_warm_runs_every_stage_and_leaves_no_cached_answer(engine):
    engine.warm()
    warm = engine.model.reads
    assert warm >= 1                               # the query path ran at start-up
    assert not engine._text_cache                 # no user query is answered from the warm-up
    engine.text("triangle", k=1)
    assert engine.model.reads > warm               # a user query is encoded afresh


class ThreadModel(CountingModel):
    """A CountingModel that notes the thread each query is encoded on, and can hold an encode until released."""

    def __init__(self, table):
        super().__init__(table)
        self.threads: list[str] = []
        self.hold: threading.Event | None = None
        self.holding = threading.Event()

    def embed_text(self, texts, rewrite=True):
        self.threads.append(threading.current_thread().name)
        if self.hold is not None and texts == ["held"]:
            self.holding.set()
            self.hold.wait(10)
        return super().embed_text(texts)


def test_a_lone_query_encodes_beside_its_other_channels_with_the_same_answers(store):  # noqa: F811
    model = ThreadModel({"triangle": unit(4), "circle": unit(0)})
    spread = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    spread._cores = 2
    inline = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    inline._cores = 1
    searched: list[str] = []
    captions = store.search_captions
    store.search_captions = lambda *a: searched.append(threading.current_thread().name) or captions(*a)
    for q in ("triangle", "circle", "red square falls"):
        model.threads.clear()
        searched.clear()
        timings: dict[str, float] = {}
        got = spread.text(q, timings=timings)
        assert model.threads and model.threads[0].startswith("vidsearch-spare")   # on the spare thread
        assert searched and all(t.startswith("vidsearch-spare") for t in searched)  # beside the clip search
        assert {"encode", "keyword", "dense", "fuse"} <= set(timings)                 # timed all the same
        assert [h.to_dict() for h in inline.text(q)] == [h.to_dict() for h in got]
        for args in ({"group": "video"}, {"offset": 1, "k": 2}, {"prefix": "/lib/a/"}):   # later pages: cached
            assert [h.to_dict() for h in spread.text(q, **args)] == [h.to_dict() for h in inline.text(q, **args)]
    model.threads.clear()
    searched.clear()
    assert spread.text("circle alone", k=1, mode="dense")
    assert model.threads == [threading.current_thread().name]    # one channel has nothing to run beside
    assert searched and set(searched) == {threading.current_thread().name}


def test_overlapping_queries_encode_on_their_own_threads(store):  # noqa: F811
    model = ThreadModel({"held": unit(0), "circle": unit(0)})
    engine = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    engine._cores = 2
    model.hold = threading.Event()
    first = threading.Thread(target=engine.text, args=("held",), name="first-query")
    first.start()
    try:
        assert model.holding.wait(10)                 # the first query is still encoding
        engine.text("circle", k=1)                    # a second one meanwhile: it leaves the spare core alone
    finally:
        model.hold.set()
        first.join(10)
    assert model.threads[0].startswith("vidsearch-spare") and model.threads[1] == threading.current_thread().name


def test_a_forked_child_spreads_its_queries_on_a_thread_of_its_own(store):  # noqa: F811
    import multiprocessing

    model = ThreadModel({"circle": unit(0)})
    engine = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    engine._cores = 2
    first = [h.clip_id for h in engine.text("circle")]          # the parent's spare thread now exists
    out = multiprocessing.get_context("fork").Queue()

    def child():
        out.put([h.clip_id for h in engine.text("circle square")] and [h.clip_id for h in engine.text("circle", k=3)])

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(30)
    if proc.is_alive():
        proc.kill()
    assert proc.exitcode == 0 and out.get(timeout=5) == first[:3]    # it answered instead of waiting forever


def test_a_reader_searches_exact_indexes_in_half_precision(tmp_path, monkeypatch):
    import faiss

    from indexer.faiss_index import VectorIndex, halved

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = VectorIndex.empty(16)
    exact.add(np.arange(1000, 1200), vectors)
    half = halved(exact)
    assert isinstance(faiss.downcast_index(half.index.index), faiss.IndexScalarQuantizer) and half.spec == exact.spec
    assert (half.ids() == exact.ids()).all()
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    (es, ei), (hs, hi) = exact.search(queries, 10), half.search(queries, 10)
    assert np.abs(es - hs).max() < 2e-3 and (ei[:, 0] == hi[:, 0]).all()
    assert half.remove([1000, 1001]) == 2 and half.ntotal == 198           # a reader's catch-up still removes
    half.add([5000], vectors[:1])
    assert half.search(vectors[:1], 1)[1][0, 0] == 5000
    with monkeypatch.context() as m:                  # where FAISS sees a GPU, the exact index is searched there
        m.setattr("indexer.faiss_index.num_gpus", lambda: 1)
        assert halved(exact) is exact
    # A store's reader gets the half copy; its writer keeps, and writes, the exact index.
    model = FakeModel()
    video = make_mp4(tmp_path / "v.mp4", seconds=4.0)
    index_paths([video], tmp_path / "store", model, workers=1)
    reader = Store.open(tmp_path / "store", readonly=True)
    kind = reader._kinds["clips"]
    assert isinstance(faiss.downcast_index(kind.index.index.index), faiss.IndexScalarQuantizer)
    on_disk = faiss.read_index(str(tmp_path / "store" / kind.file))
    assert isinstance(faiss.downcast_index(on_disk.index), faiss.IndexFlat)


def test_thread_budget_splits_cores_between_request_threads():
    import faiss
    import torch

    from trainer import set_thread_budget
    from trainer.encoders.device import _budget, use_thread_budget

    before, saved = torch.get_num_threads(), dict(_budget)
    try:
        assert set_thread_budget(4, cores=2) == 1 and torch.get_num_threads() == 1
        assert set_thread_budget(2, cores=8) == 4
        set_thread_budget(4, cores=2)
        seen = {}

        def request_thread():
            use_thread_budget()
            seen["faiss"], seen["torch"] = faiss.omp_get_max_threads(), torch.get_num_threads()

        t = threading.Thread(target=request_thread)
        t.start()
        t.join()
        assert seen == {"faiss": 1, "torch": 1}
        with pytest.raises(ValueError, match="workers"):
            set_thread_budget(0)
    finally:
        _budget.clear()
        _budget.update(saved)
        torch.set_num_threads(before)
        faiss.omp_set_num_threads(before)


class FrameCounter(FakeModel):
    def __init__(self):
        super().__init__()
        self.frames = 0

    def encode_frames(self, frames):
        self.frames += len(frames)
        return super().encode_frames(frames)


def test_fast_indexing_samples_one_frame_per_clip(tmp_path):
    video = make_mp4(tmp_path / "bars.mp4", seconds=4.0)
    default, fast = FrameCounter(), FrameCounter()
    index_paths([video], tmp_path / "default", default, workers=1)
    report = index_paths([video], tmp_path / "fast", fast, workers=1, fast=True)
    assert not report.failed and report.clips == 2               # two 2 s clips, as at the default rate
    assert Store.open(tmp_path / "fast", readonly=True).config.fps == pytest.approx(0.5)   # 1 / clip length
    assert fast.frames == 2 and default.frames == 8              # one frame per clip instead of four
    with pytest.raises(ValueError, match="fast and fps"):
        index_paths([video], tmp_path / "both", fast, fast=True, fps=1.0)


def test_hits_are_read_only_as_far_as_the_page_needs(store):  # noqa: F811
    """Pages, grouping and prefix filters give what reading every candidate's record gives, while a first
    page reads about a page's records."""
    model = CountingModel({"circle": unit(0)})
    lazy = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    full = Engine(store, model=model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    full._enough_hits = lambda scored, evidence, need, group, prefix, skip: [
        h for h in full._hits(scored, evidence, prefix) if h.video_id != skip]
    for mode in ("dense", "hybrid"):
        for k, offset, group, prefix in [(1, 0, "clip", None), (2, 1, "clip", None), (2, 0, "video", None),
                                         (1, 1, "video", None), (2, 0, "clip", "/lib/a/"), (3, 1, "video", "/lib/a/"),
                                         (10, 0, "clip", None)]:
            args = dict(k=k, offset=offset, group=group, prefix=prefix, mode=mode)
            assert [h.to_dict() for h in lazy.text("circle", **args)] == \
                   [h.to_dict() for h in full.text("circle", **args)], args
    read: list[int] = []
    real = store.clips
    store.clips = lambda ids: read.append(len(list(ids))) or real(ids)
    assert len(lazy.text("circle", k=1, mode="dense", offset=0)) == 1
    assert sum(read) == 1                                        # one record for one hit, of 6 candidates
    store.clips = real


def test_scaled_store_copies_every_clip_with_its_data_and_vectors_moved(tmp_path):
    from benchmarks.http import scaled_store

    model = FakeModel()
    videos = [make_mp4(tmp_path / f"v{i}.mp4", width=64 + 16 * i, seconds=4.0) for i in range(2)]   # unlike files
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f'{{"video": "{videos[0]}", "caption": "a red bar", "start": 0, "end": 2}}\n'
                        f'{{"video": "{videos[1]}", "caption": "green stripes"}}\n')
    index_paths([manifest], tmp_path / "src", model, workers=1)
    source = Store.open(tmp_path / "src", readonly=True)
    assert source.counts()["clips"] == 4
    scaled_store(tmp_path / "src", tmp_path / "big", clips=10, model=model)
    big = Store.open(tmp_path / "big", readonly=True)
    counts = big.counts()
    assert counts["clips"] == 12 and counts["videos"] == 6 and counts["captions"] == 3 * source.counts()["captions"]
    assert big.channels() == source.channels() and big.config.dim == source.config.dim
    first = source.clip_vector(1)
    copies = [big.clip_vector(c) for c in (1, 5, 9)]               # clip 1 of each copy of the first video
    assert all(np.isclose(np.linalg.norm(v), 1.0, atol=1e-5) for v in copies)
    assert all(0.8 < float(v @ first) < 0.9999 for v in copies)    # moved, not far
    hits = Engine(big, model=model, config=EngineConfig(cutoffs=False)).text("red bar", k=3, mode="keyword")
    assert len({h.video_id for h in hits}) == 3 and all(h.caption == "a red bar" for h in hits)
