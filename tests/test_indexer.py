"""Indexer tests: discovery, the pipeline loop with a fake model, incremental runs, removal and pruning."""
from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest

from indexer import EXIT_FAILED, Store, index_paths, prune_store, remove_paths
from indexer.discover import discover
from indexer.pipeline import EncodeSettings, IndexReport, Job, run_pipeline
from indexer.writer import FileState
from tests.fixtures.store import FakeModel, fake_reader, write_fake_video


def run(lib, store, model=None, **kw):
    model = model or FakeModel()
    return index_paths([lib] if not isinstance(lib, list) else lib, store, model,
                       reader=fake_reader(model.sampling), **kw)


def test_discover_walks_dirs_manifests_and_reports_problems(tmp_path):
    lib = tmp_path / "lib"
    (lib / "sub" / "deeper").mkdir(parents=True)
    (lib / ".hidden").mkdir()
    for rel in ("a.mp4", "sub/b.MKV", "sub/deeper/c.webm", ".hidden/d.mp4", "notes.txt", "sub/e.jpg"):
        (lib / rel).write_bytes(b"x")
    os.symlink(lib, lib / "sub" / "loop")  # directory loop: walked once
    os.symlink("self.mp4", lib / "self.mp4")  # file symlink loop
    os.symlink("gone.mp4", lib / "broken.mp4")
    os.mkfifo(lib / "pipe.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"video": "lib/a.mp4", "caption": "a cat"}\n'
                        '{"video": "lib/a.mp4", "caption": "a dog", "start": 0, "end": 1}\n')
    found = discover([lib, manifest, lib / "a.mp4"])
    assert [f.path for f in found.files] == [str(lib / p) for p in ("a.mp4", "sub/b.MKV", "sub/deeper/c.webm")]
    assert [c.text for c in found.files[0].captions] == ["a cat", "a dog"]
    problems = dict(found.problems)
    assert problems[str(lib / "self.mp4")] == "symlink loop"
    assert problems[str(lib / "broken.mp4")].startswith("broken symlink")
    assert problems[str(lib / "pipe.mp4")] == "not a regular file"
    assert any("loop" in reason for _, reason in found.notes)
    assert dict(discover([tmp_path / "nope.mp4"]).problems) == {str(tmp_path / "nope.mp4"): "file not found"}


