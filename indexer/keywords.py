"""Keyword search on SQLite from per-word BM25 postings, read once per word and commit, summed per query.

FTS5's bm25() of an OR query is a sum over the query's phrases. Each phrase's term depends only on that
phrase's own IDF (how many rows match it), the table's average row length, and the row's length and
frequencies. So for every row, the score of `"a" OR "b"` is the score of `"a"` plus that of `"b"`, added in
that order: the same double. A word's scores over all the rows it matches (its postings) are read once for
the store's commit generation and kept, and a query then adds arrays instead of calling bm25() once per
matching row. That call costs about 0.6 us a row: 4 ms for the four common words of "red circle moves left"
over 10,000 clips.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from sqlalchemy import select

from .schema import Meta

_GENERATION = select(Meta.value).where(Meta.key == "generation")
BUDGET = 2_000_000  # postings kept at most, over all words (16 bytes each)


class WordPostings:
    """Each word's (row ids, BM25 scores) for the commit generation they were read at, least recently used
    words dropped first. `word_sql` selects (rowid, score) of the rows matching `:q`, one quoted word."""

    def __init__(self, word_sql, budget: int = BUDGET):
        self.word_sql, self.budget = word_sql, int(budget)
        self._lock = threading.Lock()
        self._generation: str | None = None
        self._words: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._held = 0

    def top(self, conn, words: list[str], k: int) -> list[tuple[int, float]]:
        """The k best (row id, score) of the OR of `words` (distinct, lower case), best first, ties by row id.
        `conn` is a connection inside one read transaction, so the generation and every word read agree."""
        generation = conn.execute(_GENERATION).scalar()
        parts = [self._postings(conn, generation, w) for w in words]
        if len(parts) == 1:
            ids, scores = parts[0]
        else:  # np.bincount adds each row's scores in array order, which is word order: FTS5's own order
            ids, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
            scores = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]), minlength=len(ids))
        return _best(ids, scores, k)

    def _postings(self, conn, generation: str | None, word: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if generation != self._generation:  # a commit since (or another database): nothing kept holds
                self._words.clear()
                self._generation, self._held = generation, 0
            hit = self._words.get(word)
            if hit is not None:
                self._words.move_to_end(word)
                return hit
        rows = conn.execute(self.word_sql, {"q": f'"{word}"'}).all()  # quoted: no word is FTS5 syntax
        table = np.array(rows, dtype=np.float64).reshape(-1, 2)
        found = (table[:, 0].astype(np.int64), table[:, 1].copy())
        with self._lock:
            if generation is not None and generation == self._generation and len(rows) <= self.budget \
                    and word not in self._words:
                self._words[word] = found
                self._held += len(rows)
                while self._held > self.budget:
                    _, (old, _) = self._words.popitem(last=False)
                    self._held -= len(old)
        return found


def _best(ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k highest scores with their ids, ties broken by the lower id."""
    if len(scores) > k:  # keep every score tied with the k-th, so the sort below breaks those ties by id
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return list(zip(ids[order].tolist(), scores[order].tolist()))
