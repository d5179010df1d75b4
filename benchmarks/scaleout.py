"""Scale-out: indexing on a local Ray cluster beside in-process, keyword/hybrid queries on PostgreSQL beside
SQLite, and a FAISS index merged on disk from shards beside one built in memory."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Section, Table, median, percentile, ratio
from .resources import library, missing, synth_split, trained_model

TARGET_RAY = 1.3
WORDS = ("red green blue white black yellow circle square triangle star moves left right up down grows "
         "shrinks spins bright dark small large fast slow jumps falls rises background frame").split()


# ---- Ray vs in-process, as a user runs them: `vidsearch index` in fresh processes --------------------

def _ray_library(workdir: str, quick: bool) -> list[str]:
    """The indexing library; the quick one (~10 s of work) with the split's training videos too, so that a
    run is not all start-up."""
    paths = library(workdir, quick)
    if quick:
        from trainer.captions import read_manifest

        paths += sorted({c.video for c in read_manifest(synth_split(workdir, quick)["train"])})
    return paths


# Ray clusters started with a token at ~/.ray/auth_token require it, and a client that names the address sends
# it only with RAY_AUTH_MODE=token (Ray turns authentication on by itself only for clusters it finds or starts).
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}


def _cli_index(paths: list[str], store: Path, model_dir: Path, extra: list[str]) -> tuple[float, dict]:
    """Wall time of one `vidsearch index ... --json` process (imports and model load included), its report."""
    from .resources import vidsearch

    start = time.perf_counter()
    proc = vidsearch("index", *paths, "--store", str(store), "--model", str(model_dir), "--json", "--no-progress",
                     *extra, env=TOKEN_AUTH if "--ray" in extra and "auto" not in extra else None)
    seconds = time.perf_counter() - start
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    if report["failed"]:
        raise RuntimeError(f"`vidsearch index {' '.join(extra)}` failed files: {report['failed'][:3]}")
    return seconds, report


def _gcs_processes() -> list[int]:
    """Pids of the Ray GCS servers running on this machine: `--ray auto` joins any of them."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"gcs_server" in (d / "cmdline").read_bytes().split(b"\0")[0]:
                pids.append(int(d.name))
        except OSError:  # the process ended meanwhile
            continue
    return pids


