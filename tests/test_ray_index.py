"""Indexing on a real local Ray cluster: the same store as in-process, and a file that kills its worker fails alone."""
from __future__ import annotations

import re

import numpy as np
import pytest

from indexer import Store, index_paths
from indexer.plan import Job
from indexer.ray_index import LOST, RayPlan, plan_blocks
from indexer.writer import FileState
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


def test_blocks_group_small_files_and_give_a_large_file_its_own():
    jobs = [Job("decode", FileState(f"/v/{i}.mp4", size, 1.0)) for i, size in enumerate([10, 10, 10, 500, 10, 10])]
    assert plan_blocks(jobs, files=2, size=100) == [[0, 1], [2], [3], [4, 5]]
    assert plan_blocks(jobs, files=16, size=1000) == [[0, 1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="files per block"):
        plan_blocks(jobs, files=0)


def test_plan_fits_the_cluster(ray_cluster):
    plan = RayPlan(workers=4).resolve(ray_cluster)  # the fixture's cluster: one node of 2 CPUs, no GPU
    assert (plan.decode, plan.actor_cpus, plan.actors) == ("actors", 2, 1)
    assert RayPlan(workers=1).resolve(ray_cluster).actors == 2
    assert RayPlan("tasks").resolve(ray_cluster).decode == "tasks"
    with pytest.raises(ValueError, match="decode must be one of"):
        RayPlan("gpu").resolve(ray_cluster)


@pytest.mark.parametrize("decode", ["actors", "tasks"])
def test_ray_run_matches_in_process_and_a_crashing_file_fails_alone(ray_cluster, tmp_path, decode):
    model = FakeModel()
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, (colour, seconds) in enumerate([("red", 5.0), ("green", 3.0), ("blue", 9.0), ("white", 2.0)]):
        write_fake_video(lib / f"v{i}.mp4", colour, seconds)
    (lib / "v0.txt").write_text("a red square")
    (lib / "broken.mp4").write_bytes(b"not a video at all")
    here = index_paths([lib], tmp_path / "here", model, reader=fake_reader(model.sampling))
    there = index_paths([lib], tmp_path / "ray", model, reader=fake_reader(model.sampling), ray="auto", workers=2,
                        ray_decode=decode)
    assert sorted(there.indexed) == sorted(here.indexed) and len(there.indexed) == 4
    assert there.failed == here.failed and there.exit_code == here.exit_code == 3
    assert f"decode={decode}" in there.ray_stats
    assert ("BlockIndexer" if decode == "actors" else "decode_rows") in there.ray_stats
    _same(_content(tmp_path / "here"), _content(tmp_path / "ray"))

    # A second run plans incrementally, as in-process: nothing changed, nothing decoded.
    again = index_paths([lib], tmp_path / "ray", model, reader=fake_reader(model.sampling), ray="auto",
                        ray_decode=decode)
    assert sorted(again.skipped) == sorted(here.indexed) and not again.indexed

    # A file whose worker process dies is a failed row; the run goes on and indexes the others, also those
    # of the crashing file's block (both new files share one).
    write_fake_video(lib / "crash.mp4", "red", 4.0)
    write_fake_video(lib / "after.mp4", "green", 4.0)
    report = index_paths([lib], tmp_path / "ray", model, reader=crashing_reader(model.sampling), ray="auto",
                         ray_decode=decode)
    passes = re.findall(r"(\d+) block\(s\) of (\d+) file\(s\)", report.ray_stats)
    assert len(passes) == 2 and passes[1][0] == passes[1][1]  # the lost block again, one file per block
    assert report.failed[-1] == (str(lib / "crash.mp4"), LOST) and str(lib / "after.mp4") in report.indexed
    with Store.open(tmp_path / "ray") as store:
        crashed = store.video_by_path(lib / "crash.mp4")
        assert crashed.status == "failed" and crashed.error == LOST
        assert store.video_by_path(lib / "after.mp4").clips == 2


def test_model_card_declares_what_the_loaded_model_gives(tiny_model_dir, tmp_path):
    from indexer.api import store_config
    from trainer.api import load
    from trainer.card import frame_outputs, read_card

    card, model = read_card(tiny_model_dir), load(tiny_model_dir)
    assert (card.identity, card.sampling, card.dim) == (model.identity, model.sampling, model.dim)
    assert card.frame_encoder.spec == model.frame_encoder.spec and card.frame_encoder.dim == model.frame_encoder.dim
    # A new store made from the card records exactly what one made from the loaded model records.
    assert store_config(card, tmp_path / "new") == store_config(model, tmp_path / "new")
    with pytest.raises(ValueError, match="unknown frame encoder spec 'resnet'"):
        frame_outputs("resnet", 512)
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        read_card(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("decode", ["actors", "tasks"])
def test_ray_run_of_the_real_model_matches_the_in_process_store(ray_cluster, synth_library, tiny_model_dir,
                                                                 tiny_store_dir, tmp_path, decode, capsys,
                                                                 monkeypatch):
    import json

    import trainer.api
    from webui.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the driver of a Ray run loaded the model; only its actors may")

    monkeypatch.setattr(trainer.api, "load", no_load)  # in this process only: the actors load it
    code = main(["index", str(synth_library.manifest), "--store", str(tmp_path / "ray"), "--model",
                 str(tiny_model_dir), "--ray", "--ray-decode", decode, "--workers", "2", "--no-progress", "--json"])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)["ray_stats"]  # the JSON report carries what Ray Data reported
    assert f"decode={decode}" in stats and "first actor ready after" in stats
    _same(_content(tiny_store_dir), _content(tmp_path / "ray"))
    # The frame features are kept as in-process (for training on the store, adding a model later).
    from indexer.features import kept_keys

    assert kept_keys(tmp_path / "ray") == kept_keys(tiny_store_dir) and kept_keys(tiny_store_dir)


@pytest.mark.slow
def test_decode_tasks_embed_generated_and_sidecar_captions_as_in_process(ray_cluster, synth_library,
                                                                         tiny_captioner_dir, tmp_path):
    from trainer.api import load

    model = load(tiny_captioner_dir)
    here = index_paths([synth_library.manifest], tmp_path / "here", model, workers=1)
    there = index_paths([synth_library.manifest], tmp_path / "ray", tiny_captioner_dir, ray="auto",
                        ray_decode="tasks")
    assert there.exit_code == here.exit_code == 0 and there.captions == here.captions
    query = model.embed_text(["a red circle moves to the right"])
    with Store.open(tmp_path / "here") as a, Store.open(tmp_path / "ray") as b:
        listed = [(a.video_captions(v.id), b.video_captions(b.video_by_path(v.path).id))
                  for v in a.videos(limit=100)]
        assert {c.source for x, _ in listed for c in x} >= {"generated", "manifest", "sidecar"}
        assert all(x == y for x, y in listed)
        (sa, _), (sb, _) = a.search_captions(query, 20), b.search_captions(query, 20)
        assert np.allclose(sa, sb, atol=1e-5)
