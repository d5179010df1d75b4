"""Worker processes that probe and decode videos (whole, or streamed in chunks) under a timeout, isolating
decoder crashes and hangs."""
from __future__ import annotations

import functools
import inspect
import itertools
import json
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .backends import check_file, decode_chunks_file, decode_file, decode_window_file, probe_file
from .types import DecodedVideo, MediaError, SamplingConfig, VideoChunk, VideoInfo

# A worker's first message, once its decoders are imported. A task's deadline runs from then: a worker started to
# replace a crashed or hung one can take seconds to import them on a busy machine, and that is not the file's time.
READY = ("ready", None)
STARTUP_SECONDS = 60.0  # how long a new worker may take to get ready, on top of its first task's timeout
# Runs in the worker: take the parent's import path, then serve jobs on the inherited socket.
_BOOTSTRAP = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
              "from trainer.media.workers import _worker_main; _worker_main(int(sys.argv[2]))")
# A worker does no linear algebra; at import, OpenBLAS would start (and spin up) a thread per core all the same,
# about 0.1 s of CPU per worker taken from the encoder that the workers feed.
_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _worker_main(fd: int) -> None:
    """Entry point of a worker process: preload PyAV, say so, then serve jobs until told to stop."""
    # PyAV is imported before the first job, so that job's deadline is spent decoding. decord (0.1 s of CPU to
    # import) waits until a caller asks for it.
    import av  # noqa: F401

    conn = multiprocessing.connection.Connection(fd)
    conn.send(READY)
    _serve(conn)
    # Nothing is left to release: skipping the interpreter's teardown of numpy and av (tens of
    # milliseconds) lets the caller's close return sooner.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(conn) -> None:
    """Worker loop: receive (func, args), reply ("ok", value) or ("error", reason); stop on None or EOF.

    A func that returns a generator streams: each item goes as ("part", item), after which the worker waits
    for the caller to ask for the next one (True) or to stop (None); ("end", None) closes the stream.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; it kills us on close
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # the message arrived whole but names a function this process cannot import
            conn.send(("error", f"cannot load the decoding job ({type(e).__name__}: {e})"))
            continue
        if job is None:
            return
        func, args = job
        try:
            _run_job(conn, func, args)
        except _Gone:  # the caller went away mid-stream
            return


class _Gone(Exception):
    """The caller's end of the socket closed."""


def _talk(op, *args):
    try:
        return op(*args)
    except (EOFError, OSError):
        raise _Gone from None


def _run_job(conn, func, args) -> None:
    try:
        value = func(*args)
        if inspect.isgenerator(value):
            for part in value:
                _talk(conn.send, ("part", part))
                del part  # the next one is decoded only once the caller has this one
                if not _talk(conn.recv):
                    value.close()
                    return
            value = None
            kind = "end"
        else:
            kind = "ok"
        reply = (kind, value)
    except _Gone:
        raise
    except MediaError as e:
        reply = ("error", e.reason)
    except Exception as e:  # any other decoder failure is still a per-file error, not a worker failure
        reply = ("error", f"{type(e).__name__}: {e}")
    _talk(conn.send, reply)


def _crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"decoder crashed ({signal.Signals(-exitcode).name})"
        except ValueError:
            pass
    return f"decoder process died (exit code {exitcode})"


@dataclass
class _Task:
    index: int
    path: str
    func: Callable
    args: tuple
    fallback: tuple | None  # args for one retry with PyAV if the decoder process crashes


