"""Encoding stage of indexing: frame features in batches, clip embeddings, concept tags, thumbnails, captions
and generated clip descriptions.

Clip data is made from frame features by four functions that every path to the store shares: the
in-process encoder here, a rebuild from kept features (indexer.rebuild) and the Ray actors
(indexer.ray_index). `embed_clips` (clip vectors), `describe_clips` (generated descriptions),
`clip_concepts` (tags and concepts) and `embed_captions` (a finished video's captions, itself
`given_captions` + `generated_captions` -> `embed_texts` -> `add_captions`, which a Ray run spreads over its
workers and its driver).
"""
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



# A class the clip shows with at least this probability lends its synonyms, broader names ("bicycle" for a
# mountain bike) and the names of what it is part of ("car" for a seat belt) to the clip's keyword text; weaker
# guesses keep only their label, as tags always did.
TAG_WORDS_MIN = 0.1


def classifier(encoder):
    """The encoder's frame classifier (`label_probs`, `label_names`), or None if its frame encoder has none."""
    frames = getattr(encoder, "frame_encoder", None)
    return frames if callable(getattr(frames, "label_probs", None)) else None


def look_width(encoder) -> int:
    """Width of the look-alike vectors the encoder's frame features give (0: it has no frame encoder): the
    global-pool block of a grid-pooled encoder (`channels`), else the whole feature."""
    frames = getattr(encoder, "frame_encoder", None)
    if frames is None:
        return 0
    return int(getattr(frames, "channels", 0) or getattr(frames, "dim", 0) or 0)


def has_dense(encoder) -> bool:
    """Whether the encoder is a trained model that makes dense clip and caption vectors (dim > 0)."""
    return int(getattr(encoder, "dim", 0) or 0) > 0


def clip_look(features: np.ndarray, width: int) -> np.ndarray:
    """(T, F) frame features -> (width,) look-alike vector: the pooled block averaged over frames, unit length."""
    v = np.asarray(features, np.float32)[:, :width].mean(axis=0)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def clip_concepts(encoder, features: np.ndarray, frames: np.ndarray, top: int, concept_top: int):
    """(tags, concepts, tag_text) of one clip: the classifier's probabilities averaged over its frames, as
    the top `top` (label, p) tags and the top `concept_top` (class, p) pairs above chance, plus the keyword
    text of the tags with their classes' synonyms and broader names.

    Uses the frame features already computed, so frames are not run through the network a second time;
    without a classifier, asks the model for tags (`tags(frames)`) and keeps no concepts.
    """
    head = classifier(encoder)
    if head is None:
        return list(encoder.tags(frames, top=top)), [], ""
    probs = head.label_probs(features).mean(axis=0)  # (C,)
    order = np.argsort(-probs, kind="stable")
    tags = [(head.label_names[i], float(probs[i])) for i in order[:top]]
    # Only classes held above chance are evidence (search.concepts.chance_score): the rest are not kept.
    concepts = [(int(i), float(probs[i])) for i in order[:concept_top] if probs[i] > 1.0 / len(probs)]
    return tags, concepts, tag_text(head.label_names, tags, concepts)


