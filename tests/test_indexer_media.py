"""Indexing real files with the real decoder: hostile files fail with a reason, awkward valid files index."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from indexer import Store, index_paths
from indexer.discover import discover
from indexer.pipeline import plan_jobs
from tests.fixtures.store import FakeModel, make_mp4


def _audio_only(path):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def hostile_library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("hostile")
    good = make_mp4(lib / "good.mp4", seconds=2.0)
    data = good.read_bytes()
    (lib / "empty.mp4").write_bytes(b"")
    (lib / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (lib / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    flipped = bytearray(data)
    for pos in np.random.default_rng(1).integers(0, len(data), 200):
        flipped[pos] ^= 0xFF
    (lib / "bitflip.mp4").write_bytes(bytes(flipped))
    (lib / "text.mp4").write_text("this is not a video\n" * 50)
    _audio_only(lib / "audio.mp4")
    os.symlink("loop_b.mp4", lib / "loop_a.mp4")
    os.symlink("loop_a.mp4", lib / "loop_b.mp4")
    make_mp4(lib / "tiny16.mp4", width=16, height=16, seconds=2.0)
    make_mp4(lib / "large.mp4", width=3840, height=2160, seconds=1.0, fps=4)
    make_mp4(lib / "vfr.mp4", seconds=3.0, vfr=True)
    make_mp4(lib / "name with spaces é 视频.mp4", seconds=2.5)
    return lib


def test_hostile_files_fail_with_reasons_and_awkward_ones_index(hostile_library, tmp_path):
    lib = hostile_library
    model = FakeModel()
    report = index_paths([lib], tmp_path / "store", model, workers=2, timeout=60)
    failed = dict(report.failed)
    must_fail = ["empty.mp4", "truncated.mp4", "random.mp4", "text.mp4", "audio.mp4", "loop_a.mp4", "loop_b.mp4"]
    for name in must_fail:
        assert str(lib / name) in failed, (name, report.summary())
        assert failed[str(lib / name)].strip(), name
    assert failed[str(lib / "empty.mp4")] == "empty file"
    assert failed[str(lib / "loop_a.mp4")] == "symlink loop"
    must_index = ["good.mp4", "tiny16.mp4", "large.mp4", "vfr.mp4", "name with spaces é 视频.mp4"]
    assert sorted(report.indexed) == sorted(str(lib / n) for n in must_index + (
        ["bitflip.mp4"] if str(lib / "bitflip.mp4") not in failed else []))
    assert report.exit_code == 3
    with Store.open(tmp_path / "store") as store:
        rows = {v.path: v for v in store.videos(limit=100)}
        for name in must_fail:
            assert rows[str(lib / name)].status == "failed" and rows[str(lib / name)].error
        assert rows[str(lib / "bitflip.mp4")].status in ("failed", "indexed")
        large = rows[str(lib / "large.mp4")]
        assert (large.width, large.height) == (3840, 2160) and large.clips >= 1
        assert rows[str(lib / "vfr.mp4")].clips >= 1
        clip = store.clips(store.video_clips(rows[str(lib / "name with spaces é 视频.mp4")].id))[0]
        assert store.thumbnail(clip.id)[:3] == b"\xff\xd8\xff"  # JPEG
    # A second run retries the failed files and skips the good ones; nothing is duplicated.
    again = index_paths([lib], tmp_path / "store", model, workers=2, timeout=60)
    assert sorted(again.skipped) == sorted(report.indexed)
    assert {p for p, _ in again.failed} == set(failed)
    with Store.open(tmp_path / "store") as store:
        assert len(store.videos(limit=100)) == len(report.indexed) + len(failed)


class _NoStore:
    """A sink that knows no files: every readable file is planned for decoding."""

    def lookup(self, path):
        return None

    def caption_keys(self, video_id):
        return set()

    def find_content(self, content_hash, committed=False):
        return None


def _plan_as_nobody(directory: str) -> dict:
    """Plan `directory` in a forked child that dropped root, so that file permissions apply."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            found = discover([directory])
            lines = [f"{j.kind}|{j.state.path}|{j.reason}" for j in plan_jobs(found.files, _NoStore(), found.problems)]
            os.write(write_end, "\n".join(lines).encode())
            code = 0
        except PermissionError:
            code = 77
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 77:
        pytest.skip("running as root and not allowed to switch to an unprivileged user")
    assert os.waitstatus_to_exitcode(status) == 0
    return {p: (kind, reason) for kind, p, reason in (line.split("|") for line in data.splitlines())}


def test_unreadable_file_is_a_failure_not_a_crash():
    """Root reads any file, so as root the check runs in a child that gave up root."""
    lib = tempfile.mkdtemp(prefix="vidsearch-unreadable-")
    try:
        os.chmod(lib, 0o755)
        make_mp4(Path(lib) / "ok.mp4", seconds=1.0)
        make_mp4(Path(lib) / "secret.mp4", seconds=1.5)
        os.chmod(Path(lib) / "ok.mp4", 0o644)
        os.chmod(Path(lib) / "secret.mp4", 0o000)
        if os.getuid() == 0:
            jobs = _plan_as_nobody(lib)
        else:
            found = discover([lib])
            jobs = {j.state.path: (j.kind, j.reason) for j in plan_jobs(found.files, _NoStore(), found.problems)}
        assert jobs[os.path.join(lib, "ok.mp4")][0] == "decode"
        assert jobs[os.path.join(lib, "secret.mp4")] == ("fail", "cannot read file (Permission denied)")
    finally:
        shutil.rmtree(lib, ignore_errors=True)