class RayHead:
    """A local Ray cluster as the README deploys it: `ray start --head --block` on a free port with a temp
    directory of its own, in its own process group. Stopped by signalling that group, never `ray stop`
    (which stops every Ray cluster on the machine)."""

    def __init__(self, cpus: int):
        self.cpus, self.proc, self.address, self.start_s = cpus, None, "", 0.0

    def __enter__(self) -> RayHead:
        import socket

        from .resources import REPO

        self.tmp = Path(tempfile.mkdtemp(prefix="vsray-"))  # short: Ray's socket paths must fit in 107 bytes
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--num-cpus={self.cpus}",
               "--num-gpus=0", f"--port={port}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.tmp}",
               "--include-dashboard=false", "--disable-usage-stats"]
        env = dict(os.environ, **TOKEN_AUTH, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        start = time.perf_counter()
        self.log = open(self.tmp / "head.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                     start_new_session=True)
        ready = self.tmp / "ray_current_cluster"  # written once the head node is up
        while not ready.exists():
            if self.proc.poll() is not None or time.perf_counter() - start > 300:
                self.__exit__()
                raise RuntimeError(f"`ray start --head` did not come up: {(self.tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        self.address, self.start_s = ready.read_text().strip(), time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()
                time.sleep(0.5)
        self.log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


RAY_SIDE = "ray"
CLI_RUNS = ("in-process", RAY_SIDE)


def ray_cli(workdir: str, quick: bool, section: Section) -> None:
    """`vidsearch index` against `vidsearch index --ray ADDRESS` (a cluster started once before the rounds), and
    in a second phase, with that cluster stopped, against `--ray auto` (which starts a cluster of its own per
    run); each phase alternates its two sides round by round, each run a fresh process into a fresh store."""
    model_dir = trained_model(workdir, quick)["dir"]
    paths = _ray_library(workdir, quick)
    runs = int(os.environ.get("VIDSEARCH_BENCH_RAY_RUNS", 3))
    fresh = lambda: Path(tempfile.mkdtemp(dir=workdir)) / "store"  # noqa: E731
    _cli_index(paths[:2], fresh(), model_dir, [])  # untimed: file caches, bytecode
    phases, loads = {}, {"start": os.getloadavg()[0]}
    with RayHead(cpus=2) as head:
        _cli_index(paths[:2], fresh(), model_dir, ["--ray", head.address])  # untimed, as in-process
        phases["address"] = _alternate(paths, model_dir, fresh, ["--ray", head.address], runs)
    head_s = head.start_s
    foreign = _gcs_processes()  # any cluster still up would be joined by `--ray auto`
    phases["auto"] = _alternate(paths, model_dir, fresh, ["--ray", "auto"], runs)
    loads["end"] = os.getloadavg()[0]
    (Path(workdir) / "ray_cli.json").write_text(json.dumps({"phases": phases, "head_s": head_s, "load": loads}))
    _ray_cli_table(section, phases, head_s, foreign, runs, loads)


def _alternate(paths, model_dir, fresh, extra: list[str], runs: int) -> dict:
    out = {"in-process": [], "ray": [], "reports": {}}
    for _ in range(runs):
        for side, args in (("in-process", []), ("ray", extra)):
            seconds, out["reports"][side] = _cli_index(paths, fresh(), model_dir, args)
            out[side].append((seconds, out["reports"][side]["seconds"], _ready_after(out["reports"][side]["ray_stats"])))
    return out


def _ray_cli_table(section: Section, phases: dict, head_s: float, foreign: list[int], runs: int, loads: dict) -> None:
    rows = (("address", "in-process", "`vidsearch index` (2 decode workers)"),
            ("address", "ray", "`vidsearch index --ray ADDRESS` (cluster already up)"),
            ("auto", "in-process", "`vidsearch index` (2 decode workers)"),
            ("auto", "ray", "`vidsearch index --ray auto` (starts its own local cluster)"))
    video_s = phases["address"]["reports"]["in-process"]["video_seconds"]
    table = Table(["phase", "command", "process s", "video-s/s", "vs in-process (same phase)",
                   "index run s (report)", "start-up s (process - run)", "of the run, actor start-up s"])
    ratios = {}
    for phase, side, name in rows:
        got = phases[phase][side]
        t, run_s = median([g[0] for g in got]), median([g[1] for g in got])
        base = median([g[0] for g in phases[phase]["in-process"]])
        ready = [g[2] for g in got if g[2] is not None]
        ratios[(phase, side)] = t / base
        table.add("cluster up" if phase == "address" else "no cluster", name, t, video_s / t, ratio(t, base),
                  run_s, t - run_s, median(ready) if ready else "")
    caption = "Indexing on Ray beside in-process, through the CLI"
    section.tables.append((caption, table))
    section.findings.append(
        f"Through the CLI, each run a fresh process that imports torch and loads the model, on a local Ray cluster "
        f"of 2 CPUs started once (`ray start --head`, {head_s:.1f} s): `--ray ADDRESS` took "
        f"{ratios[('address', 'ray')]:.2f}x the in-process command's wall time, and `--ray auto` (a cluster "
        f"started per run) {ratios[('auto', 'ray')]:.2f}x (medians of {runs} alternating rounds each). Target "
        f"<= {TARGET_RAY}x with the cluster up: {'met' if ratios[('address', 'ray')] <= TARGET_RAY else 'not met'}."
        + (f" Other Ray clusters were running during the `--ray auto` rounds (GCS pids {foreign}): those runs may "
           "have joined one." if foreign else ""))
    section.data["ray_cli"] = {"phases": {p: {k: v for k, v in d.items() if k != "reports"} for p, d in phases.items()},
                               "head_start_s": head_s, "ratio": {f"{p}/{s}": r for (p, s), r in ratios.items()},
                               "foreign_gcs": foreign, "load": loads,
                               "stats": {p: d["reports"][RAY_SIDE]["ray_stats"] for p, d in phases.items()}}


# ---- Ray vs in-process with the model handed in ------------------------------------------------------

RAY_RUNS = (("in-process (`index_paths`, 2 decode workers)", None),
            ("Ray, decoding in the model actors (`--ray auto`, no GPU)", "actors"),
            ("Ray, decode tasks feeding model actors (the GPU layout)", "tasks"))


def _index_once(paths, store: Path, model, decode: str | None) -> tuple[float, object]:
    from indexer import index_paths

    start = time.perf_counter()
    report = index_paths(paths, store, model=model, workers=2, ray=None if decode is None else "auto",
                         ray_decode=decode or "auto")
    return time.perf_counter() - start, report


def ray_vs_inprocess(workdir: str, quick: bool, section: Section) -> None:
    import ray

    import trainer
    model = trainer.load(trained_model(workdir, quick)["dir"])
    paths = _ray_library(workdir, quick)
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    runs = int(os.environ.get("VIDSEARCH_BENCH_RAY_RUNS", 1 if quick else 3))
    times: dict = {name: [] for name, _ in RAY_RUNS}
    reports: dict = {}
    try:
        for name, decode in RAY_RUNS:  # one untimed run of two files each: worker processes, file caches
            _index_once(paths[:2], Path(tempfile.mkdtemp(dir=workdir)), model, decode)
        for _ in range(runs):  # alternating, so each side sees the same machine
            for name, decode in RAY_RUNS:
                seconds, reports[name] = _index_once(paths, Path(tempfile.mkdtemp(dir=workdir)), model, decode)
                times[name].append(seconds)
    finally:
        ray.shutdown()
    _ray_tables(section, times, reports, init_s, runs)


def _ray_tables(section: Section, times: dict, reports: dict, init_s: float, runs: int) -> None:
    base = median(times[RAY_RUNS[0][0]])
    video_s = reports[RAY_RUNS[0][0]].video_seconds
    table = Table(["run", "seconds", "video-s/s", "vs in-process", "of which actor start-up s",
                   "after start-up s", "after start-up vs in-process"])
    table.add(RAY_RUNS[0][0], base, video_s / base, "1.00x", "", base, "1.00x")
    ratios, startup = {}, {}
    for name, decode in RAY_RUNS[1:]:
        t = median(times[name])
        startup[decode] = _ready_after(reports[name].ray_stats) or 0.0  # of the last run
        ratios[decode] = (t / base, (t - startup[decode]) / base)
        table.add(name, t, video_s / t, ratio(t, base), startup[decode], t - startup[decode],
                  ratio(t - startup[decode], base))
    section.tables.append(("Indexing on Ray beside in-process", table))
    util = Table(["run", "operator", "tasks", "busy s (sum of remote wall time)", "slots",
                  "utilisation of the run", "utilisation after start-up"])
    for name, decode in RAY_RUNS[1:]:
        t = median(times[name])
        for op, tasks, busy, slots in _operators(reports[name].ray_stats):
            util.add(name, op, tasks, busy, slots, busy / max(slots * t, 1e-9),
                     busy / max(slots * (t - startup[decode]), 1e-9))
    section.tables.append(("Ray Data per-stage utilisation (last run of each)", util))
    total, steady = ratios["actors"]
    section.findings.append(
        f"Ray start-up (`ray.init` of a local cluster, paid once per driver, not per run): {init_s:.1f} s. "
        f"Each run then starts its actor pool (a worker process that imports torch and loads the model: "
        f"{startup['actors']:.1f} s here); the in-process side was handed the loaded model. With decoding in "
        f"the actors (the default without GPUs) a run took {total:.2f}x the in-process time, and "
        f"{steady:.2f}x after the actor was ready; decode tasks feeding actors {ratios['tasks'][0]:.2f}x / "
        f"{ratios['tasks'][1]:.2f}x (median of {runs}). Target <= {TARGET_RAY}x: "
        f"{'met' if total <= TARGET_RAY else 'not met'} per run, "
        f"{'met' if steady <= TARGET_RAY else 'not met'} after start-up.")
    section.data.update(ray={"init_s": init_s, "seconds": times, "ratio": ratios, "startup": startup,
                             "stats": {name: reports[name].ray_stats for name, _ in RAY_RUNS[1:]}})


def _ready_after(stats: str) -> float | None:
    import re

    found = re.search(r"first actor ready after ([0-9.]+) s", stats)
    return float(found.group(1)) if found else None


def _operators(stats: str) -> list[tuple[str, int, float, int]]:
    """(operator, tasks, summed remote wall seconds, concurrency slots) of each map operator in Ray Data's
    stats text (`Dataset.stats()`), over all passes of the run; actor slots from the run's header line,
    task slots the decode task pool (2)."""
    import re

    actors = re.search(r"(\d+) actor\(s\)", stats)
    out = []
    for part in re.split(r"\n(?=Operator \d+ )", stats):
        head = re.match(r"Operator \d+ ([^:]+): (\d+) tasks executed", part)
        wall = re.search(r"Remote wall time: .*?([0-9.]+)(us|ms|s) total", part)
        if not head or not wall or head.group(1).startswith(("FromItems", "Input", "ReadItems")):
            continue
        busy = float(wall.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[wall.group(2)]
        slots = int(actors.group(1)) if actors and head.group(1).startswith("MapBatches") else 2
        out.append((head.group(1), int(head.group(2)), busy, slots))
    return out


# ---- PostgreSQL vs SQLite ----------------------------------------------------------------------------

def _synthetic_store(store: Path, db: str, videos: int, clips_per: int, dim: int, seed: int = 0) -> None:
    """A store of `videos` x `clips_per` clips with random unit vectors, tags and captions of WORDS."""
    from indexer import StoreConfig, StoreWriter
    from indexer.writer import CaptionData, ClipData, FileState
    from trainer.media import VideoInfo

    rng = np.random.default_rng(seed)
    config = StoreConfig(model_path="/synthetic", model_hash="synthetic", model_name="synthetic", dim=dim)
    writer = StoreWriter.create_or_open(store, config, db=db)
    try:
        for v in range(videos):
            vecs = rng.standard_normal((clips_per, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            clips = [ClipData(4.0 * c, 4.0 * c + 4, vecs[c], [(w, 0.5) for w in rng.choice(WORDS, 3)])
                     for c in range(clips_per)]
            caps = [CaptionData(" ".join(rng.choice(WORDS, 6)), 4.0 * c, 4.0 * c + 4, vecs[c], c)
                    for c in range(0, clips_per, 2)]
            info = VideoInfo(f"/v/{v}.mp4", 4.0 * clips_per, 25.0, 64, 48, 100, "h264", "synthetic")
            writer.add_video(FileState(f"/v/{v}.mp4", 1000, 1.0, f"h{v}"), info, clips, caps)
            if v % 100 == 99:
                writer.commit()
    finally:
        writer.close()


def _query_latency(store_dir: Path, queries: list[str], dim: int) -> dict:
    """Store-side latency per query: keyword = full-text top 50 + their rows; hybrid = that plus a dense top
    50 and the rows of the union (what search.Engine asks the store for; the text encoder is the same on
    both databases and is left out)."""
    from indexer import Store

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((len(queries), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Store.open(store_dir) as store:
        kw, hy = [], []
        for _ in range(2):  # the first pass warms caches; the second is measured
            kw, hy = [], []
            for q, v in zip(queries, vectors):
                t = time.perf_counter()
                hits = store.keyword(q, 50)
                store.clips([i for i, _ in hits])
                kw.append(time.perf_counter() - t)
                t = time.perf_counter()
                hits = store.keyword(q, 50)
                _, dense = store.search_clips(v, 50)
                store.clips(list(dict.fromkeys([i for i, _ in hits] + dense[0].tolist())))
                hy.append(time.perf_counter() - t)
    ms = lambda xs: (percentile(xs, 50) * 1000, percentile(xs, 99) * 1000)  # noqa: E731
    return {"keyword": ms(kw), "hybrid": ms(hy)}


def postgres_vs_sqlite(workdir: str, quick: bool, section: Section) -> None:
    from tests.fixtures.postgres import PostgresServer

    import faiss

    faiss.omp_set_num_threads(1)  # k-means of the store's IVF, as in ondisk_vs_memory: one thread
    clips = 10_000 if quick else 100_000
    # Videos of 100 clips (6.7 minutes each): the writer's cost is mostly per video (ORM flushes), so the
    # 100k-clip store is written in minutes; the rows are those an index run of such videos writes.
    per, dim = 100, 384
    rng = np.random.default_rng(2)
    queries = [" ".join(rng.choice(WORDS, int(rng.integers(1, 4)))) for _ in range(100)]
    root = Path(tempfile.mkdtemp(prefix="vidsearch-pg-bench-"))
    server = PostgresServer(root)
    try:
        subprocess.run(["runuser", "-u", "postgres", "--", str(server.bin / "createdb"), "-h", str(server.sock),
                        "bench"] if os.geteuid() == 0 else [str(server.bin / "createdb"), "-h", str(server.sock),
                                                            "bench"], check=True, capture_output=True)
        out = {}
        for name, db in (("SQLite", ""), ("PostgreSQL", server.url("bench"))):
            store = Path(tempfile.mkdtemp(dir=workdir)) / "store"
            start = time.perf_counter()
            _synthetic_store(store, db, clips // per, per, dim)
            out[name] = {"build_s": time.perf_counter() - start, **_query_latency(store, queries, dim)}
    finally:
        server.stop()
    table = Table(["database", "clips", "write s", "keyword p50 ms", "keyword p99 ms", "hybrid p50 ms",
                   "hybrid p99 ms", "keyword p50 vs SQLite"])
    for name, r in out.items():
        table.add(name, clips, r["build_s"], r["keyword"][0], r["keyword"][1], r["hybrid"][0], r["hybrid"][1],
                  ratio(r["keyword"][0], out["SQLite"]["keyword"][0]))
    section.tables.append((f"Keyword and hybrid queries at {clips:,} clips", table))
    section.table_notes[f"Keyword and hybrid queries at {clips:,} clips"] = (
        f"{clips // per:,} videos of {per} clips. Store-side work per query, 100 queries of 1-3 words from a "
        "28-word vocabulary (so many clips match): "
        "keyword = full-text top 50 (FTS5 bm25 / tsvector GIN + websearch_to_tsquery + ts_rank) and their rows; "
        "hybrid = the same plus a FAISS top 50 and the rows of the union. The text encoder (identical on both) is "
        "not included. PostgreSQL 15 on a Unix socket on the same machine, fsync off.")
    section.data["postgres"] = {**out, "load": os.getloadavg()[0]}


# ---- sharded on-disk vs in-memory FAISS --------------------------------------------------------------

# Peak resident memory of this process since it started. Not getrusage's ru_maxrss, which Linux carries over
# exec from the parent (the benchmark, holding all the vectors); VmHWM belongs to the new address space.
_HWM = """
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

def hwm():
    return status("VmHWM")
"""


def _serve_queries(path: str, ondisk: bool, queries_path: str, k: int) -> dict:
    """In a fresh process (so its resident memory is the index's): open, search one query at a time."""
    code = _HWM + f"""
import json, resource, sys, time
import faiss, numpy as np
faiss.omp_set_num_threads(1)
q = np.load({queries_path!r})
index = faiss.read_index({path!r}, faiss.IO_FLAG_ONDISK_SAME_DIR if {ondisk!r} else 0)
faiss.extract_index_ivf(index).nprobe = 128
found, times = [], []
for row in q:
    t = time.perf_counter(); _, i = index.search(row[None], {k}); times.append(time.perf_counter() - t)
    found.append(i[0].tolist())
print(json.dumps({{"found": found, "times": times, "rss_mib": hwm(), "anon_mib": status("RssAnon"),
                  "file_mib": status("RssFile")}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ondisk_vs_memory(workdir: str, quick: bool, section: Section) -> None:
    import faiss

    from indexer.faiss_index import auto_nlist
    from indexer.shards import build_ondisk, export_shards, train_ivf

    from .search_scale import mixture, recall_at_k

    n = 100_000 if quick else int(os.environ.get("VIDSEARCH_BENCH_ONDISK_N", 1_000_000))
    nlist, dim, k = auto_nlist(n), 384, 10
    # One OpenMP thread for every build step: on a shared machine FAISS's spinning OpenMP barriers with two
    # threads made k-means many times slower than one thread (and starved the other work).
    faiss.omp_set_num_threads(1)
    data = mixture(n, seed=0)
    queries = mixture(200, seed=7)
    ids = np.arange(1, n + 1, dtype=np.int64)
    work = Path(tempfile.mkdtemp(dir=workdir))
    np.save(work / "queries.npy", queries)
    truth = faiss.IndexFlatIP(dim)
    truth.add(data)
    _, exact = truth.search(queries, k)
    exact = exact + 1  # row ids start at 1
    del truth
    spec = f"IVF{nlist},Flat"
    train_n = min(n, 50 * nlist)
    rows = {}
    # Both builds share one trained quantizer (k-means is the same work either way, timed once).
    t = time.perf_counter()
    trained = train_ivf(dim, spec, data[np.sort(np.random.default_rng(0).permutation(n)[:train_n])])
    train_s = time.perf_counter() - t
    # In memory: add everything to one index, write one file.
    start = time.perf_counter()
    mem = faiss.clone_index(trained)
    mem.add_with_ids(data, ids)
    faiss.write_index(mem, str(work / "memory.faiss"))
    rows["in memory"] = {"build": {"total": time.perf_counter() - start}}
    del mem
    # From shards: export, fill one block per shard, merge on disk.
    t0 = time.perf_counter()
    shards = export_shards(((ids[i:i + 100_000], data[i:i + 100_000]) for i in range(0, n, 100_000)),
                           work / "shards", rows_per_shard=max(n // 4, 1))
    t1 = time.perf_counter()
    build_ondisk(shards, dim, spec, work / "ondisk.faiss", trained=trained)
    t2 = time.perf_counter()
    rows["sharded, merged on disk"] = {"build": {"total": t2 - t0, "shards": t1 - t0, "fill+merge": t2 - t1}}
    del data
    for name, path, ondisk in (("in memory", "memory.faiss", False),
                               ("sharded, merged on disk", "ondisk.faiss", True)):
        got = _serve_queries(str(work / path), ondisk, str(work / "queries.npy"), k)
        rows[name].update(recall=recall_at_k(np.array(got["found"]), exact), p50=percentile(got["times"], 50) * 1000,
                          rss=got["rss_mib"], anon=got["anon_mib"], file=got["file_mib"])
    table = Table(["build", "vectors", "build s", "recall@10", "search p50 ms", "peak RSS MiB",
                   "anonymous MiB (after queries)", "file-backed MiB (after queries)", "anonymous vs in memory"])
    for name, r in rows.items():
        table.add(name, n, r["build"]["total"], r["recall"], r["p50"], r["rss"], r["anon"], r["file"],
                  ratio(r["anon"], rows["in memory"]["anon"]))
    caption = f"FAISS `{spec}` at {n:,} vectors: sharded on-disk build beside in-memory"
    section.tables.append((caption, table))
    section.table_notes[caption] = (
        f"384-d vectors of the Search-at-scale mixture; 4 shards of ids.npy + vectors.npy. One IVF quantizer, "
        f"trained on {train_n:,} sampled vectors in {train_s:.1f} s, is shared by both builds (build s excludes "
        "it); the sharded build fills one block per shard and merges them with faiss.contrib.ondisk.merge_ondisk. "
        "Queries: 200 held-out vectors, one at a time on one thread, nprobe "
        "128, in a fresh process that opens the index (IO_FLAG_ONDISK_SAME_DIR for the merged one); peak RSS is that "
        f"process's VmHWM (it includes ~{_python_rss():.0f} MiB of Python, numpy and faiss); anonymous memory is "
        "what the process must own, file-backed memory is mapped index pages the kernel may drop and re-read. "
        f"Sharded build stages: {rows['sharded, merged on disk']['build']['shards']:.1f} s writing shards, "
        f"{rows['sharded, merged on disk']['build']['fill+merge']:.1f} s filling and merging.")
    section.data["ondisk"] = {"rows": rows, "train_s": train_s, "n": n, "load": os.getloadavg()[0]}


def _python_rss() -> float:
    code = _HWM + "import faiss, numpy\nprint(hwm())"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout or 0)


def run(quick: bool, workdir: str) -> Section:
    section = Section("scaleout", "Scale-out")
    section.notes.append("Three measurements of the parts that let vidsearch grow past one machine. This machine "
                         "is shared with other work (see the load average below), so absolute times are noisy; "
                         "each comparison runs both sides one after the other on the same data.")
    parts = [("Ray through the CLI", ray_cli, missing("ray")),
             ("Ray with the model handed in", ray_vs_inprocess, missing("ray")), ("PostgreSQL", postgres_vs_sqlite, missing("psycopg")),
             ("on-disk FAISS", ondisk_vs_memory, None)]
    for name, fn, absent in parts:
        if absent:
            section.findings.append(f"{name}: not measured ({absent}).")
            continue
        try:
            fn(workdir, quick, section)
        except Exception as e:  # one part failing keeps the others' numbers
            section.findings.append(f"{name}: not measured ({type(e).__name__}: {e}).")
    return section


if __name__ == "__main__":  # one part alone: python -m benchmarks.scaleout ray|ray-loaded|postgres|ondisk [--quick]
    which = {"ray": ray_cli, "ray-loaded": ray_vs_inprocess, "postgres": postgres_vs_sqlite, "ondisk": ondisk_vs_memory}
    sec = Section("scaleout", "Scale-out")
    with tempfile.TemporaryDirectory() as tmp:
        which[sys.argv[1]](os.environ.get("VIDSEARCH_BENCH_WORKDIR", tmp), "--quick" in sys.argv, sec)
    print(sec.markdown())
    print(json.dumps(sec.data, default=str)[:4000])
    print("peak RSS MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
