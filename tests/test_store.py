"""Store tests: layout, read API, reconcile of SQLite and FAISS, model checks, readers during writes."""
from __future__ import annotations

import json
import shutil
import threading

import faiss
import numpy as np
import pytest

from indexer import Store, StoreConfig, StoreError, StoreWriter, index_paths, remove_paths
from indexer.faiss_index import VectorIndex
from indexer.config import FORMAT_VERSION
from tests.fixtures.postgres import store_sql
from tests.fixtures.store import COLOURS, FakeModel, fake_reader, write_fake_video

# Every test here runs on both databases: the store's rows in SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_db")


def build(tmp_path, colours=("red", "green", "blue", "white"), model=None, store="store", **kw):
    """A store of fake videos (one per colour, 5 s = 3 clips each) with a .txt sidecar on the first."""
    model = model or FakeModel()
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for i, c in enumerate(colours):
        write_fake_video(lib / f"{c}_{i}.mp4", c, 5.0)
    (lib / f"{colours[0]}_0.txt").write_text(f"a bright {colours[0]} square spinning")
    report = index_paths([lib], tmp_path / store, model, reader=fake_reader(model.sampling), **kw)
    return tmp_path / store, lib, model, report


def faiss_ids(path) -> set[int]:
    index = faiss.read_index(str(path))
    return set(faiss.vector_to_array(index.id_map).tolist())


def sql(store_dir, query, *args):
    return store_sql(store_dir, query, *args)


def test_layout_pragmas_and_config(tmp_path, store_db):
    store_dir, _, model, report = build(tmp_path)
    assert report.exit_code == 0 and len(report.indexed) == 4
    files = ("clips.faiss", "captions.faiss", "store.json") + (("store.db",) if store_db == "sqlite" else ())
    for name in files:
        assert (store_dir / name).is_file(), name
    if store_db == "sqlite":
        assert sql(store_dir, "PRAGMA journal_mode")[0][0] == "wal"
        tables = {r[0] for r in sql(store_dir, "SELECT name FROM sqlite_master WHERE type='table'")}
    else:  # the store's own schema, recorded in store.json; no SQLite file at all
        assert not (store_dir / "store.db").exists()
        schema = StoreConfig.load(store_dir).db_schema
        tables = {r[0] for r in sql(store_dir, "SELECT tablename FROM pg_tables WHERE schemaname = ?", schema)}
        assert sql(store_dir, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_clip_text_tsv' "
                              "AND schemaname = ?", schema)[0][0].endswith("USING gin (tsv)")
    assert {"videos", "video_paths", "clips", "captions", "meta", "clip_text"} <= tables
    saved = StoreConfig.load(store_dir)
    assert saved.model_hash == model.identity["hash"] and saved.dim == model.dim
    assert (saved.fps, saved.clip_seconds) == (model.sampling.fps, model.sampling.clip_seconds)
    with Store.open(store_dir) as store:
        assert store.config == saved
        if store_db == "sqlite":
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert store.meta["format_version"] == FORMAT_VERSION and store.meta["clip_index"] == "Flat"
        thumbs = [store.thumbnail(i) for i in range(1, 20)]
        assert len([t for t in thumbs if t]) == store.counts()["clips"] == 12
        assert thumbs[0][:3] == b"\xff\xd8\xff"  # JPEG
        assert not (store_dir / "thumbs").exists()  # in the database: no file per clip
    from indexer import check_store
    assert check_store(store_dir) == []  # the store's own check, on either database
    # FAISS ids are the SQLite clip ids.
    assert faiss_ids(store_dir / "clips.faiss") == {r[0] for r in sql(store_dir, "SELECT id FROM clips")}


