"""Crash safety: SIGKILL a real `vidsearch index` at named points and at random times, re-run, check the store."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import pytest

from indexer import Store, StoreWriter
from tests.fixtures.postgres import store_sql

# Every test here runs on both databases: the store's rows in SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_db")

VIDSEARCH = Path(sys.executable).with_name("vidsearch")


def _faiss_ids(path: Path) -> set[int]:
    index = faiss.read_index(str(path))
    return set(faiss.vector_to_array(index.id_map).tolist())


def _rows(store: Path, query: str) -> list[tuple]:
    return store_sql(store, query)


def check_store(store: Path) -> dict:
    """Assert the store is consistent; return its committed content: path -> (hash, clip ids, captions)."""
    db = store
    clip_ids = {r[0] for r in _rows(db, "SELECT id FROM clips")}
    caption_ids = {r[0] for r in _rows(db, "SELECT id FROM captions")}
    # A reader, before any writer repairs the files, already sees every clip and no ghost.
    with Store.open(store) as reader:
        assert set(reader._kinds["clips"].index.ids().tolist()) == clip_ids
        assert set(reader._kinds["captions"].index.ids().tolist()) == caption_ids
    StoreWriter.open(store).close()  # what the next run does first: repair the FAISS files on disk
    assert _faiss_ids(store / "clips.faiss") == clip_ids
    assert _faiss_ids(store / "captions.faiss") == caption_ids
    assert _rows(db, "SELECT count(*) FROM clips WHERE vector IS NULL")[0][0] == 0
    assert {r[0] for r in _rows(db, "SELECT rowid FROM clip_text")} == clip_ids
    assert {r[0] for r in _rows(db, "SELECT clip_id FROM thumbnails")} == clip_ids
    # No duplicate videos (by content or by path) and no duplicate clips.
    assert not _rows(db, "SELECT hash FROM videos WHERE status='indexed' GROUP BY hash HAVING count(*) > 1")
    assert not _rows(db, "SELECT path FROM video_paths GROUP BY path HAVING count(*) > 1")
    assert not _rows(db, "SELECT video_id, start FROM clips GROUP BY video_id, start HAVING count(*) > 1")
    if (store / "store.db").exists():
        assert _rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    content = {}
    for path, vid, h in _rows(db, "SELECT path, id, hash FROM videos WHERE status='indexed'"):
        clips = tuple(r[0] for r in _rows(db, f"SELECT id FROM clips WHERE video_id={vid} ORDER BY start"))
        caps = tuple(sorted(r[0] for r in _rows(db, f"SELECT text FROM captions WHERE video_id={vid}")))
        content[path] = (h, clips, caps)
    return content


def _run(args: list[str], crash_at: str | None = None, kill_after: float | None = None) -> int:
    env = dict(os.environ)
    env.pop("VIDSEARCH_CRASH_AT", None)
    if crash_at:
        env["VIDSEARCH_CRASH_AT"] = crash_at
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
        out, _ = proc.communicate(timeout=120)
    finally:
        try:  # decoder processes the killed run left behind belong to its session
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.slow
def test_sigkill_at_any_point_keeps_the_store_consistent(synth_library, tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    args = [str(VIDSEARCH), "index", str(synth_library.manifest), "--store", str(store), "--model",
            str(tiny_model_dir), "--workers", "1", "--commit-every", "2", "--no-progress"]
    # Each run dies at the named point (the n-th pass in that run), or after a random delay.
    plan = [("video-written:3", None), ("commit:1", None), ("faiss-replace:2", None), (None, 5.0), (None, None)]
    rng = random.Random(0)
    committed: dict = {}
    for crash_at, delay in plan:
        if delay is not None:
            delay = rng.uniform(delay, delay + 3.0)
        started = time.monotonic()
        code, out = _run(args, crash_at, delay)
        if crash_at:
            assert code == -signal.SIGKILL, f"{crash_at} never reached (exit {code}):\n{out}"
        content = check_store(store)
        for path, value in committed.items():  # nothing committed before is lost or changed
            assert content.get(path) == value, (crash_at, path)
        committed = content
        assert time.monotonic() - started < 60
    assert code == 0, out
    assert len(committed) == len(synth_library.videos)
