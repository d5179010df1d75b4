"""Run the benchmarks and write one markdown report: `python -m benchmarks.run [--quick] [--only NAME,...] --out FILE`."""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .common import Section, machine

# Report order; each module defines run(quick: bool, workdir: str) -> Section.
BENCHMARKS = ("decode", "indexing", "search_scale", "http", "training", "quality")
TITLES = {"decode": "Decode", "indexing": "Indexing", "search_scale": "Search at scale", "http": "HTTP",
          "training": "Training", "quality": "Quality"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two, for a smoke check")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--out", required=True, help="markdown report to write")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def run_one(name: str, quick: bool, workdir: str) -> Section:
    """Run one benchmark module; a failure becomes a 'not measured' section naming the error, not a crash."""
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        section = module.run(quick=quick, workdir=workdir)
    except Exception as exc:  # one broken benchmark must not lose the others' numbers
        traceback.print_exc()
        section = Section(name, TITLES[name], skipped=f"the benchmark failed: {type(exc).__name__}: {exc}")
    section.data["seconds"] = time.perf_counter() - start
    section.data["load"] = (load_before, os.getloadavg()[0])
    if not section.skipped:
        section.findings.append(f"_Section took {section.data['seconds']:.0f} s; 1-minute load average "
                                f"{load_before:.1f} at its start and {section.data['load'][1]:.1f} at its end "
                                f"({os.cpu_count()} cores; anything above that is other work competing for them)._")
    print(f"[bench] {name} done in {section.data['seconds']:.0f} s", file=sys.stderr, flush=True)
    return section


def header(argv: list[str], quick: bool) -> str:
    """Report preamble: command, date and machine."""
    m = machine()
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv)
    return "\n".join([
        "# vidsearch benchmarks", "",
        f"- Command: `{command}`" + (" (quick sizes)" if quick else ""),
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {m['cpu']}, {m['cores']} CPU cores, {m['memory_gib']} GiB memory, GPU: {m['gpu']}; "
        f"{m['os']}, Python {m['python']}",
        "- Every figure is the median of several runs and is quoted beside a reference measured in the same run, "
        "as a ratio.", "",
    ])


def report(sections: list[Section], argv: list[str], quick: bool) -> str:
    """The whole markdown report."""
    return header(argv, quick) + "\n" + "\n".join(s.markdown() for s in sections)


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    sections = []
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-") as tmp:
        workdir = args.workdir or tmp
        Path(workdir).mkdir(parents=True, exist_ok=True)
        for name in BENCHMARKS:
            if name in args.only:
                sections.append(run_one(name, args.quick, workdir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(sections, argv, args.quick))
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