def test_a_store_with_thumbnail_files_is_still_read_and_gains_the_table(tmp_path):
    """Stores written before kept a file per clip under thumbs/, named in the clip's row: readers still serve
    them (only from that folder), and the next writer adds the thumbnails table for the clips it writes."""
    from indexer import check_store

    store_dir, _, _, _ = build(tmp_path)
    ids = [r[0] for r in sql(store_dir, "SELECT id FROM clips ORDER BY id")]
    jpegs = {i: bytes(j) for i, j in sql(store_dir, "SELECT clip_id, jpeg FROM thumbnails")}
    (store_dir / "thumbs").mkdir()
    for i in ids:  # the older layout: a file per clip, no table
        (store_dir / "thumbs" / f"{i}.jpg").write_bytes(jpegs[i])
        sql(store_dir, "UPDATE clips SET thumbnail = ? WHERE id = ?", f"thumbs/{i}.jpg", i)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"not the store's")
    sql(store_dir, "UPDATE clips SET thumbnail = ? WHERE id = ?", str(secret), ids[1])
    sql(store_dir, "DROP TABLE thumbnails")
    with Store.open(store_dir) as store:
        assert store.thumbnail(ids[0]) == jpegs[ids[0]]
        assert store.thumbnail(ids[1]) is None      # a row naming a file outside thumbs/ is not followed
        assert store.thumbnail(10 ** 6) is None
    assert check_store(store_dir) == []               # every clip has its file (the second one too)
    StoreWriter.open(store_dir).close()               # what the next index run does first
    assert sql(store_dir, "SELECT count(*) FROM thumbnails")[0][0] == 0
    with Store.open(store_dir) as store:
        assert store.thumbnail(ids[0]) == jpegs[ids[0]]
    # Removing a video of that layout deletes its clips' files once the removal commits.
    path, = sql(store_dir, "SELECT v.path FROM videos v JOIN clips c ON c.video_id = v.id WHERE c.id = ?", ids[0])[0]
    gone = [r[0] for r in sql(store_dir, "SELECT c.id FROM clips c JOIN videos v ON v.id = c.video_id "
                                         "WHERE v.path = ?", path)]
    assert remove_paths([path], store_dir) == [path]
    assert not any((store_dir / "thumbs" / f"{i}.jpg").exists() for i in gone)
    assert (store_dir / "thumbs" / f"{ids[-1]}.jpg").exists() or ids[-1] in gone
    assert secret.read_bytes() == b"not the store's"  # a row naming a file elsewhere deletes nothing there


def test_read_api(tmp_path):
    store_dir, lib, model, _ = build(tmp_path)
    store = Store.open(store_dir)
    assert store.counts() == {"videos": 4, "clips": 12, "failed": 0, "captions": 1, "pending": 0}
    scores, ids = store.search_clips(model.embed_text(["blue"]), 3)
    assert scores.shape == ids.shape == (1, 3)
    records = store.clips(ids[0])
    assert [r.video_path for r in records] == [str(lib / "blue_2.mp4")] * 3
    assert records[0].tags[0][0] == "blue" and store.thumbnail(records[0].id)[:3] == b"\xff\xd8\xff"
    # The stored vector is the exact one; the reader's index holds it in half precision (faiss_index.halved).
    assert np.allclose(store.clip_vector(int(ids[0, 0])) @ model.embed_text(["blue"])[0], scores[0, 0], atol=1e-3)
    # Past the end: -1 padding; unknown ids are left out of clips().
    _, ids = store.search_clips(model.embed_text(["red"]), 20)
    assert (ids[0, :12] > 0).all() and (ids[0, 12:] == -1).all()
    assert store.clips([999, int(ids[0, 0])])[0].id == ids[0, 0] and len(store.clips([999])) == 0
    # The sidecar caption: searchable by vector, by keyword, attached to the first video's clips.
    _, cap = store.search_captions(model.embed_text(["red"]), 1)
    owner = store.caption_clip([int(cap[0, 0])])[int(cap[0, 0])]
    assert store.clips([owner])[0].video_path == str(lib / "red_0.mp4")
    assert store.keyword("spinning square", 5)[0][0] == owner
    assert store.clips([owner])[0].caption == "a bright red square spinning"
    assert store.keyword("green", 20)  # concept tags are in the FTS table too
    assert store.keyword("", 5) == [] and store.keyword('"; DROP TABLE clips; --', 5) == []
    video = store.video_by_path(lib / "green_1.mp4")
    assert video.status == "indexed" and video.clips == 3 and video.paths == [str(lib / "green_1.mp4")]
    assert store.video(video.id) == video and len(store.videos(limit=2)) == 2
    assert store.video_clips(video.id) == sorted(store.video_clips(video.id))
    with pytest.raises(KeyError):
        store.clip_vector(10_000)


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no store here"):
        Store.open(tmp_path / "nothing")


