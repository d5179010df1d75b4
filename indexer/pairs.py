"""What a store already says about its videos, as training data: each caption or subtitle aligned to the clips it
overlaps, with the frame features the index run kept (indexer.features), handed to the trainer as plain arrays.

A timed caption belongs to every clip it overlaps; the captions of one clip are joined, in time order, into
that clip's text, so each clip is one clip-text pair and a batch never holds the same clip twice as its own
negative. An untimed caption (a manifest line or a .txt sidecar without times) describes the whole video and
is paired with the whole video's frames, as a manifest caption is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from .config import StoreError
from .features import FeatureShelf
from .schema import INDEXED, Caption, Clip, Video
from .store import Store


@dataclass
class TrainingPairs:
    """Clip-text pairs of a store: texts[i] describes the frames feats[i] ((T, F) float32)."""

    texts: list[str] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)
    keys: list[tuple[str, str, float | None, float | None]] = field(default_factory=list)  # (path, text, start, end)
    videos: int = 0  # videos that gave at least one pair
    captioned: int = 0  # indexed videos with any caption
    decoded: list[str] = field(default_factory=list)  # videos without kept features, decoded for this run
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (file, why its captions were skipped)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Video:
    path: str
    hash: str
    clips: list[tuple[float, float]]
    captions: list[tuple[float | None, float | None, str, str]]  # (start, end, text, source)


def _videos(store: Store) -> list[_Video]:
    """Every indexed video with its clips and captions, read in one snapshot."""
    with store.Session() as s:
        videos = {v.id: _Video(v.path, v.hash, [], []) for v in s.scalars(
            select(Video).where(Video.status == INDEXED).order_by(Video.id))}
        for vid, start, end in s.execute(select(Clip.video_id, Clip.start, Clip.end).order_by(Clip.video_id, Clip.start)):
            if vid in videos:
                videos[vid].clips.append((float(start), float(end)))
        for vid, start, end, text, source in s.execute(
                select(Caption.video_id, Caption.start, Caption.end, Caption.text, Caption.source)
                .order_by(Caption.video_id, Caption.start, Caption.id)):
            if vid in videos:
                videos[vid].captions.append((start, end, text, source))
    return list(videos.values())


def _sidecar_problem(path: str) -> tuple[str, str] | None:
    """(sidecar file, reason) when the video's subtitle file beside it cannot be read now."""
    from trainer.captions import SIDECAR_EXTENSIONS, CaptionError, read_sidecar

    if not any(Path(path).with_suffix(ext).is_file() for ext in SIDECAR_EXTENSIONS):
        return None
    try:
        read_sidecar(path)
    except CaptionError as e:
        return e.path, e.reason if e.line is None else f"line {e.line}: {e.reason}"
    return None


def _clip_texts(video: _Video) -> tuple[dict[int, list[str]], list[str]]:
    """Timed captions per clip index (each caption in every clip it overlaps), and the untimed captions."""
    per_clip: dict[int, list[str]] = {}
    whole = []
    for start, end, text, _ in video.captions:
        if start is None or end is None:
            whole.append(text)
            continue
        hit = [i for i, (cs, ce) in enumerate(video.clips) if min(end, ce) > max(start, cs)]
        if not hit and video.clips and start == end:  # an instant cue: the clip it falls in
            hit = [i for i, (cs, ce) in enumerate(video.clips) if cs <= start < ce][:1]
        for i in hit:
            if text not in per_clip.setdefault(i, []):
                per_clip[i].append(text)
    return per_clip, whole


def store_pairs(store_dir, frame_encoder: str, sampling, decode: Callable[[list[str]], dict] | None = None,
                skip: set[tuple[str, str, float | None, float | None]] = frozenset()) -> TrainingPairs:
    """Clip-text pairs from the captions and subtitles of the store at `store_dir`.

    Frame features come from what the index run kept for `frame_encoder` at `sampling` (fps, size, square);
    videos without them are handed to `decode` (paths -> {path: trainer.features.VideoFeatures}) or left out.
    A video whose sidecar file cannot be read now loses its sidecar captions, with a warning naming the file.
    Captions whose (path, text, start, end) is in `skip` (already given by a manifest) are left out.
    """
    store_dir = Path(store_dir)
    with Store(store_dir) as store:
        videos = _videos(store)
    shelf = FeatureShelf(store_dir, frame_encoder, sampling)
    out = TrainingPairs()
    todo = []
    for video in videos:
        problem = _sidecar_problem(video.path)
        if problem is not None:
            out.warnings.append(problem)
            video.captions = [c for c in video.captions if c[3] != "sidecar"]
        video.captions = [c for c in video.captions if (video.path, c[2], c[0], c[1]) not in skip]
        if video.captions:
            out.captioned += 1
            todo.append(video)
    feats = {v.hash: shelf.get(v.hash) for v in todo}
    missing = [v.path for v in todo if feats[v.hash] is None]
    if missing and decode is not None:
        decoded = decode(missing)
        out.decoded = [p for p in missing if p in decoded]
        feats.update({v.hash: decoded[v.path] for v in todo if v.path in decoded and feats[v.hash] is None})
    for video in todo:
        if feats.get(video.hash) is not None:
            _add_video(out, video, feats[video.hash])
    return out


def _add_video(out: TrainingPairs, video: _Video, features) -> None:
    per_clip, whole = _clip_texts(video)
    before = len(out)
    for i in sorted(per_clip):
        start, end = video.clips[i]
        out.texts.append(" ".join(per_clip[i]))
        out.feats.append(np.asarray(features.window(start, end), np.float32))
        out.keys.append((video.path, out.texts[-1], start, end))
    for text in whole:
        out.texts.append(text)
        out.feats.append(np.asarray(features.window(None, None), np.float32))
        out.keys.append((video.path, text, None, None))
    out.videos += len(out) > before


def check_store(store_dir) -> Path:
    """The store directory, or StoreError naming it when there is no store there."""
    from .config import DB_FILE

    path = Path(store_dir)
    if not (path / DB_FILE).is_file():
        raise StoreError(f"{path}: no store here (missing {DB_FILE}); create one with `vidsearch index`")
    return path
