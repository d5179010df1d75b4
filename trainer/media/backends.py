"""In-process probing and decoding with PyAV (decord when asked for); run inside worker processes."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

from .types import VIDEO_EXTENSIONS, ChunkCutter, DecodedVideo, MediaError, SamplingConfig, VideoInfo, clip_windows

# Frames fetched per decord get_batch call: bounds decord's scratch memory on long videos.
_BATCH = 32


def check_file(path: str) -> None:
    """Raise MediaError for problems visible without opening the file (missing, empty, wrong extension)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except OSError as e:
        raise MediaError(path, f"cannot stat file ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(path, "not a regular file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise MediaError(path, f"unsupported extension {ext or '(none)'!r}; supported: {', '.join(VIDEO_EXTENSIONS)}")
    if st.st_size == 0:
        raise MediaError(path, "empty file")


class NearestSampler:
    """Streams frame times and picks, for each target time k / fps, the frame whose start is nearest.

    One rule for both backends: ties go to the earlier frame and a frame picked for several targets
    (target fps above the source rate) is kept once, so output times strictly increase.
    """

    def __init__(self, fps: float):
        self.fps = fps
        self.k = 0  # next target index
        self.prev = None  # (index, time, item) of the previous frame
        self.last_picked = -1

    def push(self, index: int, t: float, item=None) -> list[tuple[int, float, object]]:
        """Feed frame `index` starting at `t`; returns the frames picked so far, as (index, time, item)."""
        if self.prev is not None and t <= self.prev[1]:
            return []  # a repeated or backwards timestamp (damaged file): keep times strictly increasing
        picked = []
        while self.k / self.fps <= t:
            target = self.k / self.fps
            if self.prev is not None and target - self.prev[1] <= t - target:
                self._pick(self.prev, picked)
            else:
                self._pick((index, t, item), picked)
            self.k += 1
        self.prev = (index, t, item)
        return picked

    def finish(self, end: float) -> list[tuple[int, float, object]]:
        """Targets between the last frame's start and `end` (the video's end) all pick the last frame."""
        picked = []
        if self.prev is not None and self.k / self.fps < end:
            self._pick(self.prev, picked)
        return picked

    def _pick(self, frame, picked):
        if frame[0] != self.last_picked:
            picked.append(frame)
            self.last_picked = frame[0]


@dataclass
class _Header:
    """What the container headers say about the first video stream."""

    codec: str
    width: int   # as displayed: coded size turned by `rotation`
    height: int
    frames: int  # 0 when the container does not record it (Matroska, WebM)
    duration: float | None
    rotation: int = 0  # degrees counter-clockwise from coded to displayed (phone videos: 90 or 270)
    subtitles: int = 0  # subtitle streams in the container

    def info(self, path: str, duration: float, fps: float, frame_count: int, backend: str) -> VideoInfo:
        """The VideoInfo of what a reader made of this stream: its own duration, rate and frame count."""
        return VideoInfo(path, duration, fps, self.width, self.height, frame_count, self.codec, backend,
                         self.subtitles)


def _stream_header(path: str) -> _Header:
    """Read the first video stream's header with PyAV (no decoding)."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            codec = getattr(ctx.codec, "canonical_name", None) or ctx.codec.name
            if stream.duration:
                duration = float(stream.duration * stream.time_base)
            elif container.duration and len(container.streams) == 1:  # else it may be another stream's length
                duration = container.duration / 1e6
            else:
                duration = None
            rotation = _rotation(container, stream)
            width, height = (ctx.height, ctx.width) if rotation in (90, 270) else (ctx.width, ctx.height)
            return _Header(codec, width, height, stream.frames or 0, duration, rotation,
                           len(container.streams.subtitles))
    except MediaError:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error types; all mean "not a readable container"
        raise MediaError(path, f"not a readable video file ({_describe(e)})") from None


def _rotation(container, stream) -> int:
    """The display rotation (0, 90, 180 or 270, counter-clockwise) of the stream's first frame.

    Phones record portrait video as landscape frames plus a display matrix. decord applies it; PyAV leaves it
    to the caller, so both paths need it to agree. A file whose first frame does not decode is left to fail
    where frames are read, with its own message."""
    # One frame, one thread: FFmpeg's frame threads (its default) fill their pipeline before the first frame
    # comes out, so a short file paid several frames' decoding and 8 ms of thread start-up for one header.
    stream.codec_context.thread_count = 1
    try:
        frame = next(container.decode(stream), None)
    except Exception:
        return 0
    degrees = getattr(frame, "rotation", 0) or 0
    return int(round(degrees / 90.0)) % 4 * 90


def _check_complete(path: str, header: _Header, frame_count: int, duration: float) -> None:
    """Raise if far fewer frames were read than the header promises: the file was cut short or is corrupt."""
    if header.frames and frame_count < 0.9 * header.frames - 1:
        raise MediaError(path, f"truncated or corrupt: read {frame_count} of {header.frames} frames")
    if not header.frames and header.duration and duration < 0.9 * header.duration - 0.5:
        raise MediaError(path, f"truncated or corrupt: read {duration:.2f} s of {header.duration:.2f} s")


def _describe(e: Exception) -> str:
    # FFmpeg errors carry a clean message in strerror; their str() repeats the path.
    text = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _decord_reader(path: str, width: int = -1, height: int = -1, threads: int = 0):
    import decord

    return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=threads)


def _decord_times(reader) -> tuple[np.ndarray, float]:
    """Frame start times relative to the first frame, and the video's duration, from decord's index."""
    ts = reader.get_frame_timestamp(np.arange(len(reader))).astype(np.float64)  # (N, 2) start, end
    first = ts[0, 0]
    return np.round(ts[:, 0] - first, 6), round(float(ts[-1, 1] - first), 6)


def probe_file(path: str, backend: str = "auto", sampling: SamplingConfig = SamplingConfig()) -> VideoInfo:
    """A video's metadata, once its sampled frames have decoded; `backend` is "auto", "decord" or "pyav".

    Headers alone can look fine on a corrupt file, so probe decodes the frames the indexer samples (by default
    at its default sampling), through the same `decode_chunks_file` and one segment at a time: a file probe
    calls good is one the indexer can index, and a bad one fails with the reason the indexer records.
    """
    for chunk in decode_chunks_file(path, sampling, backend, threads=0):
        if chunk.last:
            return chunk.info
    raise MediaError(os.fspath(path), "no video frames could be decoded")


def _decord_open(path: str, header: _Header, sampling: SamplingConfig, threads: int):
    """Open with decord and pick the sampled frames: (reader, their indices, their times, VideoInfo)."""
    out_w, out_h = sampling.frame_size(header.width, header.height)
    reader = _decord_reader(path, out_w, out_h, threads)
    if len(reader) == 0:
        raise MediaError(path, "no frames")
    starts, duration = _decord_times(reader)
    _check_complete(path, header, len(reader), duration)
    sampler = NearestSampler(sampling.fps)
    picked = [p for i, t in enumerate(starts) for p in sampler.push(i, t)] + sampler.finish(duration)
    indices = [p[0] for p in picked]
    fps = round(float(reader.get_avg_fps()), 6)
    return reader, indices, starts[indices], header.info(path, duration, fps, len(reader), "decord")


def _decord_batches(reader, indices: list[int]):
    """(offset, frames) of the picked frames, `_BATCH` at a time: bounds decord's scratch memory."""
    for lo in range(0, len(indices), _BATCH):
        # get_batch seeks to the nearest keyframe and decodes forward, once per batch.
        batch = reader.get_batch(indices[lo:lo + _BATCH]).asnumpy()
        if lo + _BATCH < len(indices):
            # After get_batch, decord's decoder thread goes on decoding full-size frames into an unbounded
            # buffer until the next call: gigabytes while the caller is busy with a chunk. Seeking home
            # stops it (the next get_batch seeks to its own keyframe anyway, so frames are unchanged).
            reader.seek(0)
        yield lo, batch


def _frames_decord(path: str, header: _Header, sampling: SamplingConfig, threads: int):
    """Generator of sampled (time, frame) pairs in time order; returns the VideoInfo when exhausted."""
    reader, indices, times, info = _decord_open(path, header, sampling, threads)
    for lo, batch in _decord_batches(reader, indices):
        yield from zip(times[lo:lo + len(batch)], batch)
    return info


def _coded_size(header: _Header, sampling: SamplingConfig) -> tuple[int, int, int]:
    """(width, height, quarter turns) for PyAV: frames are resized in coded orientation, then turned for display."""
    out_w, out_h = sampling.frame_size(header.width, header.height)
    turns = header.rotation // 90
    return (out_h, out_w, turns) if turns % 2 else (out_w, out_h, turns)


def _rate(stream) -> float:
    """The stream's nominal frame rate, 0 when it states none."""
    return float(stream.average_rate or stream.guessed_rate or 0)


def _step(rate: float) -> float:
    """A frame's nominal length: 25 fps where the stream states no rate."""
    return 1 / rate if rate else 1 / 25


def _fps(rate: float, count: int, duration: float) -> float:
    return round(rate or count / duration, 6)


def _frame_seconds(frame, tb: float, prev: float | None, step: float) -> float:
    if frame.pts is not None:
        return frame.pts * tb
    return 0.0 if prev is None else prev + step  # no timestamp: assume the nominal frame rate


def _frames_pyav(path: str, header: _Header, sampling: SamplingConfig, threads: int):
    """Decode every frame in order (inter-coded video needs it) and convert only the sampled ones.

    Generator of sampled (time, frame) pairs; returns the VideoInfo when exhausted."""
    import av

    out_w, out_h, turns = _coded_size(header, sampling)
    sampler = NearestSampler(sampling.fps)
    count, discarded, first, t, last_dur = 0, 0, None, None, 0.0
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        tb, rate = float(stream.time_base), _rate(stream)
        step = _step(rate)
        for packet in container.demux(stream):
            discarded += bool(packet.size and packet.is_discard)
            for frame in packet.decode():
                raw = _frame_seconds(frame, tb, None if t is None else t + first, step)
                first = raw if first is None else first
                t = round(raw - first, 6)
                last_dur = (frame.duration or 0) * tb or step
                yield from _to_rgb(sampler.push(count, t, frame), out_w, out_h, turns)
                count += 1
    if count == 0:
        raise MediaError(path, "no video frames could be decoded")
    duration = round(t + last_dur, 6)
    _check_complete(path, header, count + discarded, duration)
    yield from _to_rgb(sampler.finish(duration), out_w, out_h, turns)
    return header.info(path, duration, _fps(rate, count, duration), count, "pyav")


@dataclass
class _SamplePlan:
    """Which frames sampling picks, read from packet timestamps before anything is decoded."""

    keep: dict[int, float]  # pts -> time of each picked frame, as a whole decode times it
    unneeded: set[int]      # pts of frames that neither sampling nor any picked frame needs (see `_unneeded`)
    keyframes: list[int]    # pts of the keyframes, ascending (where a window's decode may start)
    count: int              # frames shown (one packet each)
    discarded: int          # frames decoded only as references for others (before an edit list's cut)
    duration: float
    fps: float


@dataclass
class _Packets:
    """One pass over a video stream's packets, without decoding: what the keyframe and sample plans read."""

    tb: float
    rate: float
    reorders: bool      # the codec may decode frames in another order than it shows them (B-frames)
    rows: list[tuple]   # (pts, duration, keyframe, discarded, starts clean) of each packet, in decoding order


def _scan_packets(path: str) -> _Packets | None:
    """The stream's packets (see `_Packets`); None where PyAV cannot demux them: the full decode names the problem.

    It costs a pass over the file's bytes."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            clean = _clean_start_test(stream)
            rows = [(p.pts, p.duration or 0, p.is_keyframe, p.is_discard, p.is_keyframe and clean(p))
                    for p in container.demux(stream) if p.size]
            return _Packets(float(stream.time_base), _rate(stream), bool(stream.codec_context.has_b_frames), rows)
    except Exception:
        return None


def _sample_plan(packets: _Packets, sampling: SamplingConfig) -> _SamplePlan | None:
    """The frames a whole PyAV decode would pick, from the packets alone: the same NearestSampler over the same
    times (`t = round(pts * tb - first * tb, 6)`). None where packets lack a timestamp or repeat one, or where the
    stream reorders frames but its timestamps rise in decoding order (AVI stores no presentation times, and FFmpeg
    numbers the packets): only a decode shows what those files give."""
    tb, rate = packets.tb, packets.rate
    # An edit list (a cut made without re-encoding) marks the frames before the cut: decoded, never shown.
    shown = [(p, duration, key) for p, duration, key, discard, _ in packets.rows if not discard]
    pts = sorted(p for p, _, _ in shown if p is not None)
    if not pts or len(pts) < len(shown) or len(set(pts)) < len(pts):
        return None
    if packets.reorders and [p for p, _, _ in shown] == pts:
        return None
    sampler, first = NearestSampler(sampling.fps), pts[0] * tb
    times = [round(p * tb - first, 6) for p in pts]
    picked = [q for i, (p, t) in enumerate(zip(pts, times)) for q in sampler.push(i, t, p)]
    duration = round(times[-1] + (max(shown)[1] * tb or _step(rate)), 6)
    picked += sampler.finish(duration)
    keep = {p: t for _, t, p in picked}
    order = [(p, clean) for p, *_, clean in packets.rows]
    return _SamplePlan(keep, _unneeded(order, keep), sorted(p for p, _, key in shown if key), len(pts),
                       len(packets.rows) - len(shown), duration, _fps(rate, len(pts), duration))


def _clean_start_test(stream):
    """A test of a keyframe packet: whether no frame after it refers to a frame before it.

    Every keyframe of most codecs. An H.264 keyframe may be a recovery point rather than an IDR picture: frames
    after it cannot refer back, but FFmpeg, missing the frames before it, hides it from the output."""
    if stream.codec_context.name != "h264":
        return lambda packet: True
    extradata = stream.codec_context.extradata or b""
    # avcC (MP4, Matroska) prefixes each NAL unit with its length; otherwise start codes separate them (Annex B).
    length = (extradata[4] & 3) + 1 if len(extradata) > 4 and extradata[0] == 1 else 0
    return lambda packet: 5 in _h264_nal_types(bytes(packet), length)


def _h264_nal_types(data: bytes, length: int) -> set[int]:
    """The NAL unit types in one H.264 access unit (5: a slice of an IDR picture)."""
    if length:
        types, i = set(), 0
        while i + length < len(data):
            types.add(data[i + length] & 0x1F)
            i += length + int.from_bytes(data[i:i + length], "big")
        return types
    types, i = set(), data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        types.add(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def _unneeded(order: list[tuple[int, bool]], keep: dict[int, float]) -> set[int]:
    """pts of the frames that no picked frame needs, from (pts, starts clean) in decoding order (see
    `_clean_start_test`).

    A frame refers only to frames decoded before it, so in each run of frames from one keyframe to the next, those
    decoded after the run's last picked frame serve only later frames. When the next run starts clean (none of its
    frames is shown before its keyframe, so none refers back past it), nothing needs them. Phone footage, with a
    keyframe every second, then decodes each second only up to its picked frame."""
    starts = [i for i, (_, key) in enumerate(order) if key or i == 0] + [len(order)]
    unneeded = set()
    for lo, hi, after in zip(starts, starts[1:], starts[2:] + [len(order)]):
        if hi < len(order) and any(p < order[hi][0] for p, _ in order[hi + 1:after]):
            continue                # leading frames of the next run refer back into this one
        last = max((i for i in range(lo, hi) if order[i][0] in keep), default=lo - 1)
        unneeded.update(p for p, _ in order[last + 1:hi])
    return unneeded


class _OffPlan(Exception):
    """The decoder's frames are not the ones the sample plan expects (a damaged or unusual stream)."""


