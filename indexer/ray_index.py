"""Indexing on a Ray cluster: the same plan and the same one writer, with decoding and embedding on Ray Data.

    planned decode jobs --from_items--> decode tasks (TaskPoolStrategy, CPU): one row per video chunk
        --map_batches--> model actors (ActorPoolStrategy; the model loaded once per actor, one GPU each
        when the cluster has GPUs): clip vectors, tags and thumbnails for batches of chunks
        --iter_rows--> this process: chunks gathered per video, captions embedded, the StoreWriter

Planning (stat, hash, skip/touch/alias) and writing stay in the calling process, through the same
functions as the in-process pipeline, so incremental runs, per-file failures and crash safety are the
same. Each file is its own block and errored blocks are dropped rather than failing the run, so a file
whose decode task or actor dies (a segfault, the OOM killer) only loses its own rows: once the dataset is
exhausted, every file whose last chunk never came back is recorded as `failed`.
"""
from __future__ import annotations

import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .encode import EncodeSettings, Encoded, _embed_captions, encode_chunks_isolated
from .pipeline import IndexReport, _WriteStage
from .plan import Job

LOST = "a Ray worker died while decoding or embedding this file"
_POOLS: dict = {}  # per Ray worker process: one decoder pool per (sampling, timeout), kept between tasks


def connect(address: str | None = "auto"):
    """The `ray` module, connected: an already initialised session as it is; "auto" joins the running
    cluster or, with none, starts a local one; any other value is a cluster address."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray Data: pip install 'vidsearch[ray]'") from None
    if ray.is_initialized():
        return ray
    if address in (None, "", "auto"):
        try:
            ray.init(address="auto", log_to_driver=False)
        except ConnectionError:  # no cluster running: a local one on this machine
            ray.init(log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


# ---- decode tasks ------------------------------------------------------------------------------------

def _pool_reader(sampling, timeout: float, chunk_seconds: float) -> Callable:
    """The in-process decoder (DecodePool: worker processes, fallbacks, per-chunk timeout) of this worker."""
    import functools

    from trainer.media import DecodePool

    key = (sampling, timeout, chunk_seconds)
    if key not in _POOLS:
        pool = DecodePool(workers=1, sampling=sampling, timeout=timeout)
        _POOLS[key] = functools.partial(pool.imap_chunks, chunk_seconds=chunk_seconds)
    return _POOLS[key]


def decode_rows(row: dict, sampling, timeout: float, chunk_seconds: float, reader: Callable | None) -> list[dict]:
    """One file's rows: each of its VideoChunks, or its MediaError, pickled, with the file's key."""
    from trainer.media.types import VideoChunk, whole_chunk

    read = reader or _pool_reader(sampling, timeout, chunk_seconds)
    out = []
    try:
        for _, item in read([row["path"]]):
            if hasattr(item, "frames") and not isinstance(item, VideoChunk):  # a whole DecodedVideo
                item = whole_chunk(item, sampling)
            out.append(item)
    except Exception as e:  # the reader itself failed: the file fails, the run goes on
        out.append(f"decoding failed ({type(e).__name__}: {e})")
    return [{"key": row["key"], "seq": i, "item": pickle.dumps(it, protocol=5)} for i, it in enumerate(out)]


# ---- model actors ------------------------------------------------------------------------------------

class ChunkEncoder:
    """A Ray Data actor: loads the model once, then embeds batches of chunks (frames -> clip data)."""

    def __init__(self, model_ref, settings: EncodeSettings, expect_hash: str):
        import ray

        model = ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
        if isinstance(model, (str, os.PathLike)):
            from trainer.api import load

            model = load(model)
            if expect_hash and model.identity.get("hash") != expect_hash:
                raise RuntimeError(f"{model.identity.get('path')}: this node's model differs from the store's")
        self.model, self.settings = model, settings

    def __call__(self, batch: dict) -> dict:
        items = [pickle.loads(b) for b in batch["item"]]
        chunks = [it for it in items if hasattr(it, "windows") and len(it.frames)]
        done = dict(zip(map(id, chunks), encode_chunks_isolated(chunks, self.model, self.settings)))
        results = []
        for it in items:
            if not hasattr(it, "windows"):  # a MediaError or a reason: passed on
                results.append(("error", getattr(it, "reason", str(it)), None))
            else:
                results.append(("chunk", done.get(id(it), []), (it.last, it.info)))
        return {"key": batch["key"], "seq": batch["seq"],
                "result": [pickle.dumps(r, protocol=5) for r in results]}


def _model_ref(ray, model):
    """What the actors load: the model directory when it is one (each node reads it from shared storage,
    and puts it on its own GPU), else the model object itself, shipped once through the object store."""
    path = str(getattr(model, "identity", {}).get("path", ""))
    if path and Path(path).is_dir():
        return path
    return ray.put(model)


# ---- gathering in the driver -------------------------------------------------------------------------

@dataclass
class _Video:
    job: Job
    parts: dict = field(default_factory=dict)  # seq -> ("chunk", clips | reason, (last, info)) | ("error", ...)
    end: int | None = None  # seq of the last row, once it came

    def complete(self) -> bool:
        return self.end is not None and len(self.parts) == self.end + 1

    def encoded(self) -> Encoded:
        """The video's Encoded, its chunks in order; an error anywhere fails it whole."""
        clips, info = [], None
        for seq in range(self.end + 1):
            kind, payload, meta = self.parts[seq]
            if kind == "error":
                return Encoded(self.job, error=payload)
            if isinstance(payload, str):  # this chunk could not be encoded
                return Encoded(self.job, error=payload)
            clips += payload
            info = meta[1] if meta[0] else info
        if not clips:
            return Encoded(self.job, error="no frames could be decoded")
        return Encoded(self.job, info=info, clips=clips)


