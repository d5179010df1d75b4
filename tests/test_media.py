"""Tests for trainer.media: frame sampling and timestamps across codecs, clips, hostile files, worker isolation."""
from __future__ import annotations

import ctypes
import fractions
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from trainer import (
    VIDEO_EXTENSIONS,
    DecodedVideo,
    DecodePool,
    MediaError,
    SamplingConfig,
    VideoInfo,
    cut_clips,
    decode,
    probe,
)
from trainer.media.backends import decode_chunks_file, decode_file

# Quiet the encoders' own banners in test output (SVT-AV1 reads this at encoder start).
os.environ.setdefault("SVT_LOG", "1")

# (file suffix, PyAV encoder, expected codec name, backend that should decode it): PyAV, skipping what sampling does
# not need, reads every container here.
CODECS = [
    (".mp4", "h264", "h264", "pyav-sampled"),
    (".webm", "libvpx-vp9", "vp9", "pyav-sampled"),
    (".avi", "mpeg4", "mpeg4", "pyav-sampled"),
    (".mkv", "h264", "h264", "pyav-sampled"),
    (".mp4", "libx265", "hevc", "pyav-sampled"),
    (".mkv", "libsvtav1", "av1", "pyav-sampled"),
    (".mov", "libx265", "hevc", "pyav-sampled"),
    (".m4v", "h264", "h264", "pyav-sampled"),
]
SRC_FPS = 8
SECONDS = 6


# --- test-video writer ----------------------------------------------------------------------------------------------

def frame_color(i: int) -> tuple[int, int, int]:
    """Solid colour that encodes frame index i (i < 1024) so a decoded frame tells which source frame it is."""
    return 10 + 7 * (i % 32), 10 + 7 * (i // 32), 128


def frame_index(frame: np.ndarray) -> int:
    """Inverse of frame_color, from a decoded frame's mean colour (robust to lossy coding of a flat image)."""
    r, g = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round((r - 10) / 7)) + 32 * int(round((g - 10) / 7))


