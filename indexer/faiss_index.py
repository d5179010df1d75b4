"""FAISS side of a store: index type choice, building and training, id-mapped add/remove/search, atomic files."""
from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from .config import StoreError
from .crash import crash_point

EXACT = "Flat"
# Fewest training vectors per IVF list and per PQ centroid before a trainable index is trained.
_PER_LIST = 39
_PQ_CENTROIDS = 256


def check_index_type(index_type: str, dim: int) -> str:
    """Validate an index type for `dim`: "auto", "flat", or a FAISS factory string; returns it normalised."""
    spec = (index_type or "").strip()
    if spec.lower() in ("auto", "flat"):
        return spec.lower()
    spec = re.sub(r"^IDMap2?,", "", spec)
    try:
        faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except Exception as e:  # faiss raises RuntimeError with its own parser message
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"index type {index_type!r} is not usable for dim {dim}: {first}") from None
    return spec


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: the power of two nearest 4 * sqrt(n), at most 65536, and no more
    than n / 39 so that every list gets enough training points; 0 when even 4 lists are too many."""
    target = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    cap = 2 ** int(math.log2(max(n // _PER_LIST, 1)))
    nlist = int(min(65536, target, cap))
    return nlist if nlist >= 4 else 0


def auto_nprobe(nlist: int) -> int:
    """IVF lists probed per query: twice the square root of nlist as a power of two, at least 16.

    On clustered 384-d vectors this is the smallest setting that keeps recall@10 at 0.95 or more for the
    list counts `auto_nlist` picks at 10k, 100k and 1M vectors (BENCHMARKS.md, "Search at scale").
    """
    return max(16, 2 ** round(math.log2(2 * math.sqrt(max(nlist, 1)))))


def ivf_lists(spec: str) -> int:
    """The nlist of an IVF factory string, 0 when it has none."""
    m = re.search(r"IVF(\d+)", spec)
    return int(m.group(1)) if m else 0


def min_train(spec: str) -> int:
    """How many vectors `spec` needs before it is worth training (0 when it needs no training)."""
    need = _PER_LIST * ivf_lists(spec)
    if re.search(r"PQ\d+|SQ\d|LSH|RaBitQ", spec):
        need = max(need, _PER_LIST * _PQ_CENTROIDS if "PQ" in spec else 1000)
    return need


def train_size(spec: str) -> int:
    """How many vectors to sample for training `spec`: about 50 per IVF list, enough for PQ codebooks."""
    return max(min_train(spec), 50 * ivf_lists(spec), 1000) if min_train(spec) else 0


def plan(index_type: str, n: int, dim: int, auto_threshold: int) -> str:
    """The factory string to build for n vectors: exact until an approximate type is useful and trainable."""
    if index_type == "flat":
        return EXACT
    if index_type == "auto":
        nlist = auto_nlist(n)
        return EXACT if n < auto_threshold or not nlist else f"IVF{nlist},Flat"
    needs_training = not faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT).is_trained
    if needs_training and n < min_train(index_type):
        return EXACT
    return index_type


def should_rebuild(built: str, planned: str) -> bool:
    """True when the planned type is worth a rebuild: leaving exact search, or an IVF grown 4x too small."""
    if planned == built:
        return False
    if built == EXACT:
        return True
    old, new = ivf_lists(built), ivf_lists(planned)
    if old and new:
        return new >= 4 * old
    return True


@dataclass
class SearchParams:
    nprobe: int = 0  # 0: auto_nprobe(nlist)
    ef_search: int = 128


def num_gpus() -> int:
    """GPUs faiss can use (0 with the CPU build)."""
    try:
        return faiss.get_num_gpus()
    except AttributeError:
        return 0


def to_gpu(index):
    """A GPU copy of `index` for searching when faiss sees GPUs; the CPU index itself otherwise."""
    if num_gpus() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception:  # types without a GPU version (HNSW) stay on the CPU
        return index


def _apply_params(index, params: SearchParams) -> None:
    """Set nprobe (IVF) or efSearch (HNSW) on the base index under the id map, CPU or GPU."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    try:
        ivf = faiss.extract_index_ivf(inner)
    except Exception:  # not a CPU IVF index; a GPU IVF index carries nprobe itself
        ivf = inner if hasattr(inner, "nprobe") else None
    if ivf is not None:
        nlist = int(getattr(ivf, "nlist", 0) or 0)
        want = params.nprobe or auto_nprobe(nlist)
        ivf.nprobe = min(nlist, want) if nlist else want
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = params.ef_search


def _new_index(spec: str, dim: int):
    base = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(base)


