"""The store's consistency check: its database (SQLite or PostgreSQL), the FAISS files, full-text rows and
thumbnails agree with each other."""
from __future__ import annotations

import os
from pathlib import Path

from .config import THUMB_DIR, StoreError


def check_store(store_dir: str | os.PathLike) -> list[str]:
    """Problems found in the store at `store_dir`, each a sentence; an empty list means it is consistent.

    Reads only (a writer may be running): SQLite's own integrity check, every clip and caption row has its
    vector, every one is in FAISS as a reader loads it and nothing else is, every clip is in the full-text index
    and has its thumbnail, and no content, path or clip is stored twice.
    """
    from .db import locate
    from .schema import has_thumbnails
    from .store import Store

    store_dir = Path(store_dir)
    db = locate(store_dir)
    if not db.exists():
        raise StoreError(f"{store_dir}: no store here (missing store.db)")
    problems = []
    engine = db.engine(readonly=True)
    conn = engine.connect()
    try:
        # One read transaction (a snapshot on either database), so that the checks below see one commit even
        # while a writer runs.
        conn.begin()
        rows = lambda q: conn.exec_driver_sql(q).fetchall()   # noqa: E731
        if not db.postgres:  # PostgreSQL has no whole-database check of its own; its pages are checksummed
            integrity = rows("PRAGMA integrity_check")[0][0]
            if integrity != "ok":
                problems.append(f"SQLite integrity check: {integrity}")
        clips = {r[0] for r in rows("SELECT id FROM clips")}
        captions = {r[0] for r in rows("SELECT id FROM captions")}
        for table in ("clips", "captions"):
            n = rows(f"SELECT count(*) FROM {table} WHERE vector IS NULL")[0][0]
            if n:
                problems.append(f"{n} {table} rows have no stored vector")
        fts = {r[0] for r in rows("SELECT rowid FROM clip_text")}
        if fts != clips:
            problems.append(f"full-text rows differ from clips: {len(fts - clips)} extra, {len(clips - fts)} missing")
        for what, query in [("indexed content", "SELECT hash FROM videos WHERE status='indexed' GROUP BY hash "
                                                "HAVING count(*) > 1"),
                            ("path", "SELECT path FROM video_paths GROUP BY path HAVING count(*) > 1"),
                            ("clip", "SELECT video_id, start FROM clips GROUP BY video_id, start HAVING count(*) > 1")]:
            if rows(query):
                problems.append(f"{len(rows(query))} {what} entries are stored twice")
        thumbs = {r[0] for r in rows("SELECT clip_id FROM thumbnails")} if has_thumbnails(conn) else set()
    finally:
        conn.close()
        engine.dispose()
    # a store written before keeps a file per clip
    thumbs |= {int(p.stem) for p in (store_dir / THUMB_DIR).glob("*.jpg") if p.stem.isdigit()}
    if not clips <= thumbs:
        problems.append(f"{len(clips - thumbs)} clips have no thumbnail")
    with Store.open(store_dir) as reader:        # what a reader searches after reconciling with SQLite
        for name, ids in (("clips", clips), ("captions", captions)):
            have = set(reader._kinds[name].index.ids().tolist())
            if not ids <= have:
                problems.append(f"{len(ids - have)} {name} are missing from the {name} index")
    return problems
