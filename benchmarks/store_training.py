"""Quality through `vidsearch train --store`: the quality benchmark's training captions as .srt sidecars beside the
videos, indexed into a store, trained on from the store (with the frame features the index run kept), and
evaluated like the manifest-trained model on the same held-out clips."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .common import Section, Table
from .quality import text_video_results
from . import resources
from .resources import missing, synth_split, trained_model, vidsearch

TOLERANCE = 0.02  # the store path must reach the manifest path's figures within this
COMPARED = (("t2v", "R@1"), ("t2v", "R@5"), ("t2v", "R@10"), ("v2t", "R@1"), ("v2t", "R@10"))


def sidecar_library(manifest: Path, out: Path) -> Path:
    """The manifest's videos linked into `out`, each caption written as a cue of an .srt sidecar beside it;
    no manifest in sight."""
    from trainer.captions import format_timestamp, read_manifest

    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list] = {}
    for c in read_manifest(manifest):
        by_video.setdefault(c.video, []).append(c)
    for video, captions in by_video.items():
        link = out / Path(video).name
        if not link.exists():
            os.symlink(video, link)
        cues = [f"{i}\n{format_timestamp(c.start or 0.0)} --> "
                f"{format_timestamp(c.end if c.end is not None else 1e5)}\n{c.text}\n"
                for i, c in enumerate(captions, start=1)]
        link.with_suffix(".srt").write_text("\n".join(cues), encoding="utf-8")
    done.write_text("")
    return out


def _timed(*args: str):
    """(wall seconds, finished process) of one `vidsearch` command."""
    start = time.perf_counter()
    proc = vidsearch(*args)
    return time.perf_counter() - start, proc


def store_model(workdir: str, quick: bool) -> dict:
    """The day-one path on the sidecar library: `vidsearch index` with no model (the offline encoders), then
    `vidsearch train --store`, then `vidsearch index --store --model` to add the trained model's vectors to the
    store; cached per run like the manifest model."""
    split = synth_split(workdir, quick)
    # Read at call time: `benchmarks.run --epochs` replaces them after this module is imported.
    extra = resources.QUICK_TRAIN_ARGS if quick else resources.FULL_TRAIN_ARGS
    lib = sidecar_library(split["train"], Path(workdir) / "sidecar-library")
    out = Path(workdir) / ("store-model-" + "-".join([split["dir"].name, *extra]).replace("--", ""))
    store = Path(workdir) / f"sidecar-store-{split['dir'].name}"
    record = out / "bench-train.json"
    if not record.exists():
        shutil.rmtree(store, ignore_errors=True)  # a store left by an earlier run may already have a model
        index_s, _ = _timed("index", str(lib), "--store", str(store), "--no-progress")
        if json.loads((store / "store.json").read_text()).get("model_hash"):
            raise RuntimeError(f"{store}: indexed without --model, yet the store records a model")
        # An empty trainer cache: the features must come from the store, not from the manifest run's cache.
        args = ["train", "--store", str(store), "--out", str(out), "--cache-dir", str(Path(workdir) / "empty-cache"),
                "--no-progress", *extra]
        train_s, proc = _timed(*args)
        found = next((line for line in proc.stderr.splitlines() if "clip-text pairs" in line), "")
        add_s, added = _timed("index", "--store", str(store), "--model", str(out), "--json", "--no-progress")
        record.write_text(json.dumps({"index_seconds": index_s, "seconds": train_s, "args": args, "found": found,
                                      "add_seconds": add_s, "model_added": json.loads(added.stdout)["model_added"]}))
    return {"dir": out, "store": store, **json.loads(record.read_text())}


def _eval(split: dict, model: Path, cache: Path) -> dict:
    """The quality benchmark's text<->video evaluation of `model` (every phrasing, read and as typed), kept
    beside the model so that a second run of the report reads it back."""
    saved = model / "bench-eval-phrasings.json"
    if not saved.exists():
        saved.write_text(json.dumps(text_video_results(split, model, cache), default=float))
    return json.loads(saved.read_text())


def _added(added: dict | None) -> str:
    """What adding the model to the store did, in words."""
    if not added:
        return "it added no model"
    return (f"{added['clips']} clip and {added['captions']} caption vectors from the features kept for "
            f"{added['videos_from_features']} videos, {added['videos_decoded_again']} videos decoded again")


def run(quick: bool, workdir: str) -> Section:
    """Manifest-trained and store-trained models on the same held-out clips, side by side."""
    section = Section("store_training", "Training from a store")
    reason = missing("trainer.evaluate", "indexer.pairs")
    if reason:
        section.skipped = reason
        return section
    split = synth_split(workdir, quick)
    manifest = trained_model(workdir, quick)
    stored = store_model(workdir, quick)
    cache = Path(workdir) / "feature-cache"
    table = Table(["phrasing", "trained from", "t2v R@1", "t2v R@5", "t2v R@10", "v2t R@1", "v2t R@10",
                   "t2v R@1 change", "t2v R@10 change"])
    base, ours = _eval(split, manifest["dir"], cache), _eval(split, stored["dir"], cache)
    for phrasing in base:
        for name, r in (("manifest", base[phrasing]), ("store (.srt sidecars)", ours[phrasing])):
            d1 = r["t2v"]["R@1"] - base[phrasing]["t2v"]["R@1"]
            d10 = r["t2v"]["R@10"] - base[phrasing]["t2v"]["R@10"]
            table.add(phrasing, name, r["t2v"]["R@1"], r["t2v"]["R@5"], r["t2v"]["R@10"], r["v2t"]["R@1"],
                      r["v2t"]["R@10"], f"{d1:+.3f}", f"{d10:+.3f}")
    worst = max(abs(ours[p][m][k] - base[p][m][k]) for p in base for m, k in COMPARED)
    section.notes = [
        f"The quality benchmark's {len(split['train'].read_text().splitlines())} training captions, each written as "
        "an .srt sidecar beside a link to its video (no manifest), indexed with "
        f"`vidsearch index LIB --store S` with no model ({stored['index_seconds'] / 60:.1f} min), "
        f"then `vidsearch train --store S --out DIR` with an empty feature cache "
        f"({stored['seconds'] / 60:.1f} min; it reported: \"{stored['found'].removeprefix('vidsearch train: ')}\"), "
        f"then `vidsearch index --store S --model DIR` ({stored['add_seconds']:.0f} s; {_added(stored['model_added'])}). "
        f"The manifest row is the quality benchmark's own model ({manifest['seconds'] / 60:.1f} min of training). "
        "Both evaluated as the quality benchmark evaluates its model (`trainer.evaluate.evaluate` on the same "
        "held-out clips, each phrasing read as search reads queries and as typed).",
    ]
    section.tables.append(("Manifest vs store", table))
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    section.findings.append(f"Largest difference over t2v R@1/5/10 and v2t R@1/10, every phrasing: {worst:.3f}, {verdict} "
                            f"the {TOLERANCE} tolerance.")
    section.data = {"eval": {"manifest": base, "store": ours}, "largest_difference": worst,
                    "store_model": {k: v for k, v in stored.items() if k not in ("dir", "store")}}
    return section
