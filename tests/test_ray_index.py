"""Indexing on a real local Ray cluster: the same store as in-process, and a file that kills its worker fails alone."""
from __future__ import annotations

import numpy as np
import pytest

from indexer import Store, index_paths
from indexer.ray_index import LOST
from tests.fixtures.ray_cluster import crashing_reader
from tests.fixtures.store import FakeModel, fake_reader, write_fake_video


def _content(store_dir) -> dict:
    """path -> [(start, end, vector)] of every indexed video, and path -> error of every failed one."""
    with Store.open(store_dir) as store:
        out = {}
        for v in store.videos(limit=1000):
            if v.status != "indexed":
                out[v.path] = v.error
                continue
            recs = store.clips(store.video_clips(v.id))
            out[v.path] = [(r.start, r.end, store.clip_vector(r.id), r.caption) for r in recs]
        return out


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for path in a:
        if isinstance(a[path], str):  # a failed file: the same reason
            assert a[path] == b[path], path
            continue
        assert len(a[path]) == len(b[path]), path
        for (s1, e1, v1, c1), (s2, e2, v2, c2) in zip(a[path], b[path]):
            assert (s1, e1, c1) == (s2, e2, c2)
            assert np.allclose(v1, v2, atol=1e-5)


def test_ray_run_matches_in_process_and_a_crashing_file_fails_alone(ray_cluster, tmp_path):
    model = FakeModel()
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, (colour, seconds) in enumerate([("red", 5.0), ("green", 3.0), ("blue", 9.0), ("white", 2.0)]):
        write_fake_video(lib / f"v{i}.mp4", colour, seconds)
    (lib / "v0.txt").write_text("a red square")
    (lib / "broken.mp4").write_bytes(b"not a video at all")
    here = index_paths([lib], tmp_path / "here", model, reader=fake_reader(model.sampling))
    there = index_paths([lib], tmp_path / "ray", model, reader=fake_reader(model.sampling), ray="auto", workers=2)
    assert sorted(there.indexed) == sorted(here.indexed) and len(there.indexed) == 4
    assert there.failed == here.failed and there.exit_code == here.exit_code == 3
    assert "flat_map" in there.ray_stats.lower() or "decode_rows" in there.ray_stats
    _same(_content(tmp_path / "here"), _content(tmp_path / "ray"))

    # A second run plans incrementally, as in-process: nothing changed, nothing decoded.
    again = index_paths([lib], tmp_path / "ray", model, reader=fake_reader(model.sampling), ray="auto")
    assert sorted(again.skipped) == sorted(here.indexed) and not again.indexed

    # A file whose worker process dies is a failed row; the run goes on and indexes the others.
    write_fake_video(lib / "crash.mp4", "red", 4.0)
    write_fake_video(lib / "after.mp4", "green", 4.0)
    report = index_paths([lib], tmp_path / "ray", model, reader=crashing_reader(model.sampling), ray="auto")
    assert report.failed[-1] == (str(lib / "crash.mp4"), LOST) and str(lib / "after.mp4") in report.indexed
    with Store.open(tmp_path / "ray") as store:
        crashed = store.video_by_path(lib / "crash.mp4")
        assert crashed.status == "failed" and crashed.error == LOST
        assert store.video_by_path(lib / "after.mp4").clips == 2


@pytest.mark.slow
def test_ray_run_of_the_real_model_matches_the_in_process_store(ray_cluster, synth_library, tiny_model_dir,
                                                                 tiny_store_dir, tmp_path):
    report = index_paths([synth_library.manifest], tmp_path / "ray", tiny_model_dir, ray="auto", workers=2)
    assert report.exit_code == 0, report.summary()
    _same(_content(tiny_store_dir), _content(tmp_path / "ray"))
