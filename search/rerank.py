"""Second-stage re-ranking: re-score first-stage candidates with the model's text-clip alignment head."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np


class FeatureCache:
    """Frame features of indexed clips, decoded from their videos on demand and kept in a bounded LRU.

    Re-ranking needs each candidate clip's frames. Only the clip's own window of its video is decoded (the frames
    the indexer sampled there), so the work per candidate is one clip's whatever the length of its video, and
    the features are kept for later queries.
    """

    def __init__(self, model, sampling, capacity: int = 4096, timeout: float = 30.0):
        self.model = model
        self.sampling = sampling    # as the indexer sampled the clips, so decoded windows line up with stored ones
        self.capacity = capacity
        self.timeout = timeout
        self._clips: OrderedDict[tuple[str, float], np.ndarray | None] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cached feature (the store changed, so files may have too)."""
        with self._lock:
            self._clips.clear()

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
        """(T, F) frame features for each hit's clip, None where its window could not be decoded."""
        keys = [(h.video_path, round(float(h.start), 6)) for h in hits]
        with self._lock:
            known = {k: self._clips[k] for k in keys if k in self._clips}
            for k in known:
                self._clips.move_to_end(k)
        todo = {k: h for k, h in zip(keys, hits) if k not in known}
        if todo:
            known.update(self._load(list(todo.values())))
            for k in todo:
                self._put(k, known[k])
        return [known[k] for k in keys]

    def _load(self, hits: list) -> dict[tuple[str, float], np.ndarray | None]:
        """Decode each hit's window, then encode all their frames in one batch (one call costs far less than many)."""
        from trainer.media import MediaError, decode_window
        windows = {}
        for h in hits:
            key = (h.video_path, round(float(h.start), 6))
            try:
                # Through the shared decoder processes, which stay warm between calls.
                frames = decode_window(h.video_path, self.sampling, float(h.start), float(h.end),
                                       timeout=self.timeout).frames
            except MediaError:
                frames = None
            windows[key] = frames if frames is not None and len(frames) else None
        stacks = [f for f in windows.values() if f is not None]
        if not stacks:
            return windows
        feats = np.asarray(self.model.encode_frames(np.concatenate(stacks)))
        bounds = np.cumsum([0] + [len(f) for f in stacks])
        parts = iter(feats[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))
        return {k: (None if f is None else next(parts)) for k, f in windows.items()}

    def _put(self, key: tuple[str, float], feats: np.ndarray | None) -> None:
        with self._lock:
            self._clips[key] = feats
            self._clips.move_to_end(key)
            while len(self._clips) > self.capacity:
                self._clips.popitem(last=False)
