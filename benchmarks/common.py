"""Shared pieces of the benchmark harness: timing, medians, the machine description and report sections."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Table:
    """One markdown table: column headers and rows of already-formatted cells."""
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells) -> None:
        """Append a row; non-string cells are formatted with `fmt`."""
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def markdown(self) -> str:
        """Render as a GitHub markdown table."""
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """The result of one benchmark: prose, tables and the raw numbers behind them."""
    name: str                       # short key used by --only, e.g. "search_scale"
    title: str
    notes: list[str] = field(default_factory=list)       # paragraphs printed before the tables
    tables: list[tuple[str, Table]] = field(default_factory=list)   # (caption, table)
    table_notes: dict[str, str] = field(default_factory=dict)       # caption -> paragraph printed under it
    findings: list[str] = field(default_factory=list)    # conclusions printed after the tables
    data: dict = field(default_factory=dict)             # raw numbers, for tests and other tools
    skipped: str | None = None                           # "not measured: <reason>" when nothing was measured

    def markdown(self) -> str:
        """Render the section as markdown."""
        out = [f"## {self.title}", ""]
        if self.skipped:
            return "\n".join(out + [f"Not measured: {self.skipped}", ""])
        for note in self.notes:
            out += [note, ""]
        for caption, table in self.tables:
            if caption:
                out += [f"**{caption}**", ""]
            if caption in self.table_notes:
                out += [self.table_notes[caption], ""]
            out += [table.markdown(), ""]
        for finding in self.findings:
            out += [finding, ""]
        return "\n".join(out)


def fmt(value, digits: int = 3) -> str:
    """Format a number with `digits` significant figures (integers as they are)."""
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0 or not (abs(value) < 1e15):
        return f"{value:g}"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def ratio(value: float, reference: float) -> str:
    """`value / reference` as '1.23x', the form every figure is quoted in beside its reference."""
    if not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def median(values) -> float:
    """Median of a non-empty sequence of numbers."""
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, like numpy's default."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """Run fn once; return (seconds, result)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median_time(fn: Callable, repeats: int = 3, warmup: int = 0) -> tuple[float, list[float]]:
    """Median wall time of `repeats` calls of fn() after `warmup` untimed calls; also the raw times."""
    for _ in range(warmup):
        fn()
    times = [timed(fn)[0] for _ in range(repeats)]
    return median(times), times


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def _gpu() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
        return ", ".join(names) if out.returncode == 0 and names else "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none"


def machine() -> dict:
    """Describe the machine the numbers come from."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def module_available(name: str) -> bool:
    """True if `name` can be imported (used to keep a benchmark out when its code under test has not landed)."""
    import importlib
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def on_thread(fn: Callable, *args):
    """Run fn(*args) on a fresh thread and return its result (re-raising its error).

    The pipeline's model stages and the web server's requests run on worker threads, and torch's intra-op
    threading behaves differently there than on the main thread; references are timed the same way."""
    import threading

    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, name="bench-worker")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
