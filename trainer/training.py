"""VideoBERT training: manifests -> cached frame features -> visual words -> the four objectives -> a model dir,
then the caption decoder on the frozen encoder (trainer.caption_training).

`train(manifests, out_dir, TrainConfig(...))` is the whole application; `vidsearch train` is a thin wrapper.
It runs on one process or under `torchrun` (DDP, rank 0 writes), checkpoints atomically every epoch and
resumes exactly from the last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .caption_training import joint_caption_loss
from .card import FRAME_ENCODER_FILE, colour_width
from .concepts import caption_concepts
from .features import FeatureCache
from .lexicon import caption_vocabulary, save_vocabulary
from .modeling import MASKED_FRAME, VideoBertConfig, VideoBertForPreTraining
from .train_config import TrainConfig
from .vocab import VisualVocabulary, fit_vocabulary

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
TRAIN_CONFIG_FILE = "train_config.json"


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this process's device."""
    from .encoders import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return Dist(0, 1, dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


# ----------------------------------------------------------------------------- data


def resample_frames(feats: np.ndarray, frames: int) -> np.ndarray:
    """Uniformly subsample (T, F) features to at most `frames` rows, keeping time order."""
    if len(feats) <= frames:
        return feats
    idx = np.round(np.linspace(0, len(feats) - 1, frames)).astype(int)
    return feats[idx]


def load_examples(manifests, cfg: TrainConfig, dist: Dist, encoder=None) -> tuple[list[str], list[np.ndarray]]:
    """(captions, per-clip (T, F) features) for every manifest row whose video decodes.

    Rank 0 fills the feature cache; other ranks wait, then read it.
    """
    from .captions import read_manifest

    captions = [c for m in manifests for c in read_manifest(m)]
    if not captions:
        raise ValueError(f"no captions in {', '.join(map(str, manifests))}")
    cache = FeatureCache(cfg.cache_dir, cfg.frame_encoder, cfg.sampling())
    paths = [c.video for c in captions]
    if dist.main:
        videos = cache.load_all(paths, encoder, cfg.workers, progress=cfg.progress)
    dist.barrier()
    if not dist.main:
        videos = cache.load_all(paths)
    texts, feats = [], []
    for c in captions:
        if c.video in videos:
            texts.append(c.text)
            feats.append(resample_frames(videos[c.video].window(c.start, c.end), cfg.frames))
    if not texts:
        raise ValueError("none of the manifest videos could be decoded")
    return texts, feats


class Batcher:
    """Turns example indices into padded tensors, with seeded masking for the two token objectives."""

    def __init__(self, tokenizer, texts, feats, visual_ids, mask_prob: float, max_text: int = 64,
                 word_dropout: float = 0.0, captions: bool = False):
        self.tok = tokenizer
        self.texts, self.feats, self.visual_ids = texts, feats, visual_ids
        self.mask_prob = mask_prob
        self.max_text = max_text
        self.word_dropout = word_dropout
        self.captions = captions          # also the whole captions, as a caption decoder's targets

    def _caption(self, i: int, gen: torch.Generator | None) -> str:
        """Caption i, with each word dropped at rate `word_dropout` when training (at least one word kept)."""
        text = self.texts[i]
        if gen is None or not self.word_dropout:
            return text
        words = text.split()
        if len(words) < 2:
            return text
        keep = torch.rand(len(words), generator=gen) >= self.word_dropout
        if not keep.any():
            keep[torch.randint(len(words), (1,), generator=gen)] = True
        return " ".join(w for w, k in zip(words, keep.tolist()) if k)

    def __call__(self, idx, gen: torch.Generator | None = None) -> dict:
        tokens = self.tok([self._caption(i, gen) for i in idx], padding=True, truncation=True,
                          max_length=self.max_text, return_tensors="pt")
        lengths = [len(self.feats[i]) for i in idx]
        t, fdim = max(lengths), self.feats[idx[0]].shape[1]
        feats = torch.zeros(len(idx), t, fdim)
        vis = torch.zeros(len(idx), t, dtype=torch.long)
        fmask = torch.zeros(len(idx), t, dtype=torch.bool)
        for row, i in enumerate(idx):
            n = lengths[row]
            feats[row, :n] = torch.from_numpy(self.feats[i])
            vis[row, :n] = torch.from_numpy(self.visual_ids[i])
            fmask[row, :n] = True
        batch = {"text_ids": tokens["input_ids"], "text_mask": tokens["attention_mask"],
                 "visual_ids": vis, "features": feats, "frame_mask": fmask}
        if gen is not None and self.mask_prob > 0:
            batch.update(self._mask_text(batch["text_ids"], batch["text_mask"], gen))
            batch.update(self._mask_frames(vis, fmask, gen))
        if self.captions:       # a decoder learns to write sentences: no words dropped
            whole = self.tok([self.texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_text,
                             return_tensors="pt")
            batch.update(caption_ids=whole["input_ids"], caption_mask=whole["attention_mask"])
        return batch

    def _mask_text(self, ids, mask, gen) -> dict:
        """BERT masking: 15% of caption tokens, of which 80% [MASK], 10% random, 10% kept; >= 1 per caption."""
        special = torch.isin(ids, torch.tensor(self.tok.all_special_ids)) | (mask == 0)
        pick = _choose(~special, self.mask_prob, gen)
        labels = torch.where(pick, ids, torch.full_like(ids, -100))
        roll = torch.rand(ids.shape, generator=gen)
        rand_ids = torch.randint(len(self.tok), ids.shape, generator=gen)
        masked = torch.where(pick & (roll < 0.8), torch.full_like(ids, self.tok.mask_token_id), ids)
        masked = torch.where(pick & (roll >= 0.8) & (roll < 0.9), rand_ids, masked)
        return {"mlm_text_ids": masked, "mlm_labels": labels}

    def _mask_frames(self, vis, fmask, gen) -> dict:
        pick = _choose(fmask, self.mask_prob, gen)
        return {"mvp_visual_ids": torch.where(pick, torch.full_like(vis, MASKED_FRAME), vis),
                "mvp_labels": torch.where(pick, vis, torch.full_like(vis, -100))}


def _choose(allowed: torch.Tensor, prob: float, gen) -> torch.Tensor:
    """Random subset of `allowed` (B, L) positions with rate `prob`, at least one per row that has any."""
    scores = torch.rand(allowed.shape, generator=gen).masked_fill(~allowed, 2.0)
    pick = (scores < prob) & allowed
    first = scores.argmin(1, keepdim=True)           # the lowest score is always an allowed position
    forced = torch.zeros_like(pick).scatter_(1, first, True) & allowed
    return pick | forced


def epoch_batches(n: int, batch: int, epoch: int, dist: Dist, seed: int) -> list[list[int]]:
    """This rank's shuffled index batches for one epoch (same order on every run with the same seed)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()                                # a batch of one has no in-batch negatives
    return batches


# ----------------------------------------------------------------------------- model and optimizer


def build_model(cfg: TrainConfig, tokenizer, visual_words: int, feature_dim: int) -> VideoBertForPreTraining:
    """A VideoBERT whose encoder starts from `cfg.text_model` (or at random), with frozen layers frozen."""
    from transformers import AutoConfig, AutoModel

    from .modeling import _BERT_KEYS

    text_dir = _text_model_dir(cfg)
    base = {}
    if not cfg.random_init:
        bert_cfg = AutoConfig.from_pretrained(text_dir)
        base = {k: getattr(bert_cfg, k) for k in _BERT_KEYS if hasattr(bert_cfg, k)}
    base.update(fusion_layers=cfg.fusion_layers, align_prior=True)
    base.update(cfg.model)
    base.update(vocab_size=len(tokenizer), cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id,
                visual_vocab_size=visual_words, feature_dim=feature_dim, max_frames=cfg.frames,
                sampling=dataclasses.asdict(cfg.sampling()), frame_encoder=cfg.frame_encoder,
                colour_dim=colour_width(cfg.frame_encoder))
    if cfg.random_init:
        base["trainable_layers"] = base.get("num_hidden_layers", VideoBertConfig().num_hidden_layers)
    torch.manual_seed(cfg.seed)
    model = VideoBertForPreTraining(VideoBertConfig(**base))
    if not cfg.random_init:
        source = AutoModel.from_pretrained(text_dir)
        result = model.videobert.bert.load_state_dict(source.state_dict(), strict=False)
        if result.missing_keys:
            raise ValueError(f"text model {text_dir} lacks encoder weights: {result.missing_keys[:5]}")
    freeze_encoder(model)
    return model


def _text_model_dir(cfg: TrainConfig) -> str:
    from .encoders import default_text_model_dir

    return cfg.text_model or default_text_model_dir()


def freeze_encoder(model: VideoBertForPreTraining) -> None:
    """Freeze the pretrained encoder except its top `trainable_layers` layers.

    With every layer frozen the text-only path is exactly the pretrained sentence encoder, which is what
    keeps queries in words never seen in training (synonyms, new sentence shapes) meaningful.
    """
    bert, n = model.videobert.bert, model.config.trainable_layers
    layers = bert.encoder.layer
    keep_all = n >= len(layers)
    for p in bert.embeddings.parameters():
        p.requires_grad_(keep_all)
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            p.requires_grad_(i >= len(layers) - n)


def make_optimizer(model: VideoBertForPreTraining, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; pretrained encoder weights get `encoder_lr`, new ones `lr`; no decay on biases, norms, tables."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pretrained = name.startswith("videobert.bert.") and not cfg.random_init
        no_decay = p.dim() < 2 or "embeddings" in name or name.endswith("logit_scale")
        key = (pretrained, no_decay)
        groups.setdefault(key, []).append(p)
    params = [{"params": ps, "lr": cfg.encoder_lr if pre else cfg.lr, "weight_decay": 0.0 if nd else cfg.weight_decay}
              for (pre, nd), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, betas=(0.9, 0.98), eps=1e-6)


def make_scheduler(opt, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup for `warmup` of the steps, then cosine decay to zero."""
    warm = max(1, round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ----------------------------------------------------------------------------- files


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_model(model: VideoBertForPreTraining, tokenizer, vocab: VisualVocabulary, cfg: TrainConfig,
                 out_dir: Path) -> None:
    """Write the loadable model dir: config.json, model.safetensors, tokenizer, visual words, encoder spec.

    Files are written to a scratch folder first and moved into place one by one, so a reader never sees a
    half-written weights file.
    """
    scratch = out_dir / ".export"
    scratch.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    vocab.save(scratch)
    spec = {"spec": model.config.frame_encoder, "dim": model.config.feature_dim}
    (scratch / FRAME_ENCODER_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    (scratch / TRAIN_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    for item in scratch.iterdir():
        os.replace(item, out_dir / item.name)
    scratch.rmdir()


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Loss curves (total and each objective) against optimizer step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") in ("step", "caption_step")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "nce_loss", "align_loss", "mlm_loss", "mvp_loss", "caption_loss"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), label=key, linewidth=2 if key == "loss" else 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("VideoBERT training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- loop


@dataclass
class _State:
    model: VideoBertForPreTraining
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0
    step: int = 0
    decoder: torch.nn.Module | None = None    # a caption decoder trained jointly with VideoBERT

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters()) + ([] if self.decoder is None else list(self.decoder.parameters()))


def _autocast(device: torch.device):
    import contextlib

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Meter:
    """Running means of the loss terms between two metric lines."""

    KEYS = ("loss", "nce_loss", "align_loss", "mlm_loss", "mvp_loss", "caption_loss")

    def __init__(self):
        self.sums, self.count, self.clips, self.start = {}, 0, 0, time.perf_counter()

    def add(self, out, clips: int, **extra) -> None:
        for key in self.KEYS:
            value = extra.get(key, getattr(out, key, None))
            if value is not None:
                self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.count += 1
        self.clips += clips

    def means(self) -> dict:
        secs = max(time.perf_counter() - self.start, 1e-9)
        row = {k: round(v / max(self.count, 1), 5) for k, v in self.sums.items()}
        row["clips_per_s"] = round(self.clips / secs, 2)
        return row


def _run_epoch(state: _State, net, batcher: Batcher, cfg: TrainConfig, dist: Dist, metrics: Path | None) -> dict:
    """One pass over this rank's batches; returns the epoch's mean losses."""
    import contextlib

    from tqdm import tqdm

    state.model.train()
    if state.decoder is not None:
        state.decoder.train()
    torch.manual_seed(cfg.seed * 100_003 + state.epoch * 1009 + dist.rank)     # dropout, per epoch
    gen = torch.Generator().manual_seed(cfg.seed * 100_019 + state.epoch * 1013 + dist.rank)   # masking
    hide = torch.Generator().manual_seed(cfg.seed * 100_043 + state.epoch * 1031 + dist.rank)  # decoder memory
    batches = epoch_batches(len(batcher.texts), cfg.batch_size, state.epoch, dist, cfg.seed)
    window, total = _Meter(), _Meter()
    bar = tqdm(batches, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="batch",
               disable=not (cfg.progress and dist.main))
    for i, idx in enumerate(bar):
        batch = {k: v.to(dist.device) for k, v in batcher(idx, gen).items()}
        caption = {k: batch.pop(k) for k in ("caption_ids", "caption_mask") if k in batch}
        sync = (i + 1) % cfg.grad_accum == 0 or i == len(batches) - 1
        no_sync = net.no_sync() if (dist.world > 1 and not sync) else contextlib.nullcontext()
        extra = {}
        with no_sync, _autocast(dist.device):
            out = net(**batch, return_loss=True)
            loss = out.loss
            if state.decoder is not None:
                extra["caption_loss"] = joint_caption_loss(out, state.decoder, batch, **caption,
                                                           drop=cfg.caption_memory_drop, generator=hide)
                loss = loss + cfg.caption_weight * extra["caption_loss"]
            (loss / cfg.grad_accum).backward()
        window.add(out, len(idx) * dist.world, **extra)
        total.add(out, len(idx) * dist.world, **extra)
        if sync:
            _optimizer_step(state, cfg)
            if state.step % cfg.log_every == 0 and metrics is not None:
                _write_metrics(metrics, state, window.means())
                window = _Meter()
        bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}", clips_s=f"{total.means()['clips_per_s']:.1f}")
    return total.means()


def _optimizer_step(state: _State, cfg: TrainConfig) -> None:
    params = [p for p in state.trained_parameters() if p.requires_grad]
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    state.opt.step()
    state.sched.step()
    state.opt.zero_grad(set_to_none=True)
    state.step += 1


def _write_metrics(path: Path, state: _State, row: dict, kind: str = "step") -> None:
    scale = float(state.model.videobert.logit_scale.detach().exp())
    row = {"kind": kind, "epoch": state.epoch + 1, "step": state.step,
           "lr": state.sched.get_last_lr()[0], "temperature": round(1.0 / scale, 5), **row}
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _start(cfg: TrainConfig, out_dir: Path, model, steps_per_epoch: int, dist: Dist, decoder=None) -> _State:
    """Fresh optimizer state, or the last checkpoint's when resuming. A jointly trained `decoder` learns at
    `caption_lr` under the same schedule."""
    opt = make_optimizer(model, cfg)
    if decoder is not None:
        opt.add_param_group({"params": [p for p in decoder.parameters() if p.requires_grad], "lr": cfg.caption_lr,
                             "weight_decay": cfg.weight_decay})
    sched = make_scheduler(opt, cfg.epochs * steps_per_epoch, cfg.warmup)
    state = _State(model, opt, sched, decoder=decoder)
    ckpt_path = out_dir / CHECKPOINT
    if cfg.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dist.device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        if decoder is not None:
            if "decoder" not in ckpt:
                raise ValueError(f"{ckpt_path} was written without a jointly trained caption decoder; resume with "
                                 "the run's own caption_weight (0)")
            decoder.load_state_dict(ckpt["decoder"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state.epoch, state.step = ckpt["epoch"], ckpt["step"]
        if dist.main:
            _trim_metrics(out_dir / METRICS, state.step)
            log.info("resuming %s at epoch %d (step %d)", out_dir, state.epoch, state.step)
    elif dist.main:
        (out_dir / METRICS).unlink(missing_ok=True)
    return state


def _visual_vocabulary(feats, cfg: TrainConfig, out_dir: Path, dist: Dist) -> VisualVocabulary:
    """Fit the visual words on rank 0 (or reuse them when resuming); every rank then reads the same file."""
    from .vocab import VOCAB_FILE

    reuse = cfg.resume and (out_dir / CHECKPOINT).exists() and (out_dir / VOCAB_FILE).exists()
    if dist.main and not reuse:
        width = feats[0].shape[1] - colour_width(cfg.frame_encoder)  # visual words of the network's features
        vocab = fit_vocabulary(np.concatenate([f[:, :width] for f in feats]), cfg.branching, cfg.depth,
                               seed=cfg.seed)
        vocab.save(out_dir)
    dist.barrier()
    return VisualVocabulary.load(out_dir)


def fit(texts: list[str], feats: list[np.ndarray], out_dir, cfg: TrainConfig, dist: Dist | None = None,
        concepts=None) -> Path:
    """Train on captions and their clips' (T, F) frame features; writes the model dir and returns its path.

    concepts: the caption words' ImageNet concept profiles (trainer.concepts), saved beside the model if given.
    """
    cfg.check()
    dist = dist or setup_distributed(cfg.device)
    with _threads(cfg, dist):
        return _fit(texts, feats, Path(out_dir), cfg, dist, concepts)


def _fit(texts, feats, out_dir: Path, cfg: TrainConfig, dist: Dist, concepts) -> Path:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not cfg.progress:
        hf_logging.disable_progress_bar()       # no per-file bars when saving and loading weights either
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.main:
        # The words the model learned, and what the frame encoder saw behind them, for rewriting queries that
        # use other words (trainer.lexicon).
        save_vocabulary(caption_vocabulary(texts), out_dir)
        if concepts is not None:
            concepts.save(out_dir)
    feats = [np.ascontiguousarray(resample_frames(f, cfg.frames), dtype=np.float32) for f in feats]
    vocab = _visual_vocabulary(feats, cfg, out_dir, dist)
    visual_ids = [vocab.quantize(f) for f in feats]
    tokenizer = AutoTokenizer.from_pretrained(_text_model_dir(cfg))
    model = build_model(cfg, tokenizer, vocab.size, feats[0].shape[1]).to(dist.device)
    decoder = _joint_decoder(cfg, model, tokenizer, dist, feats)
    batcher = Batcher(tokenizer, texts, feats, visual_ids, cfg.mask_prob, word_dropout=cfg.word_dropout,
                      captions=decoder is not None)
    n_batches = len(epoch_batches(len(texts), cfg.batch_size, 0, dist, cfg.seed))
    state = _start(cfg, out_dir, model, math.ceil(n_batches / cfg.grad_accum), dist, decoder)
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True,
                                      device_ids=[dist.device] if dist.device.type == "cuda" else None)
    metrics = out_dir / METRICS if dist.main else None
    while state.epoch < cfg.epochs:
        means = _run_epoch(state, net, batcher, cfg, dist, metrics)
        if dist.main:
            _write_metrics(metrics, state, means, kind="epoch")
        state.epoch += 1
        if dist.main:
            _save_epoch(state, tokenizer, vocab, cfg, out_dir)
        dist.barrier()
        if cfg.stop_after_epoch is not None and state.epoch >= cfg.stop_after_epoch:
            break
    if state.epoch >= cfg.epochs:
        _caption_stage(state, tokenizer, (texts, feats, visual_ids), cfg, dist, out_dir)
    return out_dir


def _joint_decoder(cfg: TrainConfig, model, tokenizer, dist: Dist, feats: list[np.ndarray]):
    """The caption decoder to train with VideoBERT's objectives (`caption_weight` > 0), else None; `feats`, the
    training clips' frame features, set what its frame memory erases."""
    if not (cfg.captioner and cfg.caption_weight > 0):
        return None
    if dist.world > 1:
        raise ValueError("TrainConfig.caption_weight > 0 (joint caption training) runs in one process; "
                         "leave it at 0 to train the decoder after VideoBERT")
    from .caption_training import build_captioner

    frames = torch.from_numpy(np.concatenate(feats))
    return build_captioner(cfg, model.config, tokenizer, _text_model_dir(cfg), frames).to(dist.device)


def _caption_stage(state: _State, tokenizer, data, cfg: TrainConfig, dist: Dist, out_dir: Path) -> None:
    """Train the caption decoder on the finished, frozen encoder (rank 0; it is small) and save it beside
    the model, or remove an earlier run's decoder when this run trains none. A decoder trained jointly
    is saved as it is."""
    from .caption_training import caption_tokens, fit_captioner, note_shortlist, save_captioner

    if dist.main:
        decoder = state.decoder.eval() if state.decoder is not None else None
        if decoder is not None:
            note_shortlist(decoder, *caption_tokens(tokenizer, data[0]))
        elif cfg.captioner:
            texts, feats, visual_ids = data
            decoder = fit_captioner(state.model, tokenizer, texts, feats, visual_ids, cfg, dist.device,
                                    _text_model_dir(cfg), out_dir / METRICS, first_step=state.step)
        save_captioner(decoder, out_dir)
        plot_losses(out_dir / METRICS, out_dir / "loss.png")
    dist.barrier()


def _save_epoch(state: _State, tokenizer, vocab, cfg: TrainConfig, out_dir: Path) -> None:
    ckpt = {"model": state.model.state_dict(), "optimizer": state.opt.state_dict(),
            "scheduler": state.sched.state_dict(), "epoch": state.epoch, "step": state.step,
            "train_config": dataclasses.asdict(cfg)}
    if state.decoder is not None:
        ckpt["decoder"] = state.decoder.state_dict()
    _atomic_save(ckpt, out_dir / CHECKPOINT)
    export_model(state.model, tokenizer, vocab, cfg, out_dir)
    plot_losses(out_dir / METRICS, out_dir / "loss.png")


def train(manifests, out_dir, config: TrainConfig | None = None,
          examples: tuple[list[str], list[np.ndarray]] | None = None) -> Path:
    """Train VideoBERT on captioned videos listed in JSONL manifests; returns the model dir.

    Frame features are cached (see trainer.features), so a second run does not decode again. `examples`
    adds clip-text pairs given as (texts, (T, F) frame features made by `config.frame_encoder` at
    `config.sampling()`), such as the captions a store holds; with them, `manifests` may be empty.
    """
    cfg = config or TrainConfig()
    cfg.check()
    manifests = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests)
    if not manifests and not (examples and examples[0]):
        raise ValueError("nothing to train on: no manifests and no examples")
    dist = setup_distributed(cfg.device)
    with _threads(cfg, dist):
        encoder = None
        if dist.main:
            from .encoders import load_frame_encoder

            encoder = load_frame_encoder(cfg.frame_encoder, dist.device)
        texts, feats = load_examples(manifests, cfg, dist, encoder) if manifests else ([], [])
        if examples:
            texts, feats = texts + list(examples[0]), feats + list(examples[1])
        concepts = caption_concepts(encoder, texts, feats) if dist.main else None
        del encoder
        return fit(texts, feats, out_dir, cfg, dist, concepts)


class _threads:
    """Set torch's CPU threads for one run and restore them after, so a caller's process is left as it was.

    The default splits the cores between the processes of a DDP run instead of oversubscribing them.
    """

    def __init__(self, cfg: TrainConfig, dist: Dist):
        self.want = cfg.threads
        if not self.want and dist.world > 1 and dist.device.type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
            self.want = max(1, (os.cpu_count() or 1) // local)

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.want:
            torch.set_num_threads(int(self.want))

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
