"""The store's kept frame features (indexer.features): one database row per video, written in the index run's
transactions; a store written with a file per video is still read."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from indexer.features import FEATURE_DIR, FeatureShelf, kept_keys
from trainer.features import VideoFeatures
from trainer.media import SamplingConfig

SPEC = "efficientnet-lite0:colour=2"
HASH_A, HASH_B = "a" * 64, "b" * 64


def _clips(times: list[list[float]], width: int = 6, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [SimpleNamespace(frame_times=np.array(t), features=rng.standard_normal((len(t), width)).astype(np.float16))
            for t in times]


def test_kept_features_round_trip_once_per_frame_after_commit(tmp_path):
    shelf = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    clips = _clips([[0.0, 1.0, 2.0], [2.0, 3.0]])             # overlapping windows share the frame at 2 s
    want = np.concatenate([clips[0].features, clips[1].features[1:]]).astype(np.float32)
    shelf.keep(HASH_A, clips, 4.0)
    assert clips[0].features is None and clips[1].frame_times is None     # the clips let go of them
    other = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    assert other.get(HASH_A) is None and not other.has(HASH_A)             # not committed: not seen elsewhere
    shelf.commit()
    got = other.get(HASH_A)
    assert isinstance(got, VideoFeatures) and got.duration == 4.0
    assert got.times.tolist() == [0.0, 1.0, 2.0, 3.0] and np.array_equal(got.features, want)
    assert other.has(HASH_A) and not other.has(HASH_B)
    assert FeatureShelf(tmp_path, "another-encoder", SamplingConfig()).get(HASH_A) is None  # keyed by encoder
    shelf.close()
    assert kept_keys(tmp_path) == [shelf.key(HASH_A)]
    assert [p.name for p in (tmp_path / FEATURE_DIR).iterdir() if p.suffix == ".npz"] == []


def test_a_failed_run_keeps_none_of_its_open_batch(tmp_path):
    shelf = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    shelf.keep(HASH_A, _clips([[0.0]]), 1.0)
    shelf.commit()
    shelf.keep(HASH_B, _clips([[0.0]]), 1.0)
    shelf.close(commit=False)
    again = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    assert again.has(HASH_A) and not again.has(HASH_B)


def test_a_store_with_a_file_per_video_is_still_read_and_pruned(tmp_path):
    """Stores written before keep `features/<hh>/<key>.npz` (trainer.features.FeatureCache's format)."""
    from indexer.features import drop_unused
    from trainer.features import FeatureCache

    shelf = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    old = FeatureCache(tmp_path / FEATURE_DIR, SPEC, SamplingConfig())
    feats = np.arange(12, dtype=np.float32).reshape(2, 6)
    old.put(shelf.key(HASH_A), VideoFeatures(np.array([0.0, 1.0]), feats, 2.0))
    assert shelf.has(HASH_A) and np.array_equal(shelf.get(HASH_A).features, feats)
    shelf.keep(HASH_B, _clips([[0.0]]), 1.0)
    shelf.close()
    assert kept_keys(tmp_path) == sorted([shelf.key(HASH_A), shelf.key(HASH_B)])

    assert drop_unused(tmp_path, _WriterOf([HASH_B])) == 1
    assert kept_keys(tmp_path) == [shelf.key(HASH_B)]
    assert drop_unused(tmp_path, _WriterOf([])) == 1 and kept_keys(tmp_path) == []


class _Session:
    """What drop_unused reads from the store's writer: the content hashes of the videos it holds."""

    def __init__(self, hashes):
        self.hashes = hashes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def scalars(self, _query):
        return iter(self.hashes)


class _WriterOf:
    def __init__(self, hashes):
        self.hashes = hashes

    def Session(self):
        return _Session(self.hashes)


def test_a_shelf_travels_to_another_process_without_its_database(tmp_path):
    """Encode settings carry the shelf to Ray actors; the copy opens the database itself when it reads."""
    import pickle

    shelf = FeatureShelf(tmp_path, SPEC, SamplingConfig())
    shelf.keep(HASH_A, _clips([[0.0]]), 1.0)
    shelf.commit()
    copy = pickle.loads(pickle.dumps(shelf))
    assert copy.has(HASH_A) and copy.key(HASH_A) == shelf.key(HASH_A)
    shelf.close()
    copy.close()
