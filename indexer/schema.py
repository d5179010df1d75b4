"""SQLite layout of a store: ORM tables for videos, their paths, clips, captions and meta, plus the FTS5 table."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship

# Video status values.
INDEXED = "indexed"
FAILED = "failed"
PENDING = "pending"  # some clip lost its vector; the next index run embeds the video again
GENERATED = "generated"  # Caption.source of the descriptions a model's caption decoder writes


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Video(Base):
    """One video content (or one file that failed). `path` is the first path it was seen under."""

    __tablename__ = "videos"
    # AUTOINCREMENT: ids of deleted rows are never handed out again, so a stale FAISS id never
    # points at a different clip. The partial unique index makes "same content indexed twice" impossible.
    __table_args__ = (
        Index("ix_videos_hash_indexed", "hash", unique=True, sqlite_where=text("status = 'indexed'")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int | None] = mapped_column(Integer)
    mtime: Mapped[float | None] = mapped_column(Float)
    hash: Mapped[str | None] = mapped_column(String(64), index=True)
    duration: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    codec: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)

    paths: Mapped[list[VideoPath]] = relationship(back_populates="video", cascade="all, delete-orphan",
                                                  passive_deletes=True)
    clips: Mapped[list[Clip]] = relationship(back_populates="video", cascade="all, delete-orphan",
                                             passive_deletes=True, order_by="Clip.start")


class VideoPath(Base):
    """Every path a video's content was found under; the skip check compares size and mtime per path."""

    __tablename__ = "video_paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int | None] = mapped_column(Integer)
    mtime: Mapped[float | None] = mapped_column(Float)

    video: Mapped[Video] = relationship(back_populates="paths")


class Clip(Base):
    """A time window of a video; its id is its FAISS id in clips.faiss and its thumbnail's file name."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("video_id", "start"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    thumbnail: Mapped[str | None] = mapped_column(Text)  # relative to the store directory
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON [[label, score], ...] best first
    # The embedding (float32 bytes) is the source of truth that clips.faiss is rebuilt from; deferred so
    # that reading clip rows never loads it. NULL in a store without a model.
    vector: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    # The frame encoder's class probabilities averaged over the clip's frames, its top classes only:
    # JSON [[class index, probability], ...] best first. Kept so that the concept channel is rebuilt on
    # open without decoding anything.
    concepts: Mapped[str | None] = deferred(mapped_column(Text))
    # The look-alike vector (float32 bytes): the frame encoder's pooled features averaged over the clip's
    # frames, L2-normalised; the source looks.faiss is rebuilt from.
    look: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))

    video: Mapped[Video] = relationship(back_populates="clips")


class Caption(Base):
    """A caption of a video (from a manifest or a sidecar); `clip_id` is the clip it overlaps most."""

    __tablename__ = "captions"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id", ondelete="SET NULL"), index=True)
    start: Mapped[float | None] = mapped_column(Float)
    end: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # "manifest", "sidecar", "embedded" (a stream) or GENERATED
    lang: Mapped[str | None] = mapped_column(String(16))  # an embedded stream's language tag, when it has one
    vector: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))


class Meta(Base):
    """Key/value facts about the store: its StoreConfig (JSON) and a generation counter bumped per commit."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# One FTS5 row per clip (rowid = clip id): the text of the captions attached to it and its concept tags.
# The trigger keeps it in step with deletions, including those cascaded from videos.
FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS clip_text USING fts5("
    "captions, tags, tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS clip_text_delete AFTER DELETE ON clips BEGIN "
    "DELETE FROM clip_text WHERE rowid = old.id; END",
)


def _on_connect(readonly: bool):
    def setup(dbapi_conn, _record) -> None:
        # The driver's own transaction handling is off (it would not BEGIN before SELECT or DDL); the
        # "begin" listener below starts every transaction instead, so a session reads one snapshot.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not readonly:
            cur.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.close()
    return setup


def _on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN")


def make_engine(db_path: str, readonly: bool) -> Engine:
    """An engine for the store's SQLite file: WAL (set by the writer), foreign keys on, real transactions."""
    if readonly:
        url = f"sqlite:///file:{db_path}?mode=ro&uri=true"
    else:
        url = f"sqlite:///{db_path}"
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _on_connect(readonly))
    event.listen(engine, "begin", _on_begin)
    return engine


# Columns added after the first store format, with their SQL types; `migrate` adds them to older stores.
ADDED_COLUMNS = {"clips": (("concepts", "TEXT"), ("look", "BLOB")), "captions": (("lang", "VARCHAR(16)"),)}


def missing_columns(conn) -> list[tuple[str, str, str]]:
    """(table, column, type) of every column in ADDED_COLUMNS that the store's tables lack."""
    out = []
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
        out += [(table, name, kind) for name, kind in columns if name not in have]
    return out


def migrate(engine: Engine) -> bool:
    """Add the columns of newer store formats to an older store (existing rows get NULL); True if any."""
    with engine.begin() as conn:
        missing = missing_columns(conn)
        for table, name, kind in missing:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    return bool(missing)


def create_schema(engine: Engine, meta: list[dict] = ()) -> None:
    """Create the tables, the FTS5 table, its trigger and the `meta` rows in one transaction (SQLite DDL
    is transactional), so that a crash while creating a store leaves all of it or none."""
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        for ddl in FTS_DDL:
            conn.exec_driver_sql(ddl)
        if meta:
            conn.execute(Meta.__table__.insert(), list(meta))