def _frames_sampled(path: str, header: _Header, sampling: SamplingConfig, threads: int, plan: _SamplePlan,
                    start: float = 0.0, end: float = float("inf")):
    """The frames of `plan` whose time lies in [start, end), the same ones a whole PyAV decode gives, while
    the decoder skips every frame that no other frame refers to and sampling does not pick (at 1 fps from footage
    with B-frames, about half of them), and is not given the frames no picked frame needs (`_unneeded`). A window
    starts decoding at the last keyframe before its first frame.

    Generator of (time, frame) pairs; returns the VideoInfo when exhausted. Raises _OffPlan when the decoder's
    frames differ from the plan's, before yielding a frame it would get wrong."""
    import av

    _check_complete(path, header, plan.count + plan.discarded, plan.duration)
    out_w, out_h, turns = _coded_size(header, sampling)
    want = sorted((p, t) for p, t in plan.keep.items() if start <= t < end)
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        stream.thread_type = "AUTO"
        ctx.thread_count = threads
        if start > 0 and want:
            # From the last keyframe shown before the window's first frame: the frames shown after a keyframe never
            # refer to frames before it, and a frame shown before one (an open GOP's) belongs to this run.
            lead = [k for k in plan.keyframes if k <= want[0][0]]
            if lead:
                container.seek(lead[-1], stream=stream, backward=True)
        done = 0
        for packet in container.demux(stream):
            if packet.size:         # the last, empty packet drains the frames the decoder still holds
                if packet.pts in plan.unneeded:
                    continue
                ctx.skip_frame = "DEFAULT" if packet.pts in plan.keep else "NONREF"
            for frame in packet.decode():
                if done == len(want):
                    continue
                if frame.pts is None or frame.pts > want[done][0]:
                    raise _OffPlan(frame.pts)
                if frame.pts == want[done][0]:
                    yield from _to_rgb([(done, want[done][1], frame)], out_w, out_h, turns)
                    done += 1
            if done == len(want) and end < plan.duration:
                break               # a window: the rest of the file is not read
    if done < len(want):
        raise _OffPlan(None)
    return header.info(path, plan.duration, plan.fps, plan.count, "pyav-sampled")


