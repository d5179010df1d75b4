"""Training throughput on CPU: `vidsearch train` clips/s and tokens/s against a plain BERT training step."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .common import Section, Table, median, ratio
from .resources import missing, synth_split, vidsearch

FULL = {"captions": 96, "epochs": 3}
QUICK = {"captions": 32, "epochs": 2}


def subset_manifest(train: Path, out: Path, lines: int) -> Path:
    """The first `lines` captions of the training manifest, with video paths made absolute."""
    rows = []
    for line in train.read_text().splitlines()[:lines]:
        row = json.loads(line)
        row["video"] = str((train.parent / row["video"]).resolve())
        rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    return out


def train_run(manifest: Path, out: Path, cache: Path, epochs: int) -> list[dict]:
    """`vidsearch train` with default options except the epoch count; its per-epoch metrics rows."""
    shutil.rmtree(out, ignore_errors=True)
    vidsearch("train", str(manifest), "--out", str(out), "--cache-dir", str(cache), "--epochs", str(epochs),
              "--no-progress")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "epoch"]


def tokens_per_clip(model_dir: Path, manifest: Path) -> tuple[float, int]:
    """Mean joint sequence length: [CLS] caption [SEP] visual tokens [SEP]; also the visual token count."""
    from transformers import AutoTokenizer

    config = json.loads((model_dir / "train_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = [json.loads(line)["caption"] if "caption" in json.loads(line) else json.loads(line)["text"]
             for line in manifest.read_text().splitlines() if line.strip()]
    text_len = sum(len(tok(t)["input_ids"]) for t in texts) / len(texts)     # includes [CLS] and [SEP]
    frames = int(config["frames"])
    return text_len + frames + 1, frames


def bert_reference(seq_len: int, batch: int, steps: int) -> float:
    """Clips/s of one forward+backward+AdamW step of the plain MiniLM BERT on (batch, seq_len) token ids."""
    import torch
    from transformers import AutoModel

    from trainer.encoders import default_text_model_dir

    model = AutoModel.from_pretrained(default_text_model_dir()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (batch, seq_len))
    mask = torch.ones_like(ids)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:                      # the first step allocates optimizer state
            times.append(time.perf_counter() - start)
    return batch / median(times)


def run(quick: bool, workdir: str) -> Section:
    """Train briefly with default options on generated clips and report throughput; return the section."""
    section = Section("training", "Training")
    reason = missing("trainer.training", "trainer.synth")
    if reason:
        section.skipped = reason
        return section
    import torch

    plan = QUICK if quick else FULL
    split = synth_split(workdir, quick)
    manifest = subset_manifest(split["train"], Path(workdir) / "train-subset.jsonl", plan["captions"])
    out = Path(workdir) / "train-throughput"
    epochs = train_run(manifest, out, Path(workdir) / "feature-cache", plan["epochs"])
    clips_s = median(r["clips_per_s"] for r in epochs)
    seq_len, frames = tokens_per_clip(out, manifest)
    batch = json.loads((out / "train_config.json").read_text())["batch_size"]
    reference = bert_reference(round(seq_len), batch, steps=2 if quick else 4)
    table = Table(["run", "clips/s", "tokens/s", "vs plain BERT step"])
    table.add("`vidsearch train` (4 objectives), CPU", clips_s, clips_s * seq_len, ratio(clips_s, reference))
    table.add("plain MiniLM BERT fwd+bwd+AdamW (reference)", reference, reference * seq_len, "1.00x")
    section.notes = [
        f"`vidsearch train` with its default options (batch {batch}, {frames} frames per clip) on the first "
        f"{plan['captions']} captions of the generated training set, {plan['epochs']} epochs, frame features "
        "already cached, so the figure is the optimisation loop alone. clips/s is the median of the per-epoch "
        "figures the trainer writes to metrics.jsonl; tokens/s counts one joint sequence per clip "
        f"([CLS] caption [SEP] visual words [SEP], {seq_len:.1f} tokens on average). Reference, same run: one "
        f"forward + backward + AdamW step of the plain MiniLM encoder on {batch} sequences of that length "
        f"({torch.get_num_threads()} torch threads).",
        "GPU: none on this machine, so bf16 throughput and the share of a GPU's peak are not measured here.",
    ]
    section.tables.append(("", table))
    section.findings.append(
        f"Training ran at {clips_s:.1f} clips/s ({clips_s * seq_len:.0f} tokens/s) on CPU, "
        f"{clips_s / reference:.2f}x the clip rate of a single plain BERT training step over the same tokens "
        "(each VideoBERT step runs text-only, video-only and joint passes plus negatives).")
    section.data = {"clips_per_s": clips_s, "tokens_per_s": clips_s * seq_len, "reference_clips_per_s": reference,
                    "epochs": epochs, "seq_len": seq_len}
    return section