def test_reconcile_adds_missing_and_drops_extra_vectors(tmp_path):
    store_dir, _, model, _ = build(tmp_path)
    path = store_dir / "clips.faiss"
    index = faiss.read_index(str(path))
    ids = faiss.vector_to_array(index.id_map)
    index.remove_ids(faiss.IDSelectorBatch(ids[:4]))  # clips without vectors
    index.add_with_ids(np.ones((1, model.dim), np.float32), np.array([777], np.int64))  # a vector without a clip
    faiss.write_index(index, str(path))
    rows = {r[0] for r in sql(store_dir, "SELECT id FROM clips")}

    reader = Store.open(store_dir)  # read-only: repaired in memory, the file is left alone
    assert set(reader._kinds["clips"].index.ids().tolist()) == rows
    _, found = reader.search_clips(np.ones((1, model.dim), np.float32), 20)
    assert 777 not in found and set(found[0][found[0] >= 0].tolist()) == rows
    assert 777 in faiss_ids(path)

    StoreWriter.open(store_dir).close()  # the writer saves the repair
    assert faiss_ids(path) == rows


def test_lost_vectors_are_embedded_again_by_the_next_run(tmp_path):
    store_dir, lib, model, _ = build(tmp_path)
    clip_id, video_id, path = sql(store_dir, "SELECT clips.id, video_id, path FROM clips JOIN videos "
                                  "ON videos.id = video_id ORDER BY clips.id LIMIT 1")[0]
    shutil.copy(path, lib / "a copy.mp4")  # the video that loses a vector has two paths
    index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    sql(store_dir, "UPDATE clips SET vector = NULL WHERE id = ?", clip_id)
    index = faiss.read_index(str(store_dir / "clips.faiss"))
    index.remove_ids(faiss.IDSelectorBatch(np.array([clip_id], np.int64)))
    faiss.write_index(index, str(store_dir / "clips.faiss"))

    StoreWriter.open(store_dir).close()
    assert sql(store_dir, "SELECT status FROM videos WHERE id = ?", video_id)[0][0] == "pending"
    with Store.open(store_dir) as store:
        assert store.counts()["pending"] == 1 and store.counts()["videos"] == 3
    report = index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    # Both paths of the pending video are planned again; its content is embedded once, under one video.
    assert path in report.indexed and set(report.indexed) <= {path, str(lib / "a copy.mp4")}
    assert len(report.skipped) == 3
    with Store.open(store_dir) as store:
        assert store.counts() == {"videos": 4, "clips": 12, "failed": 0, "captions": 1, "pending": 0}
        assert store.video_by_path(lib / "a copy.mp4").paths == [path, str(lib / "a copy.mp4")]
        assert sql(store_dir, "SELECT count(*) FROM clips WHERE vector IS NULL")[0][0] == 0
        assert set(store._kinds["clips"].index.ids().tolist()) == {r[0] for r in sql(store_dir, "SELECT id FROM clips")}


def test_other_model_is_refused_and_reindex_rebuilds(tmp_path):
    store_dir, lib, model, _ = build(tmp_path)
    other = FakeModel(name="other")
    with pytest.raises(StoreError, match="model_hash.*--reindex"):
        index_paths([lib], store_dir, other, reader=fake_reader(other.sampling))
    with pytest.raises(StoreError, match="fps"):
        index_paths([lib], store_dir, model, reader=fake_reader(model.sampling), fps=5.0)
    reader = Store.open(store_dir)
    report = index_paths([lib], store_dir, other, reader=fake_reader(other.sampling), reindex=True)
    assert len(report.indexed) == 4
    assert reader.refresh() is True and reader.config.model_hash == other.identity["hash"]  # reopened
    assert reader.counts()["clips"] == 12
    with Store.open(store_dir) as store:
        assert store.config.model_hash == other.identity["hash"]
        assert store.counts()["clips"] == 12 and min(store.video_clips(1)) >= 1


def test_one_writer_at_a_time(tmp_path):
    store_dir, *_ = build(tmp_path)
    writer = StoreWriter.open(store_dir)
    try:
        with pytest.raises(StoreError, match="another process is writing"):
            StoreWriter.open(store_dir)
    finally:
        writer.close()
    StoreWriter.open(store_dir).close()


