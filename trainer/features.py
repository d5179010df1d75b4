"""Frame-feature cache for training and evaluation: decode each video once, encode its frames, keep them on disk.

Entries are keyed by the file's content hash, the frame-encoder spec and the sampling settings, so a renamed
copy of a video reuses its entry and a changed encoder or frame rate never reads stale features.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$VIDSEARCH_CACHE, else ~/.cache/vidsearch, plus /features."""
    root = os.environ.get("VIDSEARCH_CACHE") or Path.home() / ".cache" / "vidsearch"
    return Path(root) / "features"


def file_hash(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class VideoFeatures:
    """Sampled frame times (N,) and their features (N, F) for one video."""

    times: np.ndarray
    features: np.ndarray
    duration: float

    def window(self, start: float | None, end: float | None) -> np.ndarray:
        """Features of frames with time in [start, end); the nearest frame if the window holds none."""
        lo = 0.0 if start is None else float(start)
        hi = float("inf") if end is None else float(end)
        keep = (self.times >= lo) & (self.times < hi)
        if keep.any():
            return self.features[keep]
        nearest = int(np.abs(self.times - lo).argmin())
        return self.features[nearest:nearest + 1]


class FeatureCache:
    """On-disk cache of per-video frame features for one (encoder spec, sampling) pair."""

    def __init__(self, cache_dir, encoder_spec: str, sampling):
        self.dir = Path(cache_dir or default_cache_dir())
        self.spec = encoder_spec
        self.sampling = sampling
        settings = json.dumps({"encoder": encoder_spec, "sampling": asdict(sampling)}, sort_keys=True)
        self._salt = hashlib.sha256(settings.encode()).hexdigest()[:16]

    def key(self, path) -> str:
        """Cache key of a video: content hash + encoder + sampling."""
        return f"{file_hash(path)[:32]}-{self._salt}"

    def _file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> VideoFeatures | None:
        """The cached entry, or None."""
        path = self._file(key)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return VideoFeatures(data["times"], data["features"].astype(np.float32), float(data["duration"]))

    def put(self, key: str, value: VideoFeatures) -> None:
        """Store an entry atomically (write then rename), so a crash never leaves a torn file."""
        path = self._file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, times=value.times, features=value.features.astype(np.float16), duration=value.duration)
        os.replace(tmp, path)

    def load_all(self, paths, encoder=None, workers: int = 2, progress: bool = False) -> dict[str, VideoFeatures]:
        """Features for every path; misses are decoded in worker processes and encoded with `encoder`.

        Files that cannot be decoded are logged and left out of the result. With `encoder=None`, misses
        are left out too (used by processes that only read what another one wrote).
        """
        paths = list(dict.fromkeys(str(p) for p in paths))
        keys = {p: self.key(p) for p in paths}
        out, missing = {}, []
        for p in paths:
            hit = self.get(keys[p])
            if hit is None:
                missing.append(p)
            else:
                out[p] = hit
        if missing and encoder is not None:
            out.update(self._compute(missing, keys, encoder, workers, progress))
        return out

    def _compute(self, paths, keys, encoder, workers, progress) -> dict[str, VideoFeatures]:
        from tqdm import tqdm

        from .media import DecodePool, MediaError

        out = {}
        with DecodePool(workers=max(1, workers), sampling=self.sampling) as pool:
            for path, video in tqdm(pool.imap(paths), total=len(paths), desc="features", unit="video",
                                    disable=not progress):
                if isinstance(video, MediaError):
                    log.warning("skipping %s", video)
                    continue
                feats = encoder.encode(video.frames)
                value = VideoFeatures(np.asarray(video.times, np.float64), feats.astype(np.float16).astype(np.float32),
                                      float(video.info.duration))
                self.put(keys[path], value)
                out[path] = value
        return out
