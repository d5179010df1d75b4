"""Where a store's rows live: its SQLite file (the default) or a schema of its own on PostgreSQL.

Everything that differs between the two databases is here, behind `Database`: how an engine is made,
whether the store exists, how it is wiped for --reindex, how its one writer is locked out of a second
(flock on `.lock` beside SQLite, a session advisory lock on PostgreSQL, which works across machines and
goes away with the connection of a writer that dies), how keyword search is written (FTS5 MATCH and bm25
on SQLite, a tsvector GIN index and websearch_to_tsquery on PostgreSQL), and what tells a reader that the
store was rebuilt under it. The tables themselves are one set of ORM models in `schema.py`.

A PostgreSQL store keeps its tables in a schema of its own (`vidsearch_<12 hex>`), recorded in store.json
beside the URL, so one database can hold many stores and --reindex drops and recreates one in a single
transaction. Servers on other machines open the same store directory (FAISS files on shared storage) and
read the rows from the same database.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from .config import DB_FILE, LOCK_FILE, StoreError

# Default for `--db` when a new store is created (an existing store always uses the database it records).
DB_ENV = "VIDSEARCH_DB"
_WORD = re.compile(r"\w+", re.UNICODE)
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_url(url: str) -> str:
    """Validate a `--db` value: "" or "sqlite" for the store's own SQLite file, or a postgresql+psycopg URL."""
    url = (url or "").strip()
    if url in ("", "sqlite"):
        return ""
    try:
        parsed = make_url(url)
    except Exception:
        raise StoreError(f"--db {url!r} is not a database URL (expected postgresql+psycopg://USER@HOST/DBNAME)") \
            from None
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(f"--db {url!r}: only PostgreSQL URLs (postgresql+psycopg://...) or 'sqlite' are supported")
    if parsed.drivername == "postgresql":  # the driver this package installs
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def new_schema_name() -> str:
    return f"vidsearch_{uuid.uuid4().hex[:12]}"


