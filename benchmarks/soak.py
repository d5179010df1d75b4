"""Reliability: `vidsearch serve` under wrk load while index runs add, change and remove videos, two of them SIGKILLed.

    python -m benchmarks.soak --seconds 600 [--workdir DIR]     # or through benchmarks.run (section "Reliability")

Reports requests, 5xx answers, p50/p99 latency, whether every committed change became visible without a restart,
the server's RSS and open file descriptors at the start and end, and the store's consistency at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from .common import Section, Table
from .http import parse_wrk, start_server, stop_server
from .resources import REPO, missing, trained_model

FULL_SECONDS = 600
QUICK_SECONDS = 60
POOL = 10              # generated videos the index runs add, change and remove
START = 4              # of which the library holds this many at the start
KILLS = 2              # index runs SIGKILLed part-way (each then restarted)
KILL_TRIES = 4 * KILLS  # index runs that may try to be killed before the soak gives up on reaching KILLS
VISIBLE_WITHIN = 30.0  # seconds allowed for a committed change to show in the running server


def wrk_script(path: Path) -> Path:
    """Lua for wrk: searches of several kinds plus library pages; counts 5xx answers per thread."""
    path.write_text(r'''
local paths = {"/api/search?q=a+red+circle&k=10", "/api/search?q=blue+square+moves&mode=dense&k=5",
               "/api/search?q=star&mode=keyword", "/api/search?q=green&group=video&k=20",
               "/api/videos?limit=50", "/api/health", "/api/search?q=shape&offset=10&k=10"}
local threads = {}
local i = 0
setup = function(thread) table.insert(threads, thread) end
init = function(args) fivexx = 0 end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
response = function(status, headers, body) if status >= 500 then fivexx = fivexx + 1 end end
done = function(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("fivexx") end
  io.write(string.format("5xx: %d\n", n))
end
''')
    return path


def make_pool(root: Path) -> list[dict]:
    """POOL generated captioned videos (kept outside the library; copied in as the runs need them)."""
    from trainer.synth import SynthSpec, generate

    manifest = generate(root, SynthSpec(count=POOL, seed=7, seconds=3.0, max_seconds=4.0, fps=8, size=64, workers=1))
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [{"video": root / r["video"], "caption": r["caption"]} for r in rows]


def put(pool_item: dict, library: Path, name: str) -> Path:
    """Copy a pool video into the library as `name`.mp4, with its caption beside it (a .txt sidecar)."""
    dest = library / f"{name}{pool_item['video'].suffix}"
    tmp = library / f".{name}.part"
    shutil.copyfile(pool_item["video"], tmp)
    os.replace(tmp, dest)                       # a reader never sees half a file
    dest.with_suffix(".txt").write_text(pool_item["caption"] + "\n")
    return dest


def remove(path: Path) -> None:
    path.unlink()
    path.with_suffix(".txt").unlink(missing_ok=True)


def index_run(library: Path, store: Path, model: Path, kill_after: float | None, log) -> str:
    """One `vidsearch index LIBRARY --prune`; with `kill_after`, SIGKILL it (and its decoders) after that long."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "webui.cli", "index", str(library), "--store", str(store),
                             "--model", str(model), "--prune", "--workers", "1", "--no-progress"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    try:
        proc.wait(timeout=kill_after if kill_after is not None else 600)
        return f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        return "killed"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _get(base: str, path: str, **params) -> dict:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def visible(base: str, library: dict[str, dict]) -> tuple[bool, list[str]]:
    """Whether the server shows exactly the library: each file listed as indexed at its size and found by a
    search for its caption restricted to its path; each removed one gone. Returns (ok, what is off)."""
    listed = {v["path"]: v for v in _get(base, "/api/videos", limit=500)["videos"]}
    off = []
    for path, item in library.items():
        v = listed.get(path)
        if not v or v["status"] != "indexed" or v.get("size") != os.path.getsize(path):
            off.append(f"not indexed as it is now: {path}")
            continue
        hits = _get(base, "/api/search", q=item["caption"], prefix=path, k=1)["results"]
        if not hits:
            off.append(f"not searchable: {path}")
    gone = [p for p, v in listed.items() if p not in library and v["status"] == "indexed"]
    off += [f"removed but still listed: {p}" for p in gone]
    for p in gone[:3]:
        if _get(base, "/api/search", q="shape", prefix=p, k=1)["results"]:
            off.append(f"removed but still searchable: {p}")
    return not off, off