def tag_text(labels, tags: list[tuple[str, float]], concepts: list[tuple[int, float]]) -> str:
    """Keyword text of a clip's tags: every tag label, then the names WordNet gives the clearly seen classes."""
    from trainer.classes import class_table

    words = [label for label, _ in tags]
    table = class_table()["classes"]
    if len(labels) == len(table):  # the ImageNet classifier the table describes
        for c, p in concepts:
            if p >= TAG_WORDS_MIN:
                words += table[c]["names"] + table[c]["broader"] + table[c]["part_of"]
    return " ".join(dict.fromkeys(words))


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
    concept_top: int = 50  # most class probabilities kept per clip
    looks: bool = True  # keep look-alike vectors (off for a store made before they existed)
    thumb_size: int = 320
    sidecars: bool = True
    keep_features: object = None  # indexer.features.FeatureShelf that each video's frame features go to
    describe: bool = True  # give each clip a generated description when the model has a caption decoder
    # Index-time descriptions decode greedily: beam search's cost grows with the beams (greedy gave 1.8x to 3x
    # the captions/s of 4 beams, BENCHMARKS.md "Captioning"); `vidsearch caption` keeps the decoder's beams.
    describe_beams: int = 1
    # ... and with the decoder's language model in bfloat16 where the CPU computes it natively (`describe`'s
    # `fast`): 1.5x the captions/s, the same sentence for 94-98% of clips (BENCHMARKS.md, "Indexing").
    describe_fast: bool = True
    # Clips per caption-decoder call when the pipeline gathers them across videos: a call costs about the same
    # whether it holds a few clips or this many (each generation step is one pass), so describing every short
    # video's few clips alone paid that cost per video.
    describe_batch: int = 64


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


