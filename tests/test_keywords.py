"""Keyword search on SQLite from per-word BM25 postings (indexer.keywords): the answers FTS5 gives for the whole
OR query, score for score and in the same order, and fresh after every commit."""
from __future__ import annotations

import sqlite3

import pytest

from indexer import Store, index_paths
from indexer.db import keyword_words
from indexer.keywords import WordPostings
from tests.fixtures.store import FakeModel, fake_reader, write_fake_video

CAPTIONS = {
    "red": "a red fox jumps over the red fence",
    "green": "foxes jumping in the green grass",
    "blue": "a blue bird sings; the bird moves",
    "white": "café naïve snow_field, moving slowly",
}
QUERIES = ["fox", "red fox", "jumps jumping jump", "bird moves moving", "cafe naive", "snow_field", "fence grass",
           "green", "nothing here", "blue red green white fox bird"]


@pytest.fixture(autouse=True)
def _sqlite(monkeypatch):
    from indexer.db import DB_ENV

    monkeypatch.delenv(DB_ENV, raising=False)  # postings are SQLite's; PostgreSQL ranks in one statement


def _index(lib, store_dir, captions: dict[str, str], model=None, seconds: float = 5.0):
    model = model or FakeModel()
    lib.mkdir(exist_ok=True)
    for i, (colour, text) in enumerate(captions.items()):
        write_fake_video(lib / f"{colour}_{i}.mp4", colour, seconds)
        (lib / f"{colour}_{i}.txt").write_text(text)
    index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    return model


def _fts(store_dir, query: str, k: int) -> list[tuple[int, float]]:
    """What FTS5 answers for the words ORed in one statement (ties by rowid, as the postings break them)."""
    words = keyword_words(query)
    with sqlite3.connect(f"file:{store_dir / 'store.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT rowid, -bm25(clip_text, 1.0, 0.5) AS r FROM clip_text WHERE clip_text MATCH ? "
                            "ORDER BY r DESC, rowid LIMIT ?", (" OR ".join(f'"{w}"' for w in words), k)).fetchall()


def test_keyword_is_fts5_bm25_of_the_whole_query(tmp_path):
    _index(tmp_path / "lib", tmp_path / "store", CAPTIONS)
    with Store.open(tmp_path / "store") as store:
        for k in (1, 3, 50):
            for q in QUERIES:
                assert store.keyword(q, k) == _fts(tmp_path / "store", q, k), (q, k)
                assert store.keyword(q, k) == _fts(tmp_path / "store", q, k), (q, k)  # from the kept postings
        assert store.keyword("red fox", 50)[0][1] > store.keyword("fox", 50)[0][1] > 0
        assert store.keyword("nothing here", 5) == []


def test_a_commit_is_seen_by_the_next_query(tmp_path):
    model = _index(tmp_path / "lib", tmp_path / "store", CAPTIONS)
    with Store.open(tmp_path / "store") as reader:
        before = reader.keyword("fox bird", 50)
        more = {"red": "a fox, a fox and a bird", "blue": "no animals at all"}  # new videos: new rows
        _index(tmp_path / "lib2", tmp_path / "store", more, model, seconds=3.0)
        after = reader.keyword("fox bird", 50)  # no refresh: the commit generation moved, the postings follow
        assert after == _fts(tmp_path / "store", "fox bird", 50)
        assert {c for c, _ in before} < {c for c, _ in after}
        now = dict(after)
        assert all(now[c] != s for c, s in before)  # one more match changes every row's IDF
        _index(tmp_path / "lib3", tmp_path / "store", {"green": "a bird"}, model)  # a copy: its row gains a caption
        assert reader.keyword("fox bird", 50) == _fts(tmp_path / "store", "fox bird", 50) != after


def test_postings_stay_within_their_budget(tmp_path):
    _index(tmp_path / "lib", tmp_path / "store", CAPTIONS)
    with Store.open(tmp_path / "store") as store:
        small = WordPostings(store.db.word_sql(), budget=4)
        for q in QUERIES:
            with store.engine.connect() as conn:
                assert small.top(conn, keyword_words(q), 50) == _fts(tmp_path / "store", q, 50), q
            assert small._held <= 4
        assert small._words  # the rarest words still fit
