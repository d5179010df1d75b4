"""Second-stage re-ranking: re-score first-stage candidates with the model's text-clip alignment head."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np


class FeatureCache:
    """Frame features of indexed clips, decoded from their videos on demand and kept in a bounded LRU.

    Re-ranking needs each candidate clip's frames. Decoding is by far the slowest step, so a video is decoded once,
    all of its clips are encoded, and the features are kept for later queries.
    """

    def __init__(self, model, sampling, capacity: int = 4096, timeout: float = 120.0):
        self.model = model
        self.sampling = sampling    # as the indexer cut the clips, so cached clips line up with stored ones
        self.capacity = capacity
        self.timeout = timeout
        self._videos: OrderedDict[str, list[tuple[float, float, np.ndarray]]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cached feature (the store changed, so files may have too)."""
        with self._lock:
            self._videos.clear()
            self._size = 0

    def rerank(self, query: str, hits: list) -> list:
        """Hits re-scored by alignment probability, best first; clips whose video cannot be decoded go last, score 0."""
        if not hits:
            return []
        feats = self.features(hits)
        usable = [i for i, f in enumerate(feats) if f is not None and len(f)]
        rescored = []
        if usable:
            probs = self.model.match([query] * len(usable), [feats[i] for i in usable], features=True)
            rescored = [replace(hits[i], score=float(p)) for i, p in zip(usable, np.asarray(probs).ravel())]
            rescored.sort(key=lambda h: -h.score)   # stable: equal probabilities keep first-stage order
        chosen = set(usable)
        rest = [replace(h, score=0.0) for i, h in enumerate(hits) if i not in chosen]
        return rescored + rest

    def features(self, hits: list) -> list[np.ndarray | None]:
        """(T, F) frame features for each hit's clip, None where its video could not be decoded."""
        missing = [p for p in dict.fromkeys(h.video_path for h in hits) if not self._has(p)]
        if missing:
            self._load(missing)
        return [self._lookup(h.video_path, h.start) for h in hits]

    def _has(self, path: str) -> bool:
        with self._lock:
            if path in self._videos:
                self._videos.move_to_end(path)
                return True
            return False

    def _lookup(self, path: str, start: float) -> np.ndarray | None:
        with self._lock:
            clips = self._videos.get(path)
        if not clips:
            return None
        # Index and query cut clips with the same rule; nearest start guards against float rounding in storage.
        return min(clips, key=lambda c: abs(c[0] - start))[2]

    def _load(self, paths: list[str]) -> None:
        from trainer.media import MediaError, decode

        from .engine import clip_features
        # One video at a time through the shared decoder processes: they stay warm between calls, which
        # matters more for a handful of short candidate videos than decoding several at once.
        for path in paths:
            try:
                decoded = decode(path, self.sampling, timeout=self.timeout)
            except MediaError:
                self._put(path, [])
                continue
            self._put(path, clip_features(self.model, decoded, self.sampling))

    def _put(self, path: str, clips: list) -> None:
        with self._lock:
            old = self._videos.pop(path, None)
            self._size -= len(old) if old else 0
            self._videos[path] = clips
            self._size += len(clips)
            while self._size > self.capacity and len(self._videos) > 1:
                _, evicted = self._videos.popitem(last=False)
                self._size -= len(evicted)
