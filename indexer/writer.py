"""Write side of a store: `StoreWriter` creates or opens it under a lock and records videos, clips and captions."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, insert, select, text, update

from .config import (
    CAPTION_INDEX_FILE,
    CLIP_INDEX_FILE,
    CONFIG_FILE,
    DB_FILE,
    LOOK_INDEX_FILE,
    THUMB_DIR,
    StoreConfig,
    StoreError,
)
from .crash import crash_point
from .db import Database, WriterLock, locate
from .faiss_index import VectorIndex, check_index_type, plan, should_rebuild, train_size
from .schema import (
    FAILED,
    INDEXED,
    PENDING,
    REMOVALS_KEY,
    Caption,
    Clip,
    Meta,
    Thumbnail,
    Video,
    VideoPath,
    create_schema,
    migrate,
    utcnow,
)
from .store import Store, _Kind, bytes_vector, chunks, vector_bytes

# Settings that change what the vectors mean: a store keeps them for life unless rebuilt with --reindex.
FIXED = ("model_hash", "dim", "fps", "size", "square", "clip_seconds", "stride_seconds", "frame_encoder",
         "look_dim", "concept_classes")


@dataclass
class FileState:
    """What the skip check compares: a file's size and mtime, and its content hash once computed."""

    path: str
    size: int
    mtime: float
    hash: str | None = None


@dataclass
class ClipData:
    start: float
    end: float
    vector: np.ndarray | None  # (dim,) float32, L2-normalised; None in a store without a model
    tags: list[tuple[str, float]] = field(default_factory=list)
    thumbnail: bytes | None = None  # JPEG
    look: np.ndarray | None = None  # (look_dim,) float32, L2-normalised pooled frame features
    concepts: list[tuple[int, float]] = field(default_factory=list)  # (class index, probability), best first
    tag_text: str = ""  # what keyword search matches of its tags; empty: the tag labels themselves
    # The clip's sampled frames' times (T,) and features (T, F) float16, held until the video's features are
    # kept in the store (indexer.features); never written to SQLite.
    frame_times: np.ndarray | None = None
    features: np.ndarray | None = None
    description: str | None = None  # written by the model's caption decoder; stored as a "generated" caption
    # (T, F) float32 frame features waiting for the caption decoder, which describes the clips of several
    # videos in one call (indexer.encode.VideoAssembler); never written.
    undescribed: np.ndarray | None = None


@dataclass
class CaptionData:
    text: str
    start: float | None
    end: float | None
    vector: np.ndarray | None  # None in a store without a model
    clip: int | None  # index into the video's clips, None for a caption of the whole video
    source: str = "manifest"
    lang: str | None = None  # language of an embedded subtitle stream


def _wipe(db: Database) -> None:
    """Delete a store's rows and files (not the directory, not the lock) for --reindex."""
    db.wipe()
    for name in (CLIP_INDEX_FILE, CAPTION_INDEX_FILE, LOOK_INDEX_FILE, CONFIG_FILE):
        (db.store_dir / name).unlink(missing_ok=True)
    shutil.rmtree(db.store_dir / THUMB_DIR, ignore_errors=True)


def _init_db(db: Database, config: StoreConfig) -> None:
    """Create the schema and the meta rows in one transaction: a store either has both or neither."""
    config.db, config.db_schema = db.url, db.schema
    engine = db.engine(readonly=False)
    try:
        create_schema(engine, meta=[{"key": "config", "value": config.to_json()},
                                    {"key": "generation", "value": "0"}, {"key": REMOVALS_KEY, "value": "0"}])
    finally:
        engine.dispose()
    config.save(db.store_dir)


def _migrate(db: Database) -> None:
    """Bring an older store's tables up to this format (new columns, NULL in old rows)."""
    engine = db.engine(readonly=False)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def _blob(v) -> bytes | None:
    return None if v is None else vector_bytes(v)


def _mismatch(old: StoreConfig, new: StoreConfig) -> list[str]:
    return [f"{k}: store has {getattr(old, k)!r}, asked for {getattr(new, k)!r}"
            for k in FIXED if getattr(old, k) != getattr(new, k)]


