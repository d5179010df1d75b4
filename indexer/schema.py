"""Layout of a store's rows: ORM tables for videos, their paths, clips, captions and meta, plus the full-text table.

One schema for both databases: the full-text table is attached to the same models as dialect-specific DDL
(FTS5 on SQLite, a tsvector column with a GIN index on PostgreSQL), created and dropped with them.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    DDL,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    select,
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


# File sizes pass 2 GiB: 64-bit on PostgreSQL (SQLite's INTEGER is 64-bit already, and must stay INTEGER
# for AUTOINCREMENT keys).
Size = BigInteger().with_variant(Integer, "sqlite")


class Video(Base):
    """One video content (or one file that failed). `path` is the first path it was seen under."""

    __tablename__ = "videos"
    # AUTOINCREMENT: ids of deleted rows are never handed out again, so a stale FAISS id never
    # points at a different clip. The partial unique index makes "same content indexed twice" impossible.
    __table_args__ = (
        Index("ix_videos_hash_indexed", "hash", unique=True, sqlite_where=text("status = 'indexed'"),
              postgresql_where=text("status = 'indexed'")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int | None] = mapped_column(Size)
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
    size: Mapped[int | None] = mapped_column(Size)
    mtime: Mapped[float | None] = mapped_column(Float)

    video: Mapped[Video] = relationship(back_populates="paths")


class Clip(Base):
    """A time window of a video; its id is its FAISS id in clips.faiss."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("video_id", "start"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    # A thumbnail file relative to the store directory: how stores written before `Thumbnail` kept them.
    thumbnail: Mapped[str | None] = mapped_column(Text)
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


class Thumbnail(Base):
    """A clip's thumbnail JPEG (its middle sampled frame), a row beside the clip's: written and rolled back in the
    clip's own transaction, gone with it (ON DELETE CASCADE), and no file per clip, whose creation cost up to
    a millisecond of kernel time on some file systems (BENCHMARKS.md, "Indexing")."""

    __tablename__ = "thumbnails"

    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


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


# Meta key of the count of commits that deleted clips or captions: a reader whose loaded value is current
# knows every id its indexes return still has its row (indexer.store).
REMOVALS_KEY = "removals"


class Meta(Base):
    """Key/value facts about the store: its StoreConfig (JSON) and a generation counter bumped per commit."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# One full-text row per clip (rowid = clip id): the text of the captions attached to it and its concept tags.
# SQLite: an FTS5 table, kept in step with deletions (cascaded from videos too) by a trigger.
FTS_SQLITE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS clip_text USING fts5("
    "captions, tags, tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS clip_text_delete AFTER DELETE ON clips BEGIN "
    "DELETE FROM clip_text WHERE rowid = old.id; END",
)
# PostgreSQL: a plain table with a stored tsvector (captions weighted A, tags B) under a GIN index; the
# foreign key cascades deletions.
FTS_POSTGRESQL = (
    "CREATE TABLE IF NOT EXISTS clip_text (rowid INTEGER PRIMARY KEY REFERENCES clips(id) ON DELETE CASCADE, "
    "captions TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '', "
    "tsv tsvector GENERATED ALWAYS AS (setweight(to_tsvector('english', captions), 'A') || "
    "setweight(to_tsvector('english', tags), 'B')) STORED)",
    "CREATE INDEX IF NOT EXISTS ix_clip_text_tsv ON clip_text USING GIN (tsv)",
)
for _ddl in FTS_SQLITE:
    event.listen(Clip.__table__, "after_create", DDL(_ddl).execute_if(dialect="sqlite"))
for _ddl in FTS_POSTGRESQL:
    event.listen(Clip.__table__, "after_create", DDL(_ddl).execute_if(dialect="postgresql"))
for _dialect in ("sqlite", "postgresql"):
    event.listen(Clip.__table__, "before_drop", DDL("DROP TABLE IF EXISTS clip_text").execute_if(dialect=_dialect))


# Columns added after the first store format; `migrate` adds them to older stores.
ADDED_COLUMNS = {"clips": ("concepts", "look"), "captions": ("lang",)}


def missing_columns(conn) -> list[tuple[str, str, str]]:
    """(table, column, SQL type in this database) of every column in ADDED_COLUMNS that the tables lack."""
    from sqlalchemy import inspect

    out = []
    for table, columns in ADDED_COLUMNS.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        out += [(table, name, Base.metadata.tables[table].c[name].type.compile(dialect=conn.dialect))
                for name in columns if name not in have]
    return out


def has_thumbnails(conn) -> bool:
    """Whether the store keeps thumbnails in its database (`Thumbnail`): stores written before keep files."""
    from sqlalchemy import inspect

    return inspect(conn).has_table(Thumbnail.__tablename__)


def migrate(engine: Engine) -> bool:
    """Add the tables and columns of newer store formats to an older store (existing rows get NULL); True if
    any."""
    with engine.begin() as conn:
        missing = missing_columns(conn)
        for table, name, kind in missing:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        created = not has_thumbnails(conn)
        if created:
            Thumbnail.__table__.create(conn)
        if conn.execute(select(Meta.key).where(Meta.key == REMOVALS_KEY)).first() is None:
            conn.execute(Meta.__table__.insert(), [{"key": REMOVALS_KEY, "value": "0"}])
    return bool(missing) or created


def create_schema(engine: Engine, meta: list[dict] = ()) -> None:
    """Create the tables, the full-text table and the `meta` rows in one transaction (DDL is transactional
    on both databases), so that a crash while creating a store leaves all of it or none."""
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        if meta:
            conn.execute(Meta.__table__.insert(), list(meta))