class _Worker:
    """One decoder process and its socket; runs one task at a time.

    A fresh interpreter, not a fork of the caller (which may hold torch threads) and not multiprocessing's
    spawn (which re-imports the caller's main module): it imports only trainer.media and the decoders.
    """

    def __init__(self):
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, json.dumps(sys.path), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env={**os.environ, **_WORKER_ENV},
                stdout=2,  # anything a decoder prints must not mix with the caller's stdout (JSON lines)
            )
        self.conn = multiprocessing.connection.Connection(ours.detach())
        self.task: _Task | None = None
        self.deadline = 0.0
        self.timeout = 0.0
        self.ready = False  # its READY message has been read
        self.waiting = False  # a streaming task sent a part and waits to be asked for the next
        self.asked = False  # told to exit

    def submit(self, task: _Task, timeout: float) -> None:
        self.task, self.timeout, self.waiting = task, timeout, False
        self.deadline = time.monotonic() + timeout + (0.0 if self.ready else STARTUP_SECONDS)
        self.conn.send((task.func, task.args))

    def receive(self):
        """The next message from the worker, READY when it says it is ready (its task's deadline then runs from
        now). Raises EOFError or OSError if the process died."""
        message = self.conn.recv()
        if not self.ready and message == READY:
            self.ready = True
            self.deadline = time.monotonic() + self.timeout
            return READY
        return message

    def more(self, timeout: float) -> None:
        """Ask a waiting streaming task for its next part; the timeout runs again from now."""
        self.waiting, self.deadline = False, time.monotonic() + timeout
        try:
            self.conn.send(True)
        except OSError:
            pass  # it died: the next wait sees EOF and handles it as a crash

    def collect(self):
        """Reply of the finished task, None if the process died, or READY when that was the message (read
        after `conn` became ready)."""
        try:
            reply = self.receive()
        except (EOFError, OSError):
            return None
        if reply is not READY:
            self.task = None
        return reply

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.conn.close()

    def ask_to_stop(self) -> None:
        """Tell an idle worker to exit, once (a busy one is killed by `stop`)."""
        if self.task is None and not self.asked:
            self.asked = True
            try:
                self.conn.send(None)
            except OSError:
                pass

    def stop(self) -> None:
        """Ask an idle worker to exit and wait for it; kill it if it is busy or does not exit promptly."""
        self.ask_to_stop()
        if self.task is None:
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.kill()
        self.conn.close()


def _result(task: _Task, reply):
    kind, value = reply
    return value if kind == "ok" else MediaError(task.path, value)


@dataclass
class _Stream:
    """Parts of one streaming task received and not yet handed on."""

    parts: deque = field(default_factory=deque)
    received: int = 0
    ended: bool = False

    def end(self, last) -> None:
        if last is not None:
            self.parts.append(last)
        self.ended = True


