"""Adding a trained model to a store indexed without one: the model's clip vectors are computed from the frame
features the index run kept (indexer.features) and its caption vectors from the stored caption text, so no
video is decoded again. A video without kept features that fit is left without vectors; the store marks it
pending and the same index run embeds it from its file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from .config import StoreConfig, StoreError
from .features import FeatureShelf, encoder_spec
from .schema import INDEXED, Caption, Clip, Video
from .writer import StoreWriter

# What must agree for kept features to be what the model would have computed, and clips what it expects.
SAMPLING_FIELDS = ("fps", "size", "square", "clip_seconds")


@dataclass
class Attached:
    """What adding a model did: vectors written, and the videos left for decoding (no kept features)."""

    clips: int = 0
    captions: int = 0
    from_features: int = 0  # videos whose clip vectors came from kept features
    redecode: list[str] = field(default_factory=list)


def needs_model(store_dir: Path, model, reindex: bool) -> bool:
    """True when `model` is a trained model and the existing store at `store_dir` has none yet."""
    from .config import CONFIG_FILE

    if reindex or not (Path(store_dir) / CONFIG_FILE).is_file() or not getattr(model, "dim", 0):
        return False
    return not StoreConfig.load(store_dir).has_model


def check_fit(config: StoreConfig, model) -> None:
    """StoreError naming what differs when the model does not sample frames and clips as the store did."""
    diffs = [f"{k}: store {getattr(config, k)!r}, model {getattr(model.sampling, k)!r}"
             for k in SAMPLING_FIELDS if getattr(config, k) != getattr(model.sampling, k)]
    spec = encoder_spec(model)
    if config.frame_encoder and spec != config.frame_encoder:
        diffs.append(f"frame encoder: store {config.frame_encoder!r}, model {spec!r}")
    if diffs:
        raise StoreError(f"the model does not fit the store's frames ({'; '.join(diffs)}); index into a new "
                         "--store, or rebuild this one with --reindex")


def _clip_vectors(writer: StoreWriter, model, shelf: FeatureShelf, batch: int, out: Attached) -> list:
    """(clip id, vector) for the clips of every indexed video with kept features; the others are noted."""
    with writer.Session() as s:
        videos = s.execute(select(Video.id, Video.path, Video.hash).where(Video.status == INDEXED)
                           .order_by(Video.id)).all()
    pairs = []
    for vid, path, content in videos:
        with writer.Session() as s:
            clips = s.execute(select(Clip.id, Clip.start, Clip.end).where(Clip.video_id == vid)
                              .order_by(Clip.start)).all()
        kept = shelf.get(content) if content else None
        if kept is None:
            out.redecode.append(path)
            continue
        stacks = [np.asarray(kept.window(start, end), np.float32) for _, start, end in clips]
        for i in range(0, len(stacks), batch):
            vectors = model.embed_clips(stacks[i:i + batch], features=True)
            pairs += [(cid, v) for (cid, _, _), v in zip(clips[i:i + batch], vectors)]
        out.from_features += 1
    return pairs


def _caption_vectors(writer: StoreWriter, model, batch: int) -> list:
    """(caption id, vector) of every stored caption, embedded as written (as the index run embeds them)."""
    with writer.Session() as s:
        rows = s.execute(select(Caption.id, Caption.text).order_by(Caption.id)).all()
    pairs = []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        vectors = model.embed_text([t for _, t in part])
        pairs += [(cid, v) for (cid, _), v in zip(part, vectors)]
    return pairs


def add_model(store_dir, model, config: StoreConfig, batch_size: int = 64) -> Attached:
    """Give the model-less store at `store_dir` the vectors of `model` (loaded); `config` is the store's
    config naming the model. Raises StoreError when the model does not fit the store's sampling."""
    out = Attached()
    writer = StoreWriter.open(store_dir)
    try:
        check_fit(writer.config, model)
        shelf = FeatureShelf(store_dir, encoder_spec(model) or writer.config.frame_encoder, writer.config.sampling())
        clips = _clip_vectors(writer, model, shelf, batch_size, out)
        captions = _caption_vectors(writer, model, batch_size)
        writer.add_model_vectors(dataclasses.replace(writer.config, **{k: getattr(config, k) for k in (
            "model_path", "model_hash", "model_name", "dim", "format_version")}), clips, captions)
        out.clips, out.captions = len(clips), len(captions)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return out
