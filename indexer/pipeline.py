"""The indexing loop: plan -> decode (reader) -> batched frame encoding and clip embedding (encoder) -> one writer.

Each stage runs in its own thread and hands off through bounded queues of video chunks (a minute or so of
sampled frames; the decoded ones bounded by the frames they hold), so at most a few chunks' frames are held
in memory however long the videos and however large the library; a long video's clips are still written to
the store in one transaction. The loop takes the reader, the encoder (the model) and the sink (the store
writer) as parameters: tests pass fakes, `index_paths` passes the real ones.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .encode import EncodeSettings, Encoded, VideoAssembler
from .plan import Job, content_hash, plan_jobs  # noqa: F401  (content_hash, plan_jobs: part of this module's API)
from .rebuild import rebuild
from .writer import FileState

EXIT_OK = 0
EXIT_ERROR = 1  # the run could not start or stopped (bad store, wrong model, interrupted)
EXIT_USAGE = 2  # bad command line
EXIT_FAILED = 3  # the run finished, every good file is indexed, and at least one file failed

_DONE = object()


@dataclass
class IndexReport:
    """What an index run did."""

    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unchanged since the last run
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, path of the same content)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    removed: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # directories that could not be walked
    warnings: list[tuple[str, str]] = field(default_factory=list)  # indexed, but e.g. without a bad sidecar
    clips: int = 0
    captions: int = 0
    video_seconds: float = 0.0
    seconds: float = 0.0
    model_added: dict | None = None  # a model given to a store without one: vectors written from kept features
    rebuilt: dict | None = None  # --reindex: videos rebuilt from kept features, videos decoded again
    ray_stats: str = ""  # what Ray Data reported per stage, when the run was on Ray

    @property
    def exit_code(self) -> int:
        """0 when every file was indexed (or was already), EXIT_FAILED (3) when any file failed."""
        return EXIT_FAILED if self.failed or self.notes else EXIT_OK

    def summary(self) -> str:
        """Human-readable summary: counts, then every failure with its reason."""
        rate = self.video_seconds / self.seconds if self.seconds > 0 else 0.0
        lines = [f"indexed {len(self.indexed)}, skipped {len(self.skipped)} unchanged, "
                 f"{len(self.duplicates)} duplicate content, failed {len(self.failed)}, removed {len(self.removed)}; "
                 f"{self.clips} clips, {self.captions} captions, {self.video_seconds:.1f} s of video in "
                 f"{self.seconds:.1f} s ({rate:.1f} video-s/s)"]
        if self.model_added:
            a = self.model_added
            lines.insert(0, f"model added: {a['clips']} clip and {a['captions']} caption vectors from the frame "
                            f"features kept for {a['videos_from_features']} videos; "
                            f"{a['videos_decoded_again']} videos without them decoded again")
        if self.rebuilt:
            b = self.rebuilt
            lines.insert(0, f"rebuilt: {b['videos_from_features']} videos from their kept frame features, "
                            f"{b['videos_decoded_again']} decoded again")
        lines += [f"  failed: {p}: {r}" for p, r in self.failed]
        lines += [f"  not walked: {p}: {r}" for p, r in self.notes]
        lines += [f"  warning: {p}: {r}" for p, r in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"indexed": self.indexed, "skipped": self.skipped, "duplicates": self.duplicates,
                "failed": self.failed, "removed": self.removed, "notes": self.notes, "warnings": self.warnings, "clips": self.clips,
                "captions": self.captions, "video_seconds": self.video_seconds, "seconds": self.seconds,
                "model_added": self.model_added, "rebuilt": self.rebuilt, "ray_stats": self.ray_stats,
                "exit_code": self.exit_code}



# ---- stages --------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


class _Flow:
    """Shared stop flag and first error of the stage threads."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.stop.set()

    def put(self, q: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue):
        while True:
            if self.errors:
                raise self.errors[0]
            if self.stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue


