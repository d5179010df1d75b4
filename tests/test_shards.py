"""FAISS from shards: an IVF trained once, filled per shard, merged on disk; a store reading it memory-mapped."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer import Store, StoreWriter, index_paths, remove_paths
from indexer.faiss_index import VectorIndex
from indexer.shards import OnDiskIndex, build_ondisk, build_store_index, export_shards, is_ondisk, train_ivf
from tests.fixtures.store import COLOURS, FakeModel, fake_reader, write_fake_video


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_merged_on_disk_index_answers_like_the_same_ivf_in_memory(tmp_path):
    x = clustered(6000, 16)
    ids = np.arange(100, 6100, dtype=np.int64)
    shards = export_shards([(ids[:2500], x[:2500]), (ids[2500:], x[2500:])], tmp_path / "shards", 2000)
    assert len(shards) == 3 and [len(np.load(s / "ids.npy")) for s in shards] == [2000, 2000, 2000]
    out = build_ondisk(shards, 16, "IVF32,Flat", tmp_path / "clips.faiss", train_vectors=2000)
    assert is_ondisk(out) and len(list(tmp_path.glob("clips.faiss.*.ivfdata"))) == 1
    disk = OnDiskIndex.read(str(out), 16)
    assert disk.ntotal == 6000 and set(disk.ids().tolist()) == set(ids.tolist())
    # The same trained quantizer filled in memory gives the same neighbours.
    memory = faiss.read_index(str(out), faiss.IO_FLAG_ONDISK_SAME_DIR)
    flat = VectorIndex.build(16, "Flat", [(ids, x)])
    _, truth = flat.search(x[:100], 10)
    _, got = disk.search(x[:100], 10)
    memory.nprobe = faiss.extract_index_ivf(disk.index).nprobe
    _, again = memory.search(x[:100], 10)
    assert (got == again).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]) >= 0.9
    # A second build replaces the index and drops the old lists; a reader of the old one still answers.
    build_ondisk(shards[:2], 16, "IVF32,Flat", out, train_vectors=2000)
    assert len(list(tmp_path.glob("clips.faiss.*.ivfdata"))) == 1
    assert OnDiskIndex.read(str(out), 16).ntotal == 4000 and disk.search(x[:1], 1)[1][0, 0] == 100
    with pytest.raises(Exception, match="IVF"):
        train_ivf(16, "HNSW16", x[:100])


def test_store_on_disk_index_catches_up_filters_and_survives_the_writer(tmp_path):
    model = FakeModel(dim=8)
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(60):
        write_fake_video(lib / f"{i}.mp4", list(COLOURS)[i % 4], 5.0)
    store_dir = tmp_path / "store"
    index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    assert build_store_index(store_dir, "IVF4,Flat") == {"clips": "IVF4,Flat"}  # 60 captions: too few
    assert is_ondisk(store_dir / "clips.faiss") and not is_ondisk(store_dir / "captions.faiss")
    reader = Store.open(store_dir)
    assert isinstance(reader._kinds["clips"].index, OnDiskIndex) and reader.counts()["clips"] == 180
    _, ids = reader.search_clips(model.embed_text(["blue"]), 5)
    assert all(r.tags[0][0] == "blue" for r in reader.clips(ids[0]))

    # New rows go to the in-memory delta, removed ones are filtered; the writer never rewrites the file.
    write_fake_video(lib / "new.mp4", "white", 3.0)
    index_paths([lib], store_dir, model, reader=fake_reader(model.sampling))
    remove_paths([lib / "3.mp4"], store_dir)  # a white video
    assert is_ondisk(store_dir / "clips.faiss")
    assert reader.refresh() is True
    _, ids = reader.search_clips(model.embed_text(["white"]), 50)
    paths = {r.video_path for r in reader.clips(ids[0])}
    assert str(lib / "new.mp4") in paths and str(lib / "3.mp4") not in paths
    with Store.open(store_dir) as fresh:  # repaired from SQL on open, as for in-memory indexes
        rows = set(fresh._kinds["clips"].index.ids().tolist()) - {-1}
        assert fresh.counts()["clips"] == 180 - 3 + 2
        assert fresh._kinds["clips"].index.delta.ntotal == 2 and fresh._kinds["clips"].unremoved == 3
        assert len(rows) == 180 + 2
    StoreWriter.open(store_dir).close()
    assert is_ondisk(store_dir / "clips.faiss")