def _keyframe_plan(packets: _Packets, header: _Header, sampling: SamplingConfig) -> dict[int, float] | None:
    """{pts: time} of the keyframes to keep, the first in each 1 / fps interval, when every clip window holds
    one; None when some window holds none, or the duration is unknown, so the file is decoded in full.

    Read from the packets' keyframe flags, without decoding."""
    if not header.duration:
        return None
    tb = packets.tb
    pts = sorted(p for p, _, key, _, _ in packets.rows if p is not None and key)
    if not pts:
        return None
    first, plan, slot = pts[0], {}, -1
    for p in pts:
        t = round((p - first) * tb, 6)
        if int(t * sampling.fps + 1e-9) > slot:
            slot = int(t * sampling.fps + 1e-9)
            plan[p] = t
    times = np.array(sorted(plan.values()))
    for start, end in clip_windows(header.duration, sampling.clip_seconds, sampling.stride_seconds):
        lo, hi = np.searchsorted(times, [start, end], side="left")
        if hi == lo:
            return None
    return plan


def _frames_keyframes(path: str, header: _Header, sampling: SamplingConfig, threads: int, plan: dict[int, float]):
    """Decode keyframes only (the decoder skips every other frame) and convert the planned ones.

    Generator of (time, frame) pairs; returns the VideoInfo (frame_count: the frames decoded) when exhausted."""
    import av

    out_w, out_h, turns = _coded_size(header, sampling)
    count = 0
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        stream.codec_context.skip_frame = "NONKEY"
        rate = _rate(stream)
        for frame in container.decode(stream):
            t = plan.get(frame.pts)
            if t is not None:
                count += 1
                yield from _to_rgb([(count, t, frame)], out_w, out_h, turns)
    if count < len(plan):
        raise MediaError(path, f"truncated or corrupt: decoded {count} of {len(plan)} keyframes")
    return header.info(path, round(float(header.duration), 6), round(rate, 6), count, "pyav-keyframes")