class _FrameQueue:
    """The reader -> encoder handoff, bounded by the frames it holds rather than by its items: short videos
    then queue by the dozen, so the encoder can fill its frame batches while it works on the last one, and a
    long video's chunks still wait once the bound is reached. An item is always let in when the queue is
    empty, however many frames it holds. `put` and `get` block like queue.Queue's (raising queue.Full and
    queue.Empty on timeout), so `_Flow` drives both kinds of queue."""

    def __init__(self, frames: int):
        self.limit, self.held = frames, 0
        self.items: collections.deque = collections.deque()
        self.cond = threading.Condition()

    def put(self, item, timeout: float | None = None) -> None:
        n = _frames_in(item)
        with self.cond:
            if not self.cond.wait_for(lambda: not self.items or self.held + n <= self.limit, timeout):
                raise queue.Full
            self.items.append(item)
            self.held += n
            self.cond.notify_all()

    def get(self, timeout: float | None = None):
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.items), timeout):
                raise queue.Empty
            return self._take()

    def get_nowait(self):
        with self.cond:
            if not self.items:
                raise queue.Empty
            return self._take()

    def empty(self) -> bool:
        with self.cond:
            return not self.items

    def _take(self):
        item = self.items.popleft()
        self.held -= _frames_in(item)
        self.cond.notify_all()
        return item


def _read_stage(jobs: Iterable[Job], reader: Callable, sampling, out: _FrameQueue, flow: _Flow) -> None:
    """Pass decode jobs through `reader` (paths in; out, in order, (path, VideoChunk) items ending with the
    last chunk or a MediaError, or one (path, DecodedVideo | MediaError) per path); other jobs go straight on.
    A second path with content already queued rides along with the first."""
    from trainer.media.types import VideoChunk, whole_chunk

    waiting: dict[str, Job] = {}
    by_hash: dict[str, Job] = {}

    def feed():
        for job in jobs:
            if flow.stop.is_set():
                return
            first = by_hash.get(job.state.hash) if job.kind == "decode" and job.state.hash else None
            if first is not None and not job.captions and first.state.path in waiting:
                first.aliases.append(job.state)
            elif job.kind == "decode" and job.state.path not in waiting:
                waiting[job.state.path] = job
                if job.state.hash:
                    by_hash.setdefault(job.state.hash, job)
                yield job.state.path
            else:
                flow.put(out, job)

    try:
        for path, result in reader(feed()):
            if hasattr(result, "frames") and not isinstance(result, VideoChunk):  # a whole DecodedVideo
                result = whole_chunk(result, sampling)
            final = not isinstance(result, VideoChunk) or result.last
            flow.put(out, (waiting.pop(path) if final else waiting[path], result))
            del result  # hold no frames while waiting for the next chunk
        flow.put(out, _DONE)
    except _Stop:
        pass
    except BaseException as e:  # the writer thread raises it
        flow.fail(e)


def _encode_stage(inq: _FrameQueue, out: queue.Queue, encoder, settings: EncodeSettings, flow: _Flow) -> None:
    """Group chunks (of one or several videos) into batches of about `batch_size` frames and embed them;
    a video is handed on whole once its last chunk is encoded. Keeps input order.

    Clip descriptions are gathered across videos (VideoAssembler's `gather`) while chunks keep coming, and
    made at once when the reader falls behind (nothing is queued) or the stream ends, so waiting for a fuller
    call never holds a video back while the encoder would otherwise idle."""
    assembler = VideoAssembler(encoder, settings, gather=True)
    try:
        done = False
        while not done:
            batch = [flow.get(inq)]
            frames = _frames_in(batch[-1])
            while frames < settings.batch_size and batch[-1] is not _DONE:
                try:
                    batch.append(inq.get_nowait())
                except queue.Empty:
                    break
                frames += _frames_in(batch[-1])
            done = batch[-1] is _DONE
            items = _encode_batch(batch, assembler)
            if not done and inq.empty():
                items += assembler.flush()
            for item in items:
                flow.put(out, item)
            del batch, items
    except _Stop:
        pass
    except BaseException as e:
        flow.fail(e)


