"""The engine and `vidsearch search` on the real tiny store: recorded model, all query kinds, re-ranking, the CLI."""
import json

import numpy as np
import pytest

from search import Engine, EngineConfig, Hit, QueryError, UnknownId
from webui.cli import main


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def search_store(request, tiny_store_dir, synth_library, tiny_model_dir, tmp_path_factory):
    """The tiny store with its rows in SQLite, or the same library indexed with its rows on PostgreSQL:
    every test here runs on both."""
    if request.param == "sqlite":
        return tiny_store_dir
    from indexer import index_paths

    store = tmp_path_factory.mktemp("pg_store") / "store"
    report = index_paths([synth_library.manifest], store, tiny_model_dir, workers=1,
                         db=request.getfixturevalue("postgres_url"))
    assert report.exit_code == 0, report.summary()
    return store


@pytest.fixture(scope="module")
def engine(search_store):
    # The tiny model is randomly initialised: none of its dense matches beats chance, so cutoffs are off here
    # to see the engine's whole ranking (test_channels.py checks the cutoffs).
    return Engine(search_store, config=EngineConfig(cutoffs=False))


@pytest.fixture(scope="module")
def first_video(engine):
    return next(v for v in engine.videos(limit=100) if v.status == "indexed")


def test_engine_loads_the_model_the_store_records(engine, search_store):
    from pathlib import Path
    assert Path(engine.model.identity["path"]).resolve() == Path(engine.store.config.model_path).resolve()
    assert engine.model.dim == engine.store.config.dim


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_text_modes_return_stored_clips(engine, mode):
    hits = engine.text("a red circle moving", k=5, mode=mode)
    assert hits and all(isinstance(h, Hit) for h in hits)
    records = {r.id: r for r in engine.store.clips([h.clip_id for h in hits])}
    for h in hits:
        r = records[h.clip_id]
        assert (h.video_id, h.video_path, h.start, h.end, h.caption) == (r.video_id, r.video_path, r.start, r.end,
                                                                           r.caption)


def test_keyword_finds_a_caption_verbatim(engine):
    caption = next(h.caption for h in engine.text("shape", k=50, mode="dense") if h.caption)
    top = engine.text(caption, k=3, mode="keyword")
    assert caption in [h.caption for h in top]


def test_video_query_is_embedded_like_the_index(engine, first_video):
    # The same file, decoded and embedded at query time, must land on its own stored clips.
    hits = engine.video(first_video.path, k=first_video.clips)
    assert {h.video_id for h in hits} == {first_video.id}
    assert hits[0].similarities["dense"] == pytest.approx(1.0, abs=1e-3)
    assert hits[0].similarities["lookalike"] == pytest.approx(1.0, abs=1e-3)
    vectors = engine.embed_video(first_video.path)
    stored = np.stack([engine.store.clip_vector(c) for c in engine.store.video_clips(first_video.id)])
    assert vectors.shape == stored.shape
    np.testing.assert_allclose(vectors, stored, atol=1e-3)


def test_similar_and_grouping(engine, first_video):
    clip_id = engine.store.video_clips(first_video.id)[0]
    hits = engine.similar(clip_id, k=5)
    assert clip_id not in [h.clip_id for h in hits]
    grouped = engine.similar(clip_id, k=5, group="video")
    assert first_video.id not in [h.video_id for h in grouped]
    assert len({h.video_id for h in grouped}) == len(grouped)
    with pytest.raises(UnknownId):
        engine.similar(10 ** 9)


def test_rerank_scores_are_alignment_probabilities(search_store, engine):
    from search import EngineConfig
    # A short re-rank list keeps the decoding quick; the same model instance avoids loading it again.
    short = Engine(search_store, model=engine.model, config=EngineConfig(rerank_top=4, cutoffs=False))
    plain = short.text("a blue square", k=6, mode="dense")
    reranked = short.text("a blue square", k=6, mode="dense", rerank=True)
    head, tail = reranked[:4], reranked[4:]
    assert {h.clip_id for h in head} == {h.clip_id for h in plain[:4]}      # only the top 4 are re-scored
    assert [h.clip_id for h in tail] == [h.clip_id for h in plain[4:]]
    assert all(0.0 <= h.score <= 1.0 for h in head)
    assert [h.score for h in head] == sorted((h.score for h in head), reverse=True)
    probs = short.model.match(["a blue square"] * 4, short._features.features(plain[:4]), features=True)
    assert sorted(float(p) for p in probs) == pytest.approx(sorted(h.score for h in head), abs=1e-5)


