"""HTTP: `vidsearch serve` under concurrent `/api/search` load from wrk in a separate process, on loopback only.

Every request is a distinct query (no answer from the engine's query cache), and half of them are everyday
sentences whose words lie outside the training vocabulary, as a new user types them. With
VIDSEARCH_BENCH_REFERENCE=<another checkout> the same runs are also made, interleaved, against a server started
from that checkout (e.g. the previous release), so both are measured side by side on the same machine load.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from .common import Section, Table, median, on_thread, percentile, ratio
from .resources import REPO, indexed_store, missing

CONNECTIONS = 8
SERVER_THREADS = 4        # `vidsearch serve` default
REFERENCE_ENV = "VIDSEARCH_BENCH_REFERENCE"

# Everyday sentences: subjects, actions and places a user types, nearly all outside the synthetic training words.
_SUBJECTS = ("a dog", "a cat", "a man", "a woman", "two kids", "a motorcycle", "a bus", "a horse", "a bird",
             "an old car", "a girl", "a chef", "a cyclist", "a crowd", "a boat", "a puppy")
_ACTIONS = ("running", "sleeping", "jumping", "eating", "waiting", "dancing", "parked", "swimming", "talking",
            "laughing", "walking slowly", "turning around", "sitting still")
_PLACES = ("on the beach", "in the kitchen", "at night", "in the rain", "near a river", "in a park",
           "on a busy street", "in the snow", "at a concert", "under a bridge", "in the forest")


def unique_queries() -> list[str]:
    """Distinct queries, alternating one in the training phrasing ("a red circle moves left") and one everyday
    sentence outside it ("a dog running on the beach"); far more of them than the engine's query cache holds."""
    from itertools import product

    from trainer.synth import COLORS, MOTION_WORDS, SHAPES

    trained = [f"a {c} {s} {m}" for m_list in MOTION_WORDS["train"].values() for m in m_list
               for c, s in product(COLORS, SHAPES)]
    everyday = [" ".join(t) for t in product(_SUBJECTS, _ACTIONS, _PLACES)]
    rng = __import__("random").Random(0)
    rng.shuffle(trained)
    rng.shuffle(everyday)
    n = min(len(trained), len(everyday))
    return [q for pair in zip(trained[:n], everyday[:n]) for q in pair]


def in_vocabulary(query: str) -> bool:
    """Whether a query of `unique_queries` is one in the training phrasing (they alternate, trained first)."""
    from trainer.synth import SHAPES

    return any(f" {s} " in f" {query} " for s in SHAPES)