def _finish(video: _Video, model, settings: EncodeSettings) -> Encoded:
    e = video.encoded()
    if e.error is None:
        try:  # captions are short texts: embedded here, beside the writer
            _embed_captions([e], model, settings)
        except Exception as err:
            return Encoded(e.job, error=f"encoding failed ({type(err).__name__}: {err})", warnings=e.warnings)
    return e


def _split(jobs: Iterable[Job], write: _WriteStage) -> list[Job]:
    """Write the jobs that need no decoding at once; return the decode jobs, a second path of content
    already queued riding along with the first (as in the in-process pipeline)."""
    decode, by_hash = [], {}
    for job in jobs:
        if job.kind != "decode":
            write.handle(job)
            continue
        first = by_hash.get(job.state.hash) if job.state.hash else None
        if first is not None and not job.captions:
            first.aliases.append(job.state)
            continue
        decode.append(job)
        if job.state.hash:
            by_hash.setdefault(job.state.hash, job)
    return decode


def build_dataset(ray, decode: list[Job], model, settings: EncodeSettings, *, workers: int, actors: int | None,
                  timeout: float, chunk_seconds: float, reader: Callable | None, chunks_per_batch: int):
    """The Ray Data pipeline over the decode jobs (not yet executed)."""
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    ctx = DataContext.get_current()
    ctx.max_errored_blocks = -1  # a file that kills its worker loses its own block, not the run
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = actors or (gpus if gpus else max(1, workers // 2))
    items = [{"key": i, "path": job.state.path} for i, job in enumerate(decode)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one file per block
    identity = getattr(model, "identity", {}) or {}
    # Ray 2.60 has no named parameter for retries: `max_retries` / `max_task_retries` still go through the
    # `**ray_remote_args` it calls deprecated (removal announced for 2.64), so that warning is silenced here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.flat_map(decode_rows, fn_args=(settings.sampling, timeout, chunk_seconds, reader),
                         compute=TaskPoolStrategy(size=workers), num_cpus=1, max_retries=1)
        return ds.map_batches(ChunkEncoder, fn_constructor_args=(_model_ref(ray, model), settings,
                                                                 str(identity.get("hash", ""))),
                              batch_size=chunks_per_batch, batch_format="numpy",
                              compute=ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
                              num_cpus=0 if gpus else 1,
                              # A dead actor is restarted (Ray Data's default), but a batch that killed one
                              # is tried only once more (the default retries forever): then its files are lost.
                              max_task_retries=1)


def run_on_ray(jobs: Iterable[Job], model, writer, settings: EncodeSettings, *, address: str | None = "auto",
               workers: int = 2, actors: int | None = None, timeout: float = 120.0, chunk_seconds: float = 60.0,
               report: IndexReport | None = None, commit_every: int = 32, decode: Callable | None = None,
               chunks_per_batch: int = 4) -> IndexReport:
    """Index planned `jobs` into `writer` with decoding and embedding on Ray; returns the report.

    `workers` decode tasks run at once, beside `actors` model actors (default: one per GPU, else half
    the workers). `decode` replaces the decoder as `reader` does for index_paths (it must pickle).
    The report's `ray_stats` holds what Ray Data reports per stage.
    """
    ray = connect(address)
    report = report or IndexReport()
    write = _WriteStage(writer, report, None, commit_every, 5.0)
    started = time.monotonic()
    try:
        todo = _split(jobs, write)
        if todo:
            ds = build_dataset(ray, todo, model, settings, workers=workers, actors=actors, timeout=timeout,
                               chunk_seconds=chunk_seconds, reader=decode, chunks_per_batch=chunks_per_batch)
            _gather(ds, todo, model, settings, write)
            report.ray_stats = ds.stats()
        write.commit()
    except BaseException:
        if not write.busy:
            write.commit()
        raise
    finally:
        report.seconds = time.monotonic() - started
    return report


def _gather(ds, todo: list[Job], model, settings: EncodeSettings, write: _WriteStage) -> None:
    """Stream the actors' rows into per-video parts; write each video as soon as all its parts came, and
    record every video that never completed (its worker died) as failed."""
    videos = {i: _Video(job) for i, job in enumerate(todo)}
    for row in ds.iter_rows():
        key, seq = int(row["key"]), int(row["seq"])
        video = videos.get(key)
        if video is None:  # a retried task's second copy of a finished file
            continue
        kind, payload, meta = pickle.loads(row["result"])
        video.parts[seq] = (kind, payload, meta)
        if kind == "error" or (meta and meta[0]):
            video.end = seq
        if video.complete():
            write.handle(_finish(videos.pop(key), model, settings))
    for video in videos.values():
        write.handle(Encoded(video.job, error=LOST))
