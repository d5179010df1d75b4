"""The `vidsearch search` command: query a store from the terminal by text, by example video or by clip id."""
from __future__ import annotations

import argparse
import json
import sys


def add_parsers(subparsers) -> None:
    """Add the `search` subcommand."""
    p = subparsers.add_parser("search", help="search an indexed store by text or by example video",
                              description="Search an indexed store by text, by example video, or for clips "
                                          "similar to a stored clip.")
    p.add_argument("query", nargs="?", help="text to search for")
    p.add_argument("--store", required=True, help="store directory made by `vidsearch index`")
    p.add_argument("--video", metavar="FILE", help="search with this video file instead of text")
    p.add_argument("--similar", metavar="CLIP_ID", type=int, help="clips similar to this stored clip")
    p.add_argument("-k", type=int, default=10, help="number of results (1-100, default 10)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results (paging)")
    p.add_argument("--mode", choices=["dense", "keyword", "concept", "clip", "hybrid"], default="hybrid",
                   help="text search mode (default hybrid: every channel the store has, fused)")
    p.add_argument("--rerank", action="store_true", help="re-rank the top candidates with the alignment head")
    p.add_argument("--no-rewrite", action="store_true",
                   help="search the words as typed, without putting unknown words into the model's training words")
    p.add_argument("--group", choices=["clip", "video"], default="clip", help="one result per clip or per video")
    p.add_argument("--prefix", help="only videos whose path starts with this")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the one the store was built with)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run one query and print its results; exit 2 on a bad query or unreadable input."""
    chosen = [x is not None for x in (args.query, args.video, args.similar)]
    if sum(chosen) != 1:
        print("vidsearch search: give exactly one of QUERY text, --video FILE or --similar CLIP_ID", file=sys.stderr)
        return 2
    from indexer import StoreError
    from search import QueryError, UnknownId
    from trainer.media import MediaError
    try:
        engine = _open(args)
        hits = _query(engine, args)
    except (QueryError, UnknownId, MediaError, StoreError, OSError, ValueError) as e:
        print(f"vidsearch search: {e}", file=sys.stderr)
        return 2
    reading = _reading(engine, args)
    if args.json:
        answer = {"query": _describe(args), "channels": engine.channels, "results": [h.to_dict() for h in hits]}
        if reading is not None:
            answer["read_as"] = reading.to_dict()
        print(json.dumps(answer, indent=2))
    else:
        print(f"channels: {', '.join(engine.channels)}")
        if reading is not None and reading.changed:
            swaps = ", ".join(f"{s.source} -> {s.target}" if s.target else f"{s.source} left out"
                              for s in reading.substitutions)
            print(f"read as: {reading.text} ({swaps}; --no-rewrite searches the words as typed)")
        if reading is not None and reading.concepts:
            print("concepts: " + "; ".join(f"{c.source} -> {', '.join(c.classes[:5])}"
                                           + (f" (+{len(c.classes) - 5})" if len(c.classes) > 5 else "")
                                           for c in reading.concepts))
        print(format_table(hits))
    return 0


def _reading(engine, args):
    """How a dense or hybrid text query was read (None for other queries)."""
    if args.video is not None or args.similar is not None or args.mode == "keyword":
        return None
    return engine.read(args.query, rewrite=not args.no_rewrite)


def _open(args):
    from search import Engine
    model = None
    if args.model:
        import trainer
        model = trainer.load(args.model)
    return Engine(args.store, model=model)


def _query(engine, args):
    common = dict(k=args.k, offset=args.offset, group=args.group)
    if args.video is not None:
        return engine.video(args.video, prefix=args.prefix, **common)
    if args.similar is not None:
        return engine.similar(args.similar, prefix=args.prefix, **common)
    return engine.text(args.query, mode=args.mode, rerank=args.rerank, prefix=args.prefix,
                       rewrite=not args.no_rewrite, **common)


def _describe(args) -> str:
    if args.video is not None:
        return f"video:{args.video}"
    if args.similar is not None:
        return f"similar:{args.similar}"
    return args.query


def mmss(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour)."""
    s = int(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_table(hits) -> str:
    """A plain-text table of hits: rank, the channels that found each with their own scores, time range, clip id,
    path and caption."""
    if not hits:
        return "no results"
    lines = []
    for rank, h in enumerate(hits, start=1):
        caption = f"  {h.caption}" if h.caption else ""
        found = " ".join(f"{c}={h.similarities.get(c, 0.0):.3f}" for c in h.sources) or f"{h.score:.4f}"
        lines.append(f"{rank:3d}. [{found}]  {mmss(h.start)}-{mmss(h.end)}  clip {h.clip_id}  "
                     f"{h.video_path}{caption}")
    return "\n".join(lines)
