"""Read side of a store: `Store` opens its database (indexer.db) and the FAISS indexes, reconciles them, and answers queries."""
from __future__ import annotations

import functools
import json
import os
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from .config import (
    CAPTION_INDEX_FILE,
    CLIP_INDEX_FILE,
    DB_FILE,
    FORMAT_VERSION,
    LOOK_INDEX_FILE,
    THUMB_DIR,
    StoreConfig,
    StoreError,
)
from .db import keyword_words, locate
from .faiss_index import EXACT, SearchParams, VectorIndex, halved
from .keywords import WordPostings
from .schema import (
    FAILED,
    GENERATED,
    INDEXED,
    REMOVALS_KEY,
    Caption,
    Clip,
    Meta,
    Thumbnail,
    Video,
    VideoPath,
    has_thumbnails,
    missing_columns,
)
from .shards import OnDiskIndex, is_ondisk

# SQLite's default limit on bound parameters is 32766; stay well below it per IN (...) query.
_CHUNK = 5000
_REMOVALS = select(Meta.value).where(Meta.key == REMOVALS_KEY)
# Inside `Store.one_look()`: (store id, loaded counter) -> whether nothing was removed, read once for the block.
_LOOKED: ContextVar[dict | None] = ContextVar("store_removals_looked", default=None)


@dataclass
class ClipRecord:
    """A clip as search shows it."""

    id: int
    video_id: int
    video_path: str
    start: float
    end: float
    caption: str | None
    tags: list[tuple[str, float]]
    description: str | None = None  # the model's generated description of the clip, if it has one


@dataclass
class CaptionRecord:
    """One caption or subtitle of a video, as the watch page lists it."""

    start: float | None
    end: float | None
    text: str
    source: str  # "manifest", "sidecar" or "embedded"
    lang: str | None


@dataclass
class VideoRecord:
    """A video row with all its paths and its clip count."""

    id: int
    path: str
    paths: list[str]
    size: int | None
    mtime: float | None
    hash: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    status: str
    error: str | None
    indexed_at: str
    clips: int = 0


@dataclass
class _Kind:
    """One vector column and the FAISS file that mirrors it; `active` when the store keeps such vectors."""

    model: type
    file: str
    column: str = "vector"
    active: bool = True
    index: VectorIndex | None = None
    unremoved: int = 0  # vectors without a row that this index type could not drop (filtered at search)
    lost: list[int] = field(default_factory=list)  # rows whose vector is nowhere
    changed: bool = False  # the loaded FAISS file did not match SQLite (or was missing)
    max_id: int = 0  # highest row id the index has caught up with (ids only grow: AUTOINCREMENT)

    @property
    def blob(self):
        """The ORM column holding this kind's vectors."""
        return getattr(self.model, self.column)