def test_remove_cascades_to_clips_captions_fts_and_vectors(tmp_path):
    store_dir, lib, model, _ = build(tmp_path)
    removed = remove_paths([lib / "red_0.mp4"], store_dir)
    assert removed == [str(lib / "red_0.mp4")]
    assert sql(store_dir, "SELECT count(*) FROM clips")[0][0] == 9
    assert sql(store_dir, "SELECT count(*) FROM captions")[0][0] == 0
    assert sql(store_dir, "SELECT count(*) FROM clip_text")[0][0] == 9
    assert faiss_ids(store_dir / "clips.faiss") == {r[0] for r in sql(store_dir, "SELECT id FROM clips")}
    assert sql(store_dir, "SELECT count(*) FROM thumbnails")[0][0] == 9  # the removed clips' went with them
    with Store.open(store_dir) as store:
        assert store.keyword("spinning", 5) == []
    assert remove_paths([lib], store_dir) == sorted(str(p) for p in lib.glob("*.mp4") if "red" not in p.name)


def test_refresh_and_readers_during_writes(tmp_path):
    store_dir, lib, model, _ = build(tmp_path, colours=("red",))
    reader = Store.open(store_dir)
    assert reader.refresh() is False
    errors, stop = [], threading.Event()

    def read_loop():
        while not stop.is_set():
            try:
                reader.refresh()
                _, ids = reader.search_clips(model.embed_text(["green"]), 5)
                found = [int(i) for i in ids[0] if i >= 0]
                # Every id a search returns resolves to a clip row: nothing dangling mid-write.
                assert [r.id for r in reader.clips(found)] == found
            except Exception as e:  # collected and re-raised in the test thread
                errors.append(e)
                return

    t = threading.Thread(target=read_loop)
    t.start()
    try:
        for i in range(6):
            write_fake_video(lib / f"more_{i}.mp4", list(COLOURS)[i % 4], 3.0 + i)
            index_paths([lib], store_dir, model, reader=fake_reader(model.sampling), commit_every=1)
        remove_paths([lib / "more_0.mp4"], store_dir)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    reader.refresh()
    assert reader.counts()["videos"] == 6
    with Store.open(store_dir) as fresh:
        assert fresh.counts() == reader.counts()


