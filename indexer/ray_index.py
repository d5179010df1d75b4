"""Indexing on a Ray cluster: the same plan and the same one writer, with decoding and embedding on Ray Data.

Planned decode jobs are grouped into blocks of consecutive files (a few large files, or many small ones,
per block), so that Ray's fixed cost per task and per row is paid per block, not per file. A block goes
one of two ways (`decode=`):

    "actors" (the default without GPUs): blocks --map_batches--> actors that decode and embed (the
        in-process read and encode stages, indexer.pipeline.encode_stream, with the model loaded once per
        actor): one result row per video. Where the model runs on the CPUs, decoding in a separate task
        only moves frames between processes and leaves the actor's reserved CPUs idle while it waits.
    "tasks" (the default with GPUs): blocks --flat_map--> decode tasks (TaskPoolStrategy, CPU): one row per
        video chunk --map_batches--> model actors (ActorPoolStrategy, one GPU each): clip data for batches
        of chunks, so CPU nodes decode and the GPUs only embed.

Rows stream back to this process, where videos are gathered and handed to the StoreWriter; every model
call (frames, clips, descriptions, caption texts) is made in the actors, so this process needs no more of
a trained model than its directory's card (trainer.card). Planning (stat, hash, skip/touch/alias) and
writing stay here, through the same functions as the in-process pipeline, so
incremental runs, per-file failures and crash safety are the same. Errored blocks are dropped rather than
failing the run; a block that never came back whole (its worker died: a segfault, the OOM killer) is run
again file by file, so only the file that kills its worker is recorded as `failed`.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .encode import (EncodeSettings, Encoded, add_captions, embed_texts, encode_chunks_isolated, generated_captions,
                     given_captions)
from .pipeline import IndexReport, _WriteStage, encode_stream
from .plan import Job

LOST = "a Ray worker died while decoding or embedding this file"
MODES = ("auto", "actors", "tasks")
_POOLS: dict = {}  # per Ray worker process: one decoder pool per (workers, sampling, timeout, chunk), kept


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


def plan_blocks(jobs: list[Job], files: int = 16, size: int = 256 << 20) -> list[list[int]]:
    """Indexes of `jobs` in blocks of consecutive files: at most `files` files and, unless one file alone is
    larger, at most `size` bytes each."""
    if files < 1:
        raise ValueError(f"files per block must be >= 1, got {files}")
    blocks, held = [], 0
    for i, job in enumerate(jobs):
        n = int(job.state.size or 0)
        if not blocks or len(blocks[-1]) >= files or (held + n > size and blocks[-1]):
            blocks.append([])
            held = 0
        blocks[-1].append(i)
        held += n
    return blocks


def _pool_reader(workers: int, sampling, timeout: float, chunk_seconds: float) -> Callable:
    """This worker process's decoder (DecodePool: worker processes, fallbacks, per-chunk timeout)."""
    import functools

    from trainer.media import DecodePool

    key = (workers, sampling, timeout, chunk_seconds)
    if key not in _POOLS:
        pool = DecodePool(workers=workers, sampling=sampling, timeout=timeout)
        _POOLS[key] = functools.partial(pool.imap_chunks, chunk_seconds=chunk_seconds)
    return _POOLS[key]


def _actor_model(model_ref, expect_hash: str):
    """The model an actor embeds with: loaded from its directory (on this node's shared storage) or
    taken from the object store."""
    import ray

    model = ray.get(model_ref) if isinstance(model_ref, ray.ObjectRef) else model_ref
    if isinstance(model, (str, os.PathLike)):
        from trainer.api import load

        model = load(model)
        if expect_hash and model.identity.get("hash") != expect_hash:
            raise RuntimeError(f"{model.identity.get('path')}: this node's model differs from the store's")
    return model


# ---- actors that decode and embed ("actors") ----------------------------------------------------------

class BlockIndexer:
    """A Ray Data actor: loads the model once and runs the in-process decode and encode stages over each
    block of files it is given, yielding one row per finished video (its Encoded, pickled)."""

    def __init__(self, model_ref, settings: EncodeSettings, expect_hash: str, workers: int, timeout: float,
                 chunk_seconds: float, reader: Callable | None):
        # The decoder processes start first: they import their decoders while this one loads the model.
        self.reader = reader or _pool_reader(workers, settings.sampling, timeout, chunk_seconds)
        self.model, self.settings = _actor_model(model_ref, expect_hash), settings
        self.ready = time.time()  # wall clock: start-up (process, imports, model) is reported apart

    def __call__(self, batch: dict):
        for blob in batch["block"]:
            keyed = pickle.loads(blob)  # [(key, Job)]
            keys = {job.state.path: key for key, job in keyed}
            for e in encode_stream([job for _, job in keyed], self.reader, self.model, self.settings):
                yield {"key": [keys[e.job.state.path]], "result": [pickle.dumps(e, protocol=5)],
                       "ready": [self.ready]}


