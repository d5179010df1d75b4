"""Captioning: generated descriptions of unseen attribute combinations, whether what the decoder reads carries the
attributes (linear probes), the decoder choice, beam width, speed and the cost of describing clips at index time.

Sizes follow the run's `--split` and `--epochs` (the shared quality model); the decoder variants are trained on that
model's frozen encoder with the caption options it was trained with, so every row shares one encoder.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .common import Section, Table, fmt, ratio
from .resources import missing, synth_split, trained_model, vidsearch

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
ATTRS = ("shape", "colour", "motion", "background")
BEAMS = (1, 2)          # beam widths measured beside the default's (4)


def caption_eval(test: Path, model: Path, train: Path, cache: Path, *options: str) -> dict:
    """`vidsearch eval --captions --references attrs --json` with both baselines, and `options`
    (e.g. `--num-beams 2`)."""
    proc = vidsearch("eval", str(test), "--model", str(model), "--captions", "--train", str(train),
                     "--references", "attrs", "--json", "--cache-dir", str(cache), *options)
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def other_decoder(model: Path, name: str, options: list[str], train: Path, cache: Path) -> tuple[Path, float]:
    """A copy of `model` whose caption decoder is trained anew on the same frozen encoder with `options`
    (e.g. `--captioner bart`), for as many epochs as the model's own decoder; returns it and the seconds taken."""
    out = model.with_name(f"{model.name}-{name}")
    if not (out / "bench-caption.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(model, out, ignore=shutil.ignore_patterns("captioner", "checkpoint.pt"))
        epochs = json.loads((model / "train_config.json").read_text())["caption_epochs"]
        start = time.perf_counter()
        vidsearch("train", str(train), "--out", str(out), "--caption-only", "--caption-epochs", str(epochs),
                  *options, "--cache-dir", str(cache), "--no-progress")
        (out / "bench-caption.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return out, json.loads((out / "bench-caption.json").read_text())["seconds"]


def probes(model: Path, train: Path, test: Path, cache: Path) -> dict:
    """Linear probes of shape, colour and motion on the raw frame features and on VideoBERT's video states."""
    import trainer
    from trainer.caption_eval import probe_model

    return probe_model(trainer.load(model, device="cpu"), train, test, cache_dir=str(cache))


def index_seconds(videos: Path, model: Path, store: Path, describe: bool) -> float:
    """Wall time of `vidsearch index` of a folder into a fresh store, with or without descriptions."""
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    vidsearch("index", str(videos), "--store", str(store), "--model", str(model), "--no-progress",
              *([] if describe else ["--no-describe"]))
    return time.perf_counter() - start


def _scores_table(rows: list[tuple[str, dict, str]]) -> Table:
    table = Table(["method", *METRICS, *ATTRS, "captions/s"])
    for name, r, speed in rows:
        a = r["attributes"]
        table.add(name, *(fmt(r[m]) for m in METRICS), *("n/a" if a[k] is None else fmt(a[k]) for k in ATTRS), speed)
    return table


def _probe_table(result: dict) -> Table:
    table = Table(["what the probe reads", *(f"{k} (majority)" for k in ("shape", "colour", "motion"))])
    for view, row in result.items():
        table.add(view, *("n/a" if row[k] is None else f"{fmt(row[k]['accuracy'])} ({fmt(row[k]['majority'])})"
                          for k in ("shape", "colour", "motion")))
    return table


def _findings(ours: dict, nn: dict, ratio_index: float, speed: float) -> list[str]:
    a = ours["attributes"]
    checks = [("BLEU-4 >= 0.45", ours["BLEU-4"] >= 0.45, f"{ours['BLEU-4']:.3f}"),
              ("CIDEr above nearest neighbour", ours["CIDEr"] > nn["CIDEr"],
               f"{ours['CIDEr']:.3f} vs {nn['CIDEr']:.3f}"),
              ("colour >= 0.90", a["colour"] >= 0.90, f"{a['colour']:.3f}"),
              ("shape >= 0.90", a["shape"] >= 0.90, f"{a['shape']:.3f}"),
              ("motion >= 0.85", a["motion"] >= 0.85, f"{a['motion']:.3f}"),
              ("indexing with descriptions <= 1.3x without", ratio_index <= 1.3, f"{ratio_index:.2f}x")]
    met = "; ".join(f"{name}: {value} ({'met' if ok else 'NOT met'})" for name, ok, value in checks)
    return [f"Goals on the unseen combinations (default decoder, 4 beams): {met}.",
            f"Describing ran at {speed:.1f} captions/s on CPU (4 beams, cached frame features)."]


def run(quick: bool, workdir: str) -> Section:
    """Train with the run's options, describe the test clips, score them beside the baselines and other decoders."""
    section = Section("captioning", "Captioning")
    reason = missing("trainer.caption_eval", "trainer.captioner")
    if reason:
        section.skipped = reason
        return section
    split = synth_split(workdir, quick)
    model = trained_model(workdir, quick)
    return measure(section, split["train"], split["test"], split["dir"] / "test", model, Path(workdir))


def _variants(model: Path, train: Path, test: Path, cache: Path) -> tuple[list, dict]:
    """Every scored row: the default decoder at each beam width, the states-only and BART decoders, baselines."""
    ours = caption_eval(test, model, train, cache)
    beams = {n: caption_eval(test, model, train, cache, "--num-beams", str(n)) for n in BEAMS}
    likeliest = caption_eval(test, model, train, cache, "--likeliest")
    plain_dir, plain_s = other_decoder(model, "states-only", ["--no-caption-frames"], train, cache)
    plain = caption_eval(test, plain_dir, train, cache)
    bart_dir, bart_s = other_decoder(model, "bart", ["--captioner", "bart"], train, cache)
    bart = caption_eval(test, bart_dir, train, cache)
    base = ours["baselines"]
    speed = lambda r: fmt(r["captions_per_s"], 1)  # noqa: E731
    rows = [("BERT decoder, video states + frame features (default), 4 beams", ours["model"], speed(ours)),
            *((f"same, {n} beam{'s' if n > 1 else ''}" + (" (greedy)" if n == 1 else ""), beams[n]["model"],
               speed(beams[n])) for n in BEAMS),
            ("same, 4 beams, the likeliest sentence kept (`--likeliest`)", likeliest["model"], speed(likeliest)),
            ("BERT decoder, video states only, 4 beams", plain["model"], speed(plain)),
            ("BART decoder (random init), video states + frame features, 4 beams", bart["model"], speed(bart)),
            ("nearest-neighbour caption", base["nearest_neighbour"], "n/a"),
            ("most frequent caption", base["most_frequent"], "n/a")]
    data = {"eval": ours, "beams": beams, "likeliest": likeliest, "states_only": plain, "bart": bart,
            "train_seconds": {"states_only": plain_s, "bart": bart_s}}
    return rows, data


def measure(section: Section, train: Path, test: Path, videos: Path, model_info: dict, workdir: Path) -> Section:
    """The section's measurements for a trained model (`trained_model`'s dict), its training and test manifests,
    and a folder of videos to index with and without descriptions."""
    cache = workdir / "feature-cache"
    model = model_info["dir"]
    probe = probes(model, train, test, cache)
    section.tables.append(("Linear probes: do the decoder's inputs carry the attributes?", _probe_table(probe)))
    rows, data = _variants(model, train, test, cache)
    ours = data["eval"]
    cfg = json.loads((model / "train_config.json").read_text())
    section.notes = [
        f"Model: `vidsearch {' '.join(model_info['args'][:1] + ['TRAIN', '--out', 'DIR'] + model_info['args'][7:])}` "
        f"(every other option at its default: {cfg['epochs']} VideoBERT epochs, batch {cfg['batch_size']}, "
        f"{cfg['frames']} frames per clip, then the {cfg['captioner']} caption decoder for {cfg['caption_epochs']} "
        f"epochs on the frozen encoder) on `generate_split` data ({len(train.read_text().splitlines())} training "
        f"captions), {model_info['seconds'] / 60:.1f} min in all. The other decoders are trained on the same frozen "
        "encoder by `vidsearch train TRAIN --out COPY --caption-only` with `--no-caption-frames` or "
        f"`--captioner bart` ({data['train_seconds']['states_only'] / 60:.1f} and "
        f"{data['train_seconds']['bart'] / 60:.1f} min).",
        f"`vidsearch eval {test.name} --model DIR --captions --train {train.name} --references attrs --json "
        f"[--num-beams N] [--likeliest]`: the {ours['clips']} test clips hold (shape, colour, motion) combinations "
        "never seen in training; each clip's references are every training-phrasing rendering of its attrs "
        f"({ours['references_per_clip']:.1f} on average). Attribute accuracy reads the description back against "
        "the clip's attrs: the share of clips whose description names exactly the right shapes, colours, motion "
        "(with its direction) and background (only some training templates name the background). Baselines "
        "from the same run: the training caption of the nearest training clip in the model's embedding space, "
        "and the most frequent training caption. With more than one beam, the description is the beam whose "
        "text embedding is closest to the clip's, unless `--likeliest` keeps the beam search's own first. "
        "captions/s: describing the test clips from cached frame features, in batches of 64, on CPU.",
    ]
    section.table_notes["Linear probes: do the decoder's inputs carry the attributes?"] = (
        "Logistic regression (standardised inputs, C=0.1) fitted on the training clips and scored on the test "
        "clips (unseen combinations); shape and colour on one-object clips only. Each clip is read as the mean "
        "over its frames plus the last-minus-first change of the raw frame features, or of VideoBERT's "
        "video-side hidden states (the frame positions of `[CLS] frames [SEP]`). In brackets: the share of the "
        "training set's most common label among the test clips.")
    section.tables.append(("Descriptions of unseen combinations", _scores_table(rows)))
    examples = Table(["generated description", "one reference"])
    for ex in ours["examples"]:
        examples.add(ex["description"], ex["reference"])
    section.tables.append(("Examples", examples))
    plain = index_seconds(videos, model, workdir / "store-captioning-plain", describe=False)
    described = index_seconds(videos, model, workdir / "store-captioning-described", describe=True)
    timing = Table(["indexing", "seconds", "vs without descriptions"])
    timing.add("without descriptions (`--no-describe`)", fmt(plain, 1), "1.00x")
    timing.add("with descriptions (default)", fmt(described, 1), ratio(described, plain))
    section.tables.append(("Indexing time", timing))
    count = len([p for p in videos.iterdir() if p.is_file()])
    section.table_notes["Indexing time"] = (
        f"`vidsearch index {videos.name}/ --store NEW --model DIR` over {count} test videos, once with "
        "`--no-describe` and once without; each into a fresh store, decode and frame encoding included.")
    section.findings = _findings(ours["model"], ours["baselines"]["nearest_neighbour"], described / plain,
                                 ours["captions_per_s"])
    section.data = {**data, "probe": probe, "index_seconds": {"plain": plain, "described": described}}
    return section