def _to_rgb(picked, width: int, height: int, turns: int = 0) -> list[tuple[float, np.ndarray]]:
    """Sampled PyAV frames as RGB arrays, resized, then turned `turns` quarter turns counter-clockwise."""
    out = []
    for _, t, frame in picked:
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
        out.append((t, np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb))
    return out


def _collect(frames) -> DecodedVideo:
    """Drain a frame generator into one DecodedVideo."""
    times, stack = [], []
    while True:
        try:
            t, frame = next(frames)
        except StopIteration as stop:
            info = stop.value
            break
        times.append(t)
        stack.append(frame)
    return DecodedVideo(info, np.array(times, np.float64), np.stack(stack))


def _chunked(frames, sampling: SamplingConfig, chunk_seconds: float):
    """Group a frame generator's output into VideoChunks; the last one carries the VideoInfo."""
    cutter = ChunkCutter(sampling, chunk_seconds)
    while True:
        try:
            t, frame = next(frames)
        except StopIteration as stop:
            yield cutter.finish(stop.value)
            return
        yield from cutter.push(t, frame)


def _use_decord(path: str, header: _Header, backend: str) -> bool:
    """Whether decord reads the file: only when asked for. A rotated stream cannot go to decord: it turns its
    frames but sizes its buffers for the coded shape, so resized frames come out squashed or not at all."""
    if backend == "decord" and header.rotation:
        raise MediaError(path, f"decord cannot decode a video rotated {header.rotation} degrees; use PyAV")
    return backend == "decord"