def test_engine_rejects_bad_queries(engine):
    with pytest.raises(QueryError):
        engine.text("", k=5)
    with pytest.raises(QueryError):
        engine.text("x", k=500)


def test_search_cli_text_json(search_store, capsys):
    assert main(["search", "--store", str(search_store), "a red circle", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # The CLI's engine keeps only results that beat chance: the random tiny model's dense matches do not.
    assert out["query"] == "a red circle" and 1 <= len(out["results"]) <= 3
    assert all(r["sources"] == ["keyword"] for r in out["results"])
    assert set(out["results"][0]) == {"clip_id", "video_id", "video_path", "start", "end", "score", "caption",
                                      "sources", "similarities", "description"}
    assert (out["read_as"]["text"], out["read_as"]["substitutions"]) == ("a red circle", [])


def test_search_cli_says_how_it_read_a_rewritten_query(search_store, capsys):
    assert main(["search", "--store", str(search_store), "a red pentagram", "-k", "2"]) == 0
    assert "read as: a red star (pentagram -> star;" in capsys.readouterr().out
    assert main(["search", "--store", str(search_store), "a red pentagram", "-k", "2", "--json",
                 "--no-rewrite"]) == 0
    read_as = json.loads(capsys.readouterr().out)["read_as"]
    assert (read_as["text"], read_as["substitutions"]) == ("a red pentagram", [])


def test_search_cli_table_video_and_errors(search_store, first_video, capsys):
    assert main(["search", "--store", str(search_store), "circle", "--mode", "keyword", "-k", "2"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("channels: dense, keyword, concept, lookalike\n  1. [keyword=") and "clip" in table
    assert main(["search", "--store", str(search_store), "--video", first_video.path, "-k", "1"]) == 0
    assert first_video.path in capsys.readouterr().out
    assert main(["search", "--store", str(search_store), "x", "-k", "0"]) == 2
    assert "k must be" in capsys.readouterr().err
    assert main(["search", "--store", str(search_store)]) == 2
    assert main(["search", "--store", str(search_store.parent / "nothing"), "x"]) == 2
    assert "no store here" in capsys.readouterr().err
    assert main(["search", "--store", str(search_store), "--video", "/no/such.mp4"]) == 2
    assert "/no/such.mp4" in capsys.readouterr().err


@pytest.fixture
def store_copy(search_store, synth_library, tiny_model_dir, tmp_path):
    """A store the test may grow: a copy of the SQLite one, or (rows being in the database, not the
    directory) the library indexed afresh into a new PostgreSQL schema."""
    import shutil

    from indexer import StoreConfig, index_paths
    copy = tmp_path / "store"
    config = StoreConfig.load(search_store)
    if not config.db:
        shutil.copytree(search_store, copy)
    else:
        index_paths([synth_library.manifest], copy, tiny_model_dir, workers=1, db=config.db)
    return copy


def test_engine_sees_newly_indexed_videos_without_restart(store_copy, engine, tmp_path):
    from indexer import index_paths
    from search import EngineConfig
    from tests.fixtures.store import make_mp4
    from webui import create_app

    live = Engine(store_copy, model=engine.model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    before = live.counts()
    new = make_mp4(tmp_path / "new.mp4", seconds=3.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0\1\2 definitely not a video" * 20)
    report = index_paths([new, broken], store_copy, engine.model, workers=1)
    assert report.exit_code != 0                          # the broken file failed, the new one was indexed
    after = live.counts()
    assert after["videos"] == before["videos"] + 1 and after["failed"] == before["failed"] + 1
    hits = live.video(new, k=1)
    assert hits[0].video_path == str(new) and hits[0].similarities["dense"] == pytest.approx(1.0, abs=1e-3)
    # The library page shows the failure and its reason.
    page = create_app(store_copy, engine=live).test_client().get("/library").get_data(as_text=True)
    assert "broken.mp4" in page and 'class="status-failed"' in page
    failed = next(v for v in live.videos(limit=100) if v.status == "failed")
    from markupsafe import escape
    assert str(escape(failed.error)) in page


def test_rerank_puts_clips_of_unreadable_videos_last(engine, tmp_path):
    from dataclasses import replace

    from search.rerank import FeatureCache
    good = engine.text("a red circle", k=2, mode="dense")
    gone = replace(good[0], clip_id=-5, video_path=str(tmp_path / "moved-away.mp4"), score=9.0)
    cache = FeatureCache(engine.model, engine.sampling)
    reranked = cache.rerank("a red circle", [gone, *good])
    assert [h.clip_id for h in reranked][-1] == -5 and reranked[-1].score == 0.0
    assert all(0.0 <= h.score <= 1.0 for h in reranked)


def test_searches_in_threads_while_the_store_grows(store_copy, engine, tmp_path):
    import threading

    from indexer import index_paths
    from search import EngineConfig
    from tests.fixtures.store import make_mp4

    live = Engine(store_copy, model=engine.model, config=EngineConfig(refresh_seconds=0.0, cutoffs=False))
    live.warm()  # as `vidsearch serve` does before it listens: the threads then time searches, not loading
    before = live.counts()["videos"]
    errors, stop, done = [], threading.Event(), []

    def search(query):
        n = 0
        try:
            # A short pause between queries: three threads spinning on 2 cores would starve the indexer,
            # and the test is about reads overlapping writes, not about saturating the machine.
            while not stop.wait(0.02):
                assert live.text(query, k=5, mode="hybrid")
                n += 1
        except Exception as e:   # reported below; an exception in a thread would otherwise go unseen
            errors.append(e)
        done.append(n)

    threads = [threading.Thread(target=search, args=(q,)) for q in ("a red circle", "blue square", "moves left")]
    for t in threads:
        t.start()
    try:
        for i in range(2):
            index_paths([make_mp4(tmp_path / f"grow{i}.mp4", seconds=2.0 + i)], store_copy, engine.model, workers=1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert min(done) >= 2, done  # every thread searched while the store grew
    assert live.counts()["videos"] == before + 2


def test_concept_postings_rank_as_a_full_stable_sort_of_the_weighted_sums():
    """The concept channel's scores and order, pinned to a dense reference: the weighted sum of each clip's
    class probabilities, best first, ties in insertion order, the first k of them."""
    from indexer.store import ConceptPostings, _top_order

    rng = np.random.default_rng(3)
    classes, clips = 40, 120
    dense = np.where(rng.random((clips, classes)) < 0.2, rng.random((clips, classes)), 0).astype(np.float32)
    dense[7] = dense[3]                      # two clips tie on every query
    postings = ConceptPostings(classes)
    postings.add((i + 1, json.dumps([[c, float(p)] for c, p in enumerate(row) if p > 0]))
                 for i, row in enumerate(dense))
    for _ in range(50):
        cols = rng.choice(classes, size=int(rng.integers(1, 12)), replace=False)
        weights = {int(c): float(rng.random()) for c in cols}
        ids, scores = postings.score(weights)
        want = np.zeros(clips, np.float32)
        for c in cols:                                  # column by column, as the postings add them
            want += dense[:, c] * np.float32(weights[int(c)])
        hit = np.flatnonzero(want > 0)
        assert ids.tolist() == (hit + 1).tolist()
        np.testing.assert_allclose(scores, want[hit], rtol=1e-6)
        full = np.argsort(-scores, kind="stable")
        for k in (1, 3, 10, len(scores), len(scores) + 5):
            assert _top_order(scores, k).tolist() == full[:k].tolist()