class ConceptPostings:
    """Every clip's sparse class probabilities as one (clips x classes) matrix, for weighted-sum queries.

    Built from the `clips.concepts` column on open and caught up with new rows on refresh; rows deleted
    since are filtered out at search, as for the FAISS indexes.
    """

    def __init__(self, classes: int):
        self.classes = classes
        self.max_id = 0
        self._ids: list[int] = []
        self._rows: list[int] = []
        self._cols: list[int] = []
        self._vals: list[float] = []
        self._matrix = None
        self._id_array = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, rows) -> None:
        """Add (clip_id, concepts JSON) rows with ids above `max_id`."""
        for clip_id, raw in rows:
            self.max_id = max(self.max_id, int(clip_id))
            pairs = [(int(c), float(p)) for c, p in json.loads(raw or "[]") if 0 <= int(c) < self.classes]
            row = len(self._ids)  # a clip without pairs still counts, so that deletions can be told apart
            self._ids.append(int(clip_id))
            for c, p in pairs:
                self._rows.append(row)
                self._cols.append(c)
                self._vals.append(p)
            self._matrix = None

    def _csc(self):
        if self._matrix is None:
            from scipy.sparse import csc_matrix

            self._matrix = csc_matrix((np.asarray(self._vals, np.float32), (self._rows, self._cols)),
                                      shape=(len(self._ids), self.classes))
            self._id_array = np.asarray(self._ids, np.int64)
        return self._matrix, self._id_array

    def score(self, weights: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
        """(clip ids, scores) of the clips with a positive weighted sum of their class probabilities."""
        cols = [c for c, w in weights.items() if 0 <= c < self.classes and w > 0]
        if not cols or not self._ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        matrix, ids = self._csc()
        # Straight from the CSC arrays, column by column as a sparse mat-vec adds them (float32, same order):
        # slicing `matrix[:, cols]` builds a new sparse matrix per query, which cost more than the sums.
        scores = np.zeros(len(ids), np.float32)
        starts, rows, vals = matrix.indptr, matrix.indices, matrix.data
        for c in cols:
            lo, hi = starts[c], starts[c + 1]
            scores[rows[lo:hi]] += vals[lo:hi] * np.float32(weights[c])  # a column holds each row at most once
        hit = np.flatnonzero(scores > 0)
        return ids[hit], scores[hit]


class CaptionOwners:
    """caption id -> the clip it stands for (its own clip, else its video's first clip; -1 if neither), for
    the captions of one loaded generation, so that a search maps captions to clips without SQL.

    A caption's owner never changes while the caption exists (clips come only with their video, and both go
    with it), so the map is caught up with new captions on each load and rebuilt only after removals.
    """

    def __init__(self, removals: str | None = None, ids=None, owners=None):
        self.removals = removals  # the writer's removal counter when the map was started
        self.ids = np.empty(0, np.int64) if ids is None else ids  # ascending
        self.owners = np.empty(0, np.int64) if owners is None else owners

    def caught_up(self, session: Session, removals: str | None) -> CaptionOwners:
        """A map of every caption now committed; `removals` must be read before this is called."""
        if removals is None:  # a store whose writer predates the counter: nothing can be trusted
            return CaptionOwners()
        base = self if removals == self.removals else CaptionOwners(removals)
        first = (select(Clip.id).where(Clip.video_id == Caption.video_id)
                 .order_by(Clip.start, Clip.id).limit(1).scalar_subquery())
        ids, owners = [base.ids], [base.owners]
        top = int(base.ids[-1]) if len(base.ids) else 0
        while True:
            rows = session.execute(select(Caption.id, func.coalesce(Caption.clip_id, first))
                                   .where(Caption.id > top).order_by(Caption.id).limit(_CHUNK)).all()
            if not rows:
                break
            ids.append(np.array([r[0] for r in rows], np.int64))
            owners.append(np.array([-1 if r[1] is None else r[1] for r in rows], np.int64))
            top = rows[-1][0]
        return CaptionOwners(removals, np.concatenate(ids), np.concatenate(owners))

    def lookup(self, caption_ids: list[int]) -> tuple[dict[int, int | None], list[int]]:
        """(owners of the ids the map holds, the ids it does not hold)."""
        wanted = np.asarray(caption_ids, np.int64)
        at = np.minimum(np.searchsorted(self.ids, wanted), max(len(self.ids) - 1, 0))
        held = (self.ids[at] == wanted) if len(self.ids) else np.zeros(len(wanted), bool)
        found = {int(c): (None if o < 0 else int(o)) for c, o in zip(wanted[held], self.owners[at[held]])}
        return found, [int(c) for c in wanted[~held]]


@functools.lru_cache(maxsize=1)
def _clip_records():
    """One query for what a ClipRecord shows: the clip, its video's path, its first own caption (generated
    descriptions aside), its video's first untimed caption (for a clip without its own) and its first
    generated description; for the clip ids bound as `ids`. Built once: putting the statement together
    cost a third of fetching a page of records."""
    def first(where, *order):
        return select(Caption.text).where(*where).order_by(*order).limit(1).scalar_subquery()

    own = first((Caption.clip_id == Clip.id, Caption.source != GENERATED), Caption.start, Caption.id)
    whole = first((Caption.video_id == Clip.video_id, Caption.start.is_(None)), Caption.id)
    description = first((Caption.clip_id == Clip.id, Caption.source == GENERATED), Caption.id)
    return (select(Clip.id, Clip.video_id, Video.path, Clip.start, Clip.end, Clip.tags,
                   own.label("own"), whole.label("whole"), description.label("description"))
            .join(Video, Video.id == Clip.video_id).where(Clip.id.in_(bindparam("ids", expanding=True))))


def clip_jpeg(conn, store_dir: Path, clip_id: int, in_database: bool) -> bytes | None:
    """A clip's thumbnail JPEG from its `thumbnails` row (`in_database`: the store has that table), else from
    the file a store written before names in the clip's row, read only from the store's own `thumbs/`
    folder (never a file that a link there points elsewhere)."""
    if in_database:
        jpeg = conn.execute(select(Thumbnail.jpeg).where(Thumbnail.clip_id == clip_id)).scalar()
        if jpeg is not None:
            return bytes(jpeg)
    rel = conn.execute(select(Clip.thumbnail).where(Clip.id == clip_id)).scalar()
    if not rel:
        return None
    folder = (Path(store_dir) / THUMB_DIR).resolve()
    path = (Path(store_dir) / rel).resolve()
    return path.read_bytes() if path.is_relative_to(folder) and path.is_file() else None


def _top_order(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions of the k best scores, best first, ties in position order: the first k of a stable
    descending sort, without sorting every clip that shows a weighted class (a broad word reaches most)."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    kth = np.partition(-scores, k - 1)[k - 1]
    head = np.flatnonzero(-scores <= kth)  # every tie of the k-th best, so the stable order can pick among them
    return head[np.argsort(-scores[head], kind="stable")][:k]


def vector_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def bytes_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def chunks(seq, size: int = _CHUNK):
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


class Store:
    """A store directory opened for reading; thread-safe for concurrent readers.

    Vectors live twice: as float32 blobs in SQLite (the source of truth, written in the same transaction
    as their rows) and in the FAISS files (rewritten atomically by the writer now and then). Opening
    reconciles the two: a row whose vector is missing from FAISS is added from its blob, a FAISS vector
    without a row is dropped. A read-only store does this in memory; the writer also saves the result.
    """

    def __init__(self, store_dir: str | os.PathLike, readonly: bool = True):
        # Resolved once here: paths made from it (thumbnails) must not depend on the caller's working directory.
        self.dir = Path(store_dir).resolve()
        self.readonly = readonly
        self.db = locate(self.dir)
        if not self.db.exists():
            raise StoreError(f"{self.dir}: no store here (missing {DB_FILE}); create one with `vidsearch index`")
        self._db_ino = self.db.identity()
        self.engine = self.db.engine(readonly=readonly)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.RLock()
        self._kinds = {"clips": _Kind(Clip, CLIP_INDEX_FILE), "captions": _Kind(Caption, CAPTION_INDEX_FILE),
                       "looks": _Kind(Clip, LOOK_INDEX_FILE, column="look")}
        self._concepts: ConceptPostings | None = None
        self._state = None
        self._removals: str | None = None  # the writer's removal counter when the indexes were loaded
        self._owners = CaptionOwners()
        self._words = WordPostings(self.db.word_sql())
        self._load()

    @classmethod
    def open(cls, store_dir: str | os.PathLike, readonly: bool = True) -> Store:
        """Open a store; `readonly=False` gives the StoreWriter (one writer at a time, by a lock file)."""
        if readonly:
            return cls(store_dir, readonly=True)
        from .writer import StoreWriter

        return StoreWriter.open(store_dir)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- loading and reconciling -------------------------------------------------------------------

    def _read_meta(self, session: Session) -> dict:
        return {m.key: m.value for m in session.scalars(select(Meta))}

    def _load(self) -> None:
        with self.Session() as s:
            meta = self._read_meta(s)
        if "config" not in meta:
            raise StoreError(f"{self.dir}: store is not initialised (no config in its meta table)")
        config = StoreConfig.from_dict(json.loads(meta["config"]))
        if config.format_version > FORMAT_VERSION:
            raise StoreError(f"{self.dir}: store format {config.format_version} is newer than this "
                             f"vidsearch understands ({FORMAT_VERSION})")
        old, state = self._state, self._disk_state()
        active = self._active_kinds(config)
        loaded = {}
        for i, (name, kind) in enumerate(self._kinds.items()):
            if name not in active:
                loaded[name] = (None, 0, [], False, 0)
            elif old is not None and kind.active and kind.index is not None and old[i + 1] == state[i + 1]:
                self._catch_up(kind)  # same FAISS file as loaded: only apply the commits since
            else:
                loaded[name] = self._reconcile(kind, config)
        concepts = self._load_concepts(config, active)
        with self.Session() as s:
            owners = self._owners.caught_up(s, meta.get(REMOVALS_KEY))
        with self._lock:
            self.config = config
            self._meta = meta
            self._removals, self._owners = meta.get(REMOVALS_KEY), owners
            self._concepts = concepts
            for name, kind in self._kinds.items():
                kind.active = name in active
            for name, (index, unremoved, lost, changed, max_id) in loaded.items():
                kind = self._kinds[name]
                kind.index, kind.unremoved, kind.lost, kind.changed = index, unremoved, lost, changed
                kind.max_id = max_id
            self._state = state

    def _active_kinds(self, config: StoreConfig) -> set[str]:
        """The vector kinds this store keeps: model vectors if it has a model, looks if it keeps them."""
        with self.engine.connect() as conn:
            columns_missing = {c for _, c, _ in missing_columns(conn)}
            self._has_thumbnails = has_thumbnails(conn)
            conn.rollback()
        self._has_added_columns = not columns_missing
        active = {"clips", "captions"} if config.has_model else set()
        if config.look_dim > 0 and "look" not in columns_missing:
            active.add("looks")
        return active

    def _load_concepts(self, config: StoreConfig, active: set[str]) -> ConceptPostings | None:
        """The concept postings, caught up with rows committed since the last load (rebuilt if rows went)."""
        if config.concept_classes <= 0 or not self._has_added_columns:
            return None
        postings = self._concepts
        if postings is None or postings.classes != config.concept_classes:
            postings = ConceptPostings(config.concept_classes)
        with self.Session() as s:
            count = s.scalar(select(func.count()).select_from(Clip).where(Clip.id <= postings.max_id))
            if count != len(postings):  # rows were deleted (or replaced): start over
                postings = ConceptPostings(config.concept_classes)
            while True:
                rows = s.execute(select(Clip.id, Clip.concepts).where(Clip.id > postings.max_id)
                                 .order_by(Clip.id).limit(_CHUNK)).all()
                if not rows:
                    break
                postings.add(rows)
        return postings

    def _disk_state(self) -> tuple:
        """What refresh compares: the commit generation and the FAISS files' identity."""
        with self.Session() as s:
            gen = s.scalar(select(Meta.value).where(Meta.key == "generation"))
        stats = []
        for kind in self._kinds.values():
            try:
                st = os.stat(self.dir / kind.file)
                stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                stats.append(None)
        return (gen, *stats)

    def _kind_dim(self, kind: _Kind, config: StoreConfig) -> int:
        return config.look_dim if kind.column == "look" else config.dim

    def _read_index(self, kind: _Kind, config: StoreConfig) -> VectorIndex | None:
        path = self.dir / kind.file
        if path.exists():
            try:
                if is_ondisk(path):  # merged from shards, lists memory-mapped (indexer.shards)
                    return OnDiskIndex.read(str(path), self._kind_dim(kind, config))
                return VectorIndex.read(str(path), self._kind_dim(kind, config), config.index_type)
            except Exception:  # unreadable or foreign file: rebuilt from the SQLite blobs
                return None
        return None

    def _reconcile(self, kind: _Kind, config: StoreConfig) -> tuple[VectorIndex, int, list[int], bool, int]:
        """Load kind's FAISS file and bring it in line with SQLite.

        Returns (index, vectors it could not drop, ids of rows with no vector anywhere, whether it changed,
        highest row id).
        """
        index = self._read_index(kind, config)
        changed = index is None
        if index is None:
            index = VectorIndex.empty(self._kind_dim(kind, config), EXACT)
        with self.Session() as s:
            row_ids = np.fromiter(s.scalars(select(kind.model.id)), dtype=np.int64)
        have = index.ids()
        extra = np.setdiff1d(have, row_ids, assume_unique=True)
        missing = np.setdiff1d(row_ids, have, assume_unique=True)
        unremoved = len(extra) - index.remove(extra) if len(extra) else 0
        if self.readonly:  # a reader only searches: exact indexes in half precision (faiss_index.halved)
            index = halved(index)
        lost = self._add_from_blobs(kind, index, missing)
        max_id = int(row_ids.max()) if len(row_ids) else 0
        return index, unremoved, lost, changed or len(extra) > 0 or len(missing) > len(lost), max_id

    def _catch_up(self, kind: _Kind) -> None:
        """Bring an already loaded index up to date in place: add rows newer than `max_id` from their
        blobs; only if rows were also deleted (the counts disagree) compare all ids."""
        model = kind.model
        while True:
            with self.Session() as s:
                rows = s.execute(select(model.id, kind.blob).where(model.id > kind.max_id)
                                 .order_by(model.id).limit(_CHUNK)).all()
            if not rows:
                break
            good = [(i, v) for i, v in rows if v is not None]
            kind.lost += [i for i, v in rows if v is None]
            if good:
                kind.index.add([i for i, _ in good], np.stack([bytes_vector(v) for _, v in good]))
            kind.max_id = rows[-1][0]
        with self.Session() as s:
            count = s.scalar(select(func.count()).select_from(model))
        if count != kind.index.ntotal - kind.unremoved + len(kind.lost):
            with self.Session() as s:
                row_ids = np.fromiter(s.scalars(select(model.id)), dtype=np.int64)
            extra = np.setdiff1d(kind.index.ids(), row_ids, assume_unique=True)
            if len(extra):
                kind.unremoved += len(extra) - kind.index.remove(extra)

    def _add_from_blobs(self, kind: _Kind, index: VectorIndex, ids: np.ndarray) -> list[int]:
        """Add rows' stored vectors to `index`; returns the ids that have no stored vector."""
        lost = []
        model = kind.model
        for part in chunks(ids.tolist()):
            with self.Session() as s:
                rows = s.execute(select(model.id, kind.blob).where(model.id.in_(part))).all()
            good = [(i, v) for i, v in rows if v is not None]
            lost += [i for i, v in rows if v is None]
            if good:
                index.add([i for i, _ in good], np.stack([bytes_vector(v) for _, v in good]))
        return lost

    def refresh(self) -> bool:
        """Reload if the writer committed or replaced a FAISS file since the last load; True if it did.

        A store rebuilt under the reader (`--reindex` makes a new database file) is reopened from scratch.
        """
        try:
            ino = self.db.identity()
        except FileNotFoundError:  # being rebuilt right now: keep serving what was loaded
            return False
        if ino is None:
            return False
        if ino != self._db_ino:
            old = self.engine
            self.engine = self.db.engine(readonly=self.readonly)
            self.Session = sessionmaker(self.engine, expire_on_commit=False)
            self._db_ino, self._state = ino, None  # no state: everything is loaded afresh
            self._words = WordPostings(self.db.word_sql())
            old.dispose()
        elif self._disk_state() == self._state:
            return False
        self._load()
        return True

    # ---- metadata ----------------------------------------------------------------------------------

    @property
    def meta(self) -> dict:
        """Model identity, dim, index type, format version, generation and the built FAISS types."""
        c = self.config
        spec = {name: kind.index.spec if kind.index is not None else None for name, kind in self._kinds.items()}
        return {"model_path": c.model_path, "model_hash": c.model_hash, "model_name": c.model_name,
                "dim": c.dim, "index_type": c.index_type, "format_version": c.format_version,
                "generation": int(self._meta.get("generation", 0)), "channels": self.channels(),
                "frame_encoder": c.frame_encoder, "text_encoder": c.text_encoder,
                "clip_index": spec["clips"], "caption_index": spec["captions"], "look_index": spec["looks"]}

    def channels(self) -> list[str]:
        """The search channels this store answers (see StoreConfig.channels), as far as its data allows."""
        out = self.config.channels()
        if not self._kinds["looks"].active:
            out = [c for c in out if c not in ("lookalike", "clip")]
        if self._concepts is None:
            out = [c for c in out if c != "concept"]
        return out

    def counts(self) -> dict:
        """{"videos": indexed videos, "clips": clips, "failed": failed files, "captions", "pending"}."""
        with self.Session() as s:
            by_status = dict(s.execute(select(Video.status, func.count()).group_by(Video.status)).all())
            clips = s.scalar(select(func.count()).select_from(Clip))
            captions = s.scalar(select(func.count()).select_from(Caption))
        return {"videos": by_status.get(INDEXED, 0), "clips": clips, "failed": by_status.get(FAILED, 0),
                "captions": captions, "pending": sum(v for k, v in by_status.items() if k not in (INDEXED, FAILED))}

    # ---- vector search -----------------------------------------------------------------------------

    def _search(self, name: str, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            kind = self._kinds[name]
            index, extra = kind.index, kind.unremoved
        if index is None:  # the store keeps no such vectors
            return (np.full((len(vectors), k), -np.inf, np.float32), np.full((len(vectors), k), -1, np.int64))
        params = SearchParams(nprobe=self.config.nprobe, ef_search=self.config.ef_search)
        # Ask for a few more than k: rows deleted since this index was loaded are dropped below.
        scores, ids = index.search(vectors, k + extra + 8, params)
        if extra == 0 and self._nothing_removed():  # every id the index holds still has its row
            ids = ids[:, :k].astype(np.int64)
            return np.where(ids >= 0, scores[:, :k], -np.inf).astype(np.float32), ids
        alive = self._existing(kind.model, np.unique(ids[ids >= 0]))
        out_s = np.full((len(ids), k), -np.inf, np.float32)
        out_i = np.full((len(ids), k), -1, np.int64)
        for q in range(len(ids)):
            keep = [j for j in range(ids.shape[1]) if ids[q, j] in alive][:k]
            out_s[q, :len(keep)], out_i[q, :len(keep)] = scores[q, keep], ids[q, keep]
        return out_s, out_i

    def _nothing_removed(self) -> bool:
        """True if no row went since the indexes were loaded. The writer bumps its removal counter in the
        transaction that deletes rows, and `_load` read it before it read any row, so an unchanged counter
        means every id loaded then still has its row."""
        with self._lock:
            loaded = self._removals
        if loaded is None:
            return False
        looked, key = _LOOKED.get(), (id(self), loaded)
        if looked is not None and key in looked:
            return looked[key]
        with self.engine.connect() as conn:  # a bare connection: a third of a Session's cost per query
            answer = conn.execute(_REMOVALS).scalar() == loaded
        if looked is not None:
            looked[key] = answer
        return answer

    @contextmanager
    def one_look(self):
        """Within the block (one query, in this thread), every search asks SQLite once whether rows went,
        not once per index it searches. A row removed during the block may then be named by a later search
        of the block; `clips` leaves out ids without a row, so a result never shows a removed clip."""
        token = _LOOKED.set({})
        try:
            yield
        finally:
            _LOOKED.reset(token)

    def _existing(self, model, ids: np.ndarray) -> set[int]:
        found = set()
        with self.Session() as s:
            for part in chunks(ids.tolist()):
                found.update(s.scalars(select(model.id).where(model.id.in_(part))))
        return found

    def search_clips(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k clips by inner product for each query vector: (scores, clip_ids), each (Q, k), -1 padded."""
        return self._search("clips", np.atleast_2d(vectors), k)

    def search_captions(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k captions by inner product: (scores, caption_ids), each (Q, k), -1 padded."""
        return self._search("captions", np.atleast_2d(vectors), k)

    def search_looks(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k clips by cosine of look-alike vectors: (scores, clip_ids), each (Q, k), -1 padded."""
        return self._search("looks", np.atleast_2d(vectors), k)

    def search_concepts(self, weights: dict[int, float], k: int) -> list[tuple[int, float]]:
        """Clips by the weighted sum of their class probabilities (weights: class index -> weight), best
        first, at most k; clips showing none of the weighted classes are left out."""
        with self._lock:
            postings = self._concepts
        if postings is None or k <= 0:
            return []
        ids, scores = postings.score(weights)
        order = _top_order(scores, k)
        if self._nothing_removed():  # the postings hold only rows that are still there
            return [(int(ids[j]), float(scores[j])) for j in order[:k]]
        order = np.argsort(-scores, kind="stable")  # deletions may reach past the first k: rank them all
        out, start = [], 0
        while len(out) < k and start < len(order):  # check deletions only as far down as the answer reaches
            block = order[start:start + 2 * k + 8]
            alive = self._existing(Clip, ids[block])
            out += [(int(ids[j]), float(scores[j])) for j in block if int(ids[j]) in alive]
            start += len(block)
        return out[:k]

    def keyword(self, query: str, k: int) -> list[tuple[int, float]]:
        """Full-text search over clip captions and concept tags: (clip_id, score) best first (BM25 on SQLite,
        ts_rank on PostgreSQL)."""
        words = keyword_words(query)
        if not words or k <= 0:
            return []
        if not self.db.postgres:
            with self.engine.connect() as conn:  # one read transaction: one snapshot for all the words
                return self._words.top(conn, words, int(k))
        sql, params = self.db.keyword_sql(words)
        with self.Session() as s:
            rows = s.execute(sql, {**params, "k": int(k)}).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    # ---- rows --------------------------------------------------------------------------------------

    def clips(self, clip_ids) -> list[ClipRecord]:
        """Records for the given clip ids, in the given order; ids not in the store are left out."""
        ids = [int(i) for i in clip_ids if int(i) >= 0]
        rows = {}
        with self.engine.connect() as conn:  # a bare connection: a read needs no Session
            for part in chunks(list(dict.fromkeys(ids))):
                rows.update({r.id: r for r in conn.execute(_clip_records(), {"ids": part}).all()})
        out = []
        for i in ids:
            if i not in rows:
                continue
            r = rows[i]
            out.append(ClipRecord(r.id, r.video_id, r.path, r.start, r.end,
                                  r.own if r.own is not None else r.whole,
                                  [tuple(t) for t in json.loads(r.tags or "[]")], r.description))
        return out

    def caption_clip(self, caption_ids) -> dict[int, int | None]:
        """caption id -> the clip it belongs to (its own clip, else its video's first clip; None if neither)."""
        ids = list(dict.fromkeys(int(i) for i in caption_ids if int(i) >= 0))
        with self._lock:
            owners = self._owners
        out, ids = owners.lookup(ids) if ids and self._nothing_removed() else ({}, ids)
        if not ids:
            return out
        with self.Session() as s:
            for part in chunks(ids):
                first = (select(Clip.id).where(Clip.video_id == Caption.video_id)
                         .order_by(Clip.start).limit(1).scalar_subquery())
                q = select(Caption.id, func.coalesce(Caption.clip_id, first)).where(Caption.id.in_(part))
                out.update({cid: clip for cid, clip in s.execute(q).all()})
        return out

    def clip_vector(self, clip_id: int, column: str = "vector") -> np.ndarray:
        """The stored embedding of a clip, (dim,) float32 (`column="look"`: its look-alike vector);
        KeyError if there is no such clip or it has no such vector."""
        if column not in ("vector", "look") or (column == "look" and not self._has_added_columns):
            raise KeyError(f"clips in store {self.dir} keep no {column!r} vectors")
        with self.Session() as s:
            row = s.execute(select(getattr(Clip, column)).where(Clip.id == int(clip_id))).first()
        if row is None or row[0] is None:
            raise KeyError(f"no clip {clip_id} in store {self.dir}")
        return bytes_vector(row[0]).copy()

    def thumbnail(self, clip_id: int) -> bytes | None:
        """A clip's thumbnail JPEG; None if there is no such clip or it has none."""
        with self.engine.connect() as conn:
            # a store written before gains the table when a writer opens it, maybe after this reader did
            self._has_thumbnails = self._has_thumbnails or has_thumbnails(conn)
            return clip_jpeg(conn, self.dir, int(clip_id), self._has_thumbnails)

    def clip_concepts(self, clip_id: int) -> list[tuple[int, float]]:
        """A clip's stored (class index, probability) pairs, best first; empty if it has none."""
        if not self._has_added_columns:
            return []
        with self.Session() as s:
            raw = s.scalar(select(Clip.concepts).where(Clip.id == int(clip_id)))
        return [(int(c), float(p)) for c, p in json.loads(raw or "[]")]

    def _video_records(self, s: Session, videos: list[Video]) -> list[VideoRecord]:
        ids = [v.id for v in videos]
        paths, counts = {}, {}
        for part in chunks(ids):
            for vid, p in s.execute(select(VideoPath.video_id, VideoPath.path)
                                    .where(VideoPath.video_id.in_(part)).order_by(VideoPath.id)).all():
                paths.setdefault(vid, []).append(p)
            counts.update(s.execute(select(Clip.video_id, func.count()).where(Clip.video_id.in_(part))
                                    .group_by(Clip.video_id)).all())
        return [VideoRecord(v.id, v.path, paths.get(v.id, [v.path]), v.size, v.mtime, v.hash, v.duration, v.fps,
                            v.width, v.height, v.codec, v.status, v.error, v.indexed_at.isoformat(),
                            counts.get(v.id, 0)) for v in videos]

    def videos(self, offset: int = 0, limit: int = 50, status: str | None = None) -> list[VideoRecord]:
        """Videos by id, optionally only those with `status` ("indexed", "failed", "pending")."""
        q = select(Video).order_by(Video.id).offset(max(0, offset)).limit(max(0, limit))
        if status:
            q = q.where(Video.status == status)
        with self.Session() as s:
            return self._video_records(s, list(s.scalars(q)))

    def video(self, video_id: int) -> VideoRecord | None:
        """One video by id, or None."""
        with self.Session() as s:
            v = s.get(Video, int(video_id))
            return self._video_records(s, [v])[0] if v else None

    def video_by_path(self, path: str | os.PathLike) -> VideoRecord | None:
        """The video recorded under `path` (any of its paths), or None."""
        with self.Session() as s:
            v = s.scalar(select(Video).join(VideoPath).where(VideoPath.path == os.path.abspath(path)))
            return self._video_records(s, [v])[0] if v else None

    def video_captions(self, video_id: int) -> list[CaptionRecord]:
        """A video's captions and subtitles in time order (untimed ones first)."""
        with self.Session() as s:
            rows = s.execute(select(Caption.start, Caption.end, Caption.text, Caption.source, Caption.lang)
                             .where(Caption.video_id == int(video_id))
                             .order_by(Caption.start.is_not(None), Caption.start, Caption.id)).all()
        return [CaptionRecord(*r) for r in rows]

    def video_clips(self, video_id: int) -> list[int]:
        """Clip ids of a video in time order."""
        with self.Session() as s:
            return list(s.scalars(select(Clip.id).where(Clip.video_id == int(video_id)).order_by(Clip.start)))