def test_index_types(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, 3001, dtype=np.int64)
    exact = VectorIndex.build(32, "Flat", [(ids, x)])
    _, truth = exact.search(x[:50], 10)
    for spec in ("IVF16,Flat", "HNSW16"):
        from indexer.faiss_index import train_size

        index = VectorIndex.build(32, spec, [(ids, x)], sample=x[:train_size(spec)])
        _, got = index.search(x[:50], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
        assert recall >= 0.9, (spec, recall)
        index.write(str(tmp_path / "i.faiss"))
        again = VectorIndex.read(str(tmp_path / "i.faiss"), 32, spec)
        assert again.ntotal == 3000 and again.spec == spec
    hnsw = VectorIndex.build(32, "HNSW16", [(ids, x)])
    assert hnsw.remove([1, 2]) == 0 and hnsw.stale  # HNSW cannot remove: the writer rebuilds it
    with pytest.raises(StoreError, match="not usable"):
        from indexer.faiss_index import check_index_type

        check_index_type("IVF16,PQ5", 32)


def test_store_keeps_exact_until_trainable_then_switches(tmp_path):
    model = FakeModel(dim=8)
    config_kw = dict(index_type="IVF4,Flat")
    store_dir, lib, _, _ = build(tmp_path, colours=("red", "green"), model=model, **config_kw)
    with Store.open(store_dir) as store:
        assert store.meta["clip_index"] == "Flat"  # 6 clips: too few to train 4 lists
    for i in range(50):
        write_fake_video(lib / f"x{i}.mp4", list(COLOURS)[i % 4], 4.0 + (i % 7))
    index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    with Store.open(store_dir) as store:
        assert store.meta["clip_index"] == "IVF4,Flat"
        assert store.counts()["clips"] >= 156
        _, ids = store.search_clips(model.embed_text(["white"]), 5)
        assert all(r.tags[0][0] == "white" for r in store.clips(ids[0]))
    with open(store_dir / "store.json") as f:
        assert json.load(f)["index_type"] == "IVF4,Flat"


def test_auto_switches_to_ivf_past_threshold(tmp_path):
    model = FakeModel(dim=8)
    colours = [list(COLOURS)[i % 4] for i in range(60)]
    store_dir, lib, _, _ = build(tmp_path, colours=colours, model=model)
    writer = StoreWriter.open(store_dir)
    assert writer._kinds["clips"].index.spec == "Flat"
    writer.config.auto_threshold = 100  # a tiny threshold so 180 clips count as a large store
    writer.flush(force=True)
    assert writer._kinds["clips"].index.spec == "IVF4,Flat"
    writer.close()
    with Store.open(store_dir) as store:
        assert store.meta["clip_index"] == "IVF4,Flat" and store.meta["caption_index"] == "Flat"
        _, ids = store.search_clips(model.embed_text(["blue"]), 5)
        assert all(r.tags[0][0] == "blue" for r in store.clips(ids[0]))


def test_refresh_catches_up_in_place_when_the_faiss_file_is_unchanged(tmp_path, monkeypatch):
    from indexer.writer import ClipData, FileState
    from tests.fixtures.store import fake_decode

    store_dir, lib, model, _ = build(tmp_path, colours=("red", "green"))
    reader = Store.open(store_dir)
    index = reader._kinds["clips"].index
    # A large store's writer leaves the FAISS files alone between its periodic flushes.
    monkeypatch.setattr(StoreWriter, "small_index", 0)
    monkeypatch.setattr(StoreWriter, "flush_seconds", 3600.0)
    writer = StoreWriter.open(store_dir)
    stat = (store_dir / "clips.faiss").stat().st_mtime_ns
    video = fake_decode(str(write_fake_video(lib / "blue.mp4", "blue", 4.0)), model.sampling)
    clips = [ClipData(c.start, c.end, model.embed_clips([c.frames])[0], model.tags(c.frames))
             for c in video.clips(model.sampling)]
    writer.add_video(FileState(str(lib / "blue.mp4"), 1, 1.0, "h-blue"), video.info, clips, [])
    writer.detach(str(lib / "red_0.mp4"))
    writer.commit()
    try:
        assert (store_dir / "clips.faiss").stat().st_mtime_ns == stat
        assert reader.refresh() is True
        rows = {r[0] for r in sql(store_dir, "SELECT id FROM clips")}
        assert reader._kinds["clips"].index is index  # caught up in place, not reloaded
        assert set(index.ids().tolist()) == rows and len(rows) == 5
        _, ids = reader.search_clips(model.embed_text(["blue"]), 2)
        assert [r.video_path for r in reader.clips(ids[0])] == [str(lib / "blue.mp4")] * 2
    finally:
        writer.close()
    assert reader.refresh() is True and set(reader._kinds["clips"].index.ids().tolist()) == rows


def test_each_clip_of_a_written_video_keeps_its_own_rows(tmp_path):
    """add_video inserts a video's clips and captions in bulk: every id must still meet its own clip's vector,
    look, thumbnail, tags and captions, in the order the clips were given."""
    from types import SimpleNamespace

    from indexer.writer import CaptionData, ClipData, FileState

    store_dir, _, model, _ = build(tmp_path, colours=("red",))
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda v: v / np.linalg.norm(v))(rng.standard_normal(n).astype(np.float32))  # noqa: E731
    clips = [ClipData(4.0 * i, 4.0 * i + 4, unit(model.dim), [(f"tag{i}", 0.5)], f"jpeg{i}".encode(),
                      concepts=[(i, 0.5)]) for i in range(3)]
    captions = [CaptionData("the middle one", 4.5, 7.5, unit(model.dim), 1), CaptionData("the whole", None, None,
                                                                                        None, None)]
    writer = StoreWriter.open(store_dir)
    info = SimpleNamespace(duration=12.0, fps=8.0, width=64, height=64, codec="h264")
    vid = writer.add_video(FileState("/elsewhere/three.mp4", 1, 1.0, "h-three"), info, clips, captions)
    writer.close()
    rows = sql(store_dir, "SELECT id, start, tags, concepts FROM clips WHERE video_id = ? ORDER BY id", vid)
    assert [r[1] for r in rows] == [0.0, 4.0, 8.0]
    with Store.open(store_dir) as store:
        for (cid, _, tags, concepts), clip, i in zip(rows, clips, range(3)):
            assert json.loads(tags) == [[f"tag{i}", 0.5]] and json.loads(concepts) == [[i, 0.5]]
            assert store.thumbnail(cid) == clip.thumbnail
            _, ids = store.search_clips(clip.vector[None], 1)
            assert ids[0, 0] == cid
        caps = sql(store_dir, "SELECT id, text, clip_id FROM captions WHERE video_id = ? ORDER BY id", vid)
        assert [c[1:] for c in caps] == [("the middle one", rows[1][0]), ("the whole", None)]
        _, ids = store.search_captions(captions[0].vector[None], 1)
        assert ids[0, 0] == caps[0][0]
        assert [c for c, _ in store.keyword("tag2", 5)] == [rows[2][0]]
        assert [c for c, _ in store.keyword("middle", 5)] == [rows[1][0]]