def _frames_in(item) -> int:
    if isinstance(item, tuple) and hasattr(item[1], "frames"):
        return len(item[1].frames)
    return 0


def _encode_batch(batch: list, assembler: VideoAssembler) -> list:
    """Finished videos of `batch` (as Encoded), with everything else passed through in order. A job that
    needs no decoding may pass while a video is still being assembled, as it may overtake a decode job
    before it; such jobs never depend on a video of this run."""
    out, run = [], []
    for it in batch + [None]:
        if isinstance(it, tuple):
            run.append(it)
            continue
        out += assembler.encode(run) if run else []
        run = []
        if it is _DONE:  # the videos still waiting for their descriptions go first
            out += assembler.flush()
        if isinstance(it, Job) and it.kind == "kept":  # no frames: made from the store's kept features
            out.append(rebuild(it, assembler.encoder, assembler.settings))
        elif it is not None:
            out.append(it)
    return out


# ---- the writer ----------------------------------------------------------------------------------------

class _WriteStage:
    """Applies results to the sink in order, commits in batches, and keeps the report and the progress bar.
    With a `shelf` (indexer.features.FeatureShelf), each encoded video's frame features are written there
    first, by the process that writes the store: on Ray, the driver, not an actor on another machine."""

    def __init__(self, sink, report: IndexReport, bar, commit_every: int, commit_seconds: float, shelf=None):
        self.sink, self.report, self.bar, self.shelf = sink, report, bar, shelf
        self.commit_every, self.commit_seconds = commit_every, commit_seconds
        self.uncommitted = 0
        self.busy = False
        self.last_commit = time.monotonic()
        self.started = time.monotonic()

    def handle(self, item) -> None:
        self.busy = True  # an error now leaves this item half-written: the batch must be rolled back
        if isinstance(item, Encoded):
            self._encoded(item)
        else:
            self._job(item)
        self.busy = False
        if not (isinstance(item, Job) and item.kind == "skip"):  # a skip writes nothing
            self.uncommitted += 1
        if self.uncommitted and (self.uncommitted >= self.commit_every
                or time.monotonic() - self.last_commit >= self.commit_seconds):
            self.commit()
        self._progress()

    def commit(self) -> None:
        if self.shelf is not None:  # first: a crash between the two leaves features the store may drop
            self.shelf.commit()
        self.sink.commit()
        self.uncommitted = 0
        self.last_commit = time.monotonic()

    def _job(self, job: Job) -> None:
        r, st = self.report, job.state
        if job.kind == "skip":
            r.skipped.append(st.path)
        elif job.kind == "touch":
            self.sink.touch(st)
            r.skipped.append(st.path)
        elif job.kind == "fail":
            self.sink.add_failure(st, job.reason)
            r.failed.append((st.path, job.reason))
        elif job.kind == "alias":
            self._alias(st, self.sink.find_content(st.hash))
        else:
            raise ValueError(f"unknown job kind {job.kind!r} for {st.path}")

    def _alias(self, state: FileState, video_id: int | None, first: str | None = None) -> None:
        if video_id is not None and self.sink.video_of(state.path) == video_id:
            self.sink.touch(state)  # same path, same content: only captions were new
            self.report.indexed.append(state.path)
            return
        if video_id is None:  # the indexed copy went away during this run
            reason = "its content was indexed under another path that changed during this run; index it again"
            self.sink.add_failure(state, reason)
            self.report.failed.append((state.path, reason))
            return
        self.sink.add_alias(state, video_id)
        self.report.duplicates.append((state.path, first or self.sink.video_path(video_id)))

    def _encoded(self, e: Encoded) -> None:
        st = e.job.state
        self.report.warnings += [(st.path, w) for w in e.warnings]
        if e.error is not None:
            self.sink.add_failure(st, e.error)
            self.report.failed.append((st.path, e.error))
            for a in e.job.aliases:
                reason = f"same content as {st.path}, which failed: {e.error}"
                self.sink.add_failure(a, reason)
                self.report.failed.append((a.path, reason))
            return
        if self.shelf is not None:
            self.shelf.keep(st.hash, e.clips, e.info.duration)
        existing = self.sink.find_content(st.hash)
        if existing is not None:
            self.sink.add_captions(existing, e.captions)
            self._alias(st, existing)
            vid = existing
        else:
            vid = self.sink.add_video(st, e.info, e.clips, e.captions)
            self.report.indexed.append(st.path)
            self.report.clips += len(e.clips)
            self.report.captions += len(e.captions)
            self.report.video_seconds += float(e.info.duration or 0.0)
        for a in e.job.aliases:
            self._alias(a, vid, st.path)

    def _progress(self) -> None:
        if self.bar is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.bar.update(1)
        self.bar.set_postfix(clips=self.report.clips, failed=len(self.report.failed),
                             video_s_per_s=f"{self.report.video_seconds / elapsed:.1f}", refresh=False)