# ---- decode tasks, then model actors ("tasks") --------------------------------------------------------

def decode_rows(row: dict, settings: EncodeSettings, timeout: float, chunk_seconds: float,
                reader: Callable | None) -> list[dict]:
    """A block's rows: each file's VideoChunks, or its MediaError, pickled, with the file's key and path; the
    first row of a file also carries the file's own captions (`given_captions`: manifest, sidecar, streams)
    and their warnings, or why they could not be read."""
    from trainer.media.types import VideoChunk, whole_chunk

    read = reader or _pool_reader(1, settings.sampling, timeout, chunk_seconds)
    out = []
    for key, job in pickle.loads(row["block"]):
        items = []
        try:
            for _, item in read([job.state.path]):
                if hasattr(item, "frames") and not isinstance(item, VideoChunk):  # a whole DecodedVideo
                    item = whole_chunk(item, settings.sampling)
                items.append(item)
        except Exception as e:  # the reader itself failed: the file fails, the run goes on
            items.append(f"decoding failed ({type(e).__name__}: {e})")
        given = _given(job, settings)
        out += [{"key": key, "seq": i, "path": job.state.path, "item": pickle.dumps(it, protocol=5),
                 "given": pickle.dumps(given if i == 0 else [], protocol=5)} for i, it in enumerate(items)]
    return out


def _given(job: Job, settings: EncodeSettings):
    """(captions, warnings) of the file's own captions, or the reason (a str) they could not be read."""
    e = Encoded(job)
    try:
        return given_captions(e, settings), e.warnings
    except Exception as err:
        return f"encoding failed ({type(err).__name__}: {err})"


class ChunkEncoder:
    """A Ray Data actor: loads the model once, then embeds batches of chunks (frames -> clip data) and the
    captions that came with them or were generated for their clips."""

    def __init__(self, model_ref, settings: EncodeSettings, expect_hash: str):
        self.model, self.settings = _actor_model(model_ref, expect_hash), settings
        self.ready = time.time()

    def __call__(self, batch: dict) -> dict:
        items = [pickle.loads(b) for b in batch["item"]]
        chunks = [it for it in items if hasattr(it, "windows") and len(it.frames)]
        done = dict(zip(map(id, chunks), encode_chunks_isolated(chunks, self.model, self.settings)))
        rows = []
        for it, path, given in zip(items, batch["path"], batch["given"]):
            if not hasattr(it, "windows"):  # a MediaError or a reason: passed on
                rows.append(["error", getattr(it, "reason", str(it)), None, None])
            else:
                clips = done.get(id(it), [])
                rows.append(["chunk", clips, (it.last, it.info), _row_captions(pickle.loads(given), str(path), clips)])
        self._embed([r for r in rows if isinstance(r[3], tuple)])
        return {"key": batch["key"], "seq": batch["seq"], "ready": [self.ready] * len(rows),
                "result": [pickle.dumps(tuple(r), protocol=5) for r in rows]}

    def _embed(self, rows: list[list]) -> None:
        """Embed the captions of the rows (entry 3: (captions, None, warnings)) in shared calls or, if those
        fail, row by row: a row whose captions cannot be embedded gets the reason in their place."""
        try:
            vectors = iter(embed_texts(self.model, [c.text.strip() for r in rows for c, _ in r[3][0]],
                                       self.settings.batch_size))
        except Exception as err:
            if len(rows) == 1:
                rows[0][3] = f"encoding failed ({type(err).__name__}: {err})"
                return
            for row in rows:
                self._embed([row])
            return
        for row in rows:
            caps, _, warnings = row[3]
            row[3] = (caps, [next(vectors) for _ in caps], warnings)


