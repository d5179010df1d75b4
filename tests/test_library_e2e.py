"""Day one with your own library, through the real CLI: index without a model, search, train on the library's
own subtitles, add the model to the store, and search with the dense channel fused in."""
from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import Store
from tests.test_train_store import TINY_FLAGS, _library

pytestmark = pytest.mark.slow


def _json(main, argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_index_without_model_then_train_on_subtitles_then_add_the_model(tmp_path, capsys):
    from webui.cli import main

    lib, store, model = tmp_path / "lib", tmp_path / "store", tmp_path / "model"
    rows = _library(lib, 8)
    assert main(["index", str(lib), "--store", str(store), "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()

    # Keyword: a word of one clip's subtitle finds that clip's video.
    first = rows[0]
    word = max(first["caption"].split(), key=len)
    found = _json(main, ["search", "--store", str(store), word, "--mode", "keyword", "--json"], capsys)
    assert "dense" not in found["channels"]
    assert first["video"] in {r["video_path"] for r in found["results"]}
    # Concept: whatever the frame encoder saw most in a clip, the concept channel finds by its name.
    with Store(store) as s:
        clip = s.clips(s.video_clips(s.video_by_path(first["video"]).id))[0]
    concept = _json(main, ["search", "--store", str(store), clip.tags[0][0], "--mode", "concept", "--json",
                           "-k", "20"], capsys)
    assert clip.id in [r["clip_id"] for r in concept["results"]]

    cache = tmp_path / "cache"
    assert main(["train", "--store", str(store), "--out", str(model), "--cache-dir", str(cache), *TINY_FLAGS]) == 0
    assert "found 8 clip-text pairs" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.rglob("*.npz"))  # the store's kept features, no decoding

    report = _json(main, ["index", "--store", str(store), "--model", str(model), "--json", "--no-progress"], capsys)
    assert report["model_added"] == {"clips": 8, "captions": 8, "videos_from_features": 8, "videos_decoded_again": 0}
    answer = _json(main, ["search", "--store", str(store), first["caption"], "--json"], capsys)
    assert "dense" in answer["channels"]
    assert any("dense" in r["sources"] for r in answer["results"])

    # The vectors made from kept features are those an index run with the model makes from the files.
    direct = tmp_path / "direct"
    assert main(["index", first["video"], "--store", str(direct), "--model", str(model), "--workers", "1",
                 "--no-progress"]) == 0
    with Store(store) as a, Store(direct) as b:
        va, vb = (s.video_by_path(first["video"]) for s in (a, b))
        ca, cb = a.video_clips(va.id)[0], b.video_clips(vb.id)[0]
        np.testing.assert_allclose(a.clip_vector(ca), b.clip_vector(cb), atol=2e-2)
    capsys.readouterr()


def test_a_model_that_samples_differently_does_not_fit(tmp_path, capsys, tiny_model_dir):
    from webui.cli import main

    lib, store = tmp_path / "lib", tmp_path / "store"
    _library(lib, 2, sidecars=False)
    assert main(["index", str(lib), "--store", str(store), "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # The tiny model decodes at 96 px; the store's frames were sampled at 224 px.
    assert main(["index", "--store", str(store), "--model", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert "does not fit the store's frames" in err and "size" in err and "--reindex" in err
    # Rebuilt with it instead, every video is decoded again: its frames must be sampled anew.
    report = _json(main, ["index", "--store", str(store), "--model", str(tiny_model_dir), "--reindex", "--json",
                          "--no-progress"], capsys)
    assert report["rebuilt"] == {"videos_from_features": 0, "videos_decoded_again": 2}
    assert len(report["indexed"]) == 2
    assert any("kept frame features not reused" in w and "size: 224 -> 96" in w for _, w in report["warnings"])