def test_pipeline_batches_frames_across_videos_and_isolates_failures(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(6):
        write_fake_video(lib / f"v{i}.mp4", "red" if i != 3 else "green", 2.0)
    (lib / "junk.mp4").write_bytes(b"not a video")
    # The fake encoder raises on green frames (mean red channel 30): only that video may fail.
    model = FakeModel(fail_on="30")
    report = run(lib, tmp_path / "store", model, batch_size=64)
    assert report.exit_code == EXIT_FAILED == 3
    failed = dict(report.failed)
    assert failed.keys() == {str(lib / "junk.mp4"), str(lib / "v3.mp4")}
    assert "encoding failed" in failed[str(lib / "v3.mp4")]
    assert len(report.indexed) == 5 and report.clips == 5
    summary = report.summary()
    assert "indexed 5" in summary and "failed 2" in summary and "not a fake video" in summary
    with Store.open(tmp_path / "store") as store:
        failed_rows = store.videos(status="failed")
        assert {(v.path, v.error) for v in failed_rows} == set(report.failed)



def test_encoder_batches_frames_across_videos(tmp_path):
    from indexer.encode import EncodeSettings, encode_videos
    from tests.fixtures.store import fake_decode

    model = FakeModel()
    items = [(Job("decode", FileState(str(p), 1, 1.0, "h")), fake_decode(str(p), model.sampling))
             for p in (write_fake_video(tmp_path / f"{i}.mp4", "red", 3.0) for i in range(5))]
    out = encode_videos(items, model, EncodeSettings(model.sampling, batch_size=64))
    assert model.frame_calls == 1  # 5 videos x 6 frames in one encoder call
    assert [len(e.clips) for e in out] == [2] * 5 and all(e.clips[0].thumbnail for e in out)
    out = encode_videos(items, model, EncodeSettings(model.sampling, batch_size=4))
    assert model.frame_calls == 1 + 8  # 30 frames in batches of at most 4


class DescribingModel(FakeModel):
    """A fake model with a caption decoder: a clip is described by its nearest colour name, and each
    describe call is counted; a clip of colour `fail_colour` makes the call raise."""

    can_describe = True

    def __init__(self, fail_colour: str | None = None):
        super().__init__()
        self.describe_calls, self.fail_colour = [], fail_colour

    def describe(self, stacks, features=False, num_beams=None, fast=False):
        from tests.fixtures.store import COLOURS

        self.describe_calls.append(len(stacks))
        names = [min(COLOURS, key=lambda n: float(np.linalg.norm(np.asarray(f).mean(0) * 255 - COLOURS[n])))
                 for f in stacks]
        if self.fail_colour in names:
            raise RuntimeError("fake decoder failure")
        return [f"a {n} clip" for n in names]


def _decoded(tmp_path, model, colours, seconds=4.0):
    from tests.fixtures.store import fake_decode

    paths = [write_fake_video(tmp_path / f"{i}.mp4", c, seconds) for i, c in enumerate(colours)]
    return [(Job("decode", FileState(str(p), 1, 1.0, f"h{i}")), fake_decode(str(p), model.sampling))
            for i, p in enumerate(paths)]


def test_gathered_descriptions_match_per_video_ones_in_fewer_calls(tmp_path):
    from indexer.encode import VideoAssembler, encode_videos
    from trainer.media.types import whole_chunk

    colours = ["red", "green", "blue", "white", "red", "blue"]
    model = DescribingModel()
    items = _decoded(tmp_path, model, colours)  # 2 clips each
    alone = encode_videos(items, model, EncodeSettings(model.sampling))
    assert model.describe_calls == [12]
    model.describe_calls = []
    gathered = VideoAssembler(model, EncodeSettings(model.sampling, describe_batch=5), gather=True)
    out = []
    for job, video in items:  # one video per call, as a stream of chunks arrives
        out += [(len(model.describe_calls), e) for e in gathered.encode([(job, whole_chunk(video, model.sampling))])]
    out += [(len(model.describe_calls), e) for e in gathered.flush()]
    # Videos wait, in order, until 5 clips are held; the third video's second clip waits for the next call.
    assert model.describe_calls == [5, 5, 2]
    assert [e.job.state.path for _, e in out] == [j.state.path for j, _ in items]
    assert [calls for calls, _ in out] == [1, 1, 2, 2, 2, 3]
    for a, (_, b) in zip(alone, out):
        assert [c.description for c in a.clips] == [c.description for c in b.clips]
        assert [(c.text, c.source) for c in a.captions] == [(c.text, c.source) for c in b.captions]
        assert all(c.undescribed is None for c in b.clips)
    assert [c.description for c in out[1][1].clips] == ["a green clip"] * 2


def test_a_video_the_decoder_fails_on_fails_alone(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, c in enumerate(["red", "green", "blue", "white"]):
        write_fake_video(lib / f"v{i}.mp4", c, 4.0)
    report = run(lib, tmp_path / "store", DescribingModel(fail_colour="green"))
    assert dict(report.failed).keys() == {str(lib / "v1.mp4")}
    assert "describing failed" in dict(report.failed)[str(lib / "v1.mp4")]
    with Store.open(tmp_path / "store") as store:
        for i, c in [(0, "red"), (2, "blue"), (3, "white")]:
            video = store.video_by_path(lib / f"v{i}.mp4")
            assert [(t.text, t.source) for t in store.video_captions(video.id)] == [(f"a {c} clip", "generated")] * 2


def test_decoded_chunks_queue_by_frames_not_by_videos(tmp_path):
    """Short videos queue until the frames they hold reach the bound, so the encoder can fill its batches;
    a chunk larger than the bound still goes in alone."""
    import queue

    from indexer.pipeline import _FrameQueue
    from tests.fixtures.store import fake_decode
    from trainer.media.types import whole_chunk

    model = FakeModel()
    short = [(j, whole_chunk(v, model.sampling)) for j, v in _decoded(tmp_path, model, ["red"] * 12, seconds=2.0)]
    q = _FrameQueue(16)  # 4 frames per video
    for item in short[:4]:
        q.put(item, timeout=0)
    with pytest.raises(queue.Full):
        q.put(short[4], timeout=0.01)
    q.put(Job("skip", FileState("x", 1, 1.0, "h")), timeout=0)  # no frames: never waits
    assert q.get(timeout=0) is short[0]
    q.put(short[4], timeout=0)  # the first video's frames were taken
    taken = [q.get_nowait() for _ in range(5)]
    assert taken[:3] == short[1:4] and taken[4] is short[4] and q.empty()
    long = (short[5][0], whole_chunk(fake_decode(str(write_fake_video(tmp_path / "long.mp4", "red", 20.0)),
                                                 model.sampling), model.sampling))
    q.put(long, timeout=0)  # 40 frames, over the bound, into the empty queue
    with pytest.raises(queue.Full):
        q.put(short[6], timeout=0.01)
    assert q.get(timeout=0) is long
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)


def test_run_pipeline_with_fake_sink(tmp_path):
    """The loop is independent of the store: any sink with the writer's methods will do."""
    class Sink:
        def __init__(self):
            self.videos, self.failures, self.commits = [], [], 0

        def add_video(self, state, info, clips, captions):
            self.videos.append((state.path, len(clips)))
            return len(self.videos)

        def add_failure(self, state, reason):
            self.failures.append((state.path, reason))

        def find_content(self, h, committed=False):
            return None

        def commit(self):
            self.commits += 1

    model = FakeModel()
    paths = [write_fake_video(tmp_path / f"{i}.mp4", "blue", 4.0) for i in range(5)]
    jobs = [Job("decode", FileState(str(p), 1, 1.0, f"h{i}")) for i, p in enumerate(paths)]
    jobs.append(Job("decode", FileState(str(tmp_path / "missing.mp4"), 1, 1.0, "hx")))
    sink = Sink()
    report = run_pipeline(jobs, fake_reader(model.sampling), model, sink, EncodeSettings(model.sampling),
                          report=IndexReport(), commit_every=2)
    assert sink.videos == [(str(p), 2) for p in paths]
    assert len(sink.failures) == 1 and sink.commits >= 3 and report.clips == 10


def test_incremental_skip_touch_change_duplicate(tmp_path):
    lib, store = tmp_path / "lib", tmp_path / "store"
    lib.mkdir()
    for i, c in enumerate(("red", "green", "blue")):
        write_fake_video(lib / f"v{i}.mp4", c, 4.0)
    first = run(lib, store)
    assert len(first.indexed) == 3
    again = run(lib, store)
    assert len(again.skipped) == 3 and not again.indexed and again.exit_code == 0

    os.utime(lib / "v0.mp4", (1, 1))  # new mtime, same bytes: hashed, found unchanged
    write_fake_video(lib / "v1.mp4", "white", 6.0)  # new content: re-indexed
    shutil.copy(lib / "v2.mp4", lib / "copy of v2.mp4")  # same content, second path
    before = {r[0] for r in sqlite3.connect(store / "store.db").execute("SELECT id FROM clips")}
    report = run(lib, store)
    assert report.indexed == [str(lib / "v1.mp4")]
    assert sorted(report.skipped) == [str(lib / "v0.mp4"), str(lib / "v2.mp4")]
    assert report.duplicates == [(str(lib / "copy of v2.mp4"), str(lib / "v2.mp4"))]
    with Store.open(store) as s:
        assert s.counts()["videos"] == 3
        v2 = s.video_by_path(lib / "copy of v2.mp4")
        assert v2.paths == [str(lib / "v2.mp4"), str(lib / "copy of v2.mp4")]
        v1 = s.video_by_path(lib / "v1.mp4")
        assert v1.duration == 6.0 and v1.clips == 3
        ids = {r.id for r in s.clips(range(1, 100))}
    assert len(before - ids) == 2  # the old v1 clips went, nothing else did


def test_remove_and_prune(tmp_path):
    lib, store = tmp_path / "lib", tmp_path / "store"
    (lib / "keep").mkdir(parents=True)
    (lib / "drop").mkdir()
    for i in range(2):
        write_fake_video(lib / "keep" / f"k{i}.mp4", "red", 2.0)
        write_fake_video(lib / "drop" / f"d{i}.mp4", "blue", 2.0)
    shutil.copy(lib / "keep" / "k0.mp4", lib / "drop" / "same_as_k0.mp4")
    run(lib, store)
    assert remove_paths([lib / "drop"], store) == [str(lib / "drop" / n) for n in ("d0.mp4", "d1.mp4", "same_as_k0.mp4")]
    with Store.open(store) as s:
        assert s.counts()["videos"] == 2
        assert s.video_by_path(lib / "keep" / "k0.mp4").paths == [str(lib / "keep" / "k0.mp4")]
    (lib / "keep" / "k1.mp4").unlink()
    assert prune_store(store) == [str(lib / "keep" / "k1.mp4")]
    # --prune in an index run; the primary path going away hands the video to its other path.
    shutil.copy(lib / "keep" / "k0.mp4", lib / "keep" / "k0 copy.mp4")
    run(lib / "keep", store)
    (lib / "keep" / "k0.mp4").unlink()
    report = run(lib / "keep", store, prune=True)
    assert report.removed == [str(lib / "keep" / "k0.mp4")]
    with Store.open(store) as s:
        video = s.video_by_path(lib / "keep" / "k0 copy.mp4")
        assert video.path == str(lib / "keep" / "k0 copy.mp4") and video.clips == 1
        assert s.counts()["videos"] == 1


def test_manifest_captions_attach_by_time_and_update(tmp_path):
    lib, store = tmp_path / "lib", tmp_path / "store"
    lib.mkdir()
    write_fake_video(lib / "v.mp4", "red", 6.0)  # clips [0,2) [2,4) [4,6)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"video": "lib/v.mp4", "caption": "a red ball appears", "start": 2.5, "end": 3.9}\n'
                        '{"video": "lib/v.mp4", "caption": "the whole red video"}\n')
    report = run([manifest], store)
    assert report.captions == 2
    with Store.open(store) as s:
        clip_ids = s.video_clips(1)
        hits = dict(s.keyword("ball", 5))
        assert list(hits) == [clip_ids[1]]
        assert s.clips([clip_ids[1]])[0].caption == "a red ball appears"
        assert s.clips([clip_ids[2]])[0].caption == "the whole red video"  # untimed caption of its video
        assert list(dict(s.keyword("whole", 5))) == [clip_ids[0]]
    assert run([manifest], store).skipped == [str(lib / "v.mp4")]
    with open(manifest, "a") as f:
        f.write('{"video": "lib/v.mp4", "caption": "a late green flash", "start": 4.2, "end": 5}\n')
    run([manifest], store)
    with Store.open(store) as s:
        assert s.counts()["captions"] == 3
        assert list(dict(s.keyword("flash", 5))) == [s.video_clips(1)[2]]