class _Runner:
    """Runs tasks on N workers, each under a deadline, yielding results in input order."""

    def __init__(self, workers: int, timeout: float, reuse: list[_Worker] = ()):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.workers = list(reuse)[:workers]
        self.workers += [_Worker() for _ in range(workers - len(self.workers))]
        self.max_ahead = 2 * workers  # tasks queued, running or finished but not yet yielded

    def _intake(self, tasks: Iterator, exhausted: bool, in_flight: int) -> tuple[list, bool]:
        """The next tasks that fit under `max_ahead`, and whether `tasks` has now run dry."""
        if exhausted:
            return [], True
        room = self.max_ahead - in_flight
        items = list(itertools.islice(tasks, max(room, 0)))
        return items, len(items) < room

    def run(self, tasks: Iterable[_Task | MediaError]) -> Iterator[tuple[str, object]]:
        """(path, value or MediaError) in the order of `tasks`; MediaError items pass straight through."""
        tasks = iter(tasks)
        queue, done = deque(), {}
        next_in = next_out = 0
        exhausted = False
        try:
            while True:
                items, exhausted = self._intake(tasks, exhausted, next_in - next_out)
                for item in items:
                    if isinstance(item, MediaError):
                        done[next_in] = (item.path, item)
                    else:
                        queue.append(item)
                    next_in += 1
                self._dispatch(queue)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                if exhausted and next_out == next_in:
                    return
                if next_out not in done:
                    self._wait(queue, done)
        finally:
            self._reset_busy()

    def run_stream(self, tasks: Iterable[_Task | MediaError]) -> Iterator[tuple[str, object]]:
        """(path, part or MediaError) for tasks whose function is a generator, task after task in input order.

        A worker sends one part and waits; it is asked for the next one only when that part is handed on,
        so each task in flight holds at most one part here. The timeout applies to each part separately.
        A task that fails after some parts ends with a MediaError item.
        """
        tasks = iter(tasks)
        queue, streams = deque(), {}
        next_in = next_out = 0
        exhausted = False
        try:
            while True:
                items, exhausted = self._intake(tasks, exhausted, next_in - next_out)
                for item in items:
                    streams[next_in] = _Stream()
                    if isinstance(item, MediaError):
                        streams[next_in].end((item.path, item))
                    else:
                        queue.append(item)
                    next_in += 1
                self._dispatch(queue)
                head = streams.get(next_out)
                if head is not None and head.parts:
                    item = head.parts.popleft()
                    self._ask_more(next_out)
                    yield item
                    del item  # not held while the next part is awaited
                elif head is not None and head.ended:
                    del streams[next_out]
                    next_out += 1
                elif exhausted and next_out == next_in:
                    return
                else:
                    self._wait_stream(queue, streams)
        finally:
            self._reset_busy()

    def _ask_more(self, index: int) -> None:
        for worker in self.workers:
            if worker.task is not None and worker.task.index == index and worker.waiting:
                worker.more(self.timeout)

    def _wait_stream(self, queue: deque, streams: dict) -> None:
        busy = [w for w in self.workers if w.task is not None and not w.waiting]
        if not busy:
            return
        wait_for = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=wait_for)
        for worker in busy:
            task, stream = worker.task, streams[worker.task.index]
            if worker.conn in ready:
                try:
                    message = worker.receive()
                except (EOFError, OSError):
                    self._replace(worker)
                    if task.fallback is not None:  # the default decode crashed: plain PyAV goes on from the next part
                        args = (*task.fallback, stream.received)
                        queue.appendleft(_Task(task.index, task.path, task.func, args, None))
                    else:
                        stream.end((task.path, MediaError(task.path, _crash_reason(worker.proc.returncode))))
                    continue
                if message is READY:  # its reply comes later
                    continue
                kind, value = message
                if kind == "part":
                    stream.parts.append((task.path, value))
                    stream.received += 1
                    worker.waiting = True
                    continue
                worker.task = None
                stream.end(None if kind == "end" else (task.path, _result(task, (kind, value))))
            elif time.monotonic() >= worker.deadline:
                self._replace(worker)
                stream.end((task.path, MediaError(task.path, f"timed out after {self.timeout:g} s")))

    def _dispatch(self, queue: deque) -> None:
        for worker in list(self.workers):
            if queue and worker.task is None:
                task = queue.popleft()
                try:
                    worker.submit(task, self.timeout)
                except OSError:  # the worker died while idle (e.g. killed for memory): start another
                    worker.task = None
                    self._replace(worker).submit(task, self.timeout)

    def _wait(self, queue: deque, done: dict) -> None:
        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            return
        wait_for = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=wait_for)
        for worker in busy:
            task = worker.task
            if worker.conn in ready:
                reply = worker.collect()
                if reply is READY:
                    continue
                if reply is not None:
                    done[task.index] = (task.path, _result(task, reply))
                    continue
                self._replace(worker)
                if task.fallback is not None:  # the default decode crashed: plain PyAV tries once more, afresh
                    queue.appendleft(_Task(task.index, task.path, task.func, task.fallback, None))
                else:
                    done[task.index] = (task.path, MediaError(task.path, _crash_reason(worker.proc.returncode)))
            elif time.monotonic() >= worker.deadline:
                self._replace(worker)
                done[task.index] = (task.path, MediaError(task.path, f"timed out after {self.timeout:g} s"))

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def _reset_busy(self) -> None:
        # A consumer that stopped early leaves tasks running; their late replies must not leak into the next run.
        for worker in list(self.workers):
            if worker.task is not None:
                self._replace(worker)

    def close(self) -> None:
        for worker in self.workers:      # all told first, so that they exit together
            worker.ask_to_stop()
        for worker in self.workers:
            worker.stop()
        self.workers = []


def _task(index: int, path, func: Callable, args: tuple, fallback: tuple | None) -> _Task | MediaError:
    """A task for `path`, or the MediaError that checking the file without opening it already gives."""
    path = os.fspath(path)
    try:
        check_file(path)
    except MediaError as e:
        return e
    return _Task(index, path, func, (path, *args), None if fallback is None else (path, *fallback))


# Idle workers kept between single probe()/decode() calls, so a run of calls pays one interpreter start.
_idle: list[_Worker] = []
_idle_lock = threading.Lock()
_MAX_IDLE = 2


def _run_one(task: _Task | MediaError, timeout: float):
    if isinstance(task, MediaError):
        raise task
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    with _idle_lock:
        reuse = [_idle.pop()] if _idle else []
    runner = _Runner(1, timeout, reuse)
    try:
        _, result = next(runner.run([task]))
    finally:
        # The runner's worker is idle and healthy here: a crashed or timed-out one was already replaced.
        worker = runner.workers[0]
        with _idle_lock:
            keep = len(_idle) < _MAX_IDLE
            if keep:
                _idle.append(worker)
        if not keep:
            worker.stop()
    if isinstance(result, MediaError):
        raise result
    return result


