"""FAISS built from shards: vectors exported in shards, an IVF trained once, filled per shard and merged on disk.

A shard is a directory holding `ids.npy` (int64 row ids) and `vectors.npy` (float32, one row per id): what a
Ray worker or an index run writes, or `export_shards` cuts from the store's SQL blobs (the source of
truth). `build_ondisk` trains the IVF quantizer on a sample drawn across the shards, fills one block index
per shard (each block can be built on another machine), and merges the blocks with
`faiss.contrib.ondisk.merge_ondisk` into one index whose inverted lists live in a `.ivfdata` file beside it.
Readers open it with IO_FLAG_ONDISK_SAME_DIR, so the lists are memory-mapped: a server holds the coarse
centroids and the pages its queries touch, not every vector.

Replacing is atomic: the lists go to a new file named by their content (never rewritten in place), the
index that points at them to a temp file that is fsynced and renamed over the old one; a reader that has the
old index open keeps its mapping of the old lists. Rows added since the build are caught up from SQL into a
small exact `delta` index in memory, and rows deleted since are filtered at search, so repair from SQL
holds as for in-memory indexes.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import faiss
import numpy as np

from .config import StoreError
from .crash import crash_point
from .faiss_index import EXACT, SearchParams, VectorIndex, _apply_params, _train, ivf_lists

IDS, VECTORS = "ids.npy", "vectors.npy"


# ---- shards ------------------------------------------------------------------------------------------

def write_shard(shard_dir: str | os.PathLike, ids, vectors) -> Path:
    """Write one shard: `ids` (N,) and `vectors` (N, dim), both fsynced; returns its directory."""
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    ids = np.ascontiguousarray(np.asarray(ids, np.int64).reshape(-1))
    vectors = np.ascontiguousarray(np.asarray(vectors, np.float32))
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{shard_dir}: {len(ids)} ids but vectors of shape {vectors.shape}")
    for name, array in ((VECTORS, vectors), (IDS, ids)):  # ids last: a shard with ids is complete
        with open(shard_dir / f"{name}.tmp", "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(shard_dir / f"{name}.tmp", shard_dir / name)
    return shard_dir


def read_shard(shard_dir: str | os.PathLike, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a shard; memory-mapped by default, so a shard is never read whole to sample it."""
    shard_dir = Path(shard_dir)
    try:
        ids = np.load(shard_dir / IDS, mmap_mode="r" if mmap else None)
        vectors = np.load(shard_dir / VECTORS, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as e:
        raise StoreError(f"{shard_dir}: not a readable vector shard ({e})") from None
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise StoreError(f"{shard_dir}: {len(ids)} ids but vectors of shape {vectors.shape}")
    return ids, vectors


def export_shards(chunks: Iterable[tuple[np.ndarray, np.ndarray]], out_dir: str | os.PathLike,
                  rows_per_shard: int = 250_000) -> list[Path]:
    """Cut (ids, vectors) chunks (e.g. the store's SQL blobs) into shards of `rows_per_shard` rows."""
    out_dir = Path(out_dir)
    shards, ids_buf, vec_buf, held = [], [], [], 0

    def emit():
        nonlocal ids_buf, vec_buf, held
        shards.append(write_shard(out_dir / f"shard-{len(shards):05d}", np.concatenate(ids_buf),
                                  np.concatenate(vec_buf)))
        ids_buf, vec_buf, held = [], [], 0

    for ids, vecs in chunks:
        start = 0
        while start < len(ids):
            take = min(rows_per_shard - held, len(ids) - start)
            ids_buf.append(np.asarray(ids[start:start + take]))
            vec_buf.append(np.asarray(vecs[start:start + take], np.float32))
            held, start = held + take, start + take
            if held == rows_per_shard:
                emit()
    if held:
        emit()
    return shards


def sample_shards(shards: list, n: int, seed: int = 0) -> np.ndarray:
    """About `n` vectors drawn uniformly across the shards (for training), without loading any shard whole."""
    sizes = [len(read_shard(s)[0]) for s in shards]
    total = sum(sizes)
    if total == 0:
        raise StoreError("no vectors in the shards")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
    out, offset = [], 0
    for shard, size in zip(shards, sizes):
        mine = picks[(picks >= offset) & (picks < offset + size)] - offset
        if len(mine):
            out.append(np.asarray(read_shard(shard)[1][mine], np.float32))
        offset += size
    return np.concatenate(out)


# ---- building ----------------------------------------------------------------------------------------

def train_ivf(dim: int, spec: str, sample: np.ndarray):
    """An empty trained IVF (inner product) of factory string `spec`."""
    if not ivf_lists(spec):
        raise StoreError(f"an on-disk index needs an IVF type (e.g. IVF4096,Flat), not {spec!r}")
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    _train(_Trainable(index), np.ascontiguousarray(sample, dtype=np.float32))
    return index


class _Trainable:
    """faiss_index._train expects an IndexIDMap2 (with `.index`); this hands it a bare index."""

    def __init__(self, index):
        self.index = index
        self.is_trained = index.is_trained

    def train(self, x):
        self.index.train(x)


def fill_block(trained_path: str, shard_dir, block_path: str, batch: int = 100_000) -> int:
    """Add one shard's vectors, under their row ids, to a copy of the trained index; write it to `block_path`.
    Runs anywhere the trained index and the shard can be read; returns the vectors added."""
    index = faiss.read_index(trained_path)
    ids, vectors = read_shard(shard_dir)
    for i in range(0, len(ids), batch):
        index.add_with_ids(np.ascontiguousarray(vectors[i:i + batch], np.float32),
                           np.ascontiguousarray(ids[i:i + batch], np.int64))
    faiss.write_index(index, block_path)
    return int(index.ntotal)


def build_ondisk(shards: list, dim: int, spec: str, out_path: str | os.PathLike, *, train_vectors: int = 0,
                 work_dir: str | os.PathLike | None = None, trained=None) -> Path:
    """Build `out_path` (an IVF with on-disk lists) from `shards`, and replace any index there atomically.

    `train_vectors` (default: 50 per list) are sampled across the shards to train the coarse quantizer,
    unless `trained` (an empty trained index of `spec`, e.g. from an earlier build) is given: k-means is
    the costly part of a build, and the quantizer stays good while the data's distribution holds.
    """
    out_path = Path(out_path)
    nlist = ivf_lists(spec)
    if trained is None:
        trained = train_ivf(dim, spec, sample_shards(shards, train_vectors or max(50 * nlist, 1000)))
    else:
        trained = faiss.clone_index(trained)
        if trained.ntotal or not trained.is_trained or trained.d != dim:
            raise StoreError("build_ondisk: `trained` must be an empty trained index of the same dim")
    with tempfile.TemporaryDirectory(dir=work_dir or out_path.parent, prefix=".build-") as tmp:
        trained_path = os.path.join(tmp, "trained.index")
        faiss.write_index(trained, trained_path)
        blocks = []
        for i, shard in enumerate(shards):
            blocks.append(os.path.join(tmp, f"block-{i:05d}.index"))
            fill_block(trained_path, shard, blocks[-1])
        _merge_and_replace(trained, blocks, out_path, tmp)
    return out_path


def _merge_and_replace(trained, blocks: list[str], out_path: Path, tmp: str) -> None:
    from faiss.contrib.ondisk import merge_ondisk

    staging = os.path.join(tmp, "merged.ivfdata")
    merge_ondisk(trained, blocks, staging)
    data_name = f"{out_path.name}.{_file_digest(staging)}.ivfdata"
    _fsync_file(staging)
    os.replace(staging, out_path.parent / data_name)
    # The index records where its lists are; IO_FLAG_ONDISK_SAME_DIR makes readers look beside the index.
    faiss.downcast_InvertedLists(faiss.extract_index_ivf(trained).invlists).filename = str(out_path.parent / data_name)
    tmp_index = f"{out_path}.tmp"
    faiss.write_index(trained, tmp_index)
    _fsync_file(tmp_index)
    crash_point("faiss-replace")
    os.replace(tmp_index, out_path)
    _fsync_file(str(out_path.parent))
    _drop_old_lists(out_path, keep=data_name)


def _file_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_old_lists(out_path: Path, keep: str) -> None:
    """Delete list files of earlier builds; readers that still map one keep it until they let go."""
    for p in out_path.parent.glob(f"{out_path.name}.*.ivfdata"):
        if p.name != keep:
            p.unlink(missing_ok=True)


# ---- reading -----------------------------------------------------------------------------------------

def is_ondisk(path: str | os.PathLike) -> bool:
    """True when the FAISS file at `path` is an IVF whose lists live in an .ivfdata file."""
    path = Path(path)
    return any(path.parent.glob(f"{path.name}.*.ivfdata"))


class OnDiskIndex(VectorIndex):
    """A merged on-disk IVF (memory-mapped lists) plus an exact in-memory `delta` of rows added since.

    Same interface as VectorIndex: ids, add, remove, search. Removing a vector of the on-disk part is not
    possible; it is reported as not removed, so the store filters it at search until the next build.
    """

    ondisk = True

    def __init__(self, base, spec: str, dim: int):
        super().__init__(base, spec, dim)
        self.delta = VectorIndex.empty(dim, EXACT)

    @classmethod
    def read(cls, path: str, dim: int, index_type: str = "") -> OnDiskIndex:
        base = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
        if base.d != dim:
            raise StoreError(f"{path}: index has dim {base.d}, the store says {dim}")
        return cls(base, f"IVF{faiss.extract_index_ivf(base).nlist},Flat,ondisk", dim)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) + self.delta.ntotal

    def base_ids(self) -> np.ndarray:
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        parts = []
        for i in range(ivf.nlist):
            n = lists.list_size(i)
            if n:
                parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def ids(self) -> np.ndarray:
        return np.concatenate([self.base_ids(), self.delta.ids()])

    def add(self, ids, vectors) -> None:
        self.delta.add(ids, vectors)

    def remove(self, ids) -> int:
        return self.delta.remove(ids)

    def search(self, queries, k: int, params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(-1, self.dim))
        k = max(1, int(k))
        with self._lock:
            _apply_params(self.index, params or SearchParams())
            s1, i1 = self.index.search(q, k)
        s1[i1 < 0] = -np.inf
        s2, i2 = self.delta.search(q, k)
        scores, ids = np.concatenate([s1, s2], axis=1), np.concatenate([i1, i2], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def write(self, path: str) -> None:
        raise StoreError(f"{path}: an on-disk index is replaced by a new build (indexer.shards.build_ondisk)")


def iter_shards(shard_root: str | os.PathLike) -> Iterator[Path]:
    """Complete shards under `shard_root` (those whose ids file exists), in name order."""
    yield from sorted(p.parent for p in Path(shard_root).glob(f"*/{IDS}"))


def build_store_index(store_dir: str | os.PathLike, spec: str | None = None, rows_per_shard: int = 250_000,
                      kinds: tuple[str, ...] = ("clips", "captions")) -> dict[str, str]:
    """Rebuild a store's FAISS files as on-disk IVF indexes from shards cut from its SQL blobs, under the
    writer lock; returns kind -> the spec built. `spec` defaults to the IVF `auto` plans for the size;
    a kind too small for any IVF keeps its in-memory index."""
    from .faiss_index import auto_nlist
    from .writer import StoreWriter

    writer = StoreWriter.open(store_dir)
    built = {}
    try:
        for name in kinds:
            kind = writer._kinds[name]
            if kind.index is None:  # a kind this store does not keep (no model: no clip vectors)
                continue
            n = kind.index.ntotal
            want = spec or (f"IVF{auto_nlist(n)},Flat" if auto_nlist(n) else "")
            if not want or n < 39 * ivf_lists(want):
                continue
            with tempfile.TemporaryDirectory(dir=writer.dir, prefix=".shards-") as tmp:
                shards = export_shards(writer._blob_chunks(kind), tmp, rows_per_shard)
                build_ondisk(shards, writer.config.dim, want, writer.dir / kind.file, work_dir=writer.dir)
            writer.rollback()  # the read transaction that exported the blobs
            with writer._lock:
                kind.index = OnDiskIndex.read(str(writer.dir / kind.file), writer.config.dim)
                kind.unremoved, kind.changed = 0, False
            built[name] = want
        writer._state = writer._disk_state()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return built
