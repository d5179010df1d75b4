"""Quality through `vidsearch train --store`: the quality benchmark's training captions as .srt sidecars beside the
videos, indexed into a store, trained on from the store (with the frame features the index run kept), and
evaluated like the manifest-trained model on the same held-out clips."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .common import Section, Table
from .quality import eval_json
from .resources import QUICK_TRAIN_ARGS, FULL_TRAIN_ARGS, missing, synth_split, trained_model, vidsearch

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


def _timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = vidsearch(*args)
    return time.perf_counter() - start, proc.stderr


def store_model(workdir: str, quick: bool, index_args: list[str]) -> dict:
    """Index the sidecar library, then `vidsearch train --store`; cached per run like the manifest model."""
    split = synth_split(workdir, quick)
    extra = QUICK_TRAIN_ARGS if quick else FULL_TRAIN_ARGS
    lib = sidecar_library(split["train"], Path(workdir) / "sidecar-library")
    store = Path(workdir) / "sidecar-store"
    out = Path(workdir) / ("store-model-" + "-".join([split["dir"].name, *extra]).replace("--", ""))
    record = out / "bench-train.json"
    if not record.exists():
        index_s, _ = _timed("index", str(lib), "--store", str(store), "--no-progress", *index_args)
        # An empty trainer cache: the features must come from the store, not from the manifest run's cache.
        args = ["train", "--store", str(store), "--out", str(out), "--cache-dir", str(Path(workdir) / "empty-cache"),
                "--no-progress", *extra]
        train_s, err = _timed(*args)
        found = next((line for line in err.splitlines() if "clip-text pairs" in line), "")
        record.write_text(json.dumps({"index_seconds": index_s, "seconds": train_s, "args": args, "found": found,
                                      "index_args": index_args}))
    return {"dir": out, **json.loads(record.read_text())}


def _eval(manifest: Path, model: Path, train: Path, cache: Path) -> dict:
    """`vidsearch eval --json`, kept beside the model so that a second run of the report reads it back."""
    saved = model / f"bench-eval-{manifest.stem}.json"
    if not saved.exists():
        saved.write_text(json.dumps(eval_json(manifest, model, train, cache)))
    return json.loads(saved.read_text())


def run(quick: bool, workdir: str) -> Section:
    """Manifest-trained and store-trained models on the same held-out clips, side by side."""
    section = Section("store_training", "Training from a store")
    reason = missing("trainer.evaluate", "indexer.pairs")
    if reason:
        section.skipped = reason
        return section
    split = synth_split(workdir, quick)
    manifest = trained_model(workdir, quick)
    # Indexed with the manifest model: the kept frame features come from the same frame encoder either way.
    stored = store_model(workdir, quick, ["--model", str(manifest["dir"])])
    cache = Path(workdir) / "feature-cache"
    table = Table(["phrasing", "trained from", "t2v R@1", "t2v R@5", "t2v R@10", "v2t R@1", "v2t R@10",
                   "t2v R@1 change", "t2v R@10 change"])
    results, worst = {}, 0.0
    for phrasing, key in (("training", "test"), ("unseen", "test_unseen")):
        base = _eval(split[key], manifest["dir"], split["train"], cache)
        ours = _eval(split[key], stored["dir"], split["train"], cache)
        results[phrasing] = {"manifest": base, "store": ours}
        for name, r in (("manifest", base), ("store (.srt sidecars)", ours)):
            d1 = r["t2v"]["R@1"] - base["t2v"]["R@1"]
            d10 = r["t2v"]["R@10"] - base["t2v"]["R@10"]
            table.add(phrasing, name, r["t2v"]["R@1"], r["t2v"]["R@5"], r["t2v"]["R@10"], r["v2t"]["R@1"],
                      r["v2t"]["R@10"], f"{d1:+.3f}", f"{d10:+.3f}")
        worst = max(worst, *(abs(ours[m][k] - base[m][k]) for m, k in COMPARED))
    section.notes = [
        f"The quality benchmark's {len(split['train'].read_text().splitlines())} training captions, each written as "
        "an .srt sidecar beside a link to its video (no manifest), indexed with "
        f"`vidsearch index LIB --store S {' '.join(stored['index_args'])}` ({stored['index_seconds'] / 60:.1f} min), "
        f"then `vidsearch train --store S --out DIR` with an empty feature cache "
        f"({stored['seconds'] / 60:.1f} min; it reported: \"{stored['found'].removeprefix('vidsearch train: ')}\"). "
        f"The manifest row is the quality benchmark's own model ({manifest['seconds'] / 60:.1f} min of training). "
        "Both evaluated with `vidsearch eval TEST --train TRAIN --json` on the same held-out clips.",
    ]
    section.tables.append(("Manifest vs store", table))
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    section.findings.append(f"Largest difference over t2v R@1/5/10 and v2t R@1/10, both phrasings: {worst:.3f}, {verdict} "
                            f"the {TOLERANCE} tolerance.")
    section.data = {"eval": results, "largest_difference": worst, "store_model": {k: v for k, v in stored.items()
                                                                                  if k != "dir"}}
    return section
