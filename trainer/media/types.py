"""Media data types shared by the decoders and the clip cutter: errors, video info, sampled frames, clips."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")

# Float slack (seconds) when comparing window ends with the video's duration.
_EPS = 1e-3


class MediaError(Exception):
    """A file that cannot be probed or decoded; `str(e)` names the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Rebuilt from (path, reason) when it crosses a process boundary.
        return (MediaError, (self.path, self.reason))


@dataclass
class VideoInfo:
    """Stream metadata of one video file and the backend that read it ("pyav-sampled", "pyav", "pyav-keyframes"
    or "decord")."""

    path: str
    duration: float  # seconds, first frame start to last frame end
    fps: float  # average frame rate of the source
    width: int
    height: int
    frame_count: int
    codec: str
    backend: str
    subtitle_streams: int | None = None  # in the container; None where the reader did not look

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SamplingConfig:
    """How frames are sampled (rate, size) and cut into clips (window length, stride), in seconds."""

    fps: float = 1.0
    size: int = 224  # short side, or the side of the square when `square`
    square: bool = False
    clip_seconds: float = 4.0
    stride_seconds: float = 4.0

    def __post_init__(self):
        for name in ("fps", "clip_seconds", "stride_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"SamplingConfig.{name} must be a positive number, got {value!r}")
        if not (isinstance(self.size, int) and self.size >= 2):
            raise ValueError(f"SamplingConfig.size must be an integer >= 2, got {self.size!r}")

    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        """Output (width, height) for a source of the given size."""
        if self.square:
            return self.size, self.size
        if width <= height:
            return self.size, max(1, round(height * self.size / width))
        return max(1, round(width * self.size / height)), self.size


@dataclass
class Clip:
    """A time window of a video with the sampled frames inside it."""

    start: float
    end: float
    times: np.ndarray  # (T,) seconds
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB


@dataclass
class DecodedVideo:
    """All sampled frames of one video with their presentation times."""

    info: VideoInfo
    times: np.ndarray  # (N,) float64 seconds, increasing, first frame at 0
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB

    def clips(self, sampling: SamplingConfig) -> list[Clip]:
        """Cut the sampled frames into clips of `sampling.clip_seconds` every `sampling.stride_seconds`."""
        return cut_clips(self.times, self.frames, self.info.duration, sampling)


def clip_windows(duration: float, length: float, stride: float) -> list[tuple[float, float]]:
    """(start, end) windows of `length` every `stride`; the last partial one is kept if >= half a window."""
    if duration <= length + _EPS:
        return [(0.0, float(duration))]
    windows = []
    k = 0
    while True:
        start = k * stride
        if start >= duration - _EPS:
            break
        end = start + length
        if end >= duration - _EPS:  # this window reaches the end of the video: it is the last one
            if duration - start >= length / 2 - _EPS:
                windows.append((start, float(duration)))
            break
        windows.append((start, end))
        k += 1
    return windows


def cut_clips(times: np.ndarray, frames: np.ndarray, duration: float, sampling: SamplingConfig) -> list[Clip]:
    """Cut sampled frames into fixed windows; clip frames are those with time in [start, end).

    Windows that hold no sampled frame (possible when sampling fps is below 1 / clip_seconds) are skipped.
    Clip arrays are views into `times` and `frames`, not copies.
    """
    return cut_windows(times, frames, clip_windows(duration, sampling.clip_seconds, sampling.stride_seconds))


def cut_windows(times: np.ndarray, frames: np.ndarray, windows: list[tuple[float, float]]) -> list[Clip]:
    """Clips of the given (start, end) windows: the frames with time in [start, end); empty windows skipped."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) != len(frames):
        raise ValueError(f"cut_clips: {len(times)} times but {len(frames)} frames")
    clips = []
    for start, end in windows:
        # The last window closes at the duration, so the final frame (time < duration) always belongs to it.
        lo, hi = np.searchsorted(times, [start, end], side="left")
        if hi > lo:
            clips.append(Clip(start=round(start, 6), end=round(end, 6), times=times[lo:hi], frames=frames[lo:hi]))
    return clips


@dataclass
class VideoChunk:
    """A time segment of a video: the sampled frames of a run of whole clip windows, decoded on its own.

    Chunks of one file come in order; together their windows are exactly `clip_windows` of the video, so
    `chunk.clips()` over all chunks equals `DecodedVideo.clips()`. Frames of overlapping windows (stride <
    clip length) appear in both chunks. `info` is set on the last chunk only, when the duration is known.
    """

    index: int  # 0, 1, ... within the file
    windows: list[tuple[float, float]]  # (start, end) clip windows this chunk holds the frames of
    times: np.ndarray  # (N,) float64 seconds, increasing
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    last: bool = False
    info: VideoInfo | None = None

    def clips(self) -> list[Clip]:
        """The clips of this chunk's windows (views into its arrays)."""
        return cut_windows(self.times, self.frames, self.windows)


def whole_chunk(video: DecodedVideo, sampling: SamplingConfig) -> VideoChunk:
    """A whole decoded video as its one and last chunk."""
    windows = clip_windows(video.info.duration, sampling.clip_seconds, sampling.stride_seconds)
    return VideoChunk(0, windows, video.times, video.frames, last=True, info=video.info)


class ChunkCutter:
    """Groups a stream of sampled frames into chunks of `chunk_seconds` worth of clip windows.

    A chunk is sent once a frame past its last window has been seen: only then is the video known to be
    longer than that window, so the window is a regular one and not the video's shortened last window.
    At most one chunk's frames (plus the frames of the window overlap) are held.
    """

    def __init__(self, sampling: SamplingConfig, chunk_seconds: float):
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")
        self.length, self.stride = sampling.clip_seconds, sampling.stride_seconds
        self.per_chunk = max(1, round(chunk_seconds / self.stride))  # windows per chunk
        self.first = 0  # index of the first window not yet sent
        self.count = 0  # chunks made
        self.times: list[float] = []
        self.frames: list[np.ndarray] = []

    def push(self, t: float, frame: np.ndarray) -> list[VideoChunk]:
        """Add the next sampled frame (times increase); returns the chunks it completes."""
        self.times.append(float(t))
        self.frames.append(frame)
        out = []
        while True:
            last = self.first + self.per_chunk - 1
            end = last * self.stride + self.length
            if t < end + _EPS:
                return out
            windows = [(k * self.stride, k * self.stride + self.length) for k in range(self.first, last + 1)]
            out.append(self._emit(windows, end, keep_from=(last + 1) * self.stride))
            self.first = last + 1

    def finish(self, info: VideoInfo) -> VideoChunk:
        """The last chunk: the remaining windows of a video of `info.duration` seconds."""
        windows = clip_windows(info.duration, self.length, self.stride)[self.first:]
        chunk = self._emit(windows, float("inf"), keep_from=float("inf"))
        chunk.last, chunk.info = True, info
        return chunk

    def _emit(self, windows, end: float, keep_from: float) -> VideoChunk:
        times = np.array(self.times, np.float64)
        hi = int(np.searchsorted(times, end, side="left"))
        frames = np.stack(self.frames[:hi]) if hi else np.zeros((0, 0, 0, 3), np.uint8)  # no frame: no clip
        keep = int(np.searchsorted(times, keep_from, side="left"))
        self.times, self.frames = self.times[keep:], self.frames[keep:]
        self.count += 1
        return VideoChunk(self.count - 1, windows, times[:hi], frames)
