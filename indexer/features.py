"""Frame features kept in the store at index time, so that training on the store's captions and adding a model
to the store later never decode the videos again.

Each indexed video's sampled-frame features go to ``features/<hh>/<content hash>-<salt>.npz`` inside the store,
in the trainer's feature-cache format (trainer.features: frame times, float16 features, duration). The salt is
the frame encoder's spec plus the settings that decide which frames are sampled and how (fps, size, square),
so features made by another encoder, or at another rate, are never read for a model that needs different ones.
Clip length and stride are not part of it: any clip cut can be taken from the same frames.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FEATURE_DIR = "features"


def frame_salt(encoder_spec: str, sampling) -> str:
    """What the kept features depend on: the frame encoder and the frame sampling (not the clip cut)."""
    settings = {"encoder": encoder_spec, "fps": float(sampling.fps), "size": int(sampling.size),
                "square": bool(sampling.square)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def encoder_spec(model) -> str | None:
    """The frame-encoder spec of a model or encoder bundle, or None when it does not name one."""
    spec = getattr(getattr(model, "frame_encoder", None), "spec", None)
    return spec if isinstance(spec, str) and spec else None


class FeatureShelf:
    """The store's kept frame features for one (frame encoder, frame sampling) pair, by content hash."""

    def __init__(self, store_dir, spec: str, sampling):
        from trainer.features import FeatureCache

        self.dir = Path(store_dir) / FEATURE_DIR
        self.spec = spec
        self.salt = frame_salt(spec, sampling)
        self._cache = FeatureCache(self.dir, spec, sampling)  # its get/put: the file format, atomic writes

    def key(self, content_hash: str) -> str:
        return f"{content_hash[:32]}-{self.salt}"

    def get(self, content_hash: str):
        """The video's kept features (trainer.features.VideoFeatures), or None."""
        try:
            return self._cache.get(self.key(content_hash))
        except (OSError, ValueError, KeyError):  # a torn or foreign file is a miss, never a failure
            return None

    def has(self, content_hash: str) -> bool:
        return (self.dir / self.key(content_hash)[:2] / f"{self.key(content_hash)}.npz").is_file()

    def keep(self, content_hash: str | None, clips: list, duration: float | None) -> None:
        """Write a video's frame features, gathered from its clips' (frame_times, features), each frame once
        (overlapping clip windows share frames); the clips let go of them."""
        from trainer.features import VideoFeatures

        parts = [(c.frame_times, c.features) for c in clips if getattr(c, "features", None) is not None]
        for c in clips:
            c.frame_times = c.features = None
        if content_hash is None or not parts:
            return
        times = np.concatenate([t for t, _ in parts]).astype(np.float64)
        feats = np.concatenate([f for _, f in parts])
        times, first = np.unique(times, return_index=True)
        self._cache.put(self.key(content_hash), VideoFeatures(times, feats[first], float(duration or 0.0)))


def drop_unused(store_dir, writer) -> int:
    """Delete kept features of content the store no longer holds (after videos were removed); returns how
    many files went. Runs under the writer's lock, so no index run is writing features meanwhile."""
    from sqlalchemy import select

    from .schema import Video

    folder = Path(store_dir) / FEATURE_DIR
    if not folder.is_dir():
        return 0
    with writer.Session() as s:
        live = {h[:32] for h in s.scalars(select(Video.hash).where(Video.hash.is_not(None)))}
    gone = 0
    for path in folder.glob("*/*.npz"):
        if path.name.split("-")[0] not in live:
            path.unlink(missing_ok=True)
            gone += 1
    return gone
