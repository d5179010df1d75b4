"""HTTP: `vidsearch serve` under concurrent `/api/search` load from wrk in a separate process, on loopback only."""
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

from .common import Section, Table, median, on_thread, percentile, ratio
from .resources import REPO, indexed_store, missing
from .textenc import QUERIES

CONNECTIONS = 8
SERVER_THREADS = 4        # `vidsearch serve` default


def start_server(store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Start `vidsearch serve --port 0` on 127.0.0.1; return the process and its base URL once it answers."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "webui.cli", "serve", "--store", str(store), "--host", "127.0.0.1",
                             "--port", "0", "--threads", str(SERVER_THREADS)], stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vidsearch serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", log.read_text())
        if match and _answers(match.group(1)):
            return proc, match.group(1)
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("vidsearch serve did not answer within 300 s")


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


def wrk_script(path: Path) -> Path:
    """A wrk Lua script that cycles through the benchmark queries, each made unique."""
    items = ", ".join('"%s"' % urllib.parse.quote_plus(q) for q in QUERIES)
    # A counter and the wrk thread's id make every query string new, so the engine's query cache never answers.
    path.write_text(
        "local queries = {" + items + "}\nlocal i = 0\nlocal threads = 0\n"
        "setup = function(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\n"
        "request = function()\n  i = i + 1\n"
        "  local q = queries[(i % #queries) + 1] .. \"+n\" .. tid .. \"x\" .. i\n"
        "  return wrk.format(\"GET\", \"/api/search?k=10&q=\" .. q)\nend\n")
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


def in_process(store: Path, runs: int) -> dict:
    """Reference: the same queries through `search.Engine.text` in this process, one at a time (no HTTP)."""
    from search import Engine

    engine = Engine(str(store))
    for q in QUERIES:
        engine.text(q, k=10)
    p50s = []
    for run in range(runs):
        times = []
        for i, q in enumerate(QUERIES * 3):
            start = time.perf_counter()
            engine.text(f"{q} r{run}x{i}", k=10)          # a new string each time, as in the wrk script
            times.append((time.perf_counter() - start) * 1e3)
        p50s.append(percentile(times, 50))
    return {"p50_ms": median(p50s)}


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
    reference = on_thread(in_process, store, runs)   # on a thread, as waitress runs requests
    script = wrk_script(Path(workdir) / "queries.lua")
    proc, base = start_server(store, Path(workdir) / "serve.log")
    try:
        _wrk(base, script, 2, CONNECTIONS)                         # warm the server's threads and caches
        loads = {}
        for conns in (1, CONNECTIONS):
            results = [_wrk(base, script, seconds, conns) for _ in range(runs)]
            loads[conns] = {k: median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")}
            loads[conns]["errors"] = sum(r["errors"] for r in results)
            loads[conns]["requests"] = sum(r["requests"] for r in results)
    finally:
        stop_server(proc)
    table = Table(["client", "connections", "requests/s", "p50 ms", "p99 ms", "requests", "errors",
                   "p50 vs in-process"])
    table.add("in-process `Engine.text` (reference)", "-", 1e3 / reference["p50_ms"], reference["p50_ms"], "",
              "", "", "1.00x")
    for conns, r in loads.items():
        table.add("wrk -> `vidsearch serve`", conns, r["rps"], r["p50_ms"], r["p99_ms"], r["requests"], r["errors"],
                  ratio(r["p50_ms"], reference["p50_ms"]))
    section.notes = [
        f"`vidsearch serve --threads {SERVER_THREADS}` in its own process on a free 127.0.0.1 port, serving the store "
        "built by the indexing benchmark; `wrk -t2 --latency` in another process sends `GET /api/search?k=10&q=...` "
        f"(default hybrid mode) cycling through {len(QUERIES)} queries, each made a new string (a counter appended) so "
        f"the engine's query cache never answers, for {seconds} s per run, median of "
        f"{runs} runs. Reference: the same kind of queries through `search.Engine.text` in process, one at a time. wrk "
        "shares the 2 cores with the server.",
    ]
    section.tables.append(("", table))
    top = loads[CONNECTIONS]
    section.findings.append(
        f"With {CONNECTIONS} concurrent connections the server answered {top['rps']:.1f} requests/s, p50 "
        f"{top['p50_ms']:.1f} ms, p99 {top['p99_ms']:.1f} ms, with {top['errors']} errors in {top['requests']} "
        f"requests; {top['rps'] * reference['p50_ms'] / 1e3:.2f}x the rate of one in-process caller.")
    section.data = {"reference": reference, "loads": loads}
    return section


def _wrk(base: str, script: Path, seconds: int, conns: int) -> dict:
    """One wrk run of `seconds` with `conns` connections (one wrk thread per connection, at most 2)."""
    proc = subprocess.run(["wrk", "-t1" if conns == 1 else "-t2", f"-c{conns}", f"-d{seconds}s", "--latency",
                           "--timeout", "30s", "-s", str(script), base], capture_output=True, text=True, check=True)
    return parse_wrk(proc.stdout)