def encode_stream(jobs: Iterable[Job], reader: Callable, encoder, settings: EncodeSettings, *,
                  queue_size: int = 4) -> Iterator[Job | Encoded]:
    """Jobs through reader -> encoder, each in its own thread: yields, in order, each decoded video's Encoded
    and each job that needs no decoding. An error in a stage is raised here; closing the generator stops
    the threads. Decoded chunks wait for the encoder up to `queue_size` frame batches' worth of frames;
    encoded videos wait for the caller up to `queue_size` items."""
    flow = _Flow()
    decoded_q = _FrameQueue(queue_size * settings.batch_size)
    encoded_q: queue.Queue = queue.Queue(maxsize=queue_size)
    threads = [threading.Thread(target=_read_stage, args=(jobs, reader, settings.sampling, decoded_q, flow),
                                daemon=True, name="vidsearch-read"),
               threading.Thread(target=_encode_stage, args=(decoded_q, encoded_q, encoder, settings, flow),
                                daemon=True, name="vidsearch-encode")]
    for t in threads:
        t.start()
    try:
        while (item := flow.get(encoded_q)) is not _DONE:
            yield item
    finally:
        flow.stop.set()
        for t in threads:
            t.join(timeout=10)


def run_pipeline(jobs: Iterable[Job], reader: Callable, encoder, sink, settings: EncodeSettings, *,
                 report: IndexReport | None = None, total: int | None = None, progress: bool = False,
                 commit_every: int = 32, commit_seconds: float = 5.0, queue_size: int = 4) -> IndexReport:
    """Run jobs through reader -> encoder -> sink; returns the report. The sink's transaction is committed
    every `commit_every` files or `commit_seconds`, and at the end. An error in any stage (or Ctrl-C) stops
    the run and is raised here; files finished before it are committed first unless the error struck while
    one was being written, in which case the caller must roll the open batch back."""
    from tqdm import tqdm

    report = report or IndexReport()
    bar = tqdm(total=total, unit="video", disable=not progress, dynamic_ncols=True) if progress else None
    writer = _WriteStage(sink, report, bar, commit_every, commit_seconds, settings.keep_features)
    started = time.monotonic()
    stream = encode_stream(jobs, reader, encoder, settings, queue_size=queue_size)
    try:
        for item in stream:
            writer.handle(item)
        writer.commit()
    except BaseException:
        if not writer.busy:  # stopped between files (Ctrl-C while encoding): keep the finished ones
            writer.commit()
        raise
    finally:
        stream.close()
        if bar is not None:
            bar.close()
        report.seconds = time.monotonic() - started
    return report
