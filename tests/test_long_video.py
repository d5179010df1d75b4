"""Long videos: chunked decoding gives the same clips as whole-file decoding, and indexing holds a bounded
number of frames whatever the video's length.

The indexer is imported inside the tests that use it: decoder processes import this module for the chunk
decoders below, and must start within the short timeouts the tests give them.
"""
from __future__ import annotations

import ctypes
import sqlite3
import time
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

from trainer.media import DecodePool, MediaError, SamplingConfig, VideoChunk, cut_clips, decode
from trainer.media.backends import decode_chunks_file, decode_file
from trainer.media.types import ChunkCutter
from trainer.synth import write_video


def make_video(path, seconds: float, fps: int = 2, size: int = 64, seed: int = 0):
    """An H.264 video whose every frame differs (a bar that moves and a brightness that steps)."""
    n = int(round(seconds * fps))
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = (i * 37 + seed * 11) % 200 + 20
        frames[i, :, i % size, :] = 255
        frames[i, (i // size) % size, :, 1] = 0
    return write_video(path, frames, fps)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """Ten minutes at 2 fps, 64x64: long in time, quick to make and decode."""
    return make_video(tmp_path_factory.mktemp("long") / "ten minutes.mp4", 600)


def _same_clips(chunks: list[VideoChunk], whole, sampling: SamplingConfig) -> None:
    got = [c for ch in chunks for c in ch.clips()]
    want = whole.clips(sampling)
    assert [(c.start, c.end) for c in got] == [(c.start, c.end) for c in want]
    for a, b in zip(got, want):
        assert np.array_equal(a.times, b.times) and np.array_equal(a.frames, b.frames)
    assert [ch.index for ch in chunks] == list(range(len(chunks)))
    assert [ch.last for ch in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].info == whole.info


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seconds, clip, stride, chunk", [
    (95, 4.0, 4.0, 30.0),  # not a multiple of the chunk; last window is whole
    (61.5, 4.0, 4.0, 20.0),  # last partial window (1.5 s) is dropped
    (63, 4.0, 2.0, 30.0),  # overlapping windows: frames shared by neighbouring chunks
    (3, 4.0, 4.0, 30.0),  # shorter than one window: one clip
    (50, 3.0, 5.0, 7.0),  # gaps between windows; chunk not a multiple of the stride
])
def test_chunked_decode_equals_whole_decode(tmp_path, seconds, clip, stride, chunk):
    path = make_video(tmp_path / "v.mp4", seconds)
    sampling = SamplingConfig(fps=1.0, size=32, clip_seconds=clip, stride_seconds=stride)
    whole = decode(path, sampling)
    with DecodePool(1, sampling) as pool:
        events = list(pool.imap_chunks([path], chunk_seconds=chunk))
    assert all(p == str(path) for p, _ in events)
    chunks = [c for _, c in events]
    assert len(chunks) >= min(2, int(seconds // chunk))
    _same_clips(chunks, whole, sampling)
    # PyAV, the fallback backend, chunks the same way.
    _same_clips(list(decode_chunks_file(str(path), sampling, "pyav", 1, chunk)),
                decode_file(str(path), sampling, "pyav", 1), sampling)


def test_chunk_cutter_matches_cut_clips_on_any_grid():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fps = float(rng.choice([0.2, 0.5, 1.0, 2.0, 3.0]))
        sampling = SamplingConfig(fps=fps, size=8, clip_seconds=float(rng.choice([1.0, 2.5, 4.0])),
                                  stride_seconds=float(rng.choice([0.5, 2.0, 4.0, 6.0])))
        duration = round(float(rng.uniform(0.3, 90.0)), 3)
        times = np.round(np.arange(0.0, duration, 1 / fps), 6)
        frames = np.arange(len(times), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(3, axis=3)
        cutter = ChunkCutter(sampling, chunk_seconds=float(rng.uniform(1.0, 30.0)))
        chunks, held = [], 0
        for t, f in zip(times, frames):
            chunks += cutter.push(t, f)
            held = max(held, len(cutter.frames))
        info = type("Info", (), {"duration": duration})()
        chunks.append(cutter.finish(info))
        got = [(c.start, c.end, c.times.tolist()) for ch in chunks for c in ch.clips()]
        want = [(c.start, c.end, c.times.tolist()) for c in cut_clips(times, frames, duration, sampling)]
        assert got == want, (sampling, duration)
        # Held frames: one chunk's windows plus one window of look-ahead, not the whole video.
        span = cutter.per_chunk * sampling.stride_seconds + sampling.clip_seconds + sampling.stride_seconds
        assert held <= span * fps + 2


def _peak_bytes(decoding) -> tuple[int, int]:
    """(peak traced bytes, frames seen) while running `decoding()` and dropping each item it yields."""
    tracemalloc.start()
    try:
        seen = 0
        for item in decoding():
            seen += len(item.frames)
            del item
        return tracemalloc.get_traced_memory()[1], seen
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decoding_worker_memory_is_flat(long_video, backend):
    """What the worker holds while chunking a long video stays near one chunk, not the whole video."""
    sampling = SamplingConfig(fps=2.0, size=64, clip_seconds=2.0, stride_seconds=2.0)
    frame_bytes = 64 * 64 * 3
    chunked, seen = _peak_bytes(lambda: decode_chunks_file(str(long_video), sampling, backend, 1, 30.0))
    assert seen == 1200
    whole, _ = _peak_bytes(lambda: iter([decode_file(str(long_video), sampling, backend, 1)]))
    assert whole >= 1200 * frame_bytes
    # One 30 s chunk is 60 frames. The worker holds the frames of the chunk being gathered, the chunk being
    # stacked and one decord batch of 32: about 4 chunks' worth at most, whatever the length.
    assert chunked < 4 * 60 * frame_bytes, (chunked / frame_bytes, whole / frame_bytes)


class _FrameCounter:
    """Wraps a reader and tracks how many decoded frames are alive in this process at once."""

    def __init__(self, reader):
        self.reader, self.live, self.peak, self.total = reader, 0, 0, 0

    def __call__(self, paths):
        for path, item in self.reader(paths):
            frames = getattr(item, "frames", None)
            if frames is not None and len(frames):
                base = frames
                while isinstance(base.base, np.ndarray):  # clips are views: the frames go when the last view does
                    base = base.base
                self.live += len(frames)
                self.total += len(frames)
                self.peak = max(self.peak, self.live)
                weakref.finalize(base, self._freed, len(frames))
                del frames, base
            yield path, item

    def _freed(self, n: int) -> None:
        self.live -= n


@pytest.mark.timeout(180)
def test_indexing_a_long_video_holds_a_bounded_number_of_frames(long_video, tmp_path):
    from indexer import index_paths
    from tests.fixtures.store import FakeModel

    model = FakeModel()  # 2 fps, 2 s clips: the ten minutes are 1200 frames and 300 clips
    with DecodePool(1, model.sampling) as pool:
        chunked = _FrameCounter(lambda paths: pool.imap_chunks(paths, chunk_seconds=30.0))
        report = index_paths([long_video], tmp_path / "chunked", model, reader=chunked, batch_size=64)
        whole = _FrameCounter(pool.imap)
        index_paths([long_video], tmp_path / "whole", model, reader=whole, batch_size=64)
    assert report.exit_code == 0 and report.clips == 300 and chunked.total == whole.total == 1200
    assert whole.peak == 1200
    # 60 frames a chunk; the bounded queues, the encoder's batch and the pool's look-ahead hold a few
    # chunks at most, whatever the length.
    assert chunked.peak <= 8 * 60, chunked.peak
    rows = [sqlite3.connect(tmp_path / name / "store.db").execute(
        "SELECT c.start, c.end, c.tags FROM clips c ORDER BY c.start").fetchall() for name in ("chunked", "whole")]
    assert rows[0] == rows[1] and len(rows[0]) == 300


def _failing_reader(pool, bad: str):
    """Streams real chunks, but ends `bad` with a decoder error at its third chunk (after two were sent)."""
    def read(paths):
        for path, item in pool.imap_chunks(paths, chunk_seconds=10.0):
            if path != bad or item.index < 2:
                yield path, item
            elif item.index == 2:
                yield path, MediaError(path, "decoder gave up mid-file")
    return read


def test_a_video_failing_mid_stream_leaves_no_clips(tmp_path):
    from indexer import index_paths
    from tests.fixtures.store import FakeModel

    videos = [make_video(tmp_path / f"v{i}.mp4", 45, seed=i) for i in range(2)]
    model = FakeModel()
    with DecodePool(1, model.sampling) as pool:
        report = index_paths(videos, tmp_path / "store", model, reader=_failing_reader(pool, str(videos[0])))
    assert report.failed == [(str(videos[0]), "decoder gave up mid-file")]
    assert report.indexed == [str(videos[1])]
    db = sqlite3.connect(tmp_path / "store" / "store.db")
    by_status = dict(db.execute("SELECT path, status FROM videos").fetchall())
    assert by_status == {str(videos[0]): "failed", str(videos[1]): "indexed"}
    assert db.execute("SELECT count(*) FROM clips c JOIN videos v ON v.id = c.video_id "
                      "WHERE v.path = ?", (str(videos[0]),)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM clips").fetchone()[0] == 23  # 45 s in 2 s clips, last 1 s kept


def test_an_encoder_failure_in_one_chunk_fails_the_whole_video(tmp_path):
    from indexer import index_paths
    from tests.fixtures.store import FakeModel

    videos = [make_video(tmp_path / f"v{i}.mp4", 40, seed=i) for i in range(2)]

    class FailsLate(FakeModel):
        def encode_frames(self, frames):
            if self.frame_calls == 1:  # the second call: a later chunk of the first video
                self.frame_calls += 1
                raise RuntimeError("out of memory")
            return super().encode_frames(frames)

    model = FailsLate()
    with DecodePool(1, model.sampling) as pool:
        report = index_paths(videos, tmp_path / "store", model, batch_size=16,
                             reader=lambda paths: pool.imap_chunks(paths, chunk_seconds=8.0))
    assert [p for p, _ in report.failed] == [str(videos[0])] and "out of memory" in report.failed[0][1]
    assert report.indexed == [str(videos[1])] and report.clips == 20


# Chunk decoders swapped in through `chunk_decoder=`; module-level so the worker process can import them.

def crash_mid_stream_decoder(path, sampling, backend, threads, chunk_seconds, skip=0):
    """Decord delivers two chunks, then the process segfaults; the PyAV retry goes on from there."""
    if backend == "pyav":
        yield from decode_chunks_file(path, sampling, "pyav", threads, chunk_seconds, skip)
        return
    for chunk in decode_chunks_file(path, sampling, "decord", threads, chunk_seconds):
        if chunk.index == 2:
            ctypes.string_at(0)
        yield chunk


def slow_decoder(path, sampling, backend, threads, chunk_seconds, skip=0):
    """Takes 1 s a chunk and logs each chunk it has made; hangs for good on files named hang*."""
    for chunk in decode_chunks_file(path, sampling, backend, threads, chunk_seconds, skip):
        time.sleep(1.0)
        if Path(path).name.startswith("hang") and chunk.index == 1:
            time.sleep(3600)
        with open(f"{path}.log", "a") as log:
            log.write(f"{chunk.index}\n")
        yield chunk


@pytest.mark.timeout(60)
def test_crash_mid_file_resumes_with_pyav_from_the_next_chunk(tmp_path):
    path = make_video(tmp_path / "v.mp4", 60)
    sampling = SamplingConfig(fps=1.0, size=32, clip_seconds=4.0, stride_seconds=4.0)
    with DecodePool(1, sampling, timeout=20, chunk_decoder=crash_mid_stream_decoder) as pool:
        chunks = [c for _, c in pool.imap_chunks([path], chunk_seconds=12.0)]
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4] and chunks[-1].info.backend == "pyav"
    whole = decode(path, sampling)
    assert [(c.start, c.end) for ch in chunks for c in ch.clips()] == [(c.start, c.end) for c in whole.clips(sampling)]


@pytest.mark.timeout(60)
def test_chunks_are_decoded_as_taken_and_timed_out_one_by_one(tmp_path):
    sampling = SamplingConfig(fps=1.0, size=32, clip_seconds=4.0, stride_seconds=4.0)
    slow = make_video(tmp_path / "slow.mp4", 40)
    hang = make_video(tmp_path / "hang.mp4", 40, seed=1)
    with DecodePool(1, sampling, timeout=4.0, chunk_decoder=slow_decoder) as pool:
        events = pool.imap_chunks([slow, hang], chunk_seconds=8.0)
        path, first = next(events)
        time.sleep(3.0)  # while this chunk is in use, the worker makes at most one more, then waits
        assert (tmp_path / "slow.mp4.log").read_text().split() == ["0", "1"]
        rest = list(events)
    # Each of the 5 chunks takes 1 s, 5 s in all, yet the 4 s timeout applies to one chunk at a time.
    got = [(Path(p).name, c.index if isinstance(c, VideoChunk) else c.reason) for p, c in [(path, first)] + rest]
    assert got[:5] == [("slow.mp4", i) for i in range(5)]
    assert got[5:] == [("hang.mp4", 0), ("hang.mp4", "timed out after 4 s")]