def run_in_worker(func: Callable, path, *args, timeout: float = 60.0):
    """`func(path, *args)` in a worker process, for other readers of a media file (its subtitle streams)
    that must not take the caller down; raises MediaError naming the file for a crash, a timeout or an error.

    `func` runs in the worker; it must be importable by name and return something picklable.
    """
    return _run_one(_task(0, path, func, args, None), timeout)


def probe(path, timeout: float = 30.0) -> VideoInfo:
    """Read a video's metadata in a worker process; raises MediaError for a bad file or after `timeout` s."""
    return _run_one(_task(0, path, probe_file, ("auto",), ("pyav",)), timeout)


def decode(path, sampling: SamplingConfig = SamplingConfig(), timeout: float = 120.0, *,
           decoder: Callable = decode_file) -> DecodedVideo:
    """Sample and resize a video's frames in a worker process; raises MediaError for a bad file or a timeout.

    `decoder(path, sampling, backend, threads)` runs in the worker; it must be importable by name.
    """
    return _run_one(_task(0, path, decoder, (sampling, "auto", 0), (sampling, "pyav", 0)), timeout)


def decode_window(path, sampling: SamplingConfig, start: float, end: float, timeout: float = 120.0) -> DecodedVideo:
    """The frames `decode` samples in [start, end) only (one clip's window), in a worker process; MediaError
    for a bad file or a timeout. Frames and times are the ones a whole decode gives in that window."""
    return decode(path, sampling, timeout, decoder=functools.partial(decode_window_file, start=start, end=end))


class DecodePool:
    """N decoder processes with a per-file timeout; `imap` yields (path, DecodedVideo | MediaError) in input order,
    `imap_chunks` yields the same decoded in time segments (see there).

    At most 2 * workers files are in flight (queued, decoding or waiting to be yielded), so memory stays flat
    however many paths are given; with `imap_chunks`, each holds at most one chunk here and one being decoded,
    so it stays flat however long the videos are too. A crashed or hung worker is killed and replaced.
    Not thread-safe.
    """

    def __init__(self, workers: int = 2, sampling: SamplingConfig = SamplingConfig(), timeout: float = 120.0, *,
                 decoder: Callable = decode_file, chunk_decoder: Callable = decode_chunks_file,
                 keyframes: bool = False):
        self._runner = _Runner(workers, timeout)
        self.sampling = sampling
        # Keyframe-only decoding (where each clip window holds a keyframe) tried before the usual backends.
        self.backend = "keyframes" if keyframes else "auto"
        self.decoder = decoder
        self.chunk_decoder = chunk_decoder
        # Split the cores between workers so N decoders do not each start one thread per core.
        self.threads = max(1, (os.cpu_count() or 1) // workers)

    def imap(self, paths: Iterable) -> Iterator[tuple[str, DecodedVideo | MediaError]]:
        """Decode `paths` lazily; yields (path, DecodedVideo) or (path, MediaError) for each, in order."""
        if self._runner is None:
            raise RuntimeError("DecodePool is closed")
        args = (self.sampling, self.backend, self.threads)
        fallback = (self.sampling, "pyav", self.threads)
        tasks = (_task(i, p, self.decoder, args, fallback) for i, p in enumerate(paths))
        yield from self._runner.run(tasks)

    def imap_chunks(self, paths: Iterable,
                    chunk_seconds: float = 60.0) -> Iterator[tuple[str, VideoChunk | MediaError]]:
        """Decode `paths` lazily in time segments; yields (path, VideoChunk) for each segment of a file in
        order, the last one with `last=True` and the VideoInfo, or ends the file with (path, MediaError),
        possibly after some chunks. Files come in input order.

        Chunks hold the clip windows of about `chunk_seconds` and are decoded only as they are taken, so
        memory stays flat however long the videos are; the timeout applies to each chunk.
        """
        if self._runner is None:
            raise RuntimeError("DecodePool is closed")
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")
        args = (self.sampling, self.backend, self.threads, float(chunk_seconds))
        fallback = (self.sampling, "pyav", self.threads, float(chunk_seconds))
        tasks = (_task(i, p, self.chunk_decoder, args, fallback) for i, p in enumerate(paths))
        yield from self._runner.run_stream(tasks)

    def close(self) -> None:
        """Stop the worker processes."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