def embed_clips(encoder, feature_stacks: list[np.ndarray], batch: int) -> list:
    """(N, D) float32 clip vectors of N (T, F) frame-feature stacks, in calls of `batch` clips; N Nones without a
    trained model (the store then has no dense vectors)."""
    if not has_dense(encoder):
        return [None] * len(feature_stacks)
    out = [encoder.embed_clips(feature_stacks[i:i + batch], features=True)
           for i in range(0, len(feature_stacks), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encode_chunks(chunks: list, encoder, settings: EncodeSettings, *, defer: bool = False) -> list[list[ClipData]]:
    """Clip data (vector, tags, thumbnail, description) of each VideoChunk's clips; the frames of all chunks go
    through the frame encoder together, in calls of `settings.batch_size` frames. With `defer`, clips that
    want a description hold their features in `undescribed` instead, for `describe_held`."""
    feats = _encode_frames(encoder, chunks, settings.batch_size)
    per_chunk = [(ch.clips(), ch, f) for ch, f in zip(chunks, feats)]
    stacks = [f[np.searchsorted(ch.times, c.times)] for clips, ch, f in per_chunk for c in clips]
    vectors = iter(embed_clips(encoder, stacks, settings.batch_size))
    width = look_width(encoder) if settings.looks else 0
    later = defer and wants_descriptions(encoder, settings)
    descriptions = iter([None] * len(stacks) if later else describe_clips(encoder, stacks, settings))
    stacks = iter(stacks)
    keep = settings.keep_features is not None
    out = []
    for clips, _, _ in per_chunk:
        data = []
        for c in clips:
            feats = next(stacks)
            tags, concepts, text = clip_concepts(encoder, feats, c.frames, settings.top_tags, settings.concept_top)
            data.append(ClipData(c.start, c.end, next(vectors), tags, _thumbnail(c.frames, settings.thumb_size),
                                 look=clip_look(feats, width) if width else None, concepts=concepts,
                                 tag_text=text, frame_times=c.times if keep else None,
                                 features=feats.astype(np.float16) if keep else None,
                                 description=next(descriptions), undescribed=feats if later else None))
        out.append(data)
    return out


def wants_descriptions(encoder, settings: EncodeSettings) -> bool:
    """Whether clips get a generated description: the model has a caption decoder and `settings.describe`."""
    return bool(settings.describe and getattr(encoder, "can_describe", False))


def describe_clips(encoder, feature_stacks: list[np.ndarray], settings: EncodeSettings) -> list[str | None]:
    """A generated sentence per clip from the model's caption decoder; None each without one or with
    `settings.describe` off."""
    if not wants_descriptions(encoder, settings) or not feature_stacks:
        return [None] * len(feature_stacks)
    return list(encoder.describe(feature_stacks, features=True, num_beams=settings.describe_beams,
                                 fast=settings.describe_fast))


def describe_held(encoder, videos: list[Encoded], settings: EncodeSettings, limit: int | None = None) -> None:
    """Describe the clips of `videos` that hold `undescribed` features (the first `limit` of them, in order),
    in shared calls of `settings.describe_batch` clips. If a call fails, each video's clips are described
    alone, and a video that still fails gets the error."""
    held, left = [], limit
    for v in videos:
        clips = [c for c in v.clips if c.undescribed is not None] if v.error is None else []
        if left is not None:
            clips = clips[:left]
            left -= len(clips)
        if clips:
            held.append((v, clips))
    try:
        _describe_clip_data(encoder, [c for _, clips in held for c in clips], settings)
    except Exception as e:
        if len(held) == 1:
            held[0][0].error = f"describing failed ({type(e).__name__}: {e})"
            return
        for v, clips in held:
            try:
                _describe_clip_data(encoder, clips, settings)
            except Exception as e:
                v.error = f"describing failed ({type(e).__name__}: {e})"


def _describe_clip_data(encoder, clips: list[ClipData], settings: EncodeSettings) -> None:
    for s in range(0, len(clips), settings.describe_batch):
        part = clips[s:s + settings.describe_batch]
        texts = describe_clips(encoder, [c.undescribed for c in part], settings)
        if len(texts) != len(part):
            raise ValueError(f"the caption decoder gave {len(texts)} descriptions for {len(part)} clips")
        for c, text in zip(part, texts):
            c.description, c.undescribed = text, None


def encode_chunks_isolated(chunks: list, encoder, settings: EncodeSettings, *,
                           defer: bool = False) -> list[list[ClipData] | str]:
    """`encode_chunks`, but if the batch fails each chunk is encoded alone, so one bad chunk fails by
    itself: its entry is then the reason (a str) instead of its clips."""
    try:
        return encode_chunks(chunks, encoder, settings, defer=defer)
    except Exception as e:
        if len(chunks) == 1:
            return [f"encoding failed ({type(e).__name__}: {e})"]
    out = []
    for chunk in chunks:
        out += encode_chunks_isolated([chunk], encoder, settings, defer=defer)
    return out


class VideoAssembler:
    """Collects a video's clip data chunk by chunk and hands back the whole video's `Encoded` at its last
    chunk, so the writer records a long video in one transaction while only its small per-clip data
    (vector, tags, thumbnail) is held, never all its frames.

    With `gather`, clip descriptions are made in shared calls of `settings.describe_batch` clips across
    videos: finished videos wait, in order, until their clips are described, and `flush()` describes and
    hands back whatever still waits. At most about one call's clips hold their features meanwhile.
    """

    def __init__(self, encoder, settings: EncodeSettings, *, gather: bool = False):
        self.encoder, self.settings = encoder, settings
        self.gather = gather and wants_descriptions(encoder, settings)
        self.open: dict[str, Encoded] = {}  # path -> the video being assembled
        self.frames: dict[str, int] = {}
        self.waiting: list[Encoded] = []  # finished videos whose clips are not all described yet, in order

    def encode(self, items: list[tuple[Job, object]]) -> list[Encoded]:
        """Feed (job, VideoChunk | MediaError) items in stream order; returns the videos they complete."""
        todo = [ch for job, ch in items if hasattr(ch, "windows") and len(ch.frames)
                and self._video(job).error is None]
        results = dict(zip(map(id, todo), encode_chunks_isolated(todo, self.encoder, self.settings,
                                                                 defer=self.gather)))
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
        if not self.gather:
            return self._with_captions(done)
        self.waiting += done
        while self._held_clips() >= self.settings.describe_batch:  # full calls only; the rest keeps waiting
            describe_held(self.encoder, self.waiting + list(self.open.values()), self.settings,
                          limit=self.settings.describe_batch)
        return self._release()

    def flush(self) -> list[Encoded]:
        """Describe every clip still waiting and hand back the finished videos held for it."""
        if self.gather:
            describe_held(self.encoder, self.waiting + list(self.open.values()), self.settings)
        return self._release()

    def _held_clips(self) -> int:
        videos = list(self.open.values()) + self.waiting
        return sum(c.undescribed is not None for v in videos if v.error is None for c in v.clips)

    def _release(self) -> list[Encoded]:
        """The waiting videos up to the first that still has an undescribed clip, with their captions."""
        n = 0
        while n < len(self.waiting) and (self.waiting[n].error is not None
                                         or all(c.undescribed is None for c in self.waiting[n].clips)):
            n += 1
        out, self.waiting = self.waiting[:n], self.waiting[n:]
        return self._with_captions(out)

    def _with_captions(self, done: list[Encoded]) -> list[Encoded]:
        try:  # captions of all finished videos in shared calls...
            embed_captions([e for e in done if e.error is None], self.encoder, self.settings)
            return done
        except Exception:  # ...or, if that fails, video by video so only the bad one fails
            return [self._captions(e) for e in done]

    def _captions(self, video: Encoded) -> Encoded:
        if video.error is not None:
            return video
        video.captions, video.warnings = [], []
        try:
            embed_captions([video], self.encoder, self.settings)
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


def given_captions(e: Encoded, settings: EncodeSettings) -> list[tuple[object, str]]:
    """The video's own (trainer.captions.Caption, source) pairs: the manifest's, then (with `settings.sidecars`)
    its .srt/.vtt/.txt sidecar's, else the text subtitle streams inside it. A bad sidecar or stream is a
    warning added to `e`, not a failed video."""
    caps = list(e.job.captions)
    if settings.sidecars:
        from trainer.captions import read_timed_text

        found, warnings = read_timed_text(e.job.state.path, getattr(e.info, "subtitle_streams", None))
        caps += found
        e.warnings += warnings
    return [c if isinstance(c, tuple) else (c, "manifest") for c in caps]


def generated_captions(path: str, clips: list[ClipData]) -> list[tuple[object, str]]:
    """The clips' generated descriptions as (Caption, source) pairs of their clip, kept apart by their source."""
    from trainer.captions import Caption

    from .schema import GENERATED

    return [(Caption(path, c.description, c.start, c.end), GENERATED) for c in clips if c.description]


def embed_texts(encoder, texts: list[str], batch: int) -> list:
    """(N, D) float32 vectors of caption texts, in calls of `batch`; N Nones without a trained model (captions
    are then found by keyword until the store has one)."""
    if not has_dense(encoder) or not texts:
        return [None] * len(texts)
    # Captions are embedded as written: they are matched text to text, where the sentence encoder knows synonyms.
    return np.concatenate([encoder.embed_text(texts[i:i + batch])
                           for i in range(0, len(texts), batch)]).astype(np.float32)


def add_captions(e: Encoded, captions: list[tuple[object, str]], vectors) -> None:
    """Append the (Caption, source) pairs to `e.captions` with their vectors (one per pair), each attached to
    the clip it overlaps most."""
    for (c, source), (_, at), vec in zip(captions, _attach([c for c, _ in captions], e.clips), vectors):
        e.captions.append(CaptionData(c.text.strip(), c.start, c.end, vec, at, source, getattr(c, "lang", None)))


def embed_captions(encoded: list[Encoded], encoder, settings: EncodeSettings) -> None:
    """Give each video its captions, embedded in shared calls: its own (`given_captions`), then its clips'
    generated descriptions; blank ones are dropped."""
    per_video = []
    for e in encoded:
        caps = given_captions(e, settings) + generated_captions(e.job.state.path, e.clips)
        per_video.append((e, [(c, src) for c, src in caps if c.text.strip()]))
    vectors = iter(embed_texts(encoder, [c.text.strip() for _, caps in per_video for c, _ in caps],
                               settings.batch_size))
    for e, caps in per_video:
        add_captions(e, caps, [next(vectors) for _ in caps])
