"""`vidsearch index` and `vidsearch remove`: thin command-line wrappers over indexer.index_paths and remove_paths."""
from __future__ import annotations

import argparse
import json
import sys

# Kept here as literals so that building the parser imports nothing heavy.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

INDEX_EPILOG = """\
exit codes:
  0    every file was indexed (or was already, unchanged)
  1    the run could not start or was stopped by an error (no store, wrong model, unreadable manifest)
  2    bad command line
  3    the run finished and every good file is indexed, but some files failed (listed in the summary
       and stored as `failed` rows with their reason)
  130  interrupted (Ctrl-C); work committed so far is kept
"""


def add_parsers(subparsers) -> None:
    """Add the `index` and `remove` subcommands."""
    p = subparsers.add_parser(
        "index", help="index videos into a store", epilog=INDEX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Index video files, directories (searched recursively) and .jsonl caption manifests "
                    "into a store. Unchanged files are skipped, so a run can be repeated or resumed.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="video file, directory or .jsonl manifest")
    p.add_argument("--store", required=True, metavar="DIR", help="store directory (created if missing)")
    p.add_argument("--model", metavar="DIR",
                   help="model directory (default: the one the store records; a new store without one is indexed "
                        "with the offline encoders). Given for a store that has no model yet, it adds the model's "
                        "vectors from the frame features the store kept")
    p.add_argument("--fps", type=float, help="frames sampled per second (default: the model's)")
    p.add_argument("--fast", action="store_true",
                   help="sample one frame per clip (fps = 1 / clip length): about 4x less encoder work at the "
                        "default 4 s clips, at some cost in motion queries; keyframes are decoded alone where every clip "
                        "holds one; excludes --fps")
    p.add_argument("--clip-seconds", type=float, help="clip length in seconds (default: the model's)")
    p.add_argument("--stride", type=float, dest="stride_seconds", help="seconds between clip starts")
    p.add_argument("--workers", type=int, default=2, help="decoder processes (default 2)")
    p.add_argument("--batch-size", type=int, default=64, help="frames per encoder batch (default 64)")
    p.add_argument("--index-type", metavar="TYPE",
                   help="auto (default: exact while small, IVF when large), flat, or a FAISS factory string "
                        "such as IVF1024,Flat / HNSW32 / IVF256,PQ16")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds allowed to decode one segment of a file (default 120)")
    p.add_argument("--chunk-seconds", type=float, default=60.0,
                   help="video decoded and held in memory at a time, in seconds (default 60)")
    p.add_argument("--commit-every", type=int, default=32, metavar="N",
                   help="commit to the store every N files (default 32); a crash loses at most one batch")
    p.add_argument("--db", metavar="URL",
                   help="keep a new store's rows on PostgreSQL (postgresql+psycopg://USER@HOST/DBNAME; default: "
                        "$VIDSEARCH_DB, else SQLite in the store directory); store.json records it")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="decode and embed on a Ray cluster: 'auto' (the default when given alone) joins the "
                        "running cluster or starts a local one, or give its address; needs `pip install .[ray]`")
    p.add_argument("--ray-decode", choices=("auto", "actors", "tasks"), default="auto",
                   help="where a --ray run decodes: in the model actors, or in CPU tasks feeding them "
                        "(auto: tasks when the cluster has GPUs, else actors)")
    p.add_argument("--build-ondisk", action="store_true",
                   help="afterwards, rebuild the FAISS files as IVF indexes with memory-mapped lists, from "
                        "vector shards cut from the store (for stores larger than a server's memory)")
    p.add_argument("--reindex", action="store_true",
                   help="delete the store's contents and rebuild it (from the PATHs, or with none from the videos "
                        "it holds), e.g. with another --model; a video whose kept frame features fit the new "
                        "sampling is rebuilt from them without decoding")
    p.add_argument("--prune", action="store_true", help="first remove videos whose files are gone")
    p.add_argument("--no-features", action="store_true",
                   help="do not keep frame features in the store (they let `train --store` and adding a model "
                        "skip decoding; about 13 kB per sampled frame)")
    p.add_argument("--no-describe", action="store_true",
                   help="do not give clips generated descriptions (when the model has a caption decoder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=index_command)

    r = subparsers.add_parser("remove", help="remove videos from a store",
                              description="Remove videos by path; a directory removes every video under it.")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--store", required=True, metavar="DIR")
    r.set_defaults(func=remove_command)


def _error(command: str, e: BaseException) -> int:
    print(f"vidsearch {command}: error: {e}", file=sys.stderr)
    return EXIT_ERROR


def index_command(args) -> int:
    """Run `vidsearch index`; returns the exit code."""
    if not args.paths and not args.prune and not args.model and not args.build_ondisk:
        print("vidsearch index: error: give at least one PATH, or --prune, or --model to add a model to the store, "
              "or --build-ondisk", file=sys.stderr)
        return EXIT_USAGE
    if not args.paths and not args.prune and not args.model:  # --build-ondisk alone
        return _build_ondisk(args)
    from indexer import StoreError, index_paths
    from trainer.captions import CaptionError

    try:
        report = index_paths(args.paths, args.store, args.model, workers=args.workers, batch_size=args.batch_size,
                             index_type=args.index_type, fps=args.fps, clip_seconds=args.clip_seconds,
                             stride_seconds=args.stride_seconds, reindex=args.reindex, prune=args.prune,
                             timeout=args.timeout, chunk_seconds=args.chunk_seconds,
                             commit_every=args.commit_every, keep_features=not args.no_features,
                             db=args.db, ray=args.ray, ray_decode=args.ray_decode,
                             describe=not args.no_describe, fast=args.fast,
                             progress=not args.no_progress and sys.stderr.isatty())
    except KeyboardInterrupt:
        print("vidsearch index: interrupted; work committed so far is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (StoreError, CaptionError, ValueError, OSError) as e:
        return _error("index", e)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    if args.build_ondisk:
        code = _build_ondisk(args)
        if code != EXIT_OK:
            return code
    return report.exit_code


def _build_ondisk(args) -> int:
    """Rebuild the store's FAISS files on disk from shards (`--build-ondisk`)."""
    from indexer import StoreError
    from indexer.shards import build_store_index

    try:
        built = build_store_index(args.store, None if args.index_type in (None, "auto") else args.index_type)
    except (StoreError, OSError) as e:
        return _error("index", e)
    for name, spec in built.items():
        print(f"{name}: built {spec} with on-disk lists")
    if not built:
        print("nothing built: the indexes are too small for IVF")
    return EXIT_OK


def remove_command(args) -> int:
    """Run `vidsearch remove`; returns the exit code."""
    from indexer import StoreError, remove_paths

    try:
        removed = remove_paths(args.paths, args.store)
    except (StoreError, OSError) as e:
        return _error("remove", e)
    for p in removed:
        print(f"removed {p}")
    print(f"removed {len(removed)} path(s)")
    return EXIT_OK


# ---- `vidsearch train --store` ----------------------------------------------------------------------------

def extend_parsers(subparsers) -> None:
    """Give the trainer's `train` command a `--store` source: the indexer reads the store, the trainer gets
    plain clip-text pairs (the trainer never reads a store itself)."""
    p = subparsers.choices.get("train")
    if p is None:
        return
    p.add_argument("--store", metavar="DIR",
                   help="also train on the captions and subtitles this store holds (manifest, sidecar .srt/.vtt/.txt "
                        "and embedded streams), each aligned to the clips it overlaps, with the frame features "
                        "its index run kept; MANIFEST arguments are then optional")
    p.set_defaults(func=train_command)


def train_command(args) -> int:
    """Run `vidsearch train`, with the store's clip-text pairs when `--store` is given; returns the exit code."""
    from trainer.cli import run_train

    if not getattr(args, "store", None):
        return run_train(args)
    from indexer import StoreError
    from trainer.captions import CaptionError

    try:
        cfg, examples, counted = _store_examples(args)
    except (StoreError, CaptionError, OSError) as e:
        return _error("train", e)
    if counted is not None:
        print(f"vidsearch train: {counted}", file=sys.stderr)
        return EXIT_USAGE
    from trainer.training import train

    print(train(args.manifests, args.out, cfg, examples=examples))
    return EXIT_OK


def _store_examples(args):
    """(TrainConfig, (texts, feats), None) for the store and manifests, or (None, None, why there is too
    little to train on)."""
    import dataclasses

    from indexer import StoreConfig
    from indexer.pairs import check_store, store_pairs
    from trainer.captions import read_manifest
    from trainer.cli import train_config
    from trainer.train_config import defaults

    store = check_store(args.store)
    stored = StoreConfig.load(store)
    cfg = train_config(args)
    # The store's sampling and frame encoder unless a flag says otherwise: its clips, and the features kept for
    # them, are cut and encoded so.
    d = defaults()
    cfg = dataclasses.replace(cfg, size=stored.size, **{k: getattr(stored, k) for k in ("fps", "clip_seconds")
                                                        if getattr(cfg, k) == d[k]})
    if stored.frame_encoder and cfg.frame_encoder == d["frame_encoder"]:
        cfg = dataclasses.replace(cfg, frame_encoder=stored.frame_encoder)
    manifest_rows = [c for m in args.manifests for c in read_manifest(m)]
    given = {(c.video, c.text.strip(), c.start, c.end) for c in manifest_rows}
    pairs = store_pairs(store, cfg.frame_encoder, cfg.sampling(), decode=_decoder(cfg), skip=given)
    for path, reason in pairs.warnings:
        print(f"vidsearch train: warning: {path}: its captions are skipped ({reason})", file=sys.stderr)
    total = len(pairs) + len(manifest_rows)
    source = f"{store}" + (f" and {len(manifest_rows)} manifest captions" if manifest_rows else "")
    print(f"vidsearch train: found {len(pairs)} clip-text pairs in {store} ({pairs.videos} videos"
          + (f", {len(pairs.decoded)} decoded again: no kept features fit" if pairs.decoded else "") + ")"
          + (f" and {len(manifest_rows)} manifest captions" if manifest_rows else ""), file=sys.stderr)
    help_ = ("add subtitles beside the videos (clip.srt, clip.vtt or clip.txt) or inside them, or a JSONL manifest, "
             "then run `vidsearch index` on the library again")
    if total == 0:
        return None, None, f"error: nothing to learn from: {source} holds no captions or subtitles; {help_}"
    need = max(2, cfg.batch_size)
    if total < need:
        return None, None, (f"error: too few clip-text pairs to train on: found {total} in {source}, training needs "
                            f"at least one batch ({need}, --batch-size); {help_}, or lower --batch-size")
    return cfg, (pairs.texts, pairs.feats), None


def _decoder(cfg):
    """Features for videos whose kept ones do not fit `cfg` (another encoder or rate, or none kept): decoded
    through the trainer's own feature cache."""
    def decode(paths: list[str]) -> dict:
        from trainer.encoders import load_frame_encoder
        from trainer.features import FeatureCache

        cache = FeatureCache(cfg.cache_dir, cfg.frame_encoder, cfg.sampling())
        return cache.load_all(paths, load_frame_encoder(cfg.frame_encoder), cfg.workers, progress=cfg.progress)
    return decode