def test_bad_sidecar_is_a_warning(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    write_fake_video(lib / "a.mp4", "red", 3.0)
    (lib / "a.srt").write_text("1\nnot a time line\nhello\n")
    report = run(lib, tmp_path / "store")
    assert report.indexed == [str(lib / "a.mp4")] and report.exit_code == 0
    assert report.warnings and "sidecar" in report.warnings[0][1] and "warning" in report.summary()


def test_progress_and_report_dict(tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    write_fake_video(lib / "a.mp4", "red", 3.0)
    report = run(lib, tmp_path / "store", progress=True)
    err = capsys.readouterr().err
    assert "video" in err and "clips=" in err and "video_s_per_s" in err
    d = report.to_dict()
    assert d["exit_code"] == 0 and d["indexed"] == [str(lib / "a.mp4")] and d["video_seconds"] == 3.0
    assert d["ray_stats"] == ""  # an in-process run: nothing from Ray


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        run(tmp_path, tmp_path / "store", batch_size=0)


def test_error_mid_run_keeps_finished_files_and_drops_the_half_written_one(tmp_path):
    """A failure while a video is being written rolls back its batch; files committed before stay."""
    lib, store = tmp_path / "lib", tmp_path / "store"
    lib.mkdir()
    for i in range(4):
        write_fake_video(lib / f"v{i}.mp4", "red", 2.0)
    from indexer.writer import StoreWriter

    calls = []
    original = StoreWriter.add_video

    def failing(self, state, info, clips, captions):
        calls.append(state.path)
        if len(calls) == 3:
            original(self, state, info, clips, captions)
            raise KeyboardInterrupt  # after its rows were written, before the batch committed
        return original(self, state, info, clips, captions)

    StoreWriter.add_video = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run(lib, store, commit_every=2)
    finally:
        StoreWriter.add_video = original
    with Store.open(store) as s:
        assert [v.path for v in s.videos()] == [str(lib / "v0.mp4"), str(lib / "v1.mp4")]
        assert len([s.thumbnail(c) for c in range(1, 10) if s.thumbnail(c)]) == s.counts()["clips"] == 2
    assert len(run(lib, store).indexed) == 2
