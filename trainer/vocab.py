"""Visual words: hierarchical k-means over frame features, turning each frame into a token id."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_FILE = "visual_vocab.npz"


@dataclass
class VisualVocabulary:
    """A tree of k-means centroids; a leaf path read in base `branching` is the visual word id.

    `levels[d]` has shape (branching**d, branching, dim): for every node at depth d, the centroids of
    its children. A frame is quantised by descending the tree to the nearest child at each level.
    """

    branching: int
    depth: int
    levels: list[np.ndarray]

    @property
    def size(self) -> int:
        """Number of visual words (leaves)."""
        return self.branching ** self.depth

    @property
    def dim(self) -> int:
        """Feature dimension the vocabulary was fitted on."""
        return int(self.levels[0].shape[-1])

    def quantize(self, features: np.ndarray) -> np.ndarray:
        """(N, F) float features -> (N,) int64 visual word ids in [0, size), from their first `dim` values (the
        network's features; colour histograms after them make no words, trainer.encoders.colour)."""
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] < self.dim:
            raise ValueError(f"features must have shape (N, >= {self.dim}), got {feats.shape}")
        feats = np.ascontiguousarray(feats[:, :self.dim])
        node = np.zeros(len(feats), dtype=np.int64)
        for level in self.levels:
            child = np.empty_like(node)
            for parent in np.unique(node):       # group frames by tree node: one matmul per node
                rows = np.flatnonzero(node == parent)
                child[rows] = parent * self.branching + _nearest(feats[rows], level[parent])
            node = child
        return node

    def save(self, model_dir) -> Path:
        """Write the vocabulary to `model_dir/visual_vocab.npz`."""
        path = Path(model_dir) / VOCAB_FILE
        arrays = {f"level{d}": lv for d, lv in enumerate(self.levels)}
        meta = json.dumps({"branching": self.branching, "depth": self.depth})
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(meta), **arrays)
        return path

    @classmethod
    def load(cls, model_dir) -> "VisualVocabulary":
        """Read a vocabulary written by `save`; raises FileNotFoundError naming the file."""
        path = Path(model_dir) / VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"visual vocabulary not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            levels = [data[f"level{d}"].astype(np.float32) for d in range(meta["depth"])]
        return cls(meta["branching"], meta["depth"], levels)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each point (squared L2)."""
    score = (centroids ** 2).sum(1)[None, :] - 2 * points @ centroids.T
    return score.argmin(1)


def _kmeans(points: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    """Centroids (k, dim) of `points`; with fewer distinct points than k, points are reused."""
    import faiss

    n = len(points)
    if n == 0:
        raise ValueError("cannot fit visual words on an empty cluster")
    if n <= k:
        # Too few points to split: each point becomes a centroid, the rest repeat them, so that
        # every tree node still has exactly k children and ids stay a fixed-base number.
        return points[np.arange(k) % n].copy()
    # A few restarts keep one unlucky initialisation from merging two clear clusters.
    km = faiss.Kmeans(points.shape[1], k, niter=niter, nredo=3, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(np.ascontiguousarray(points, dtype=np.float32))
    return km.centroids.reshape(k, -1).copy()


def fit_vocabulary(features: np.ndarray, branching: int = 12, depth: int = 2,
                   seed: int = 0, niter: int = 20) -> VisualVocabulary:
    """Fit a hierarchical k-means vocabulary of branching**depth words on (N, dim) features.

    VideoBERT used 4 levels of 12 (20,736 words); the default 2 levels of 12 (144 words) fits a
    few hundred clips on a CPU.
    """
    if branching < 2 or depth < 1:
        raise ValueError(f"vocabulary needs branching >= 2 and depth >= 1, got {branching} and {depth}")
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2 or len(feats) == 0:
        raise ValueError(f"features must be a non-empty (N, dim) array, got shape {feats.shape}")
    assign = np.zeros(len(feats), dtype=np.int64)    # node index at the current depth
    levels = []
    for d in range(depth):
        level = np.empty((branching ** d, branching, feats.shape[1]), dtype=np.float32)
        child = np.empty_like(assign)
        for node in range(branching ** d):
            members = np.flatnonzero(assign == node)
            if len(members) == 0:
                # An empty node inherits its parent's centroid so that lookups never hit garbage.
                parent = levels[-1].reshape(-1, feats.shape[1])[node] if levels else feats.mean(0)
                level[node] = parent
                continue
            cents = _kmeans(feats[members], branching, seed + node, niter)
            level[node] = cents
            child[members] = node * branching + _nearest(feats[members], cents)
        levels.append(level)
        assign = child
    return VisualVocabulary(branching, depth, levels)
