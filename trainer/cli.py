"""`vidsearch` subcommands of the trainer package: probe (video metadata)."""
from __future__ import annotations

import argparse
import json


def add_parsers(subparsers) -> None:
    """Register the trainer subcommands on the `vidsearch` parser."""
    _add_probe(subparsers)


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="print video metadata as JSON lines",
                       description="Print one JSON line per file: path, duration, fps, width, height, frame_count, "
                                   "codec and backend, or path and error. Exits non-zero if any file failed.")
    p.add_argument("files", nargs="+", metavar="FILE", help="video files")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per file (default 30)")
    p.set_defaults(func=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    """Probe each file in a worker process; returns 1 if any failed, else 0."""
    from trainer.media import MediaError, probe

    failed = 0
    for path in args.files:
        try:
            line = probe(path, timeout=args.timeout).to_dict()
        except MediaError as e:
            line = {"path": e.path, "error": e.reason}
            failed += 1
        print(json.dumps(line), flush=True)
    return 1 if failed else 0
