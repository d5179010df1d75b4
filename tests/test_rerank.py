"""Re-ranking decodes only each candidate clip's window, and gets the same frames a whole decode gives there."""
from __future__ import annotations

import numpy as np
import pytest

from search.engine import Hit, clip_features
from search.rerank import FeatureCache
from tests.fixtures.store import FakeModel, make_mp4
from trainer.media import SamplingConfig, decode, decode_window
from trainer.media.backends import decode_file, decode_window_file

SAMPLING = SamplingConfig(fps=2.0, size=32, clip_seconds=2.0, stride_seconds=2.0)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_mp4(tmp_path_factory.mktemp("rerank") / "bars.mp4", seconds=7.0, fps=8)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_window_holds_the_whole_decodes_frames_there(video, backend):
    whole = decode_file(str(video), SAMPLING, backend)
    for start, end in [(0.0, 2.0), (2.0, 4.0), (6.0, 7.0)]:
        part = decode_window_file(str(video), SAMPLING, backend, start=start, end=end)
        inside = (whole.times >= start) & (whole.times < end)
        assert inside.any()
        np.testing.assert_array_equal(part.times, whole.times[inside])
        np.testing.assert_array_equal(part.frames, whole.frames[inside])


def test_feature_cache_matches_the_indexers_clip_features(video):
    model = FakeModel()
    expected = clip_features(model, decode(str(video), SAMPLING), SAMPLING)
    hits = [Hit(i, 1, str(video), start, end, 0.0, None) for i, (start, end, _) in enumerate(expected)]
    cache = FeatureCache(model, SAMPLING)
    calls = model.frame_calls
    got = cache.features(hits)
    for (_, _, want), feats in zip(expected, got):
        np.testing.assert_allclose(feats, want, rtol=1e-6)
    assert model.frame_calls - calls == 1                  # the windows' frames in one batch, never whole videos
    again = cache.features(hits[:2])                        # cached: nothing decoded or encoded again
    assert model.frame_calls - calls == 1 and all(a is b for a, b in zip(again, got))
    assert len(decode_window(str(video), SAMPLING, 2.0, 4.0).frames) == len(expected[1][2])


def test_unreadable_candidate_gets_no_features(tmp_path):
    bad = tmp_path / "gone.mp4"
    bad.write_bytes(b"not a video")
    cache = FeatureCache(FakeModel(), SAMPLING)
    assert cache.features([Hit(1, 1, str(bad), 0.0, 2.0, 0.5, None)]) == [None]