def _frame_sources(path: str, header: _Header, sampling: SamplingConfig, threads: int, backend: str):
    """The frame generators to try, in order, each with what its failure means (see `_failed`): keyframes only
    where they are dense enough (`backend` "keyframes"); decord when asked for; PyAV skipping the frames nothing
    needs ("auto"); PyAV decoding every frame, which names a bad file's problem."""
    packets = _scan_packets(path) if backend in ("keyframes", "auto") else None   # one pass for both plans
    if backend == "keyframes":
        plan = _keyframe_plan(packets, header, sampling) if packets else None
        if plan is not None:
            # a keyframe the decoder refuses: decode the file in full instead
            yield lambda: _frames_keyframes(path, header, sampling, threads, plan), None
        backend = "auto"
    if _use_decord(path, header, backend):
        yield lambda: _frames_decord(path, header, sampling, threads), "decord cannot decode the file"
    if backend == "auto":
        sampled = _sample_plan(packets, sampling) if packets else None
        if sampled is not None:
            yield lambda: _frames_sampled(path, header, sampling, threads, sampled), None
    yield lambda: _frames_pyav(path, header, sampling, threads), "decoding failed"


def _failed(path: str, e: Exception, meaning: str | None) -> None:
    """Return when the next frame source may be tried (`meaning` None); otherwise raise the file's error."""
    if meaning is None:
        return
    if isinstance(e, MediaError) and meaning == "decoding failed":
        raise e
    raise MediaError(path, f"{meaning} ({_describe(e)})") from None


