"""Front-door functions of the indexer: index paths into a store, remove paths, prune vanished files."""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from trainer.card import ModelCard

from .config import CONFIG_FILE, FORMAT_VERSION, StoreConfig, StoreError
from .discover import discover
from .encode import classifier, look_width
from .offline import DEFAULT_TEXT_ENCODER, OfflineEncoders, store_encoders
from .pipeline import EncodeSettings, IndexReport, plan_jobs, run_pipeline
from .rebuild import gather, kept_jobs
from .writer import StoreWriter


def _load_model(model, store_dir: Path, reindex: bool, card: bool = False):
    """The encoder: the model as given or loaded from a directory; for no model, the one the store records,
    else (a new store, or one indexed without a model) the offline encoders. `card`: of a model directory,
    only what it declares (trainer.card), for a run whose workers load the weights themselves."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    if model is None:
        if reindex or not (store_dir / CONFIG_FILE).is_file():
            return OfflineEncoders()
        config = StoreConfig.load(store_dir)
        if not config.model_path:
            return store_encoders(config)
        model = config.model_path
    if card:
        from trainer.card import read_card

        return read_card(model)
    from trainer.api import load

    return load(model)


def _encoder_fields(model) -> dict:
    """What a new store records of the encoders behind its concepts and look-alike vectors."""
    if isinstance(model, ModelCard):  # not loaded: what its directory declares
        frames = model.frame_encoder
        return {"frame_encoder": frames.spec, "text_encoder": DEFAULT_TEXT_ENCODER, "look_dim": frames.channels,
                "concept_classes": frames.classes}
    head = classifier(model)
    frames = getattr(model, "frame_encoder", None)
    return {"frame_encoder": str(getattr(frames, "spec", "") or getattr(model, "frame_spec", "")),
            "text_encoder": str(getattr(model, "text_spec", DEFAULT_TEXT_ENCODER)),
            "look_dim": look_width(model), "concept_classes": len(head.label_names) if head is not None else 0}


def store_config(model, store_dir: Path, reindex: bool = False, **overrides) -> StoreConfig:
    """The StoreConfig for indexing with `model`: the store's own settings if it exists, else the model's
    sampling and encoders; `overrides` (fps, clip_seconds, stride_seconds, index_type, ...) that are not
    None win."""
    if (store_dir / CONFIG_FILE).is_file() and not reindex:
        base = StoreConfig.load(store_dir)
    else:
        base = StoreConfig(**{f: getattr(model.sampling, f) for f in
                              ("fps", "size", "square", "clip_seconds", "stride_seconds")}, **_encoder_fields(model))
    identity = dict(getattr(model, "identity", {}) or {})
    changes = {"model_path": str(identity.get("path", "")), "model_hash": str(identity.get("hash", "")),
               "model_name": str(identity.get("name", "")), "dim": int(model.dim), "format_version": FORMAT_VERSION}
    changes.update({k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(base, **changes)


def index_paths(paths: Iterable[str | os.PathLike], store_dir: str | os.PathLike, model=None, *,
                workers: int = 2, batch_size: int = 64, index_type: str | None = None, fps: float | None = None,
                clip_seconds: float | None = None, stride_seconds: float | None = None, reindex: bool = False,
                prune: bool = False, timeout: float = 120.0, progress: bool = False,
                reader: Callable | None = None, commit_every: int = 32, chunk_seconds: float = 60.0,
                keep_features: bool = True, describe: bool = True, fast: bool = False, db: str | None = None,
                ray: str | None = None, ray_decode: str = "auto") -> IndexReport:
    """Index video files, directories and .jsonl manifests into the store at `store_dir`.

    `model` is a loaded model (trainer.load), a model directory, or None for the model the store records;
    a new store indexed without one uses the offline encoders (see indexer.offline) and has no dense vectors.
    A new store takes the model's sampling unless `fps`/`clip_seconds`/`stride_seconds` say otherwise; an
    existing one must match them (or pass `reindex=True` to rebuild it: from `paths`, or with none from the
    videos it holds, each rebuilt from its kept frame features when they fit, see indexer.rebuild; the
    report's `rebuilt` counts those and the videos decoded again). Videos are decoded in segments of
    about `chunk_seconds`, so memory stays flat on long videos; `timeout` is the time allowed for one segment.
    `reader` replaces the decoder pool: a callable from an iterable of paths to, in order, (path, VideoChunk)
    items ending with the last chunk or a MediaError, or one (path, DecodedVideo | MediaError) per path.
    `keep_features` keeps each video's frame features in the store (indexer.features), for training on the
    store and for adding a model to it without decoding again.
    `describe`: give each clip a generated description (a caption with source "generated") when the model
    has a caption decoder.
    `fast` samples one frame per clip window (fps = 1 / clip length, a quarter of the frames at the default
    4 s clips and 1 fps): the frame encoder, most of the indexing time, does a quarter of the work, and clips
    keep their appearance but lose the frame-to-frame motion the model reads (see BENCHMARKS.md for the cost).
    Its frames are keyframes, decoded alone, in files where every clip window holds one (the first in each
    window); a file with sparser keyframes is decoded in full.
    `db` puts a new store's rows on PostgreSQL (a postgresql+psycopg URL; None reads VIDSEARCH_DB, "" is
    SQLite); an existing store keeps the database it records. `ray` ("auto" or a cluster address) decodes
    and embeds on a Ray cluster (indexer.ray_index) instead of in this process; planning and writing stay here.
    `ray_decode` says where a Ray run decodes: "actors" (beside the model), "tasks" (CPU tasks feeding model
    actors) or "auto" (tasks when the cluster has GPUs).
    Returns the IndexReport; its `exit_code` is 0 when every file was indexed, 3 when some failed.
    """
    store_dir = Path(store_dir)
    if fast and fps is not None:
        raise ValueError("fast and fps exclude each other: fast samples one frame per clip window")
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")
    model = _load_model(model, store_dir, reindex, card=ray is not None)
    added = _add_model(store_dir, model, reindex, batch_size)
    config = store_config(model, store_dir, reindex, index_type=index_type, fps=fps, clip_seconds=clip_seconds,
                          stride_seconds=stride_seconds)
    if fast:
        config = dataclasses.replace(config, fps=1.0 / float(config.clip_seconds))
    found, kept = _discover(paths, store_dir, model, config, reindex, ray)
    try:
        writer = StoreWriter.create_or_open(store_dir, config, reindex=reindex, db=db)
    except BaseException:
        if kept is not None:
            kept.release()
        raise
    report = IndexReport(notes=list(found.notes), model_added=added)
    if kept is not None and kept.why is not None:
        report.warnings.append((str(store_dir), f"kept frame features not reused: {kept.why}"))
    pool = shelf = None
    try:
        if prune:
            report.removed += writer.prune()
            _drop_features(store_dir, writer, report.removed)
        jobs = plan_jobs(found.files, writer, found.problems, writer.pending_paths())
        if kept is not None:
            jobs = kept_jobs(jobs, kept)
        shelf = _feature_shelf(store_dir, model, writer.config) if keep_features else None
        settings = EncodeSettings(writer.config.sampling(), batch_size=batch_size,
                                  thumb_size=writer.config.thumb_size, concept_top=writer.config.concept_top,
                                  looks=writer.config.look_dim > 0, keep_features=shelf, describe=describe)
        if ray is not None:
            from .ray_index import RayPlan, run_on_ray

            run_on_ray(jobs, model, writer, settings, address=ray, plan=RayPlan(ray_decode, workers),
                       timeout=timeout, chunk_seconds=chunk_seconds, report=report, commit_every=commit_every,
                       decode=reader)
        else:
            if reader is None:
                from trainer.media import DecodePool

                pool = DecodePool(workers=workers, sampling=writer.config.sampling(), timeout=timeout,
                                  keyframes=fast)
                reader = functools.partial(pool.imap_chunks, chunk_seconds=chunk_seconds)
            run_pipeline(jobs, reader, model, writer, settings, report=report, progress=progress,
                         total=len(found.files) + len(found.problems), commit_every=commit_every)
    except BaseException:
        if shelf is not None:  # the features of the batch the store rolls back go too
            shelf.close(commit=False)
        _close_after_error(writer)
        raise
    finally:
        if shelf is not None:
            shelf.close()
        if pool is not None:
            pool.close()
        if kept is not None:
            kept.release()
            report.rebuilt = kept.summary()
    writer.close()
    return report


def _discover(paths, store_dir: Path, model, config: StoreConfig, reindex: bool, ray):
    """(what to index, what a reindex can rebuild from the old store or None). A reindex given no paths
    rebuilds the store from the videos it holds; the manifest captions the old store held for a path go on
    into the rebuilt one, unless a manifest given to this run captions that path itself."""
    kept = gather(store_dir, model, config, decode_all=ray is not None) if reindex else None
    paths = list(paths)
    if kept is not None and not paths:
        paths = list(kept.captions)
    found = discover(paths)
    for f in found.files if kept is not None else []:
        if not f.captions:
            f.captions = list(kept.captions.get(f.path, []))
    return found, kept


def _add_model(store_dir: Path, model, reindex: bool, batch_size: int) -> dict | None:
    """A trained model given for a store indexed without one: its vectors go in first, from the kept frame
    features (indexer.attach); videos without them are then embedded by the index run, as pending ones."""
    from .attach import add_model, needs_model

    if not needs_model(store_dir, model, reindex):
        return None
    if isinstance(model, ModelCard):  # the vectors are embedded here, from the kept features
        from trainer.api import load

        model = load(model.identity["path"])
    done = add_model(store_dir, model, store_config(model, store_dir), batch_size=batch_size)
    return {"clips": done.clips, "captions": done.captions, "videos_from_features": done.from_features,
            "videos_decoded_again": len(done.redecode)}


def _feature_shelf(store_dir: Path, model, config: StoreConfig):
    """Where this run keeps frame features: None when the model names no frame encoder to key them by."""
    from .features import FeatureShelf, encoder_spec

    spec = encoder_spec(model)
    return FeatureShelf(store_dir, spec, config.sampling()) if spec else None


def _close_after_error(writer: StoreWriter) -> None:
    """After an error (Ctrl-C, a stage failure): drop the unfinished batch, keep and save what was committed."""
    try:
        writer.rollback()
        writer.close()
    except Exception:
        writer.abort()


def remove_paths(paths: Iterable[str | os.PathLike], store_dir: str | os.PathLike) -> list[str]:
    """Remove videos by path (a directory removes everything under it); returns the paths removed."""
    writer = StoreWriter.open(store_dir)
    try:
        removed = writer.remove(paths)
        _drop_features(store_dir, writer, removed)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return removed


def prune_store(store_dir: str | os.PathLike) -> list[str]:
    """Remove every recorded path whose file is gone; returns those paths."""
    writer = StoreWriter.open(store_dir)
    try:
        removed = writer.prune()
        _drop_features(store_dir, writer, removed)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return removed


def _drop_features(store_dir, writer: StoreWriter, removed: list[str]) -> None:
    """Kept frame features of content that went with the removed paths go too."""
    from .features import drop_unused

    if removed:
        drop_unused(store_dir, writer)
