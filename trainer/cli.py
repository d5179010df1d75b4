"""`vidsearch` subcommands of the trainer package: probe (video metadata)."""
from __future__ import annotations

import argparse
import json
import sys


def add_parsers(subparsers) -> None:
    """Register the trainer subcommands on the `vidsearch` parser."""
    _add_probe(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)


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


def _add_train(sub) -> None:
    from trainer.train_config import defaults

    d = defaults()

    p = sub.add_parser("train", help="train a VideoBERT search model on captioned videos",
                       description="Train VideoBERT on JSONL manifests of captioned videos and write a model dir "
                                   "(config.json, model.safetensors, tokenizer, visual words, metrics.jsonl, loss.png). "
                                   "Runs under torchrun for DDP.")
    p.add_argument("manifests", nargs="*", metavar="MANIFEST", help="JSONL manifests (video, caption, start?, end?)")
    p.add_argument("--out", required=True, help="model dir to write")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"passes over the data (default {d['epochs']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"clips per step (default {d['batch_size']})")
    p.add_argument("--lr", type=float, default=d["lr"], help=f"peak learning rate of new weights (default {d['lr']})")
    p.add_argument("--grad-accum", type=int, default=d["grad_accum"], help="micro-batches per optimizer step")
    p.add_argument("--fps", type=float, default=d["fps"], help=f"frames sampled per second (default {d['fps']})")
    p.add_argument("--frames", type=int, default=d["frames"], help=f"frames per clip (default {d['frames']})")
    p.add_argument("--clip-seconds", type=float, default=d["clip_seconds"], help="clip length in seconds")
    p.add_argument("--branching", type=int, default=d["branching"], help="visual vocabulary branching factor")
    p.add_argument("--depth", type=int, default=d["depth"], help="visual vocabulary depth (words = branching**depth)")
    p.add_argument("--word-dropout", type=float, default=d["word_dropout"],
                   help=f"chance of dropping each caption word per step (default {d['word_dropout']})")
    p.add_argument("--frame-encoder", default=d["frame_encoder"], help="frame encoder spec")
    p.add_argument("--text-model", default=None, help="BERT dir or id to start from (default: bundled MiniLM)")
    p.add_argument("--trainable-layers", type=int, default=None, help="top encoder layers to fine-tune (default 0)")
    p.add_argument("--fusion-layers", type=int, default=d["fusion_layers"],
                   help=f"trainable layers over joint text+video inputs (default {d['fusion_layers']})")
    p.add_argument("--device", default=d["device"], help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=d["seed"], help="random seed (CPU runs repeat exactly)")
    p.add_argument("--cache-dir", default=None, help="frame-feature cache (default $VIDSEARCH_CACHE or ~/.cache/vidsearch)")
    p.add_argument("--workers", type=int, default=d["workers"], help="decoder processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores, split under DDP)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Build a TrainConfig from the flags and train; prints the model dir."""
    from trainer.training import train

    if not args.manifests:
        print("vidsearch train: error: give at least one MANIFEST (or --store DIR)", file=sys.stderr)
        return 2
    out = train(args.manifests, args.out, train_config(args))
    print(out)
    return 0


def train_config(args: argparse.Namespace):
    """The TrainConfig that the `train` flags say."""
    from trainer.training import TrainConfig

    model = {} if args.trainable_layers is None else {"trainable_layers": args.trainable_layers}
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, grad_accum=args.grad_accum,
                       word_dropout=args.word_dropout, fusion_layers=args.fusion_layers,
                       fps=args.fps, frames=args.frames, clip_seconds=args.clip_seconds, branching=args.branching,
                       depth=args.depth, frame_encoder=args.frame_encoder, text_model=args.text_model, model=model,
                       device=args.device, seed=args.seed, cache_dir=args.cache_dir, workers=args.workers,
                       threads=args.threads, resume=args.resume, progress=not args.no_progress)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="retrieval metrics of a model on a captioned test manifest",
                       description="Text->video and video->text R@1/5/10, median and mean rank, with chance and "
                                   "mean-pooled-features ridge baselines.")
    p.add_argument("manifest", metavar="MANIFEST", help="test manifest (JSONL)")
    p.add_argument("--model", required=True, help="model dir written by `vidsearch train`")
    p.add_argument("--train", default=None, metavar="MANIFEST", help="training manifest for the ridge baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--cache-dir", default=None, help="frame-feature cache dir")
    p.add_argument("--workers", type=int, default=2, help="decoder processes")
    p.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="also report text->video after re-ranking each caption's top K clips with the alignment head")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate and print the report (or JSON)."""
    from trainer.api import load
    from trainer.evaluate import evaluate, format_report

    model = load(args.model, device=args.device)
    result = evaluate(model, args.manifest, args.train, cache_dir=args.cache_dir, workers=args.workers,
                      rerank=args.rerank)
    print(json.dumps(result) if args.json else format_report(result))
    return 0