def decode_file(path: str, sampling: SamplingConfig = SamplingConfig(), backend: str = "auto",
                threads: int = 0) -> DecodedVideo:
    """Sample frames at `sampling.fps`, resized at decode time (see `_frame_sources` for how, by `backend`).

    `backend` "keyframes" decodes keyframes only where they are dense enough (see `_keyframe_plan`)."""
    path = os.fspath(path)
    check_file(path)
    header = _stream_header(path)
    for frames, meaning in _frame_sources(path, header, sampling, threads, backend):
        try:
            return _collect(frames())
        except Exception as e:
            _failed(path, e, meaning)
    raise AssertionError("PyAV, the last frame source, either decodes or raises")


def decode_window_file(path: str, sampling: SamplingConfig = SamplingConfig(), backend: str = "auto",
                       threads: int = 0, *, start: float = 0.0, end: float = float("inf")) -> DecodedVideo:
    """The frames `decode_file` samples whose time lies in [start, end), decoding as little else as it can.

    decord and "auto" pick the same frames as a whole decode, from every frame's time, and decode from the keyframe
    before the window ("auto" skipping what nothing needs); plain PyAV decodes from the start, stops after the
    window, and converts only the window's frames.
    """
    path = os.fspath(path)
    check_file(path)
    header = _stream_header(path)
    if _use_decord(path, header, backend):
        try:
            return _window_decord(path, header, sampling, threads, start, end)
        except Exception as e:
            raise MediaError(path, f"decord cannot decode the file ({_describe(e)})") from None
    packets = _scan_packets(path) if backend == "auto" else None
    plan = _sample_plan(packets, sampling) if packets else None
    if plan is not None:
        try:
            frames = _frames_sampled(path, header, sampling, threads, plan, start, end)
            return _window(path, header, frames, start, end, "pyav-sampled")
        except MediaError:
            raise
        except Exception:
            pass  # the plain decode below gets the frames, or names the file's problem
    try:
        return _window(path, header, _frames_pyav(path, header, sampling, threads), start, end, "pyav")
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(path, f"decoding failed ({_describe(e)})") from None


