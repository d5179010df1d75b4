"""`vidsearch` subcommands of the trainer package: probe (video metadata), train, eval and caption."""
from __future__ import annotations

import argparse
import json
import sys


def add_parsers(subparsers) -> None:
    """Register the trainer subcommands on the `vidsearch` parser."""
    _add_probe(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_caption(subparsers)


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
    p.add_argument("--no-captioner", action="store_true", help="train no caption decoder")
    p.add_argument("--caption-only", action="store_true",
                   help="only train (or replace) the caption decoder of the existing model in --out, on its "
                        "frozen encoder")
    p.add_argument("--captioner", choices=("bert", "bart"), default=d["captioner"],
                   help=f"caption decoder: bert (from the text model) or bart (random init) (default {d['captioner']})")
    p.add_argument("--caption-epochs", type=int, default=d["caption_epochs"],
                   help=f"passes of the caption decoder over the captions (default {d['caption_epochs']})")
    p.add_argument("--caption-weight", type=float, default=d["caption_weight"],
                   help="train the caption decoder jointly with VideoBERT's objectives, its loss weighted by this "
                        f"(default {d['caption_weight']}: a second stage on the frozen encoder)")
    p.add_argument("--caption-memory-drop", type=float, default=d["caption_memory_drop"],
                   help="chance per clip and step that the caption decoder sees only the colour slots of its memory "
                        f"(default {d['caption_memory_drop']}; 0 shows it all)")
    p.add_argument("--no-caption-frames", action="store_true",
                   help="the caption decoder reads VideoBERT's video states only, not also the projected frame "
                        "features")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Build a TrainConfig from the flags and train; prints the model dir."""
    if args.caption_only:
        from trainer.caption_training import train_captioner

        out = train_captioner(args.manifests, args.out, captioner=args.captioner, epochs=args.caption_epochs,
                              device=args.device, cache_dir=args.cache_dir, workers=args.workers,
                              progress=not args.no_progress, frames=not args.no_caption_frames,
                              memory_drop=args.caption_memory_drop)
        print(out)
        return 0
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
                       threads=args.threads, resume=args.resume, progress=not args.no_progress,
                       captioner=None if args.no_captioner else args.captioner, caption_epochs=args.caption_epochs,
                       caption_frames=not args.no_caption_frames, caption_weight=args.caption_weight,
                       caption_memory_drop=args.caption_memory_drop)


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
    p.add_argument("--captions", action="store_true",
                   help="score the model's generated descriptions instead (BLEU-1..4, METEOR, ROUGE-L, CIDEr, "
                        "attribute accuracy; --train adds nearest-neighbour and most-frequent baselines)")
    p.add_argument("--references", choices=("manifest", "attrs"), default="manifest",
                   help="with --captions: the manifest's captions of each clip, or every training-phrasing "
                        "rendering of its generated attrs (default manifest)")
    p.add_argument("--num-beams", type=int, default=None,
                   help="with --captions: beam width of the descriptions (default: the model's, 4)")
    p.add_argument("--likeliest", action="store_true",
                   help="with --captions: keep the beam search's likeliest sentence, not the beam the model finds "
                        "closest to the clip")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate and print the report (or JSON)."""
    from trainer.api import load

    model = load(args.model, device=args.device)
    if args.captions:
        from trainer.caption_eval import evaluate_captions, format_caption_report

        result = evaluate_captions(model, args.manifest, args.train, cache_dir=args.cache_dir,
                                   workers=args.workers, references=args.references, num_beams=args.num_beams,
                                   rerank=not args.likeliest)
        print(json.dumps(result) if args.json else format_caption_report(result))
        return 0
    from trainer.evaluate import evaluate, format_report

    result = evaluate(model, args.manifest, args.train, cache_dir=args.cache_dir, workers=args.workers,
                      rerank=args.rerank)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _add_caption(sub) -> None:
    p = sub.add_parser("caption", help="describe each clip of videos with the model's caption decoder",
                       description="Print one line per clip: start, end and the generated description (or one "
                                   "JSON object per clip with --json). A file that cannot be decoded gets an "
                                   "error naming it; the other files still go through, and the exit is 1.")
    p.add_argument("files", nargs="+", metavar="FILE", help="video files")
    p.add_argument("--model", required=True, help="model dir written by `vidsearch train`")
    p.add_argument("--json", action="store_true", help="one JSON object per clip")
    p.add_argument("--num-beams", type=int, default=None, help="beam width (default: the model's, 4)")
    p.add_argument("--max-length", type=int, default=None, help="longest description in tokens (default 32)")
    p.add_argument("--likeliest", action="store_true",
                   help="keep the beam search's likeliest sentence, not the beam the model finds closest to "
                        "the clip")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed to decode each file")
    p.set_defaults(func=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    """Decode each file into the model's clips and describe them; returns 1 if any file failed."""
    import sys

    from trainer.api import load
    from trainer.media import MediaError, decode

    model = load(args.model, device=args.device)
    if not model.can_describe:
        print(f"vidsearch caption: {args.model}: the model has no caption decoder", file=sys.stderr)
        return 1
    failed = 0
    for path in args.files:
        try:
            clips = decode(path, model.sampling, timeout=args.timeout).clips(model.sampling)
            texts = model.describe([c.frames for c in clips], num_beams=args.num_beams, max_length=args.max_length,
                                   rerank=not args.likeliest)
        except MediaError as e:
            print(f"vidsearch caption: {e}", file=sys.stderr, flush=True)
            failed += 1
            continue
        for clip, text in zip(clips, texts):
            row = {"path": path, "start": round(clip.start, 3), "end": round(clip.end, 3), "description": text}
            print(json.dumps(row) if args.json else f"{path}\t{clip.start:.2f}\t{clip.end:.2f}\t{text}", flush=True)
    return 1 if failed else 0
