"""Rebuilding a store with another model (`--reindex`) from what the store kept, without decoding again.

An index run keeps each video's frame features (indexer.features). When the rebuilt store samples and cuts
frames as the old one did, with the same frame encoder, everything a fresh index run computes from a video's
frames follows from those features (clip vectors, concepts, tags, look-alike vectors, descriptions), except
the thumbnails and the video's decoded properties. Before the store is wiped, `gather` notes those of every
indexed video whose kept features fit, with the manifest captions the store holds, and writes the thumbnails
aside, a file per clip in a folder of the store (the wipe drops the database they are in). The index run then
rebuilds such a video from its features (`rebuild`), reads its sidecar and embedded subtitles from the file as a
fresh run does, and decodes only the videos it has nothing kept for.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from .config import CONFIG_FILE, StoreConfig
from .features import FeatureShelf, encoder_spec

# The settings that decide which frames a clip holds and what the frame encoder made of them: equal in the
# old and the rebuilt store, kept features and old clip windows are what a fresh run would compute.
CUT_FIELDS = ("fps", "size", "square", "clip_seconds", "stride_seconds", "frame_encoder", "look_dim",
              "concept_classes")
HELD_THUMBS = "thumbs.reindex"  # thumbnails held aside while the store is rebuilt


@dataclass
class KeptVideo:
    """What a rebuild takes from the old store for one content: decoded properties and clip windows with
    their thumbnails (files under the held folder)."""

    duration: float
    fps: float
    width: int
    height: int
    codec: str
    clips: list[tuple[float, float, Path]] = field(default_factory=list)


@dataclass
class Kept:
    """The old store's reusable part: kept videos by content hash, the paths it held with their manifest
    captions, and where the thumbnails are held."""

    shelf: FeatureShelf
    videos: dict[str, KeptVideo] = field(default_factory=dict)
    captions: dict[str, list] = field(default_factory=dict)  # path -> trainer.captions.Caption (manifest)
    held: Path | None = None
    why: str | None = None  # why no video can be rebuilt from kept features
    from_features: int = 0  # videos this run rebuilt from kept features
    decoded: int = 0  # videos this run sent to the decoder

    def release(self) -> None:
        """Drop the held thumbnails (the rebuilt store wrote its own)."""
        if self.held is not None:
            shutil.rmtree(self.held, ignore_errors=True)

    def summary(self) -> dict:
        return {"videos_from_features": self.from_features, "videos_decoded_again": self.decoded}


def why_not(old: StoreConfig, new: StoreConfig, model) -> str | None:
    """Why the old store's kept features and clips cannot stand for the rebuilt store's, or None."""
    diffs = [f"{k}: {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in CUT_FIELDS if getattr(old, k) != getattr(new, k)]
    if diffs:
        return "the rebuilt store cuts frames differently (" + "; ".join(diffs) + ")"
    if encoder_spec(model) is None:
        return "the model names no frame encoder to find kept features by"
    from .encode import classifier

    if classifier(model) is None:  # tags would then come from the frames themselves
        return "the model's frame encoder has no classifier to tag clips from features"
    return None


def gather(store_dir: Path, model, new: StoreConfig, decode_all: bool = False) -> Kept | None:
    """Before `--reindex` wipes the store at `store_dir` (None when there is none): the paths it holds with
    their manifest captions and, when its kept features fit `new` and the model, the videos that can be
    rebuilt from them (`Kept.why` says why none can). `decode_all`: a run on Ray, which decodes every video
    on its workers. Reads committed rows; the rebuild takes the lock."""
    from .db import locate

    if not (store_dir / CONFIG_FILE).is_file():
        return None
    db = locate(store_dir)
    if not db.initialised():
        return None
    kept = Kept(FeatureShelf(store_dir, encoder_spec(model) or "", new.sampling()))
    kept.why = "the run is on Ray, whose workers decode every video" if decode_all else \
        why_not(StoreConfig.load(store_dir), new, model)
    engine = db.engine(readonly=True)
    try:
        with sessionmaker(engine)() as s:
            if kept.why is None:
                _read_videos(s, kept)
            _read_captions(s, kept)
        with engine.connect() as conn:
            kept.held = _hold_thumbs(conn, store_dir, kept)
    finally:
        engine.dispose()
    return kept


def _read_videos(s, kept: Kept) -> None:
    from .schema import INDEXED, Clip, Video

    rows = s.execute(select(Video.id, Video.hash, Video.duration, Video.fps, Video.width, Video.height, Video.codec)
                     .where(Video.status == INDEXED, Video.hash.is_not(None)).order_by(Video.id)).all()
    for vid, content, duration, fps, width, height, codec in rows:
        if not kept.shelf.has(content):
            continue
        clips = s.execute(select(Clip.id, Clip.start, Clip.end).where(Clip.video_id == vid)
                          .order_by(Clip.start)).all()
        kept.videos[content] = KeptVideo(float(duration or 0.0), float(fps or 0.0), int(width or 0),
                                         int(height or 0), codec or "",
                                         [(float(a), float(b), cid) for cid, a, b in clips])


def _read_captions(s, kept: Kept) -> None:
    """Every path the store held, with its manifest captions (sidecars and streams are read from the files
    again, as a fresh run reads them)."""
    from trainer.captions import Caption as Cap

    from .schema import Caption, VideoPath

    for path, video_id in s.execute(select(VideoPath.path, VideoPath.video_id).order_by(VideoPath.id)):
        kept.captions.setdefault(path, [])
        rows = s.execute(select(Caption.text, Caption.start, Caption.end)
                         .where(Caption.video_id == video_id, Caption.source == "manifest").order_by(Caption.id))
        kept.captions[path] += [Cap(path, t, a, b) for t, a, b in rows]


def _hold_thumbs(conn, store_dir: Path, kept: Kept) -> Path:
    """Write each kept clip's thumbnail into the held folder (named by its old clip id), so that the wipe keeps
    it. A video missing any thumbnail is not kept: decoding it makes them."""
    from .schema import has_thumbnails
    from .store import clip_jpeg

    held = store_dir / HELD_THUMBS
    shutil.rmtree(held, ignore_errors=True)  # left by a rebuild that was stopped
    held.mkdir()
    in_database = has_thumbnails(conn)
    for content, video in list(kept.videos.items()):
        jpegs = [clip_jpeg(conn, store_dir, cid, in_database) for _, _, cid in video.clips]
        if not video.clips or any(j is None for j in jpegs):
            del kept.videos[content]
            continue
        clips = []
        for (start, end, cid), jpeg in zip(video.clips, jpegs):
            dst = held / f"{cid}.jpg"
            dst.write_bytes(jpeg)
            clips.append((start, end, dst))
        video.clips = clips
    return held


def kept_jobs(jobs: Iterable, kept: Kept) -> Iterator:
    """The planned jobs, with each decode job whose content was kept turned into a "kept" job that carries
    its features; a later path of the same content becomes an alias of it (jobs reach the writer in order,
    so the rebuilt video is there by then). The rest go as planned."""
    seen: set[str] = set()
    for job in jobs:
        video = kept.videos.get(job.state.hash) if job.kind == "decode" else None
        if video is not None and job.state.hash in seen and not job.captions:
            job.kind = "alias"
            yield job
            continue
        feats = kept.shelf.get(job.state.hash) if video is not None else None
        if feats is None:
            kept.decoded += job.kind == "decode"
            yield job
            continue
        job.kind, job.kept = "kept", (video, feats)
        seen.add(job.state.hash)
        kept.from_features += 1
        yield job


def rebuild(job, encoder, settings):
    """The job's video as an `Encoded`, made from its kept features and the old store's clip windows and
    thumbnails, as a fresh run would make it from the file; or an `Encoded` with the error."""
    try:
        return _rebuild(job, encoder, settings)
    except Exception as e:
        from .encode import Encoded

        return Encoded(job, error=f"rebuilding from kept features failed ({type(e).__name__}: {e})")


def _rebuild(job, encoder, settings):
    from trainer.media.types import VideoInfo

    from .encode import Encoded, clip_concepts, clip_look, describe_clips, embed_captions, embed_clips, look_width
    from .writer import ClipData

    video, feats = job.kept
    job.kept = None  # the features are not held past this video
    stacks = [np.asarray(feats.window(start, end), np.float32) for start, end, _ in video.clips]
    vectors = embed_clips(encoder, stacks, settings.batch_size)
    descriptions = describe_clips(encoder, stacks, settings)
    width = look_width(encoder) if settings.looks else 0
    clips = []
    for (start, end, thumb), f, vec, text in zip(video.clips, stacks, vectors, descriptions):
        tags, concepts, tag_text = clip_concepts(encoder, f, None, settings.top_tags, settings.concept_top)
        clips.append(ClipData(start, end, vec, tags, thumb.read_bytes(),
                              look=clip_look(f, width) if width else None, concepts=concepts, tag_text=tag_text,
                              description=text))
    info = VideoInfo(job.state.path, video.duration, video.fps, video.width, video.height, 0, video.codec, "kept")
    out = Encoded(job, info=info, clips=clips)
    embed_captions([out], encoder, settings)
    return out