def wait_visible(base: str, library: dict[str, dict]) -> tuple[float | None, list[str]]:
    """Seconds until the server shows the library as it is (None if not within VISIBLE_WITHIN) and what was off."""
    start = time.monotonic()
    off = []
    while time.monotonic() - start < VISIBLE_WITHIN:
        ok, off = visible(base, library)
        if ok:
            return time.monotonic() - start, []
        time.sleep(0.5)
    return None, off


def proc_stats(pid: int) -> dict:
    """RSS (MiB) and open file descriptors of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"rss_mib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def mutate(library: Path, files: dict[str, dict], pool: list[dict], rng: random.Random, counter: list[int]) -> None:
    """One round of changes to the library: add a video, replace one's content, remove one.

    New content always comes from pool videos not in the library: the same content under two paths is one video."""
    def spare():
        return [p for p in pool if all(p["caption"] != f["caption"] for f in files.values())]
    if spare():
        counter[0] += 1
        item = rng.choice(spare())
        files[str(put(item, library, f"v{counter[0]:03d}"))] = item
    if len(files) > 1 and spare():
        path = rng.choice(sorted(files))
        item = rng.choice(spare())
        remove(Path(path))
        del files[path]
        files[str(put(item, library, Path(path).stem))] = item
    if len(files) > 2:
        path = rng.choice(sorted(files))
        remove(Path(path))
        del files[path]


def soak(workdir: Path, model: Path, seconds: float, seed: int = 0) -> dict:
    """Run the soak for about `seconds`; returns its measurements (see the module docstring)."""
    from indexer import check_store

    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    pool = make_pool(workdir / "pool")
    library, store = workdir / "library", workdir / "store"
    shutil.rmtree(library, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    library.mkdir()
    files = {str(put(item, library, f"v{i:03d}")): item for i, item in enumerate(pool[:START])}
    counter = [START]
    log = open(workdir / "index.log", "w")
    assert index_run(library, store, model, None, log) == "exit 0", (workdir / "index.log").read_text()[-2000:]
    server, base = start_server(store, workdir / "serve.log")
    wrk = None
    try:
        start_stats = proc_stats(server.pid)
        wrk = subprocess.Popen(["wrk", "-t2", "-c8", f"-d{int(seconds)}s", "--latency", "--timeout", "30s",
                                "-s", str(wrk_script(workdir / "soak.lua")), base],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + seconds - 5
        rounds, kills, tries, waits, problems = 0, 0, 0, [], []
        full = None   # seconds the last unkilled index run took
        while time.monotonic() < deadline or rounds < KILLS + 1 or (kills < KILLS and tries < KILL_TRIES):
            mutate(library, files, pool, rng, counter)
            if kills < KILLS:
                # Killed part-way, after the model has loaded and while files are decoded and committed. A run can
                # end before its kill, so later kills fall within the duration of the last whole run.
                after = rng.uniform(4.0, 12.0) if full is None else rng.uniform(0.4, 0.8) * full
                outcome = index_run(library, store, model, after, log)
                kills, tries = kills + (outcome == "killed"), tries + 1
            started = time.monotonic()
            outcome = index_run(library, store, model, None, log)
            full = time.monotonic() - started
            if outcome not in ("exit 0", "exit 3"):
                problems.append(f"index run {rounds} ended with {outcome}")
            waited, off = wait_visible(base, files)
            waits.append(waited)
            problems += off
            rounds += 1
        out, _ = wrk.communicate(timeout=seconds + 120)
        end_stats = proc_stats(server.pid)
    finally:
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
        stop_server(server)
        log.close()
    load = parse_wrk(out)
    fivexx = int(out.rsplit("5xx:", 1)[1].split()[0]) if "5xx:" in out else None
    consistency = check_store(store)
    return {"seconds": seconds, "requests": load["requests"], "rps": load["rps"], "p50_ms": load["p50_ms"],
            "p99_ms": load["p99_ms"], "errors": load["errors"], "5xx": fivexx, "rounds": rounds, "kills": kills, "kill_tries": tries,
            "visible_all": all(w is not None for w in waits) and not problems,
            "visible_max_s": max((w for w in waits if w is not None), default=None), "problems": problems[:20],
            "start": start_stats, "end": end_stats, "consistency": consistency, "videos_at_end": len(files)}


def run(quick: bool, workdir: str) -> Section:
    """The benchmark section: the soak at its full length (quick: one minute)."""
    section = Section("soak", "Reliability")
    reason = missing("webui.serve", "indexer.check") or (None if shutil.which("wrk") else "wrk is not installed")
    if reason:
        section.skipped = reason
        return section
    model = trained_model(workdir, True)["dir"]          # the model's quality does not matter here
    r = soak(Path(workdir) / "soak", model, QUICK_SECONDS if quick else FULL_SECONDS)
    return section_of(r, section)


def section_of(r: dict, section: Section) -> Section:
    """The markdown section of one soak's measurements."""
    table = Table(["seconds", "requests", "requests/s", "5xx", "other errors", "p50 ms", "p99 ms", "index runs",
                   "SIGKILLed", "all changes visible", "slowest to show (s)", "RSS MiB start -> end",
                   "open fds start -> end", "store check"])
    table.add(r["seconds"], r["requests"], r["rps"], r["5xx"], r["errors"] - (r["5xx"] or 0), r["p50_ms"],
              r["p99_ms"], r["rounds"] + r["kill_tries"], r["kills"], "yes" if r["visible_all"] else "no",
              r["visible_max_s"], f"{r['start']['rss_mib']:.0f} -> {r['end']['rss_mib']:.0f}",
              f"{r['start']['fds']} -> {r['end']['fds']}",
              "ok" if not r["consistency"] else "; ".join(r["consistency"]))
    section.tables.append(("", table))
    section.notes = [
        "`vidsearch serve --threads 4` on 127.0.0.1 under `wrk -t2 -c8` (text searches in every mode, a deep page, "
        "grouping, library pages, health) for the whole run, while this process changes a library of generated "
        f"videos ({POOL} in the pool, {START} at the start) round after round: adds one, replaces one's content, "
        "removes one, then runs `vidsearch index LIBRARY --prune`. The first "
        f"{KILLS} rounds first start an index run and SIGKILL it (with its decoder processes) part-way (4-12 s in, then "
        "within the last whole run's duration; a run that ends first is tried again), then run it "
        "again. After every completed run the server must show the library as it now is, without a restart: every "
        "file listed as indexed at its current size and found by a search for its caption within its path, every "
        f"removed one gone, within {VISIBLE_WITHIN:.0f} s. At the end: the server's RSS and open file descriptors "
        "(from /proc), and `indexer.check_store` (SQLite `PRAGMA integrity_check`, vectors, FAISS, full-text rows, "
        "thumbnails). wrk, the index runs and the server share the machine's cores.",
    ]
    status = "met" if r["5xx"] == 0 and r["visible_all"] and not r["consistency"] else "NOT met"
    section.findings.append(
        f"{r['requests']} requests in {r['seconds']:.0f} s, {r['5xx']} answered 5xx (target 0), p50 "
        f"{r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; {r['rounds'] + r['kills']} index runs, {r['kills']} "
        f"SIGKILLed; every committed change visible without a restart: {'yes' if r['visible_all'] else 'no'}; "
        f"store check: {'ok' if not r['consistency'] else 'FAILED'}. Targets {status}.")
    if r["problems"]:
        section.findings.append("Off: " + "; ".join(r["problems"]))
    section.data = r
    return section


def main(argv=None) -> int:
    """Run the soak on its own and print the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=FULL_SECONDS, help=f"how long (default {FULL_SECONDS})")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--model", default=None, help="model directory (default: train the quick benchmark model)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vidsearch-soak-") as tmp:
        workdir = Path(args.workdir or tmp)
        model = Path(args.model) if args.model else trained_model(str(workdir), True)["dir"]
        section = section_of(soak(workdir / "soak", model, args.seconds), Section("soak", "Reliability"))
        print(section.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