def write_video(path: Path, frames: int, fps: float = SRC_FPS, encoder: str = "h264", size=(64, 48),
                pts_ms: list[int] | None = None, options: dict | None = None, keyint: int | None = None) -> Path:
    """Write `frames` solid-colour frames (see frame_color); `pts_ms` gives irregular timestamps in milliseconds,
    `keyint` (h264) a keyframe every `keyint` frames and no others."""
    from trainer.media.scheduling import keep_scheduling

    width, height = size
    with keep_scheduling(), av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(encoder, rate=fractions.Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if encoder in ("h264", "libx264"):
            stream.options = {"preset": "ultrafast"}
            if keyint is not None:
                stream.options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
        elif encoder == "mpeg4":
            stream.bit_rate = 4_000_000  # the default rate smears flat colours between frames
        if pts_ms is not None:
            stream.time_base = fractions.Fraction(1, 1000)
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = frame_color(i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_audio_only(path: Path) -> Path:
    """An .mp4 holding one AAC stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def nearest_indices(pts: np.ndarray, duration: float, fps: float) -> list[int]:
    """Reference sampling rule: for each k / fps < duration, the frame starting nearest (ties to the earlier)."""
    picked = []
    for target in np.arange(0, duration - 1e-9, 1 / fps):
        i = int(np.argmin(np.abs(pts - target) + 1e-9 * np.arange(len(pts))))
        if not picked or picked[-1] != i:
            picked.append(i)
    return picked


@pytest.fixture(scope="module")
def codec_videos(tmp_path_factory) -> dict[str, Path]:
    """One 6 s, 8 fps video per entry of CODECS, keyed by encoder + suffix ("h264.mp4")."""
    root = tmp_path_factory.mktemp("codecs")
    return {enc + suffix: write_video(root / f"v_{enc}{suffix}", SECONDS * SRC_FPS, encoder=enc)
            for suffix, enc, _, _ in CODECS}


# --- decoding: timestamps, frame identity, backends -----------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix,encoder,codec,backend", CODECS, ids=[c[1] + c[0] for c in CODECS])
def test_probe_known_length(codec_videos, suffix, encoder, codec, backend):
    info = probe(codec_videos[encoder + suffix])
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.codec, info.backend) == (64, 48, codec, backend)
    assert info.frame_count == SECONDS * SRC_FPS
    assert info.duration == pytest.approx(SECONDS, abs=1e-3)
    assert info.fps == pytest.approx(SRC_FPS)
    assert info.to_dict()["path"] == str(codec_videos[encoder + suffix])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix,encoder,codec,backend", CODECS, ids=[c[1] + c[0] for c in CODECS])
@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 4.0])
def test_decode_times_and_frames(codec_videos, suffix, encoder, codec, backend, fps):
    video = decode(codec_videos[encoder + suffix], SamplingConfig(fps=fps, size=32))
    expected = np.arange(0, SECONDS, 1 / fps)
    assert video.info.backend == backend
    np.testing.assert_allclose(video.times, expected, atol=1e-3)
    assert video.frames.shape == (len(expected), 32, 43, 3) and video.frames.dtype == np.uint8
    # Each sampled frame is the source frame shown at its timestamp, not merely one with the right count.
    assert [frame_index(f) for f in video.frames] == [round(t * SRC_FPS) for t in expected]


@pytest.mark.timeout(60)
def test_backends_agree(codec_videos):
    sampling = SamplingConfig(fps=2.0, size=48)
    a = decode_file(str(codec_videos["h264.mp4"]), sampling, backend="decord")
    b = decode_file(str(codec_videos["h264.mp4"]), sampling, backend="pyav")
    assert (a.info.backend, b.info.backend) == ("decord", "pyav")
    np.testing.assert_array_equal(a.times, b.times)
    assert a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 3
    assert (a.info.duration, a.info.frame_count) == (b.info.duration, b.info.frame_count)


def write_bframes_video(path: Path, seconds: int = 9) -> Path:
    """H.264 with B-frames, some of them references, and open GOPs (frames before a keyframe in display order
    that refer across it): what cameras and encoders at their defaults write, unlike `write_video`'s. In AVI,
    which keeps no presentation times, the packets' timestamps rise in decoding order."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=96x64:rate=24:duration={seconds}", "-c:v", "libx264", "-bf", "3",
                    "-x264-params", "keyint=30:open-gop=1:b-pyramid=normal", "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return path


@pytest.mark.timeout(120)
def test_skipping_unneeded_frames_changes_no_sampled_frame(tmp_path, codec_videos):
    """The default decode skips every frame that sampling does not pick and no other frame refers to. Its
    frames, times, duration and counts are the plain decode's, to the bit, whole and in windows."""
    from trainer.media.backends import _sample_plan, _scan_packets, decode_window_file

    bframes = write_bframes_video(tmp_path / "bframes.mp4")
    plan = _sample_plan(_scan_packets(str(bframes)), SamplingConfig(fps=1.0))
    assert len(plan.keep) == 9 and plan.count == 9 * 24 and len(plan.keyframes) >= 8
    avi = write_bframes_video(tmp_path / "bframes.avi")
    # Its timestamps are not display times.
    assert _sample_plan(_scan_packets(str(avi)), SamplingConfig(fps=1.0)) is None
    paths = {bframes: "pyav-sampled", codec_videos["libx265.mp4"]: "pyav-sampled",
             codec_videos["libvpx-vp9.webm"]: "pyav-sampled", codec_videos["h264.mp4"]: "pyav-sampled", avi: "pyav"}
    for path, backend in paths.items():
        for fps in (0.5, 1.0, 3.0):
            sampling = SamplingConfig(fps=fps, size=32)
            plain, sampled = decode_file(path, sampling, "pyav"), decode_file(path, sampling, "auto")
            assert (plain.info.backend, sampled.info.backend) == ("pyav", backend)
            np.testing.assert_array_equal(sampled.times, plain.times)
            np.testing.assert_array_equal(sampled.frames, plain.frames)
            assert sampled.info.to_dict() == {**plain.info.to_dict(), "backend": backend}
            end = plain.info.duration
            for start, stop in [(2.0, 4.0), (end / 2, end / 2 + 2.5), (end - 2.0, end + 1.0)]:
                part = decode_window_file(path, sampling, "auto", start=start, end=stop)
                inside = (plain.times >= start) & (plain.times < stop)
                assert part.info.backend == backend and inside.any()
                np.testing.assert_array_equal(part.times, plain.times[inside])
                np.testing.assert_array_equal(part.frames, plain.frames[inside])


@pytest.mark.timeout(60)
def test_frames_after_a_keyframe_runs_last_pick_are_not_decoded(tmp_path):
    """With a keyframe every second and no B-frames (phone footage), each second decodes only up to its picked
    frame; the frames are the plain decode's."""
    from trainer.media.backends import _sample_plan, _scan_packets

    path = write_video(tmp_path / "phone.mp4", SECONDS * SRC_FPS, keyint=SRC_FPS)
    with av.open(str(path)) as container:
        tb = container.streams.video[0].time_base
    frames = range(SECONDS * SRC_FPS)
    cases = {1.0: [i for i in frames if i % SRC_FPS],                   # the picks are the keyframes
             2.0: [i for i in frames if i % SRC_FPS > SRC_FPS // 2]}    # frames 0 and 4 of each second are picked
    for fps, unneeded in cases.items():
        sampling = SamplingConfig(fps=fps, size=32)
        plan = _sample_plan(_scan_packets(str(path)), sampling)
        assert sorted(round(p * tb * SRC_FPS) for p in plan.unneeded) == unneeded
        plain, sampled = decode_file(path, sampling, "pyav"), decode_file(path, sampling, "auto")
        assert sampled.info.backend == "pyav-sampled"
        np.testing.assert_array_equal(sampled.frames, plain.frames)
        np.testing.assert_array_equal(sampled.times, plain.times)
        assert [frame_index(f) for f in sampled.frames] == [round(t * SRC_FPS) for t in sampled.times]


@pytest.mark.timeout(60)
def test_a_cut_made_without_reencoding_decodes_from_its_cut(tmp_path):
    """`ffmpeg -ss ... -c copy` keeps the frames before the cut that later frames refer to and marks them in an edit
    list: they are decoded as references, never shown, and are not missing frames."""
    from trainer.media.backends import _stream_header

    source = write_bframes_video(tmp_path / "source.mp4")
    cut = tmp_path / "cut.mov"
    # Keyframes fall every 1.25 s: the cut at 3.6 s keeps 1.1 s of frames before it, a third of the file.
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "3.6", "-i", str(source), "-t", "2", "-c", "copy", str(cut)],
                   check=True)
    sampling = SamplingConfig(fps=2.0, size=32)
    plain, sampled = decode_file(cut, sampling, "pyav"), decode_file(cut, sampling, "auto")
    assert sampled.info.backend == "pyav-sampled"
    np.testing.assert_array_equal(sampled.frames, plain.frames)
    np.testing.assert_array_equal(sampled.times, plain.times)
    assert 1.9 < plain.info.duration < 2.3 and len(plain.times) == 5      # 0, 0.5, ... 2.0: none before the cut
    assert _stream_header(str(cut)).frames > plain.info.frame_count == sampled.info.frame_count


@pytest.mark.timeout(60)
def test_source_slower_than_target_fps(tmp_path):
    # 2 fps source sampled at 4 fps: every source frame once, never duplicated.
    path = write_video(tmp_path / "slow.mp4", 6, fps=2)
    video = decode(path, SamplingConfig(fps=4.0, size=16))
    np.testing.assert_allclose(video.times, [0, 0.5, 1, 1.5, 2, 2.5], atol=1e-3)
    assert [frame_index(f) for f in video.frames] == list(range(6))


@pytest.mark.timeout(60)
def test_ntsc_rate_picks_nearest_frame(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", 75, fps=fractions.Fraction(30000, 1001))
    video = decode(path, SamplingConfig(fps=1.0, size=16))
    pts = np.arange(75) * 1001 / 30000
    idx = nearest_indices(pts, video.info.duration, 1.0)
    np.testing.assert_allclose(video.times, pts[idx], atol=1e-3)
    assert [frame_index(f) for f in video.frames] == idx


@pytest.mark.timeout(60)
@pytest.mark.parametrize("square,size,shape", [(False, 224, (224, 299)), (True, 224, (224, 224)), (False, 20, (20, 27))])
def test_resize_at_decode(codec_videos, square, size, shape):
    video = decode(codec_videos["h264.mp4"], SamplingConfig(fps=1.0, size=size, square=square))
    assert video.frames.shape[1:3] == shape


@pytest.mark.timeout(60)
def test_portrait_short_side(tmp_path):
    path = write_video(tmp_path / "portrait.mp4", 8, size=(48, 96))
    assert decode(path, SamplingConfig(size=32)).frames.shape[1:3] == (64, 32)


def write_rotated(path: Path, degrees: int, size=(96, 48), frames: int = 8) -> tuple[Path, np.ndarray]:
    """A video whose frames are coded landscape with a white band on their left edge and a display matrix
    turning them `degrees` counter-clockwise, as phones record; returns it and one coded frame."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 4] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=SRC_FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.set_display_rotation(degrees)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path), image


@pytest.mark.timeout(60)
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_video_decodes_as_displayed(tmp_path, degrees):
    path, coded = write_rotated(tmp_path / f"rot{degrees}.mp4", degrees)
    shown = np.rot90(coded, degrees // 90)                     # how a player shows it
    video = decode(path, SamplingConfig(size=24))
    assert video.info.backend == "pyav-sampled"
    assert [c.frames.shape for c in decode_chunks_file(path, SamplingConfig(size=24), chunk_seconds=4.0)] == [
        video.frames[:4].shape]
    with pytest.raises(MediaError, match="rotated"):
        decode_file(path, SamplingConfig(size=24), backend="decord")
    assert (video.info.width, video.info.height) == (shown.shape[1], shown.shape[0])
    assert (probe(path).width, probe(path).height) == (shown.shape[1], shown.shape[0])
    frame = video.frames[0]
    assert frame.shape[0] / frame.shape[1] == pytest.approx(shown.shape[0] / shown.shape[1])
    bright = frame.mean(axis=2) > 128
    expected = np.rot90(np.zeros((24, 48), bool) | (np.arange(48) < 12)[None, :], degrees // 90)
    assert bright.shape == expected.shape and (bright == expected).mean() > 0.95


@pytest.mark.timeout(60)
def test_tiny_16x16(tmp_path):
    video = decode(write_video(tmp_path / "tiny.mp4", 16, size=(16, 16)))
    assert video.frames.shape == (2, 224, 224, 3)
    assert [frame_index(f) for f in video.frames] == [0, 8]


@pytest.mark.timeout(60)
def test_large_4k_frames(tmp_path):
    path = write_video(tmp_path / "uhd.mp4", 4, fps=2, size=(3840, 2160))
    video = decode(path)
    assert (video.info.width, video.info.height) == (3840, 2160)
    assert video.frames.shape == (2, 224, 398, 3)
    assert [frame_index(f) for f in video.frames] == [0, 2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate(tmp_path, suffix):
    pts_ms = [0, 100, 350, 400, 1200, 1300, 1333, 2100, 2900, 3600, 3700, 4500]
    path = write_video(tmp_path / f"vfr{suffix}", len(pts_ms), pts_ms=pts_ms)
    video = decode(path, SamplingConfig(fps=2.0, size=16))
    pts = np.array(pts_ms) / 1000
    idx = nearest_indices(pts, video.info.duration, 2.0)
    assert video.info.duration > 4.5
    np.testing.assert_allclose(video.times, pts[idx], atol=1e-3)
    assert [frame_index(f) for f in video.frames] == idx
    assert np.all(np.diff(video.times) > 0)


@pytest.mark.timeout(60)
def test_unicode_name_with_spaces(tmp_path):
    folder = tmp_path / "my videos"
    folder.mkdir()
    path = write_video(folder / "été à Tōkyō 東京 #1.mp4", 16)
    assert probe(path).frame_count == 16
    video = decode(path)
    assert video.info.path == str(path) and len(video.times) == 2


@pytest.mark.timeout(60)
def test_extension_case_insensitive(tmp_path):
    path = write_video(tmp_path / "LOUD.MP4", 8)
    assert probe(path).frame_count == 8
    assert ".webm" in VIDEO_EXTENSIONS


def test_nearest_sampler_rule():
    from trainer.media.backends import NearestSampler

    sampler = NearestSampler(fps=2.0)
    starts = [0.0, 0.25, 0.75, 0.75, 0.6, 1.25, 3.0]  # a repeated and a backwards timestamp are ignored
    picked = [p[0] for i, t in enumerate(starts) for p in sampler.push(i, t)] + [p[0] for p in sampler.finish(3.5)]
    # targets 0, .5 (tie .25/.75 -> earlier), 1.0 (tie .75/1.25 -> earlier), 1.5 and 2.0 (-> 1.25, once),
    # 2.5 and 3.0 (-> 3.0)
    assert picked == [0, 1, 2, 5, 6]


# --- clips ----------------------------------------------------------------------------------------------------------

def _clip_spans(duration, clip=4.0, stride=4.0, fps=1.0):
    times = np.arange(0, duration, 1 / fps)
    frames = np.zeros((len(times), 2, 2, 3), np.uint8)
    clips = cut_clips(times, frames, duration, SamplingConfig(fps=fps, clip_seconds=clip, stride_seconds=stride))
    return [(c.start, c.end, list(c.times)) for c in clips]


def test_clips_keep_last_partial_of_half_or_more():
    assert _clip_spans(10.0) == [(0, 4, [0, 1, 2, 3]), (4, 8, [4, 5, 6, 7]), (8, 10, [8, 9])]


def test_clips_drop_last_partial_under_half():
    assert _clip_spans(9.0) == [(0, 4, [0, 1, 2, 3]), (4, 8, [4, 5, 6, 7])]


def test_short_video_is_one_clip():
    assert _clip_spans(3.0) == [(0, 3, [0, 1, 2])]
    assert _clip_spans(1.0) == [(0, 1, [0])]


def test_clips_with_overlapping_stride():
    spans = _clip_spans(10.0, clip=4.0, stride=2.0)
    assert [(s, e) for s, e, _ in spans] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert spans[-1][2] == [6, 7, 8, 9]


def test_clips_exact_multiple_and_float_noise():
    assert [(s, e) for s, e, _ in _clip_spans(8.0)] == [(0, 4), (4, 8)]
    assert [(s, e) for s, e, _ in _clip_spans(7.9996)] == [(0, 4), (4, 7.9996)]


def test_clips_skip_windows_without_frames():
    # 0.125 fps samples one frame every 8 s, so the window [4, 8) holds none.
    assert _clip_spans(12.0, fps=0.125) == [(0, 4, [0]), (8, 12, [8])]


def test_clip_arrays_are_views():
    times = np.arange(0, 8, 0.5)
    frames = np.random.default_rng(0).integers(0, 255, (16, 4, 4, 3), dtype=np.uint8)
    clips = cut_clips(times, frames, 8.0, SamplingConfig(fps=2.0))
    assert [len(c.times) for c in clips] == [8, 8]
    assert np.shares_memory(clips[1].frames, frames)
    np.testing.assert_array_equal(clips[1].frames, frames[8:])


def test_cut_clips_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 times but 2 frames"):
        cut_clips(np.arange(3.0), np.zeros((2, 2, 2, 3), np.uint8), 3.0, SamplingConfig())


@pytest.mark.timeout(60)
def test_decoded_video_clips(codec_videos):
    sampling = SamplingConfig(fps=2.0, size=16, clip_seconds=2.5, stride_seconds=2.0)
    video = decode(codec_videos["libvpx-vp9.webm"], sampling)
    clips = video.clips(sampling)
    assert [(c.start, c.end) for c in clips] == [(0, 2.5), (2, 4.5), (4, 6)]
    assert [len(c.frames) for c in clips] == [5, 5, 4]
    for clip in clips:
        assert clip.frames.shape[1:] == (16, 21, 3)
        assert np.all((clip.times >= clip.start) & (clip.times < clip.end))


@pytest.mark.parametrize("field,value", [("fps", 0), ("fps", -1.0), ("size", 1), ("size", 2.5),
                                         ("clip_seconds", 0), ("stride_seconds", -2)])
def test_sampling_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


# --- hostile files --------------------------------------------------------------------------------------------------

def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, codec_videos) -> dict[str, Path]:
    """Bad files of each kind, keyed by the reason fragment MediaError must give."""
    root = tmp_path_factory.mktemp("hostile")
    good = codec_videos["h264.mp4"]
    faststart = write_video(root / "faststart.mp4", 48, options={"movflags": "faststart"})
    (root / "empty.mp4").touch()
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(200_000))
    (root / "notes.mp4").write_text("these are meeting notes, not a video\n" * 200)
    (root / "folder.mp4").mkdir()
    (root / "picture.gif").write_bytes(b"GIF89a" + bytes(100))
    return {
        "file not found": root / "missing.mp4",
        "empty file": root / "empty.mp4",
        "not a readable video file": _truncate(good, root / "truncated.mp4", 0.5),
        "truncated or corrupt": _truncate(faststart, root / "truncated_faststart.mp4", 0.5),
        "truncated or corrupt:": _truncate(codec_videos["libvpx-vp9.webm"], root / "truncated.webm", 0.5),
        "Invalid data": root / "random.mp4",
        "not a readable video": root / "notes.mp4",
        "no video stream": write_audio_only(root / "audio_only.mp4"),
        "not a regular file": root / "folder.mp4",
        "unsupported extension '.gif'": root / "picture.gif",
    }


@pytest.mark.timeout(60)
def test_hostile_files_raise_media_error(hostile):
    for reason, path in hostile.items():
        for call in (lambda: probe(path, timeout=20), lambda: decode(path, timeout=20)):
            start = time.monotonic()
            with pytest.raises(MediaError) as err:
                call()
            assert time.monotonic() - start < 20
            assert err.value.path == str(path) and reason in err.value.reason, (path, err.value.reason)
            assert str(path) in str(err.value) and err.value.reason in str(err.value)


@pytest.mark.timeout(60)
def test_timeout_on_slow_decode(tmp_path):
    path = write_video(tmp_path / "uhd.mp4", 4, fps=2, size=(3840, 2160))
    with pytest.raises(MediaError, match="timed out after 0.001 s"):
        decode(path, timeout=0.001)


# Decoders swapped in through `decoder=`; module-level so the worker process can import them by name.

def segfault_decoder(path, sampling, backend, threads):
    """Dies of a real segmentation fault, as a buggy native decoder would."""
    ctypes.string_at(0)


def hang_decoder(path, sampling, backend, threads):
    """Never returns on files named hang*; decodes the rest."""
    if Path(path).name.startswith("hang"):
        time.sleep(3600)
    return decode_file(path, sampling, backend, threads)


def crash_default_decoder(path, sampling, backend, threads):
    """Segfaults while the default backend is tried, decodes when retried with plain PyAV."""
    if backend != "pyav":
        ctypes.string_at(0)
    return decode_file(path, sampling, backend, threads)


@pytest.mark.timeout(60)
def test_segfault_is_contained(codec_videos):
    with pytest.raises(MediaError, match="decoder crashed \\(SIGSEGV\\)"):
        decode(codec_videos["h264.mp4"], decoder=segfault_decoder, timeout=20)


@pytest.mark.timeout(60)
def test_crash_in_default_backend_falls_back_to_pyav(codec_videos):
    video = decode(codec_videos["h264.mp4"], decoder=crash_default_decoder, timeout=20)
    assert video.info.backend == "pyav" and len(video.times) == SECONDS


@pytest.mark.timeout(60)
def test_pool_survives_hangs_and_crashes(tmp_path, codec_videos, hostile):
    good = codec_videos["h264.mp4"]
    hang = write_video(tmp_path / "hang.mp4", 8)
    paths = [good, hang, hostile["empty file"], good, hostile["no video stream"], hang, codec_videos["libsvtav1.mkv"]]
    start = time.monotonic()
    with DecodePool(workers=2, timeout=1.5, decoder=hang_decoder) as pool:
        results = list(pool.imap(paths))
        assert [p for p, _ in results] == [str(p) for p in paths]
        kinds = [type(r).__name__ if isinstance(r, MediaError) else r.info.backend for _, r in results]
        assert kinds == ["pyav-sampled", "MediaError", "MediaError", "pyav-sampled", "MediaError", "MediaError",
                         "pyav-sampled"]
        assert "timed out" in results[1][1].reason and "no video stream" in results[4][1].reason
        # Replaced workers serve the next run.
        assert [r.info.frame_count for _, r in pool.imap([good])] == [48]
    assert time.monotonic() - start < 20


@pytest.mark.timeout(60)
def test_a_workers_start_up_is_not_its_first_files_time(codec_videos, monkeypatch):
    from trainer.media import workers

    # Workers that take 4 s to start, as a replacement can on a busy machine: a 2 s timeout still decodes,
    # since a task's deadline runs from the worker's READY message.
    monkeypatch.setattr(workers, "_BOOTSTRAP", "import time; time.sleep(4); " + workers._BOOTSTRAP)
    with DecodePool(workers=1, timeout=2) as pool:
        [(_, video)] = list(pool.imap([codec_videos["h264.mp4"]]))
    assert video.info.frame_count == 48
    # A worker that never gets ready still gives up: after its start-up allowance and the timeout.
    monkeypatch.setattr(workers, "STARTUP_SECONDS", 1.0)
    with DecodePool(workers=1, timeout=1) as pool:
        [(_, failed)] = list(pool.imap([codec_videos["h264.mp4"]]))
    assert isinstance(failed, MediaError) and "timed out" in failed.reason


@pytest.mark.timeout(60)
def test_pool_segfaults_do_not_stop_the_run(codec_videos):
    with DecodePool(workers=2, timeout=20, decoder=segfault_decoder) as pool:
        results = list(pool.imap([codec_videos["h264.mp4"]] * 3 + ["missing.mp4"]))
    assert all(isinstance(r, MediaError) for _, r in results)
    assert ["SIGSEGV" in r.reason for _, r in results] == [True, True, True, False]


@pytest.mark.timeout(60)
def test_pool_order_and_bounded_in_flight(codec_videos):
    pulled = []

    def paths():
        for i in range(12):
            pulled.append(i)
            yield codec_videos["h264.mp4"] if i % 3 else codec_videos["libvpx-vp9.webm"]

    with DecodePool(workers=2, sampling=SamplingConfig(size=16)) as pool:
        seen = 0
        for path, video in pool.imap(paths()):
            assert isinstance(video, DecodedVideo)
            assert path == str(codec_videos["h264.mp4"] if seen % 3 else codec_videos["libvpx-vp9.webm"])
            seen += 1
            # Never more than 2 * workers files ahead of the consumer.
            assert len(pulled) - seen <= 4
    assert seen == 12


@pytest.mark.timeout(60)
def test_pool_reusable_after_early_stop(codec_videos):
    with DecodePool(workers=2, sampling=SamplingConfig(size=16)) as pool:
        first = next(iter(pool.imap([codec_videos["libvpx-vp9.webm"]] * 4)))
        assert first[1].info.codec == "vp9"
        again = [r.info.codec for _, r in pool.imap([codec_videos["h264.mp4"], codec_videos["libx265.mp4"]])]
        assert again == ["h264", "hevc"]


def test_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="workers"):
        DecodePool(workers=0)
    with pytest.raises(ValueError, match="timeout"):
        DecodePool(timeout=0)


@pytest.mark.timeout(60)
def test_worker_modules_do_not_import_torch():
    # Workers import these modules; torch would add seconds to every worker start.
    code = "import sys, trainer, trainer.media.workers; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.timeout(60)
def test_closing_a_pool_lets_its_idle_workers_exit_on_their_own(codec_videos):
    pool = DecodePool(workers=2)
    with pool:
        assert [r.info.codec for _, r in pool.imap([codec_videos["h264.mp4"]] * 2)] == ["h264", "h264"]
        procs = [w.proc for w in pool._runner.workers]
    assert len(procs) == 2 and [p.returncode for p in procs] == [0, 0]   # exited when told, not killed


@pytest.mark.timeout(60)
def test_idle_worker_that_died_is_replaced(codec_videos):
    from trainer.media import workers

    probe(codec_videos["h264.mp4"])  # leaves an idle worker behind for the next call
    for worker in list(workers._idle):
        worker.proc.kill()
        worker.proc.wait()
    assert probe(codec_videos["h264.mp4"]).frame_count == 48


@pytest.mark.timeout(60)
@pytest.mark.parametrize("encoder,suffix", [("h264", ".mp4"), ("libsvtav1", ".mp4")])
def test_single_frame_video_is_one_clip(tmp_path, encoder, suffix):
    video = decode(write_video(tmp_path / f"one{suffix}", 1, fps=25, encoder=encoder))
    assert video.info.frame_count == 1 and video.info.duration == pytest.approx(0.04, abs=1e-3)
    clips = video.clips(SamplingConfig())
    assert len(clips) == 1 and clips[0].frames.shape == (1, 224, 299, 3)


@pytest.mark.timeout(60)
def test_concurrent_single_calls_from_threads(codec_videos):
    # A web server decodes query videos from several request threads at once.
    from concurrent.futures import ThreadPoolExecutor

    keys = ["h264.mp4", "libvpx-vp9.webm", "libx265.mp4", "libsvtav1.mkv"] * 2
    with ThreadPoolExecutor(4) as executor:
        videos = list(executor.map(lambda k: decode(codec_videos[k], SamplingConfig(size=16)), keys))
    assert [v.info.path for v in videos] == [str(codec_videos[k]) for k in keys]
    assert all(len(v.times) == SECONDS for v in videos)


# --- keyframe-only decoding (indexing with fast=True) ---------------------------------------------------------------

def _keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.is_keyframe)
        return [round(float((p - pts[0]) * stream.time_base), 6) for p in pts]


def test_keyframe_decoding_returns_the_first_keyframe_of_each_interval_at_its_time(tmp_path):
    path = write_video(tmp_path / "gop.mp4", SECONDS * SRC_FPS, keyint=SRC_FPS)     # a keyframe every second
    assert _keyframe_times(path) == [float(s) for s in range(SECONDS)]
    for fps, expect in ((0.5, [0, 2, 4]), (1.0, [0, 1, 2, 3, 4, 5])):
        sampling = SamplingConfig(fps=fps, size=16, clip_seconds=1 / fps, stride_seconds=1 / fps)
        video = decode_file(path, sampling, backend="keyframes")
        assert video.info.backend == "pyav-keyframes" and video.info.duration == pytest.approx(SECONDS)
        assert list(video.times) == pytest.approx(expect)
        assert [frame_index(f) for f in video.frames] == [SRC_FPS * t for t in expect]   # the keyframes themselves
        chunks = list(decode_chunks_file(path, sampling, backend="keyframes", chunk_seconds=2.0))
        assert np.concatenate([c.times for c in chunks]).tolist() == pytest.approx(expect)
        assert all(c.info is None or c.info.backend == "pyav-keyframes" for c in chunks)
    with DecodePool(workers=1, sampling=SamplingConfig(fps=0.5, size=16, clip_seconds=2, stride_seconds=2),
                    keyframes=True) as pool:
        [(_, pooled)] = list(pool.imap([path]))
    assert pooled.info.backend == "pyav-keyframes" and list(pooled.times) == pytest.approx([0, 2, 4])


def test_keyframes_too_sparse_for_the_clip_windows_decode_the_file_in_full(tmp_path):
    path = write_video(tmp_path / "sparse.mp4", SECONDS * SRC_FPS, keyint=5 * SRC_FPS)  # keyframes at 0 s and 5 s
    assert _keyframe_times(path) == [0.0, 5.0]
    sampling = SamplingConfig(fps=0.5, size=16, clip_seconds=2, stride_seconds=2)
    video = decode_file(path, sampling, backend="keyframes")
    full = decode_file(path, sampling)
    assert video.info.backend == full.info.backend != "pyav-keyframes"
    assert list(video.times) == list(full.times) and np.array_equal(video.frames, full.frames)
    clips = cut_clips(video.times, video.frames, video.info.duration, sampling)
    assert len(clips) == 3 and all(len(c.times) >= 1 for c in clips)