def _as_matrix(vectors, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
    return x


def _train(index, sample: np.ndarray) -> None:
    if index.is_trained:
        return
    ivf = None
    if num_gpus() > 0:
        try:
            ivf = faiss.extract_index_ivf(index.index)
        except Exception:  # no IVF part: train on the CPU
            ivf = None
    if ivf is not None:
        # k-means assignments on the GPU; the trained index itself stays a CPU index, which is what is stored.
        flat = faiss.IndexFlatIP(ivf.d) if ivf.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(ivf.d)
        gpu_flat = faiss.index_cpu_to_all_gpus(flat)
        ivf.clustering_index = gpu_flat
    try:
        index.train(sample)
    finally:
        if ivf is not None:
            ivf.clustering_index = None


class VectorIndex:
    """An IndexIDMap2 whose ids are SQLite row ids, with the factory string it was built with.

    Removals on index types that cannot remove (HNSW) mark the index stale; the owner rebuilds it.
    """

    def __init__(self, index, spec: str, dim: int):
        self.index = index
        self.spec = spec
        self.dim = dim
        self.stale = False
        self._gpu = None
        self._lock = threading.Lock()

    @classmethod
    def empty(cls, dim: int, spec: str = EXACT) -> VectorIndex:
        return cls(_new_index(spec, dim), spec, dim)

    @classmethod
    def build(cls, dim: int, spec: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
              sample: np.ndarray | None = None) -> VectorIndex:
        """Build `spec` from `chunks` of (ids, vectors), training it first on `sample` when it needs training."""
        index = _new_index(spec, dim)
        if not index.is_trained:
            if sample is None or len(sample) == 0:
                raise StoreError(f"index type {spec!r} needs training vectors")
            _train(index, _as_matrix(sample, dim))
        out = cls(index, spec, dim)
        for ids, vecs in chunks:
            out.add(ids, vecs)
        return out

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids in the index (int64)."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids, vectors) -> None:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids) == 0:
            return
        with self._lock:
            self.index.add_with_ids(_as_matrix(vectors, self.dim), ids)
            self._gpu = None

    def remove(self, ids) -> int:
        """Remove ids; returns how many went. Types without removal are marked stale instead."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock:
            self._gpu = None
            try:
                return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
            except RuntimeError:
                self.stale = True
                return 0

    def search(self, queries, k: int, params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k); missing results have id -1 and score -inf."""
        q = _as_matrix(queries, self.dim)
        k = max(1, int(k))
        # Searches hold the lock too: a reader's refresh may add to this index in place.
        with self._lock:
            if self.ntotal == 0:
                return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
            if self._gpu is None:
                self._gpu = to_gpu(self.index)
            _apply_params(self._gpu, params or SearchParams())
            scores, ids = self._gpu.search(q, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def write(self, path: str) -> None:
        """Write to `path` atomically: a temp file beside it, fsync, os.replace, fsync of the directory."""
        tmp = f"{path}.tmp"
        with self._lock:
            faiss.write_index(self.index, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("faiss-replace")
        os.replace(tmp, path)
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def read(cls, path: str, dim: int, index_type: str) -> VectorIndex:
        """Load an index file written by `write`; `index_type` is the store's configured type."""
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIDMap2):
            raise StoreError(f"{path}: not an id-mapped index ({type(index).__name__})")
        if index.d != dim:
            raise StoreError(f"{path}: index has dim {index.d}, the store says {dim}")
        return cls(index, describe(faiss.downcast_index(index.index), index_type), dim)


def halved(index: VectorIndex) -> VectorIndex:
    """A reader's copy of an exact index with its vectors in float16 (same ids, same spec); other types as they
    are. An exact search reads every vector, and a query's text tower streams tens of megabytes of weights
    through the caches first, so the search runs at memory speed: half the bytes, half the time, and half a
    reader's memory. Scores move by about 1e-3 at most, so only near-ties can swap. Where FAISS sees a GPU, the
    exact index is searched there (`to_gpu`) and stays as it is."""
    if type(index) is not VectorIndex or num_gpus() > 0:  # an on-disk index keeps its layout; a GPU searches
        return index
    base = faiss.downcast_index(index.index.index)
    if not isinstance(base, faiss.IndexFlat):
        return index
    half = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(index.dim, faiss.ScalarQuantizer.QT_fp16,
                                                        faiss.METRIC_INNER_PRODUCT))
    if base.ntotal:
        half.add_with_ids(base.reconstruct_n(0, base.ntotal), index.ids())
    return VectorIndex(half, index.spec, index.dim)


def describe(base, index_type: str) -> str:
    """The factory string a loaded base index corresponds to, as `plan` would name it."""
    if isinstance(base, faiss.IndexFlat):
        return EXACT
    if index_type not in ("auto", "flat"):
        return index_type
    try:
        return f"IVF{faiss.extract_index_ivf(base).nlist},Flat"
    except Exception:  # neither flat nor IVF: a type from an earlier configuration
        return type(base).__name__