@dataclass
class Database:
    """A store's database: `url` "" means the SQLite file `store_dir/store.db`."""

    store_dir: Path
    url: str = ""
    schema: str = ""

    @property
    def postgres(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        """Where the rows are, for messages and /api/health (no password)."""
        if not self.postgres:
            return str(self.store_dir / DB_FILE)
        return f"{make_url(self.url).render_as_string(hide_password=True)} schema {self.schema}"

    # ---- engines -----------------------------------------------------------------------------------

    def engine(self, readonly: bool) -> Engine:
        """An engine whose sessions each read one snapshot (readers) or write in real transactions."""
        if not self.postgres:
            return _sqlite_engine(str(self.store_dir / DB_FILE), readonly)
        if not _SCHEMA.match(self.schema):
            raise StoreError(f"{self.store_dir}: bad PostgreSQL schema name {self.schema!r} in store.json")
        options = f"-c search_path={self.schema}"
        if readonly:
            options += " -c default_transaction_read_only=on"
        # A reader's session sees one snapshot across its statements, as a SQLite read transaction does.
        return create_engine(self.url, connect_args={"options": options}, pool_pre_ping=True,
                             isolation_level="REPEATABLE READ" if readonly else "READ COMMITTED")

    # ---- existence, identity, wiping ---------------------------------------------------------------

    def exists(self) -> bool:
        """True when the store's tables may be there (the SQLite file exists / store.json names a schema)."""
        return (self.store_dir / DB_FILE).is_file() if not self.postgres else bool(self.schema)

    def initialised(self) -> bool:
        """True when the database holds the store's meta config (a crash while creating it leaves none)."""
        if not self.postgres:
            return _sqlite_initialised(self.store_dir / DB_FILE)
        return self._pg_scalar("SELECT 1 FROM meta WHERE key = 'config'") is not None

    def identity(self):
        """What changes when the store is rebuilt under a reader: the file's inode, or the meta table's oid."""
        if not self.postgres:
            return (self.store_dir / DB_FILE).stat().st_ino
        return self._pg_scalar("SELECT to_regclass('meta')::oid")

    def _pg_scalar(self, sql: str):
        engine = create_engine(self.url, connect_args={"options": f"-c search_path={self.schema}"},
                               poolclass=_null_pool())
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT to_regclass('meta')")).scalar() is None:
                    return None
                return conn.execute(text(sql)).scalar()
        finally:
            engine.dispose()

    def wipe(self) -> None:
        """Drop the store's rows for --reindex: the SQLite file (and WAL), or the whole schema, recreated empty."""
        if not self.postgres:
            for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
                (self.store_dir / name).unlink(missing_ok=True)
            return
        engine = create_engine(self.url, poolclass=_null_pool())
        try:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        finally:
            engine.dispose()

    # ---- the writer's lock -------------------------------------------------------------------------

    def lock(self) -> WriterLock:
        """Take the store's writer lock, or raise StoreError if another process holds it."""
        if not self.postgres:
            return _FileLock(self.store_dir)
        return _AdvisoryLock(self.url, self.schema, self.store_dir)

    # ---- keyword search ----------------------------------------------------------------------------

    def keyword_sql(self, words: list[str]):
        """(SQL, params) for full-text search over clip_text, best first, with `:k` to bind (PostgreSQL).

        Every word counts on its own (ORed), captions weigh twice what concept tags do, on both databases.
        SQLite scores one word at a time instead (`word_sql`; indexer.keywords adds the words up).
        """
        # websearch_to_tsquery never raises on user text; "or" between the words makes it an OR query.
        return (text("SELECT rowid, ts_rank('{0, 0, 0.5, 1.0}', tsv, q) AS rank "
                     "FROM clip_text, websearch_to_tsquery('english', :q) AS q "
                     "WHERE tsv @@ q ORDER BY rank DESC, rowid LIMIT :k"), {"q": " or ".join(words)})

    def word_sql(self):
        """SQLite: (rowid, BM25 score) of every clip_text row matching `:q`, one quoted word."""
        return text("SELECT rowid, -bm25(clip_text, 1.0, 0.5) FROM clip_text WHERE clip_text MATCH :q")


def keyword_words(query: str) -> list[str]:
    """The distinct lower-case words of a keyword query, in order."""
    return list(dict.fromkeys(_WORD.findall(query.lower())))


def locate(store_dir, url: str | None = None, create: bool = False) -> Database:
    """The database of the store at `store_dir`: the one its store.json records; for a store about to be
    created (`create`), `url` (None reads VIDSEARCH_DB); else its SQLite file. Asking for a different
    database than the one an existing store records is an error."""
    import json

    from .config import CONFIG_FILE

    store_dir = Path(store_dir)
    recorded = None
    try:
        data = json.loads((store_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        recorded = (data.get("db", ""), data.get("db_schema", ""))
    except (OSError, ValueError):
        pass
    if recorded is not None and (recorded[0] or (store_dir / DB_FILE).is_file()):
        if url is not None and check_url(url) != recorded[0]:
            where = "its SQLite file" if not recorded[0] else make_url(recorded[0]).render_as_string()
            raise StoreError(f"{store_dir}: this store keeps its rows in {where}; --db cannot move it "
                             "(index into another --store)")
        return Database(store_dir, recorded[0], recorded[1])
    if not create:
        return Database(store_dir)
    url = check_url(os.environ.get(DB_ENV, "") if url is None else url)
    return Database(store_dir, url, new_schema_name() if url else "")


# ---- SQLite ----------------------------------------------------------------------------------------

def _sqlite_on_connect(readonly: bool):
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


def _sqlite_on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN")


def _sqlite_engine(db_path: str, readonly: bool) -> Engine:
    url = f"sqlite:///file:{db_path}?mode=ro&uri=true" if readonly else f"sqlite:///{db_path}"
    engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_on_connect(readonly))
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_initialised(db: Path) -> bool:
    if not db.is_file():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM meta WHERE key = 'config'").fetchone() is not None
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


# ---- writer locks ----------------------------------------------------------------------------------

class WriterLock(Protocol):
    """Held by the one process writing a store; `release` gives it up (a second call does nothing)."""

    def release(self) -> None: ...


class _FileLock:
    def __init__(self, store_dir: Path):
        fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{store_dir}: another process is writing to this store") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _AdvisoryLock:
    """A session-level pg_try_advisory_lock on a connection kept open for the writer's life."""

    def __init__(self, url: str, schema: str, store_dir: Path):
        import psycopg

        key = int.from_bytes(hashlib.blake2b(schema.encode(), digest_size=8).digest(), "big", signed=True)
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as e:
            raise StoreError(f"{store_dir}: cannot connect to PostgreSQL ({str(e).strip()})") from None
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            self.conn.close()
            raise StoreError(f"{store_dir}: another process is writing to this store") from None

    def release(self) -> None:
        if self.conn is not None:
            try:  # unlocked before closing: the server drops a closed session's locks only when it notices
                self.conn.execute("SELECT pg_advisory_unlock_all()")
            finally:
                self.conn.close()
            self.conn = None