class StoreWriter(Store):
    """The one writer of a store: batched transactions, FAISS files rewritten atomically after commits.

    Rows and their vectors (as blobs) go into SQLite in one transaction; only after it commits are the
    vectors added to the in-memory FAISS indexes, which are written to disk at most every
    `flush_seconds` and on close. A crash at any point therefore loses at most uncommitted work, and the
    next open repairs the FAISS files from SQLite.
    """

    flush_seconds = 30.0  # least time between FAISS file writes during a run...
    small_index = 20_000  # ...unless the indexes are this small, then they are written at every commit

    def __init__(self, store_dir, writer_lock: WriterLock):
        self._writer_lock = writer_lock
        self._clear_tx()
        self._dirty = False
        self._touched = False  # the open transaction has changes
        self._last_flush = time.monotonic()
        super().__init__(store_dir, readonly=False)
        self.session = self.Session()
        self._repair()

    # ---- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, store_dir) -> StoreWriter:
        """Open an existing store for writing."""
        store_dir = Path(store_dir)
        db = locate(store_dir)
        if not db.exists():
            raise StoreError(f"{store_dir}: no store here (missing {DB_FILE})")
        lock = db.lock()
        try:
            _migrate(db)
            return cls(store_dir, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def create_or_open(cls, store_dir, config: StoreConfig, reindex: bool = False,
                       db: str | None = None) -> StoreWriter:
        """Open `store_dir` for writing, creating it from `config` if new.

        An existing store must have been made by the same model (content hash) with the same sampling;
        otherwise this raises StoreError, unless `reindex`, which deletes its contents and starts over.
        A new store keeps its rows in `db` (a PostgreSQL URL; "" for SQLite; None reads VIDSEARCH_DB).
        """
        store_dir = Path(store_dir)
        store_dir.mkdir(parents=True, exist_ok=True)
        config.index_type = check_index_type(config.index_type, max(config.dim, config.look_dim, 1))
        database = locate(store_dir, db, create=True)
        lock = database.lock()
        try:
            if reindex or not database.initialised():
                _wipe(database)
                _init_db(database, config)
            else:
                _migrate(database)
            config.db, config.db_schema = database.url, database.schema
            writer = cls(store_dir, lock)  # from here on the writer owns the lock
        except BaseException:
            lock.release()
            raise
        diffs = _mismatch(writer.config, config)
        if diffs:
            writer.abort()
            raise StoreError(f"{store_dir}: this store was built differently ({'; '.join(diffs)}); "
                             "use --reindex to rebuild it, or another --store")
        writer._update_config(config)
        return writer

    def _update_config(self, config: StoreConfig) -> None:
        """Take the settings that may change between runs (index type, path of the same model, search knobs)."""
        if config == self.config:
            return
        self.session.merge(Meta(key="config", value=config.to_json()))
        self.session.commit()
        self.config = config
        config.save(self.dir)

    def _repair(self) -> None:
        """Persist what opening reconciled: lost vectors mark their videos pending, FAISS files are rewritten."""
        changed = False
        for name, kind in self._kinds.items():
            if kind.lost:
                owner = Clip.video_id if name == "clips" else Caption.video_id
                vids = set()
                for part in chunks(kind.lost):
                    vids.update(self.session.scalars(select(owner).where(kind.model.id.in_(part))))
                self.session.execute(update(Video).where(Video.id.in_(vids)).values(status=PENDING))
                kind.lost = []
                changed = True
            if kind.index is not None and kind.unremoved and not getattr(kind.index, "ondisk", False):
                kind.index.stale = True
        if changed:
            self._bump()
            self.session.commit()
        self._remove_orphan_thumbs()
        if any(k.index is not None and (k.changed or k.index.stale) for k in self._kinds.values()):
            self._dirty = True
            self.flush(force=True)

    def _remove_orphan_thumbs(self) -> None:
        """Thumbnail files (of a store written before `Thumbnail`) whose clips are gone are deleted."""
        thumbs = self.dir / THUMB_DIR
        if not thumbs.is_dir():
            return
        names = {e.name: e.path for e in os.scandir(thumbs)}
        ids = {int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()}
        alive = set()
        for part in chunks(sorted(ids)):
            alive.update(self.session.scalars(select(Clip.id).where(Clip.id.in_(part))))
        for name, path in names.items():
            stem = name.split(".")[0]
            if not stem.isdigit() or int(stem) not in alive:
                os.unlink(path)

    def close(self) -> None:
        """Commit, write the FAISS files, release the lock."""
        try:
            if getattr(self, "session", None) is not None:
                self.commit()
                self.flush()
        finally:
            self._release()

    def abort(self) -> None:
        """Drop the open transaction and release the store without writing anything more."""
        if getattr(self, "session", None) is not None:
            self.rollback()
        self._release()

    def _release(self) -> None:
        """Close the session and the read side, then give up the writer lock."""
        if getattr(self, "session", None) is not None:
            self.session.close()
            self.session = None
        super().close()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    # ---- lookups -----------------------------------------------------------------------------------

    # lookup and find_content(committed=True) use their own connection, so another thread may call them
    # while the writer's transaction is open; they see committed rows only.

    def lookup(self, path: str) -> tuple[int, str, int | None, float | None, str | None] | None:
        """(video_id, status, size, mtime, hash) committed for `path`, or None if the path is new."""
        q = (select(Video.id, Video.status, VideoPath.size, VideoPath.mtime, Video.hash)
             .join(VideoPath, VideoPath.video_id == Video.id).where(VideoPath.path == path))
        with self.Session() as s:
            row = s.execute(q).first()
        return tuple(row) if row else None

    def find_content(self, content_hash: str | None, committed: bool = False) -> int | None:
        """The indexed video with this content hash, if any (in the open transaction unless `committed`)."""
        if content_hash is None:
            return None
        q = select(Video.id).where(Video.hash == content_hash, Video.status == INDEXED)
        if committed:
            with self.Session() as s:
                return s.scalar(q)
        return self.session.scalar(q)

    def pending_paths(self) -> list[str]:
        """Paths of videos whose vectors were lost; an index run embeds them again."""
        return list(self.session.scalars(select(Video.path).where(Video.status == PENDING).order_by(Video.id)))

    def all_paths(self) -> list[str]:
        return list(self.session.scalars(select(VideoPath.path).order_by(VideoPath.id)))

    def video_of(self, path: str) -> int | None:
        """The video `path` belongs to, in the open transaction."""
        return self.session.scalar(select(VideoPath.video_id).where(VideoPath.path == path))

    def video_path(self, video_id: int) -> str | None:
        return self.session.scalar(select(Video.path).where(Video.id == video_id))

    def caption_keys(self, video_id: int | None) -> set[tuple[str, float | None, float | None]]:
        """(text, start, end) of a video's committed captions, to tell whether a manifest brings new ones."""
        if video_id is None:
            return set()
        with self.Session() as s:
            rows = s.execute(select(Caption.text, Caption.start, Caption.end).where(Caption.video_id == video_id))
            return {tuple(r) for r in rows}

    # ---- writing (inside the open transaction) -----------------------------------------------------

    def detach(self, path: str) -> bool:
        """Forget `path`; its video goes too when no other path holds it. True if the path was known."""
        self._touched = True
        row = self.session.execute(select(VideoPath.id, VideoPath.video_id).where(VideoPath.path == path)).first()
        if row is None:
            return False
        pid, vid = row
        self.session.execute(delete(VideoPath).where(VideoPath.id == pid))
        other = self.session.scalar(select(VideoPath.path).where(VideoPath.video_id == vid).order_by(VideoPath.id))
        if other is not None:
            self.session.execute(update(Video).where(Video.id == vid, Video.path == path).values(path=other))
            return True
        clips = self.session.execute(select(Clip.id, Clip.thumbnail).where(Clip.video_id == vid)).all()
        clip_ids = [i for i, _ in clips]
        cap_ids = list(self.session.scalars(select(Caption.id).where(Caption.video_id == vid)))
        # Clips, captions, thumbnails and FTS rows go by ON DELETE CASCADE and the clip_text trigger.
        self.session.execute(delete(Video).where(Video.id == vid))
        self._tx_remove["clips"] += clip_ids
        self._tx_remove["looks"] += clip_ids
        self._tx_remove["captions"] += cap_ids
        # A store written before names a file per clip, always thumbs/<id>.jpg; the row's text is not followed.
        self._tx_thumbs += [self.dir / THUMB_DIR / f"{i}.jpg" for i, rel in clips if rel]
        return True

    def add_failure(self, state: FileState | str, reason: str) -> int:
        """Record a file that could not be indexed: a `failed` video row with the reason."""
        self._touched = True
        if isinstance(state, str):
            state = FileState(state, None, None)
        self.detach(state.path)
        video = Video(path=state.path, size=state.size, mtime=state.mtime, hash=state.hash, status=FAILED,
                      error=reason, indexed_at=utcnow())
        video.paths.append(VideoPath(path=state.path, size=state.size, mtime=state.mtime))
        self.session.add(video)
        self.session.flush()
        return video.id

    def add_alias(self, state: FileState, video_id: int) -> None:
        """Record `state.path` as one more path of an indexed video with the same content."""
        self._touched = True
        self.detach(state.path)
        self.session.add(VideoPath(video_id=video_id, path=state.path, size=state.size, mtime=state.mtime))
        self.session.flush()

    def touch(self, state: FileState) -> None:
        """Same content under a new mtime: update the recorded size and mtime only."""
        self._touched = True
        self.session.execute(update(VideoPath).where(VideoPath.path == state.path)
                             .values(size=state.size, mtime=state.mtime))
        self.session.execute(update(Video).where(Video.path == state.path)
                             .values(size=state.size, mtime=state.mtime))

    def add_video(self, state: FileState, info, clips: list[ClipData], captions: list[CaptionData]) -> int:
        """Record an indexed video with its clips (vectors, tags, thumbnails) and captions; returns its id."""
        self.detach(state.path)
        # Bulk inserts that return the new ids in the order given: the ORM's unit of work (objects, identity map,
        # one flush per table) cost more than everything else a short video's write does.
        vid = self.session.scalar(insert(Video).returning(Video.id), [dict(
            path=state.path, size=state.size, mtime=state.mtime, hash=state.hash, status=INDEXED,
            duration=info.duration, fps=info.fps, width=info.width, height=info.height, codec=info.codec,
            indexed_at=utcnow())])
        self.session.execute(insert(VideoPath), [dict(video_id=vid, path=state.path, size=state.size,
                                                      mtime=state.mtime)])
        self._absorb_pending(vid, state.hash)
        clip_ids = self._insert_ids(Clip, [dict(
            video_id=vid, start=float(c.start), end=float(c.end), vector=_blob(c.vector), look=_blob(c.look),
            tags=json.dumps([[t, round(float(p), 4)] for t, p in c.tags]),
            concepts=json.dumps([[int(k), round(float(p), 5)] for k, p in c.concepts]) if c.concepts else None)
            for c in clips])
        thumbs = [dict(clip_id=i, jpeg=c.thumbnail) for i, c in zip(clip_ids, clips) if c.thumbnail is not None]
        if thumbs:
            self.session.execute(insert(Thumbnail), thumbs)
        cap_ids = self._insert_ids(Caption, [dict(
            video_id=vid, clip_id=clip_ids[c.clip] if c.clip is not None else None, start=c.start, end=c.end,
            text=c.text, source=c.source, lang=c.lang, vector=_blob(c.vector)) for c in captions])
        self._add_fts(clip_ids, clips, captions)
        self._queue_vectors("clips", clip_ids, [c.vector for c in clips])
        self._queue_vectors("captions", cap_ids, [c.vector for c in captions])
        self._queue_vectors("looks", clip_ids, [c.look for c in clips])
        crash_point("video-written")
        return vid

    def _insert_ids(self, model, rows: list[dict]) -> list[int]:
        """Insert `rows` into `model`'s table in one statement; their new ids, in the order of `rows`."""
        if not rows:
            return []
        return list(self.session.scalars(insert(model).returning(model.id, sort_by_parameter_order=True), rows))

    def add_captions(self, video_id: int, captions: list[CaptionData]) -> int:
        """Add captions (of the same content) to an indexed video, skipping ones it has; returns how many."""
        self._touched = True
        have = {tuple(r) for r in self.session.execute(
            select(Caption.text, Caption.start, Caption.end).where(Caption.video_id == video_id))}
        new = [c for c in captions if (c.text, c.start, c.end) not in have]
        if not new:
            return 0
        clip_ids = list(self.session.scalars(select(Clip.id).where(Clip.video_id == video_id).order_by(Clip.start)))
        rows = [Caption(video_id=video_id, start=c.start, end=c.end, text=c.text, source=c.source,
                        lang=c.lang, vector=_blob(c.vector),
                        clip_id=clip_ids[c.clip] if c.clip is not None and c.clip < len(clip_ids) else None)
                for c in new]
        self.session.add_all(rows)
        self.session.flush()
        for row in rows:
            target = row.clip_id or (clip_ids[0] if clip_ids else None)
            if target is not None:
                self.session.execute(text("UPDATE clip_text SET captions = captions || :nl || :t "
                                          "WHERE rowid = :id"), {"nl": "\n", "t": row.text, "id": target})
        self._queue_vectors("captions", [r.id for r in rows], [c.vector for c in new])
        return len(rows)

    def _queue_vectors(self, kind: str, ids: list[int], vectors: list) -> None:
        """Vectors to add to FAISS once the transaction commits (only those given, for kinds the store keeps)."""
        pairs = [(i, v) for i, v in zip(ids, vectors) if v is not None]
        if pairs and self._kinds[kind].active:
            self._tx_add[kind].append(([i for i, _ in pairs], [v for _, v in pairs]))

    def _absorb_pending(self, video_id: int, content_hash: str | None) -> None:
        """A pending video of the same content (embedded again now) hands its other paths over and goes."""
        if content_hash is None:
            return
        old = list(self.session.scalars(select(Video.id).where(Video.hash == content_hash, Video.status == PENDING)))
        for vid in old:
            self.session.execute(update(VideoPath).where(VideoPath.video_id == vid).values(video_id=video_id))
            gone = list(self.session.scalars(select(Clip.id).where(Clip.video_id == vid)))
            self._tx_remove["clips"] += gone
            self._tx_remove["looks"] += gone
            self._tx_remove["captions"] += list(self.session.scalars(select(Caption.id).where(Caption.video_id == vid)))
            self.session.execute(delete(Video).where(Video.id == vid))

    def _add_fts(self, clip_ids: list[int], clips: list[ClipData], captions: list[CaptionData]) -> None:
        """One FTS row per clip: its captions' text (untimed video captions go to the first clip) and its
        tags' text (the clip's `tag_text`, or else its tag labels)."""
        texts = [[] for _ in clip_ids]
        for c in captions:
            at = c.clip if c.clip is not None else 0
            if clip_ids:
                texts[at].append(c.text)
        params = [{"id": i, "c": "\n".join(t),
                   "t": clip.tag_text or " ".join(label for label, _ in clip.tags)}
                  for i, clip, t in zip(clip_ids, clips, texts)]
        if params:
            self.session.execute(text("INSERT INTO clip_text(rowid, captions, tags) VALUES (:id, :c, :t)"), params)

    # ---- giving a model-less store its model -------------------------------------------------------

    def rows_without_vectors(self, kind: str = "clips") -> list[int]:
        """Ids of the committed clips ("clips") or captions ("captions") that have no model vector yet."""
        model = {"clips": Clip, "captions": Caption}[kind]
        with self.Session() as s:
            return list(s.scalars(select(model.id).where(model.vector.is_(None)).order_by(model.id)))

    def add_model_vectors(self, config: StoreConfig, clip_vectors, caption_vectors=()) -> int:
        """Add a trained model's vectors to a store that has none yet, without re-decoding anything.

        `config` is the store's config with the model's identity and `dim` filled in (sampling unchanged);
        `clip_vectors` and `caption_vectors` are (row id, (dim,) float32 unit vector) pairs for existing
        rows, e.g. from `rows_without_vectors`. Writes them, records the model, builds clips.faiss and
        captions.faiss, commits; returns how many vectors were written. A clip left without a vector marks
        its video pending on the next open, so the next index run embeds it again.
        """
        if self.config.has_model:
            raise StoreError(f"{self.dir}: the store already has a model ({self.config.model_path}); "
                             "replace it with --reindex")
        if not config.has_model:
            raise StoreError("add_model_vectors needs a config that names a model (model_hash and dim)")
        diffs = [d for d in _mismatch(self.config, config) if not d.startswith(("model_hash", "dim"))]
        if diffs:
            raise StoreError(f"{self.dir}: the model samples differently from the store ({'; '.join(diffs)})")
        self._touched = True
        written = 0
        for name, model, pairs in (("clips", Clip, clip_vectors), ("captions", Caption, caption_vectors)):
            kind = self._kinds[name]
            kind.index, kind.active, kind.lost, kind.unremoved = VectorIndex.empty(config.dim), True, [], 0
            for part in chunks(pairs, 2000):
                for row_id, vec in part:
                    vec = np.asarray(vec, np.float32).reshape(-1)
                    if vec.shape != (config.dim,):
                        raise StoreError(f"{name} vector of row {row_id} has shape {vec.shape}, "
                                         f"expected ({config.dim},)")
                    self.session.execute(update(model).where(model.id == int(row_id)).values(vector=vector_bytes(vec)))
                self._tx_add[name].append(([int(i) for i, _ in part], [np.asarray(v, np.float32) for _, v in part]))
                written += len(part)
        self.session.merge(Meta(key="config", value=config.to_json()))
        self.config = config
        self.commit()
        config.save(self.dir)
        self.flush(force=True)
        return written

    # ---- commit and flush --------------------------------------------------------------------------

    def _bump(self) -> None:
        """Count this commit; and, if it deletes clips or captions, count it as a removal, so that readers
        check the ids their indexes return against the rows again."""
        keys = ["generation"] + ([REMOVALS_KEY] if any(self._tx_remove.values()) else [])
        for key in keys:
            self.session.execute(text("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
                                      "WHERE key = :key"), {"key": key})

    def commit(self) -> None:
        """Commit the open transaction, then apply its vector changes to the in-memory FAISS indexes."""
        if self.session is None:
            return
        if self._touched:
            self._bump()
        self.session.commit()
        self._touched = False
        crash_point("commit")
        with self._lock:
            for name, kind in self._kinds.items():
                if kind.index is None:
                    continue
                if self._tx_remove[name]:
                    kind.index.remove(self._tx_remove[name])
                for ids, vecs in self._tx_add[name]:
                    if ids:
                        kind.index.add(ids, np.stack(vecs))
                self._dirty = self._dirty or bool(self._tx_remove[name] or self._tx_add[name])
        for p in self._tx_thumbs:
            p.unlink(missing_ok=True)
        self._clear_tx()
        small = all(k.index.ntotal <= self.small_index for k in self._kinds.values() if k.index is not None)
        if small or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _clear_tx(self) -> None:
        self._tx_add = {"clips": [], "captions": [], "looks": []}
        self._tx_remove = {"clips": [], "captions": [], "looks": []}
        self._tx_thumbs = []  # thumbnail files (of a store written before) of deleted clips, removed once it commits

    def rollback(self) -> None:
        """Drop the open transaction's changes."""
        self.session.rollback()
        self._touched = False
        self._clear_tx()

    def flush(self, force: bool = False) -> None:
        """Write the FAISS files (rebuilding an index whose planned type changed or that went stale)."""
        if not (self._dirty or force):
            return
        for name, kind in self._kinds.items():
            if kind.index is None or getattr(kind.index, "ondisk", False):  # on disk: replaced by a new build
                continue
            n = kind.index.ntotal
            spec = plan(self.config.index_type, n, self._kind_dim(kind, self.config), self.config.auto_threshold)
            if kind.index.stale or should_rebuild(kind.index.spec, spec):
                kind.index = self._rebuild(kind, spec)
            kind.index.write(str(self.dir / kind.file))
            kind.changed = False
        self._dirty = False
        self._last_flush = time.monotonic()
        self._state = self._disk_state()

    def _rebuild(self, kind: _Kind, spec: str) -> VectorIndex:
        """A fresh index of type `spec` from the committed blobs (sampled for training when needed)."""
        sample = None
        want = train_size(spec)
        if want:
            q = text(f"SELECT {kind.column} FROM {kind.model.__tablename__} WHERE {kind.column} IS NOT NULL "
                     "ORDER BY random() LIMIT :n")
            blobs = self.session.execute(q, {"n": want}).scalars().all()
            sample = np.stack([bytes_vector(b) for b in blobs]) if blobs else None
        return VectorIndex.build(self._kind_dim(kind, self.config), spec, self._blob_chunks(kind), sample)

    def _blob_chunks(self, kind: _Kind, size: int = 20000):
        last, model = -1, kind.model
        while True:
            rows = self.session.execute(select(model.id, kind.blob).where(model.id > last,
                                        kind.blob.is_not(None)).order_by(model.id).limit(size)).all()
            if not rows:
                return
            yield np.array([r[0] for r in rows], np.int64), np.stack([bytes_vector(r[1]) for r in rows])
            last = rows[-1][0]

    # ---- removal -----------------------------------------------------------------------------------

    def remove(self, paths) -> list[str]:
        """Forget the given paths (a directory removes every path under it); returns the paths removed."""
        removed = []
        known = self.all_paths()
        for p in paths:
            p = os.path.abspath(p)
            prefix = p.rstrip(os.sep) + os.sep
            for k in known:
                if k == p or k.startswith(prefix):
                    if k not in removed and self.detach(k):
                        removed.append(k)
        self.commit()
        return removed

    def prune(self) -> list[str]:
        """Forget every path whose file no longer exists; returns the paths removed."""
        gone = [p for p in self.all_paths() if not os.path.lexists(p)]
        for p in gone:
            self.detach(p)
        self.commit()
        return gone
