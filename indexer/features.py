"""Frame features kept in the store at index time, so that training on the store's captions and adding a model
to the store later never decode the videos again.

Each indexed video's sampled-frame features go to one row of ``features/features.sqlite`` inside the store: frame
times, float16 features and duration, keyed by ``<content hash>-<salt>``. The salt is the frame encoder's spec
plus the settings that decide which frames are sampled and how (fps, size, square), so features made by another
encoder, or at another rate, are never read for a model that needs different ones. Clip length and stride are not
part of it: any clip cut can be taken from the same frames.

One database rather than a file per video: creating a file (and its hashed folder) cost up to a millisecond of
kernel time per video on some file systems, as much as the rest of writing a short video's rows. Rows are written
in the index run's transactions, committed just before the store's own (`commit`), so a crash leaves at worst
features of videos the store does not hold, which `drop_unused` removes. Stores written before keep a file per
video (``features/<hh>/<key>.npz``, trainer.features' format), which is still read.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

FEATURE_DIR = "features"
SHELF_FILE = "features.sqlite"
_SCHEMA = ("CREATE TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY, times BLOB NOT NULL, features BLOB NOT NULL, "
           "width INTEGER NOT NULL, duration REAL NOT NULL)")


def frame_salt(encoder_spec: str, sampling) -> str:
    """What the kept features depend on: the frame encoder and the frame sampling (not the clip cut)."""
    settings = {"encoder": encoder_spec, "fps": float(sampling.fps), "size": int(sampling.size),
                "square": bool(sampling.square)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def encoder_spec(model) -> str | None:
    """The frame-encoder spec of a model or encoder bundle, or None when it does not name one."""
    spec = getattr(getattr(model, "frame_encoder", None), "spec", None)
    return spec if isinstance(spec, str) and spec else None


def _connect(folder: Path, create: bool) -> sqlite3.Connection | None:
    """The store's feature database (made when `create`), or None where there is none yet."""
    path = folder / SHELF_FILE
    if not create and not path.is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
    # Readers never wait for an index run, whose transaction may outgrow SQLite's page cache and lock the file
    # until the store commits; among them a reindex's own reads of the features it rebuilds from. A write-ahead
    # log works among the processes of one machine only (README, "Scale-out").
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    db.commit()
    return db


class FeatureShelf:
    """The store's kept frame features for one (frame encoder, frame sampling) pair, by content hash. Safe to
    use from several threads; `keep` writes in an open transaction that `commit` ends."""

    def __init__(self, store_dir, spec: str, sampling):
        from trainer.features import FeatureCache

        self.dir = Path(store_dir) / FEATURE_DIR
        self.spec = spec
        self.salt = frame_salt(spec, sampling)
        self._files = FeatureCache(self.dir, spec, sampling)  # a store written before: a file per video
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Sent along with the encode settings to a Ray actor, which only learns from it that features are
        # kept (the driver writes them): the copy opens the database itself if it ever reads one.
        return {**self.__dict__, "_db": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def key(self, content_hash: str) -> str:
        return f"{content_hash[:32]}-{self.salt}"

    def _database(self, create: bool) -> sqlite3.Connection | None:
        if self._db is None:
            self._db = _connect(self.dir, create)
        return self._db

    def get(self, content_hash: str):
        """The video's kept features (trainer.features.VideoFeatures), or None."""
        from trainer.features import VideoFeatures

        with self._lock:
            db = self._database(create=False)
            row = db.execute("SELECT times, features, width, duration FROM kept WHERE key = ?",
                             (self.key(content_hash),)).fetchone() if db is not None else None
        if row is not None:
            times = np.frombuffer(row[0], np.float64)
            feats = np.frombuffer(row[1], np.float16).reshape(len(times), int(row[2])).astype(np.float32)
            return VideoFeatures(times.copy(), feats, float(row[3]))
        try:
            return self._files.get(self.key(content_hash))
        except (OSError, ValueError, KeyError):  # a torn or foreign file is a miss, never a failure
            return None

    def has(self, content_hash: str) -> bool:
        key = self.key(content_hash)
        with self._lock:
            db = self._database(create=False)
            if db is not None and db.execute("SELECT 1 FROM kept WHERE key = ?", (key,)).fetchone():
                return True
        return (self.dir / key[:2] / f"{key}.npz").is_file()

    def keep(self, content_hash: str | None, clips: list, duration: float | None) -> None:
        """Write a video's frame features, gathered from its clips' (frame_times, features), each frame once
        (overlapping clip windows share frames); the clips let go of them."""
        parts = [(c.frame_times, c.features) for c in clips if getattr(c, "features", None) is not None]
        for c in clips:
            c.frame_times = c.features = None
        if content_hash is None or not parts:
            return
        times = np.concatenate([t for t, _ in parts]).astype(np.float64)
        feats = np.concatenate([f for _, f in parts])
        times, first = np.unique(times, return_index=True)
        feats = np.ascontiguousarray(feats[first], dtype=np.float16)
        with self._lock:
            self._database(create=True).execute(
                "INSERT OR REPLACE INTO kept (key, times, features, width, duration) VALUES (?, ?, ?, ?, ?)",
                (self.key(content_hash), times.tobytes(), feats.tobytes(), feats.shape[1], float(duration or 0.0)))

    def commit(self) -> None:
        """End the transaction `keep` opened: called just before the store commits the same videos."""
        with self._lock:
            if self._db is not None:
                self._db.commit()

    def close(self, commit: bool = True) -> None:
        """Commit (or, after a failed run, roll back) what `keep` wrote, and let go of the database (its
        write-ahead log folds back into it)."""
        with self._lock:
            if self._db is not None:
                if commit:
                    self._db.commit()
                else:
                    self._db.rollback()
                self._db.close()
                self._db = None


def drop_unused(store_dir, writer) -> int:
    """Delete kept features of content the store no longer holds (after videos were removed); returns how
    many videos' features went. Runs under the writer's lock, so no index run is writing features meanwhile."""
    from sqlalchemy import select

    from .schema import Video

    folder = Path(store_dir) / FEATURE_DIR
    if not folder.is_dir():
        return 0
    with writer.Session() as s:
        live = {h[:32] for h in s.scalars(select(Video.hash).where(Video.hash.is_not(None)))}
    gone = 0
    db = _connect(folder, create=False)
    if db is not None:
        try:
            dead = [(k,) for (k,) in db.execute("SELECT key FROM kept") if k.split("-")[0] not in live]
            db.executemany("DELETE FROM kept WHERE key = ?", dead)
            db.commit()
            gone += len(dead)
        finally:
            db.close()
    for path in folder.glob("*/*.npz"):
        if path.name.split("-")[0] not in live:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def kept_keys(store_dir) -> list[str]:
    """The keys of every video whose features the store keeps (its content hash, then the salt), sorted."""
    folder = Path(store_dir) / FEATURE_DIR
    keys = [p.stem for p in folder.glob("*/*.npz")]
    db = _connect(folder, create=False)
    if db is not None:
        try:
            keys += [k for (k,) in db.execute("SELECT key FROM kept")]
        finally:
            db.close()
    return sorted(keys)