def start_server(store: Path, log: Path, repo: Path = REPO) -> tuple[subprocess.Popen, str]:
    """Start `vidsearch serve --port 0` on 127.0.0.1 from the checkout `repo`; return the process and its base
    URL once it answers."""
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui.cli", "serve", "--store", str(store), "--host", "127.0.0.1",
                             "--port", "0", "--threads", str(SERVER_THREADS)], stdout=out, stderr=subprocess.STDOUT,
                            cwd=repo, env=env)
    deadline = time.monotonic() + 900       # a busy machine: loading the model and warming take a while
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vidsearch serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", log.read_text())
        if match and _answers(match.group(1)):
            return proc, match.group(1)
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("vidsearch serve did not answer within 900 s")


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/api/search?q=warm+up", timeout=60) as resp:
            return resp.status == 200
    except OSError:
        return False


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server started by `start_server` (SIGINT, which waitress handles, then SIGKILL)."""
    import signal
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk_script(path: Path, queries: list[str], start: int = 0) -> Path:
    """A wrk Lua script that walks through `queries` from `start`; each wrk thread starts half the list
    further on, so no two requests of a run share a query (the engine's query cache never answers)."""
    items = ", ".join('"%s"' % urllib.parse.quote_plus(q) for q in queries)
    path.write_text(
        "local queries = {" + items + "}\nlocal threads = 0\n"
        "setup = function(thread)\n  threads = threads + 1\n"
        f"  thread:set(\"i\", {start} + (threads - 1) * math.floor(#queries / 2))\nend\n"
        "request = function()\n  i = i + 1\n"
        "  return wrk.format(\"GET\", \"/api/search?k=10&q=\" .. queries[(i % #queries) + 1])\nend\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict:
    """requests/s, p50/p99 latency (ms) and error count from `wrk --latency` output."""
    def lat(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk output:\n{text}")
        return float(m.group(1)) * _UNITS[m.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = (sum(int(x) for x in sock.groups()) if sock else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return {"rps": float(rps.group(1)), "p50_ms": lat("50"), "p99_ms": lat("99"), "requests": int(total.group(1)),
            "errors": errors}


STAGES = ("read", "encode", "dense", "keyword", "concept", "fuse", "hits")


def server_engine(store: Path, runtime: str = "auto"):
    """An engine over `store` with the model it records, started as `vidsearch serve` starts one: the server's
    thread budget, then `Engine.warm()`."""
    import trainer
    from indexer import Store
    from search import Engine
    from search.engine import recorded_model_path

    trainer.set_thread_budget(SERVER_THREADS)
    opened = Store.open(str(store), readonly=True)
    engine = Engine(opened, model=trainer.load(recorded_model_path(opened), runtime=runtime))
    engine.warm()
    return engine


def in_process(store: Path, runs: int, queries: list[str], runtime: str = "auto", per_run: int = 60,
               cpu: bool = False) -> dict:
    """Queries of the same set through `search.Engine.text` in this process, one at a time (no HTTP): p50 over
    all of them and over each half (training phrasing, everyday words), and the median time of each stage, over
    all queries and over each half. The engine starts as `vidsearch serve` starts it: the server's thread budget,
    then `Engine.warm()`; no query of the measured runs repeats one before it.

    cpu: stages timed in the CPU time of the thread that ran them (`time.thread_time`; with one thread per
    request the encoders, FAISS and SQLite all run on it, and a lone query's text tower on the engine's spare
    thread), and each query's CPU time (the process's, all threads) beside its wall time, so that the figures
    say what a query costs rather than how busy the machine was."""
    from search import StageTimes

    engine = server_engine(store, runtime)
    for q in queries[-20:]:
        engine.text(q, k=10)
    p50s: dict[str, list[float]] = {f"{c}{k}": [] for c in ("", "cpu_") for k in ("all", "trained", "everyday")}
    stages: dict[str, dict[str, list[float]]] = {"all": {}, "trained": {}, "everyday": {}}
    for run in range(runs):
        times: dict[str, list[float]] = {f"{c}{k}": [] for c in ("", "cpu_") for k in ("trained", "everyday")}
        for q in queries[run * per_run:(run + 1) * per_run]:
            kind = "trained" if in_vocabulary(q) else "everyday"
            timings = StageTimes(time.thread_time) if cpu else StageTimes()
            start, start_cpu = time.perf_counter(), time.process_time()
            engine.text(q, k=10, timings=timings)
            times[f"cpu_{kind}"].append((time.process_time() - start_cpu) * 1e3)
            times[kind].append((time.perf_counter() - start) * 1e3)
            for name, ms in timings.items():
                for group in ("all", kind):
                    stages[group].setdefault(name, []).append(ms)
        for c in ("", "cpu_"):
            p50s[f"{c}all"].append(percentile(times[f"{c}trained"] + times[f"{c}everyday"], 50))
            for kind in ("trained", "everyday"):
                p50s[f"{c}{kind}"].append(percentile(times[f"{c}{kind}"], 50))
    out = {"p50_ms": median(p50s["all"]), **{f"p50_{k}_ms": median(p50s[k]) for k in ("trained", "everyday")},
           **{f"cpu_p50_{k}_ms": median(p50s[f"cpu_{k}"]) for k in ("all", "trained", "everyday")},
           "stages": {name: median(v) for name, v in stages["all"].items()}}
    for kind in ("trained", "everyday"):
        out[f"stages_{kind}"] = {name: median(v) for name, v in stages[kind].items()}
    out["clips"] = engine.counts()["clips"]
    return out


def scaled_store(source: Path, out: Path, clips: int, noise: float = 0.3, seed: int = 0, model=None) -> Path:
    """A store of at least `clips` clips made of copies of `source`'s videos, for timing queries at a size the
    benchmark library does not reach.

    Each copy of a video is a video of its own (its own path) whose clips keep the source clips' captions,
    tags, concept probabilities and look-alike vectors; its clip and caption vectors are the source's moved by
    Gaussian noise of norm about `noise` and renormalised, so that copies rank apart instead of tying. Caption
    vectors are the model's embeddings of the caption texts. The store config (model, encoders, index type) is
    the source's. `model` embeds the captions: by default the model the source store records."""
    import dataclasses

    import trainer
    from indexer import Store, StoreWriter
    from indexer.writer import FileState
    from search.engine import recorded_model_path
    from trainer.media import VideoInfo

    src = Store.open(str(source), readonly=True)
    videos = _source_videos(src, model if model is not None else trainer.load(recorded_model_path(src)))
    if not videos:
        raise ValueError(f"{source} holds no indexed clips to copy")
    rng = np.random.default_rng(seed)
    dim = src.config.dim
    writer = StoreWriter.create_or_open(out, dataclasses.replace(src.config))
    try:
        made, copy, committed = 0, 0, 0
        while made < clips:
            for v, (record, parts, captions) in enumerate(videos):
                path = f"/scaled/{copy}/{v}/{Path(record.path).name}"
                moved = [dataclasses.replace(c, vector=_moved(c.vector, rng, noise, dim)) for c in parts]
                caps = [dataclasses.replace(c, vector=_moved(c.vector, rng, noise, dim)) for c in captions]
                info = VideoInfo(path, record.duration or 0.0, record.fps or 0.0, record.width or 0,
                                 record.height or 0, 0, record.codec or "", "copy")
                writer.add_video(FileState(path, 0, 0.0, f"copy-{copy}-{v}"), info, moved, caps)
                made += len(parts)
            copy += 1
            if made - committed >= 2000 or made >= clips:   # each commit rewrites the FAISS files: not per copy
                writer.commit()
                committed = made
    finally:
        writer.close()
    return out


def _moved(vector, rng, noise: float, dim: int):
    if vector is None:
        return None
    v = np.asarray(vector, np.float32) + rng.standard_normal(dim).astype(np.float32) * (noise / np.sqrt(dim))
    return v / np.linalg.norm(v)


def _source_videos(store, model) -> list[tuple]:
    """(video record, ClipData list, CaptionData list) of every indexed video in `store`."""
    from indexer.writer import CaptionData, ClipData

    out = []
    for record in store.videos(0, 1_000_000, status="indexed"):
        ids = store.video_clips(record.id)
        rows = {r.id: r for r in store.clips(ids)}
        parts = []
        for cid in ids:
            r = rows[cid]
            look = _vector_or_none(store, cid, "look")
            parts.append(ClipData(r.start, r.end, _vector_or_none(store, cid, "vector"), list(r.tags), look=look,
                                  concepts=store.clip_concepts(cid), description=r.description))
        texts = store.video_captions(record.id)
        vectors = model.embed_text([c.text for c in texts]) if texts and store.config.dim else [None] * len(texts)
        captions = [CaptionData(c.text, c.start, c.end, vec, _clip_at(parts, c.start), c.source, c.lang)
                    for c, vec in zip(texts, vectors)]
        if parts:
            out.append((record, parts, captions))
    return out


def _vector_or_none(store, clip_id: int, column: str):
    try:
        return store.clip_vector(clip_id, column)
    except KeyError:
        return None


def _clip_at(parts, start) -> int | None:
    """Index of the clip holding time `start`; None for a caption of the whole video."""
    if start is None:
        return None
    return next((i for i, c in enumerate(parts) if c.start <= start < c.end), None)


_FIRST_QUERIES = """
import json, sys, time
from search import Engine
engine = Engine(sys.argv[1])
if sys.argv[2] == "warm":
    engine.warm()
out = []
for q in json.loads(sys.argv[3]):
    start = time.perf_counter()
    engine.text(q, k=10)
    out.append((time.perf_counter() - start) * 1e3)
print(json.dumps(out))
"""


def first_queries(store: Path, warm: bool, queries: list[str], repo: Path = REPO) -> list[float]:
    """Milliseconds of each of `queries` in a fresh process, right after the engine loads (and warms)."""
    import json

    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _FIRST_QUERIES, str(store), "warm" if warm else "cold",
                           json.dumps(queries)], capture_output=True, text=True, check=True, cwd=repo, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def query_path(store: Path, runs: int, queries: list[str]) -> tuple[Table, Table, dict]:
    """In-process per-stage breakdown, the ONNX Runtime text tower against torch's, and first against tenth
    query after start-up, with and without the start-up warm-up."""
    results = {}
    for rt in ("torch", "onnx"):
        results[rt] = on_thread(in_process, store, runs, queries, rt)
    seen = [s for s in STAGES if any(s in r["stages"] for r in results.values())]
    seen += sorted({s for r in results.values() for s in r["stages"]} - set(STAGES))
    stages = Table(["text tower", "p50 ms", "p50 training phrasing", "p50 everyday words", "p50 vs torch",
                    *[f"{s} ms" for s in seen]])
    for rt, r in results.items():
        stages.add("torch (previous path)" if rt == "torch" else "ONNX Runtime", r["p50_ms"], r["p50_trained_ms"],
                   r["p50_everyday_ms"], ratio(r["p50_ms"], results["torch"]["p50_ms"]),
                   *[r["stages"].get(s, "") for s in seen])
    first = Table(["start-up", "query 1 ms", "query 2 ms", "query 10 ms", "query 1 vs query 10"])
    ten = [q for q in queries[1::2][-10:]]                 # everyday sentences: the reader has work to do
    for warm in (False, True):
        # One fresh process each: loading the model and the reader's dictionary dominates, and is the point.
        times = [first_queries(store, warm, ten)]
        q1, q2, q10 = (median(t[i] for t in times) for i in (0, 1, 9))
        first.add("`Engine.warm()` at start-up" if warm else "cold (previous behaviour)", q1, q2, q10,
                  ratio(q1, q10))
        results[f"first_{'warm' if warm else 'cold'}"] = {"q1": q1, "q10": q10}
    return stages, first, results


def run(quick: bool, workdir: str) -> Section:
    """Serve the benchmark store and load `/api/search` with wrk; return the report section."""
    section = Section("http", "HTTP")
    reason = missing("webui.serve", "search.engine", "indexer.api") or (None if shutil.which("wrk") else
                                                                        "wrk is not installed")
    if reason:
        section.skipped = reason
        return section
    store = indexed_store(workdir, quick)
    runs, seconds = (2, 3) if quick else (3, 10)
    queries = unique_queries()
    stage_table, first_table, path = query_path(store, runs, queries)
    reference = path["onnx"]
    servers = {"this checkout": REPO}
    if os.environ.get(REFERENCE_ENV):
        servers["reference checkout"] = Path(os.environ[REFERENCE_ENV]).resolve()
    loads = _loads(servers, store, Path(workdir), queries, runs, seconds)
    table = Table(["server", "client", "connections", "requests/s", "p50 ms", "p99 ms", "requests", "errors",
                   "p50 vs in-process"])
    table.add("this checkout", "in-process `Engine.text`, one at a time", "-", 1e3 / reference["p50_ms"],
              reference["p50_ms"], "", "", "", "1.00x")
    for (name, conns), r in loads.items():
        table.add(name, "wrk -> `vidsearch serve`", conns, r["rps"], r["p50_ms"], r["p99_ms"], r["requests"],
                  r["errors"], ratio(r["p50_ms"], reference["p50_ms"]))
    section.notes = [
        f"`vidsearch serve --threads {SERVER_THREADS}` in its own process on a free 127.0.0.1 port, serving the store "
        "built by the indexing benchmark; `wrk -t2 --latency` in another process sends `GET /api/search?k=10&q=...` "
        f"(default hybrid mode) through {len(queries)} distinct queries, alternately one in the training phrasing "
        "(\"a red circle moves left\") and one everyday sentence outside the training words (\"a dog running on "
        "the beach\"), so the engine's query cache never answers, for "
        f"{seconds} s per run, median of {runs} runs. Reference: queries of the same set through "
        "`search.Engine.text` in process, one at a time: p50 "
        f"{reference['p50_trained_ms']:.1f} ms for training-phrasing queries and "
        f"{reference['p50_everyday_ms']:.1f} ms for everyday ones. wrk shares the 2 cores with the server."
        + (f" The reference checkout ({servers['reference checkout']}) serves the same store, its runs interleaved "
           "with this checkout's." if len(servers) > 1 else ""),
    ]
    section.tables.append(("", table))
    section.tables.append(("Query path in process (hybrid, k=10, medians; stages that a query does not run are "
                           "blank): the model's text tower in torch and in ONNX Runtime, side by side", stage_table))
    section.tables.append(("First queries after start-up, each in a fresh process, 10 everyday sentences",
                           first_table))
    top = loads[("this checkout", CONNECTIONS)]
    section.findings.append(
        f"With {CONNECTIONS} concurrent connections the server answered {top['rps']:.1f} requests/s, p50 "
        f"{top['p50_ms']:.1f} ms, p99 {top['p99_ms']:.1f} ms, with {top['errors']} errors in {top['requests']} "
        f"requests; {top['rps'] * reference['p50_ms'] / 1e3:.2f}x the rate of one in-process caller.")
    if ("reference checkout", CONNECTIONS) in loads:
        ref = loads[("reference checkout", CONNECTIONS)]
        section.findings.append(
            f"The reference checkout answered {ref['rps']:.1f} requests/s with p99 {ref['p99_ms']:.1f} ms under the "
            f"same load: this checkout serves {top['rps'] / max(ref['rps'], 1e-9):.2f}x its rate.")
    section.data = {"reference": reference, "query_path": path, "loads": {f"{k[0]}@{k[1]}": v for k, v in loads.items()}}
    return section


def _loads(servers: dict[str, Path], store: Path, workdir: Path, queries: list[str], runs: int,
           seconds: int) -> dict:
    """wrk runs at 1 and CONNECTIONS connections against each server, interleaved run by run."""
    procs = {}
    try:
        for name, repo in servers.items():
            procs[name] = start_server(store, workdir / f"serve-{len(procs)}.log", repo)
        results: dict[tuple[str, int], list[dict]] = {}
        offset = 0
        for name, (_, base) in procs.items():       # warm each server's threads
            _wrk(base, wrk_script(workdir / "queries.lua", queries, offset), 2, CONNECTIONS)
        for run in range(runs):
            for conns in (1, CONNECTIONS):
                for name, (_, base) in procs.items():
                    offset += 997               # each run starts elsewhere in the list: no query repeats soon
                    script = wrk_script(workdir / "queries.lua", queries, offset)
                    results.setdefault((name, conns), []).append(_wrk(base, script, seconds, conns))
    finally:
        for proc, _ in procs.values():
            stop_server(proc)
    loads = {}
    for key, rs in results.items():
        loads[key] = {k: median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
        loads[key]["errors"] = sum(r["errors"] for r in rs)
        loads[key]["requests"] = sum(r["requests"] for r in rs)
    return loads


def _wrk(base: str, script: Path, seconds: int, conns: int) -> dict:
    """One wrk run of `seconds` with `conns` connections (one wrk thread per connection, at most 2)."""
    proc = subprocess.run(["wrk", "-t1" if conns == 1 else "-t2", f"-c{conns}", f"-d{seconds}s", "--latency",
                           "--timeout", "30s", "-s", str(script), base], capture_output=True, text=True, check=True)
    return parse_wrk(proc.stdout)


# Everyday sentences whose content words appear nowhere in `unique_queries` or `Engine.warm`'s query: what a
# query costs the first time the engine meets its words.
NOVEL = ("a kangaroo hopping across the desert", "an elephant bathing in a muddy lake",
         "a violinist performing on stage", "a toddler stacking wooden blocks", "a hawk circling over the canyon",
         "a tractor ploughing a wheat field", "a surfer riding a huge wave", "a lighthouse blinking in the fog",
         "grandparents knitting by the fireplace", "a goalkeeper diving for the ball",
         "fireworks exploding above the harbour", "a mechanic repairing an engine")


def first_sight(store: Path, sentences=NOVEL) -> dict:
    """CPU ms of each stage for `sentences` on an engine started as the server starts it: once when their words
    are new to it, and again (each with a word appended, so the query cache misses) once it has met them."""
    from search import StageTimes

    engine = server_engine(store)
    out: dict[str, dict[str, float]] = {}
    for visit, suffix in (("first", ""), ("again", " today")):
        totals, stages = [], {}
        for q in sentences:
            timings = StageTimes(time.thread_time)
            start = time.process_time()   # all threads: a lone query encodes on the engine's spare thread
            engine.text(q + suffix, k=10, timings=timings)
            totals.append((time.process_time() - start) * 1e3)
            for name, ms in timings.items():
                stages.setdefault(name, []).append(ms)
        out[visit] = {"query": median(totals), **{name: median(v) for name, v in stages.items()}}
    return out


def stage_section(source: Path, clips: int, workdir: Path, runs: int = 3, per_run: int = 100) -> Section:
    """Per-stage breakdown of in-process hybrid text queries over `source` scaled to `clips` clips."""
    store = workdir / f"scaled-{clips}"
    if not (store / "store.json").exists():
        scaled_store(source, store, clips)
    queries = unique_queries()
    r = on_thread(in_process, store, runs, queries, "auto", per_run, True)
    section = Section("query_stages", f"Query path by stage at {r['clips']:,} clips")
    seen = [s for s in STAGES if s in r["stages"]] + sorted(set(r["stages"]) - set(STAGES))
    table = Table(["stage", "CPU ms, all", "training phrasing", "everyday words", "everyday vs training"])
    for name in seen:
        a, b = (r[f"stages_{k}"].get(name) for k in ("trained", "everyday"))
        table.add(name, r["stages"][name], a if a is not None else "", b if b is not None else "",
                  ratio(b, a) if a and b is not None else "")
    for label, key in (("CPU", "cpu_p50_{}_ms"), ("wall", "p50_{}_ms")):
        all_key = "cpu_p50_all_ms" if label == "CPU" else "p50_ms"
        table.add(f"**whole query, {label} p50**", r[all_key], r[key.format("trained")],
                  r[key.format("everyday")], ratio(r[key.format("everyday")], r[key.format("trained")]))
    section.notes = [
        f"`search.Engine.text(q, k=10)` (hybrid) in process, one query at a time on a worker thread, after the "
        f"server's thread budget (`set_thread_budget({SERVER_THREADS})`: one compute thread per request) and "
        f"`Engine.warm()`; {runs} runs of {per_run} distinct queries, alternately in the training phrasing and "
        "everyday sentences outside the training words; medians over runs of each run's p50. Stages are timed in "
        "the CPU time of the thread that ran them (`search.StageTimes(time.thread_time)`; a lone query's text "
        "tower runs on the engine's spare thread), the median over the queries that ran the stage; the whole "
        "query in the process's CPU time (all threads) and in wall time. Store: "
        f"`{source}` copied to {r['clips']:,} clips (`benchmarks.http.scaled_store`)."]
    section.tables.append(("", table))
    seen_first = on_thread(first_sight, store)
    novel = Table(["stage", "words new to the engine, CPU ms", "the same words again", "first vs again"])
    for name in [s for s in seen if s in seen_first["first"]] + ["query"]:
        first, again = seen_first["first"][name], seen_first["again"].get(name, 0.0)
        novel.add("**whole query**" if name == "query" else name, first, again, ratio(first, again))
    section.tables.append((f"First sight of a word: {len(NOVEL)} everyday sentences whose words no earlier query "
                           "used, then the same sentences again (medians)", novel))
    section.data = {**r, "first_sight": seen_first}
    return section


def main(argv=None) -> int:
    """`python -m benchmarks.http stages SOURCE_STORE --clips N --workdir DIR`: print the stage section."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.http")
    parser.add_argument("what", choices=["stages"])
    parser.add_argument("source", type=Path, help="an indexed store whose clips are copied")
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-run", type=int, default=100)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.runs < 1 or args.per_run < 2:
        parser.error("--clips and --runs must be >= 1 and --per-run >= 2")
    args.workdir.mkdir(parents=True, exist_ok=True)
    section = stage_section(args.source, args.clips, args.workdir, args.runs, args.per_run)
    load = os.getloadavg()[0]
    print(section.markdown())
    print(f"_1-minute load average {load:.1f} at the end (2 cores)._")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