def _row_captions(given, path: str, clips):
    """A chunk row's captions to embed, as (non-blank (Caption, source) pairs, None for their vectors,
    warnings): the file's own ones (on its first row) and the generated descriptions of the row's clips;
    or the reason (a str) why the video fails."""
    if isinstance(given, str):
        return given
    if isinstance(clips, str):  # the chunk could not be encoded: the video fails with that reason
        return clips
    caps, warnings = given if given else ([], [])
    caps = [(c, src) for c, src in caps + generated_captions(path, clips) if c.text.strip()]
    return caps, None, warnings


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
    # seq -> ("chunk", clips | reason, (last, info), (captions, vectors, warnings) | reason) | ("error", reason, ...)
    parts: dict = field(default_factory=dict)
    end: int | None = None  # seq of the last row, once it came

    def complete(self) -> bool:
        return self.end is not None and len(self.parts) == self.end + 1

    def encoded(self) -> Encoded:
        """The video's Encoded, its chunks and captions in order; an error anywhere fails it whole."""
        clips, info, captions, vectors, warnings = [], None, [], [], []
        for seq in range(self.end + 1):
            kind, payload, meta, texts = self.parts[seq]
            if kind == "error":
                return Encoded(self.job, error=payload)
            for failed in (payload, texts):
                if isinstance(failed, str):  # this chunk or its captions could not be encoded
                    return Encoded(self.job, error=failed, warnings=warnings)
            clips += payload
            info = meta[1] if meta[0] else info
            captions, vectors, warnings = captions + texts[0], vectors + texts[1], warnings + texts[2]
        if not clips:
            return Encoded(self.job, error="no frames could be decoded")
        e = Encoded(self.job, info=info, clips=clips, warnings=warnings)
        add_captions(e, captions, vectors)
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


