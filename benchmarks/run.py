"""Run the benchmarks and write one markdown report.

    python -m benchmarks.run [--quick] [--only NAME,...] --out FILE
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import signal
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .common import Section, machine

# Report order; each module defines run(quick: bool, workdir: str) -> Section.
BENCHMARKS = ("decode", "indexing", "search_scale", "http", "training", "quality", "real_footage", "store_training",
              "soak", "captioning", "runtime", "scaleout")
TITLES = {"decode": "Decode", "indexing": "Indexing", "search_scale": "Search at scale", "http": "HTTP",
          "training": "Training", "quality": "Quality", "real_footage": "Real footage, no captions",
          "store_training": "Training from a store",
          "soak": "Reliability", "captioning": "Captioning",
          "runtime": "Encoders on ONNX Runtime: speed and same answers", "scaleout": "Scale-out"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two, for a smoke check")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--out", required=True, help="markdown report to write")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the sections not run (see --only) from the existing report at --out")
    parser.add_argument("--split", default=None, metavar="TRAIN,TEST",
                        help="generated clips for training and test in a full run (default 800,120)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of the quality model in a full run (default: `vidsearch train`'s)")
    parser.add_argument("--caption-epochs", type=int, default=None,
                        help="caption decoder epochs of the quality model in a full run (default: `vidsearch "
                             "train`'s)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.split is not None:
        try:
            train, test = (int(x) for x in args.split.split(","))
        except ValueError:
            parser.error(f"--split must be TRAIN,TEST (two integers), got {args.split!r}")
        if train < 1 or test < 1:
            parser.error(f"--split sizes must be >= 1, got {args.split!r}")
        args.split = {"train": train, "test": test}
    for name in ("epochs", "caption_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def apply_overrides(args: argparse.Namespace) -> None:
    """Point the shared inputs at the --split/--epochs/--caption-epochs settings."""
    from . import resources

    if args.split:
        resources.FULL_SPLIT = args.split
    extra = []
    if args.epochs:
        extra += ["--epochs", str(args.epochs)]
    if args.caption_epochs:
        extra += ["--caption-epochs", str(args.caption_epochs)]
    if extra:
        resources.FULL_TRAIN_ARGS = extra


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
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section.findings.append(f"_Measured {stamp}; the section took {section.data['seconds']:.0f} s; "
                                f"1-minute load average "
                                f"{load_before:.1f} at its start and {section.data['load'][1]:.1f} at its end "
                                f"({os.cpu_count()} cores; anything above that is other work competing for them)._")
    print(f"[bench] {name} done in {section.data['seconds']:.0f} s", file=sys.stderr, flush=True)
    return section


def header(argv: list[str], quick: bool, kept: dict[str, str]) -> str:
    """Report preamble: command, date and machine (and where kept sections come from)."""
    m = machine()
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv)
    origin = [f"- {title}: kept from the earlier report ({source})" for title, source in kept.items()]
    return "\n".join([
        "# vidsearch benchmarks", "",
        f"- Command: `{command}`" + (" (quick sizes)" if quick else ""),
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        *origin,
        f"- Machine: {m['cpu']}, {m['cores']} CPU cores, {m['memory_gib']} GiB memory, GPU: {m['gpu']}; "
        f"{m['os']}, Python {m['python']}",
        "- Every figure is the median of several runs and is quoted beside a reference measured in the same run, "
        "as a ratio.", "",
    ])


def report(parts: list[Section | str], argv: list[str], quick: bool, kept: dict[str, str]) -> str:
    """The whole markdown report; a part is a Section just run or the markdown of a kept one."""
    body = [p if isinstance(p, str) else p.markdown() for p in parts]
    return header(argv, quick, kept) + "\n" + "\n".join(body)


_KEPT = re.compile(r"^- (.+): kept from the earlier report \((.*)\)$", re.M)


def previous_sections(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Sections ("## Title" to the next "## ") of an existing report, by title, and where each came from:
    {"": the report's own command and date, title: origin of a section that report itself had kept}."""
    if not path.exists():
        return {}, {"": ""}
    text = path.read_text()
    sections, current = {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        if current is not None:
            sections[current] += line
    meta = [line[2:].strip() for line in text.splitlines() if line.startswith(("- Command:", "- Date:"))]
    origins = {title: origin for title, origin in _KEPT.findall(text)}
    origins[""] = "; ".join(meta[:2])
    return sections, origins


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    apply_overrides(args)
    # SIGTERM unwinds like Ctrl-C, so servers and worker processes the benchmarks started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    fresh: dict[str, Section] = {}
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-") as tmp:
        workdir = args.workdir or tmp
        Path(workdir).mkdir(parents=True, exist_ok=True)
        for name in BENCHMARKS:
            if name in args.only:
                fresh[name] = run_one(name, args.quick, workdir)
                write_report(out, fresh, args, argv)      # after every section, so a stopped run keeps its numbers
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


def write_report(out: Path, fresh: dict[str, Section], args: argparse.Namespace, argv: list[str]) -> None:
    """Write the report of the sections run so far, plus with --keep the others from the report at `out`."""
    # The earlier report is read at each write, so a run started before it was written still keeps its sections.
    old, source = previous_sections(out) if args.keep else ({}, {"": ""})
    parts, kept = [], {}
    for name in BENCHMARKS:
        if name in fresh:
            parts.append(fresh[name])
        elif TITLES[name] in old and name not in args.only:
            parts.append(old[TITLES[name]].rstrip() + "\n")
            kept[TITLES[name]] = source.get(TITLES[name], source[""])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(report(parts, argv, args.quick, kept))
    os.replace(tmp, out)



if __name__ == "__main__":
    sys.exit(main())