def _window_decord(path: str, header: _Header, sampling: SamplingConfig, threads: int, start: float,
                   end: float) -> DecodedVideo:
    reader, indices, times, info = _decord_open(path, header, sampling, threads)
    keep = [i for i, t in enumerate(times) if start <= t < end]
    out_w, out_h = sampling.frame_size(header.width, header.height)
    frames = (reader.get_batch([indices[i] for i in keep]).asnumpy() if keep
              else np.empty((0, out_h, out_w, 3), np.uint8))
    return DecodedVideo(info, np.asarray(times[keep], np.float64), frames)


def _window(path: str, header: _Header, frames, start: float, end: float, backend: str) -> DecodedVideo:
    """The [start, end) part of a (time, frame) generator that runs in time order, which is closed after it."""
    times, stack = [], []
    for t, frame in frames:
        if t >= end:
            break
        if t >= start:
            times.append(t)
            stack.append(frame)
    frames.close()
    if not stack:
        raise MediaError(path, f"no frames between {start:g} s and {end:g} s")
    info = header.info(path, float(header.duration or times[-1]), 0.0, len(stack), backend)
    return DecodedVideo(info, np.array(times, np.float64), np.stack(stack))


def decode_chunks_file(path: str, sampling: SamplingConfig = SamplingConfig(), backend: str = "auto",
                       threads: int = 0, chunk_seconds: float = 60.0, skip: int = 0):
    """Generator of the video's VideoChunks, each decoded only when the previous one was taken.

    The sampled PyAV decode first; if it fails, plain PyAV goes on from the first chunk not yet produced.
    `skip` chunks are dropped first (a retry after a crashed decoder, which had already delivered them).
    """
    path = os.fspath(path)
    check_file(path)
    header = _stream_header(path)
    done = skip  # chunks already delivered
    for frames, meaning in _frame_sources(path, header, sampling, threads, backend):
        try:
            # a source that fails part way is followed by the next one from the first chunk not yet delivered
            for chunk in _chunked(frames(), sampling, chunk_seconds):
                if chunk.index >= done:
                    done = chunk.index + 1
                    yield chunk
                del chunk  # not held while the next one is decoded
            return
        except Exception as e:
            _failed(path, e, meaning)