@dataclass
class RayPlan:
    """How a run is laid out on the cluster (see the module docstring); `resolve` fills the defaults."""

    decode: str = "auto"  # "actors" | "tasks" | "auto": tasks when the cluster has GPUs, else actors
    workers: int = 2  # decoder processes per actor ("actors"), or decode tasks at once ("tasks")
    actors: int | None = None  # default: one per GPU, else as many as the CPUs hold at `workers` each
    block_files: int = 16
    block_bytes: int = 256 << 20
    chunks_per_batch: int = 4  # chunk rows per model call ("tasks")
    actor_cpus: int = 0  # CPUs a decoding actor reserves (set by `resolve`)

    def resolve(self, ray) -> RayPlan:
        if self.decode not in MODES:
            raise ValueError(f"decode must be one of {', '.join(MODES)}, got {self.decode!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        decode = self.decode if self.decode != "auto" else ("tasks" if gpus else "actors")
        # An actor reserves a CPU per decoder process, but never more than the largest node has: a
        # reservation no node can grant would leave the run waiting forever.
        node = max([n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [1])
        actor_cpus = max(1, min(self.workers, int(node)))
        if decode == "actors":
            actors = self.actors or (gpus or max(1, cpus // actor_cpus))
        else:
            actors = self.actors or (gpus or max(1, self.workers // 2))
        return dataclasses.replace(self, decode=decode, actors=actors, actor_cpus=actor_cpus)


def build_dataset(ray, decode: list[Job], blocks: list[list[int]], model, settings: EncodeSettings,
                  plan: RayPlan, *, timeout: float, chunk_seconds: float, reader: Callable | None):
    """The Ray Data pipeline over `blocks` of the decode jobs (not yet executed); `plan` is resolved."""
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    ctx = DataContext.get_current()
    ctx.max_errored_blocks = -1  # a file that kills its worker loses its own block, not the run
    gpus = 1 if int(ray.cluster_resources().get("GPU", 0)) else 0
    items = [{"block": pickle.dumps([(k, decode[k]) for k in block], protocol=5)} for block in blocks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # one block of files per Ray block
    args = (_model_ref(ray, model), settings, str((getattr(model, "identity", {}) or {}).get("hash", "")))
    # Ray 2.60 has no named parameter for retries: `max_retries` / `max_task_retries` still go through the
    # `**ray_remote_args` it calls deprecated (removal announced for 2.64), so that warning is silenced here.
    # A dead actor is restarted (Ray Data's default), but a batch that killed one is tried only once more.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        if plan.decode == "actors":
            # The actor's CPUs are its decoder processes; the encoder thread shares them, as in-process.
            return ds.map_batches(BlockIndexer, fn_constructor_args=(*args, plan.workers, timeout, chunk_seconds,
                                                                     reader),
                                  batch_size=1, batch_format="numpy", compute=ActorPoolStrategy(size=plan.actors),
                                  num_gpus=gpus, num_cpus=plan.actor_cpus, max_task_retries=1)
        ds = ds.flat_map(decode_rows, fn_args=(settings, timeout, chunk_seconds, reader),
                         compute=TaskPoolStrategy(size=plan.workers), num_cpus=1, max_retries=1)
        return ds.map_batches(ChunkEncoder, fn_constructor_args=args, batch_size=plan.chunks_per_batch,
                              batch_format="numpy", compute=ActorPoolStrategy(size=plan.actors),
                              num_gpus=gpus, num_cpus=0 if gpus else 1, max_task_retries=1)


def run_on_ray(jobs: Iterable[Job], model, writer, settings: EncodeSettings, *, address: str | None = "auto",
               plan: RayPlan | None = None, timeout: float = 120.0, chunk_seconds: float = 60.0,
               report: IndexReport | None = None, commit_every: int = 32, decode: Callable | None = None
               ) -> IndexReport:
    """Index planned `jobs` into `writer` with decoding and embedding on Ray; returns the report.

    `model` names what the actors embed with: a model directory's card (trainer.card.ModelCard) or a loaded
    model, whose directory each actor loads, or any other encoder object, shipped through the object store.
    `plan` lays the run out on the cluster (RayPlan). `decode` replaces the decoder as `reader` does for
    index_paths (it must pickle). The report's `ray_stats` holds what Ray Data reports per stage, after a
    line per pass with the seconds until the first actor was ready (its process started and the model
    loaded) and until the first result came back.
    """
    ray = connect(address)
    plan = (plan or RayPlan()).resolve(ray)
    report = report or IndexReport()
    write = _WriteStage(writer, report, None, commit_every, 5.0, settings.keep_features)
    started, wall = time.monotonic(), time.time()
    try:
        todo = _split(jobs, write)
        blocks = plan_blocks(todo, plan.block_files, plan.block_bytes)
        stats = []
        while blocks:  # a second pass, file by file, only for blocks whose worker died
            ds = build_dataset(ray, todo, blocks, model, settings, plan, timeout=timeout,
                               chunk_seconds=chunk_seconds, reader=decode)
            gather = _gather_videos if plan.decode == "actors" else _gather_chunks
            done = gather(ds, {k: todo[k] for block in blocks for k in block}, write)
            stats.append(f"decode={plan.decode}, {plan.actors} actor(s), {len(blocks)} block(s) of "
                         f"{len(todo)} file(s); first actor ready after {_since(done.ready, wall)}, first "
                         f"result back after {_since(done.first, wall)}\n{ds.stats()}")
            wall = time.time()
            retry = [k for block in blocks if len(block) > 1 for k in block if k in done.lost]
            for key in sorted(done.lost - set(retry)):
                write.handle(Encoded(todo[key], error=LOST))
            blocks = [[k] for k in retry]
        report.ray_stats = "\n\n".join(stats)
        write.commit()
    except BaseException:
        if not write.busy:
            write.commit()
        raise
    finally:
        report.seconds = time.monotonic() - started
    return report


def _since(t: float, start: float) -> str:
    return f"{t - start:.2f} s" if t else "n/a"


@dataclass
class _Pass:
    """What one pass over the blocks left: keys that never came back, and wall-clock times (time.time())
    of the first actor ready and the first result row back (0 when none came)."""

    lost: set
    ready: float = 0.0
    first: float = 0.0

    def saw(self, row) -> None:
        self.first = self.first or time.time()
        self.ready = min(float(row["ready"]), self.ready or float("inf"))


def _gather_videos(ds, todo: dict[int, Job], write: _WriteStage) -> _Pass:
    """Write each video row of an "actors" run as it comes (under this process's own Job, which holds the
    aliases); the pass's `lost` are the keys of `todo` that never came."""
    done = _Pass(set(todo))
    for row in ds.iter_rows():
        key = int(row["key"])
        if key not in done.lost:  # a retried batch's second copy of a finished file
            continue
        done.lost.discard(key)
        done.saw(row)
        write.handle(dataclasses.replace(pickle.loads(row["result"]), job=todo[key]))
    return done


def _gather_chunks(ds, todo: dict[int, Job], write: _WriteStage) -> _Pass:
    """Stream a "tasks" run's chunk rows into per-video parts and write each video as soon as all its parts
    came; the pass's `lost` are the keys of `todo` whose video never completed."""
    videos, done = {k: _Video(job) for k, job in todo.items()}, _Pass(set())
    for row in ds.iter_rows():
        key, seq = int(row["key"]), int(row["seq"])
        video = videos.get(key)
        if video is None:  # a retried task's second copy of a finished file
            continue
        done.saw(row)
        kind, payload, meta, texts = pickle.loads(row["result"])
        video.parts[seq] = (kind, payload, meta, texts)
        if kind == "error" or (meta and meta[0]):
            video.end = seq
        if video.complete():
            write.handle(videos.pop(key).encoded())
    done.lost = set(videos)
    return done
