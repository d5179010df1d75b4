"""Encoding stage of indexing: frame features in batches, clip embeddings, concept tags, thumbnails, captions."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from .plan import Job
from .writer import CaptionData, ClipData


@dataclass
class Encoded:
    """A decoded video's clips and captions, embedded; or why it failed."""

    job: Job
    info: object = None  # trainer.media.VideoInfo
    clips: list[ClipData] = field(default_factory=list)
    captions: list[CaptionData] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. a sidecar that could not be read



def _clip_tags(encoder, features: np.ndarray, frames: np.ndarray, top: int) -> list[tuple[str, float]]:
    """Concept tags of one clip: per-frame ImageNet label probabilities averaged over its frames, best first.

    Uses the frame features already computed when the frame encoder can label them, so frames are not
    run through the network a second time; otherwise asks the model (`tags(frames)`).
    """
    labels = getattr(getattr(encoder, "frame_encoder", None), "labels_from_features", None)
    if labels is None:
        return list(encoder.tags(frames, top=top))
    per_frame = labels(features, top=top)
    scores: dict[str, float] = {}
    for row in per_frame:
        for name, p in row:
            scores[name] = scores.get(name, 0.0) + p / len(per_frame)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:top]


def _thumbnail(frames: np.ndarray, size: int) -> bytes:
    """JPEG of the clip's middle sampled frame, its long side at most `size` pixels."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2]))
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _attach(captions: list, clips: list) -> list[tuple[object, int | None]]:
    """Pair each caption with the clip it overlaps most (None for untimed captions of a many-clip video)."""
    out = []
    for c in captions:
        if c.start is None or c.end is None:
            out.append((c, 0 if len(clips) == 1 else None))
            continue
        overlaps = [min(c.end, k.end) - max(c.start, k.start) for k in clips]
        best = int(np.argmax(overlaps)) if overlaps else -1
        out.append((c, best if best >= 0 and overlaps[best] > 0 else None))
    return out


@dataclass
class EncodeSettings:
    sampling: object  # trainer.media.SamplingConfig
    batch_size: int = 64  # frames per encode_frames call, clips per embed_clips call
    top_tags: int = 5
    thumb_size: int = 320
    sidecars: bool = True


def _encode_frames(encoder, videos: list, batch: int) -> list[np.ndarray]:
    """Frame features of several videos or chunks, encoded together in calls of exactly `batch` frames
    (the last call may hold fewer), so short videos share a call and long ones are split."""
    sizes = [len(v.frames) for v in videos]
    feats, pending, held = [], [], 0
    for v in videos:
        start = 0
        while start < len(v.frames):
            take = min(batch - held, len(v.frames) - start)
            pending.append(v.frames[start:start + take])
            held, start = held + take, start + take
            if held == batch:
                feats.append(encoder.encode_frames(np.concatenate(pending)))
                pending, held = [], 0
    if pending:
        feats.append(encoder.encode_frames(np.concatenate(pending)))
    allf = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    return np.split(allf, np.cumsum(sizes)[:-1])


def _embed_clips(encoder, feature_stacks: list[np.ndarray], batch: int) -> np.ndarray:
    out = [encoder.embed_clips(feature_stacks[i:i + batch], features=True)
           for i in range(0, len(feature_stacks), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encode_chunks(chunks: list, encoder, settings: EncodeSettings) -> list[list[ClipData]]:
    """Clip data (vector, tags, thumbnail) of each VideoChunk's clips; the frames of all chunks go through
    the frame encoder together, in calls of `settings.batch_size` frames."""
    feats = _encode_frames(encoder, chunks, settings.batch_size)
    per_chunk = [(ch.clips(), ch, f) for ch, f in zip(chunks, feats)]
    stacks = [f[np.searchsorted(ch.times, c.times)] for clips, ch, f in per_chunk for c in clips]
    vectors = iter(_embed_clips(encoder, stacks, settings.batch_size))
    stacks = iter(stacks)
    return [[ClipData(c.start, c.end, next(vectors),
                      _clip_tags(encoder, next(stacks), c.frames, settings.top_tags),
                      _thumbnail(c.frames, settings.thumb_size)) for c in clips]
            for clips, _, _ in per_chunk]


def encode_chunks_isolated(chunks: list, encoder, settings: EncodeSettings) -> list[list[ClipData] | str]:
    """`encode_chunks`, but if the batch fails each chunk is encoded alone, so one bad chunk fails by
    itself: its entry is then the reason (a str) instead of its clips."""
    try:
        return encode_chunks(chunks, encoder, settings)
    except Exception as e:
        if len(chunks) == 1:
            return [f"encoding failed ({type(e).__name__}: {e})"]
    out = []
    for chunk in chunks:
        out += encode_chunks_isolated([chunk], encoder, settings)
    return out


class VideoAssembler:
    """Collects a video's clip data chunk by chunk and hands back the whole video's `Encoded` at its last
    chunk, so the writer records a long video in one transaction while only its small per-clip data
    (vector, tags, thumbnail) is held, never all its frames."""

    def __init__(self, encoder, settings: EncodeSettings):
        self.encoder, self.settings = encoder, settings
        self.open: dict[str, Encoded] = {}  # path -> the video being assembled
        self.frames: dict[str, int] = {}

    def encode(self, items: list[tuple[Job, object]]) -> list[Encoded]:
        """Feed (job, VideoChunk | MediaError) items in stream order; returns the videos they complete."""
        todo = [ch for job, ch in items if hasattr(ch, "windows") and len(ch.frames)
                and self._video(job).error is None]
        results = dict(zip(map(id, todo), encode_chunks_isolated(todo, self.encoder, self.settings)))
        done = []
        for job, chunk in items:
            video = self._video(job)
            if not hasattr(chunk, "windows"):  # a MediaError, possibly after some chunks
                del self.open[job.state.path], self.frames[job.state.path]
                done.append(Encoded(job, error=getattr(chunk, "reason", str(chunk))))
                continue
            clips = results.get(id(chunk), [])
            if isinstance(clips, str):
                video.error = video.error or clips
            elif video.error is None:
                video.clips += clips
                self.frames[job.state.path] += len(chunk.frames)
            if chunk.last:
                done.append(self._finish(job, chunk.info))
        try:  # captions of all finished videos in shared calls...
            _embed_captions([e for e in done if e.error is None], self.encoder, self.settings)
            return done
        except Exception:  # ...or, if that fails, video by video so only the bad one fails
            return [self._captions(e) for e in done]

    def _captions(self, video: Encoded) -> Encoded:
        if video.error is not None:
            return video
        video.captions, video.warnings = [], []
        try:
            _embed_captions([video], self.encoder, self.settings)
        except Exception as e:
            return Encoded(video.job, error=f"encoding failed ({type(e).__name__}: {e})", warnings=video.warnings)
        return video

    def _video(self, job: Job) -> Encoded:
        if job.state.path not in self.open:
            self.open[job.state.path] = Encoded(job)
            self.frames[job.state.path] = 0
        return self.open[job.state.path]

    def _finish(self, job: Job, info) -> Encoded:
        video = self.open.pop(job.state.path)
        if self.frames.pop(job.state.path) == 0 and video.error is None:
            video.error = "no frames could be decoded"
        if video.error is not None:
            return Encoded(job, error=video.error)
        video.info = info
        return video


def encode_videos(items: list[tuple[Job, object]], encoder, settings: EncodeSettings) -> list[Encoded]:
    """Embed a batch of whole decoded videos: frames, clips, tags, thumbnails and captions."""
    from trainer.media.types import whole_chunk

    return VideoAssembler(encoder, settings).encode([(job, whole_chunk(v, settings.sampling)) for job, v in items])


def _sidecar(e: Encoded) -> list:
    """Captions of the video's .srt/.vtt/.txt sidecar; a bad sidecar is a warning, not a failed video."""
    from trainer.captions import CaptionError, read_sidecar

    try:
        return [(c, "sidecar") for c in read_sidecar(e.job.state.path)]
    except CaptionError as err:
        e.warnings.append(f"sidecar captions skipped ({err})")
        return []


def _embed_captions(encoded: list[Encoded], encoder, settings: EncodeSettings) -> None:
    pairs = []
    for e in encoded:
        caps = list(e.job.captions)
        if settings.sidecars:
            caps += _sidecar(e)
        caps = [c if isinstance(c, tuple) else (c, "manifest") for c in caps]
        attached = _attach([c for c, _ in caps], e.clips)
        pairs += [(e, c, src, at) for (c, src), (_, at) in zip(caps, attached) if c.text.strip()]
    if not pairs:
        return
    texts = [c.text.strip() for _, c, _, _ in pairs]
    # Captions are embedded as written: they are matched text to text, where the sentence encoder knows
    # synonyms, and rewriting thousands of subtitle lines would cost more than the clips themselves.
    vecs = np.concatenate([encoder.embed_text(texts[i:i + settings.batch_size], rewrite=False)
                           for i in range(0, len(texts), settings.batch_size)]).astype(np.float32)
    for (e, c, src, at), text, vec in zip(pairs, texts, vecs):
        e.captions.append(CaptionData(text, c.start, c.end, vec, at, src))