def test_hnsw_store_rebuilds_after_removals(tmp_path):
    model = FakeModel(dim=8)
    store_dir, lib, _, _ = build(tmp_path, colours=("red", "green", "blue"), model=model, index_type="HNSW16")
    with Store.open(store_dir) as store:
        assert store.meta["clip_index"] == "HNSW16"
    remove_paths([lib / "green_1.mp4"], store_dir)  # HNSW cannot remove ids: the writer rebuilds it
    rows = {r[0] for r in sql(store_dir, "SELECT id FROM clips")}
    assert faiss_ids(store_dir / "clips.faiss") == rows and len(rows) == 6
    with Store.open(store_dir) as store:
        assert store.meta["clip_index"] == "HNSW16"
        _, ids = store.search_clips(model.embed_text(["green"]), 6)
        assert set(ids[0].tolist()) == rows


def test_a_reader_never_returns_rows_removed_since_it_loaded(tmp_path):
    """Between refreshes a reader searches the indexes it loaded. Until a removal, it trusts their ids without
    asking SQL; once an index run (here in another thread) removes a video, it checks them again."""
    store_dir, lib, model, _ = build(tmp_path)
    reader = Store.open(store_dir)
    red = model.embed_text(["red"])
    caption_rows = sql(store_dir, "SELECT id, COALESCE(clip_id, (SELECT id FROM clips WHERE video_id = "
                                  "captions.video_id ORDER BY start, id LIMIT 1)) FROM captions")
    _, before = reader.search_clips(red, 12)
    _, caption_ids = reader.search_captions(red, 4)
    assert len(set(before[0].tolist()) - {-1}) == 12 and len(set(caption_ids[0].tolist()) - {-1}) == 1
    assert reader._nothing_removed()
    # From the map kept in memory: the same owners SQL gives.
    assert set(reader._owners.ids.tolist()) == {c for c, _ in caption_rows}
    assert reader.caption_clip([c for c, _ in caption_rows]) == dict(caption_rows)
    red_clips = {r[0] for r in sql(store_dir, "SELECT clips.id FROM clips JOIN videos ON videos.id = clips.video_id "
                                              "WHERE videos.path = ?", str(lib / "red_0.mp4"))}
    (lib / "red_0.mp4").unlink()
    run = threading.Thread(target=index_paths, args=([lib], store_dir, model),
                           kwargs={"reader": fake_reader(model.sampling), "prune": True})
    run.start()
    run.join()
    assert sql(store_dir, "SELECT count(*) FROM captions")[0][0] == 0
    assert not reader._nothing_removed()
    _, after = reader.search_clips(red, 12)  # no refresh: the loaded index still holds the red clips
    kept = set(after[0].tolist()) - {-1}
    assert len(kept) == 9 and not kept & red_clips
    _, caption_ids = reader.search_captions(red, 4)
    assert (caption_ids == -1).all()
    assert reader.caption_clip([c for c, _ in caption_rows]) == {}
    assert reader.refresh() is True and reader._nothing_removed()
    assert set(reader.search_clips(red, 12)[1][0].tolist()) - {-1} == kept


def test_an_older_store_gains_the_removal_counter_when_a_writer_opens_it(tmp_path):
    store_dir, lib, model, _ = build(tmp_path, colours=("red", "green"))
    sql(store_dir, "DELETE FROM meta WHERE key = 'removals'")
    with Store.open(store_dir) as old:
        assert not old._nothing_removed()  # no counter: every id is checked
        _, ids = old.search_clips(model.embed_text(["red"]), 6)
        assert len(set(ids[0].tolist()) - {-1}) == 6
    StoreWriter.open(store_dir).close()
    assert sql(store_dir, "SELECT value FROM meta WHERE key = 'removals'") == [("0",)]
    with Store.open(store_dir) as store:
        assert store._nothing_removed()
