"""Caption decoder training: by default a second stage on the frozen VideoBERT, after its own objectives.

With `TrainConfig.caption_weight` > 0 the decoder instead learns in VideoBERT's own steps (trainer.training), from
`joint_caption_loss`, whose gradient also reaches VideoBERT's trainable weights.

The encoder's video states are computed once (the encoder no longer changes), then the decoder (trainer.captioner)
learns to write each training caption from its clip's states (and, with `caption_frames`, its projected frame
features) with the token-level cross-entropy. It is saved in the model dir's `captioner/` folder with Hugging
Face conventions (config.json, model.safetensors, generation_config.json; the frame projection, when there is
one, in frame_memory.safetensors). Losses go to metrics.jsonl as `caption_loss` in rows of kind caption_step and
caption_epoch, numbered after VideoBERT's steps.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .captioner import (CAPTIONER_DIR, Captioner, caption_loss, caption_shortlist, decoder_config, frame_memory_spec,
                        new_captioner, new_frame_memory, use_shortlist)
from .card import colour_width, frame_cells
from .train_config import TrainConfig

FRAME_MEMORY_FILE = "frame_memory.safetensors"     # the frame projection, beside the language model's weights


def build_captioner(cfg: TrainConfig, video_config, tokenizer, text_dir: str, frames: torch.Tensor | None = None):
    """The decoder `cfg.captioner` names, as wide as VideoBERT; a `bert` one starts from the text model, and
    with `cfg.caption_frames` it also reads the clip's frame features. `frames`, the training clips' frame
    features (n, F), set what its frame memory erases from the cells' looks (`FrameMemory.fit_eraser`)."""
    from transformers import AutoModel

    text_cfg, state = None, None
    if cfg.captioner == "bert" and not cfg.random_init:
        text = AutoModel.from_pretrained(text_dir)
        text_cfg, state = text.config, text.state_dict()
    overrides = dict(cfg.caption_model)
    if cfg.caption_frames:
        cells = frame_cells(video_config.frame_encoder)
        overrides["frame_memory"] = frame_memory_spec(video_config.feature_dim, video_config.max_frames,
                                                      colour_width(video_config.frame_encoder), colour_cells=cells,
                                                      cell_looks=cells > 1)
    config = decoder_config(cfg.captioner, video_config, bos=tokenizer.cls_token_id, eos=tokenizer.sep_token_id,
                            pad=tokenizer.pad_token_id, text_config=text_cfg, **overrides)
    torch.manual_seed(cfg.seed)
    decoder = new_captioner(config, state)
    if decoder.frames is not None and frames is not None:
        decoder.frames.fit_eraser(frames)
    return decoder


@torch.no_grad()
def encode_states(model, feats: list[np.ndarray], visual_ids: list[np.ndarray], device,
                  batch: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """VideoBERT's video states of every clip, padded: (N, S, H) float32 and (N, S) bool, and the frame
    features they came from, (N, T, F) float32 and (N, T) bool, all on `device`."""
    was_training = model.training
    model.eval()
    states, masks, frames, frame_masks = [], [], [], []
    t = max(len(f) for f in feats)
    for s in range(0, len(feats), batch):
        part = range(s, min(s + batch, len(feats)))
        x = torch.zeros(len(part), t, feats[0].shape[1])
        ids = torch.zeros(len(part), t, dtype=torch.long)
        fmask = torch.zeros(len(part), t, dtype=torch.bool)
        for row, i in enumerate(part):
            n = len(feats[i])
            x[row, :n], ids[row, :n], fmask[row, :n] = torch.from_numpy(feats[i]), torch.from_numpy(visual_ids[i]), True
        h, m = model.videobert.video_states(ids.to(device), x.to(device), fmask.to(device))
        states.append(h.float())
        masks.append(m)
        frames.append(x.to(device))
        frame_masks.append(fmask.to(device))
    model.train(was_training)
    return torch.cat(states), torch.cat(masks), torch.cat(frames), torch.cat(frame_masks)


def joint_caption_loss(out, decoder: Captioner, batch: dict, caption_ids, caption_mask, drop: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The caption loss of a training batch of (caption, clip) pairs, read from the video states of VideoBERT's
    own pass over the batch (`out`, its pre-training output), so that its gradient reaches VideoBERT (joint
    training, `TrainConfig.caption_weight`); `drop`: `drop_memory`'s chance."""
    memory, memory_mask = decoder.memory(out.video_states, out.video_state_mask, batch["features"],
                                         batch["frame_mask"])
    memory_mask = drop_memory(decoder, memory_mask, batch["features"].shape[1], drop, generator)
    return caption_loss(decoder, memory, memory_mask, caption_ids, caption_mask)


def drop_memory(decoder: Captioner, mask: torch.Tensor, frames: int, p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """The memory mask of clips of `frames` frames with, for each clip at chance `p`, all but the colour slots
    hidden (`Captioner.colour_only`).

    Trained on a few hundred clips, a decoder learns to name a clip's colour from the look of the shape it was seen
    with, which the other slots carry; with them hidden, only the colour slots can answer. `mask` itself when `p`
    is 0 or the decoder has no colour slots (nothing is drawn from `generator` then)."""
    if p <= 0 or not decoder.colour_slots(frames):
        return mask
    hide = (torch.rand(mask.shape[0], generator=generator) < p).to(mask.device)
    return decoder.colour_only(mask, frames, hide)


def fit_captioner(model, tokenizer, texts: list[str], feats, visual_ids, cfg: TrainConfig, device, text_dir: str,
                  metrics: Path | None = None, first_step: int = 0):
    """Train a caption decoder on (caption, clip) pairs over the frozen `model`; returns the decoder."""
    from .training import make_scheduler

    states, smask, frames, fmask = encode_states(model, feats, visual_ids, device)
    decoder = build_captioner(cfg, model.config, tokenizer, text_dir, frames[fmask.bool()]).to(device)
    ids, mask = (t.to(device) for t in caption_tokens(tokenizer, texts))
    per_epoch = max(1, -(-len(texts) // cfg.batch_size))
    opt = torch.optim.AdamW([p for p in decoder.parameters() if p.requires_grad], lr=cfg.caption_lr,
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.98), eps=1e-6)
    sched = make_scheduler(opt, cfg.caption_epochs * per_epoch, cfg.warmup)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
    decoder.train()
    step = 0
    for epoch in range(cfg.caption_epochs):
        order = torch.randperm(len(texts), generator=gen).tolist()
        sums, count, start = 0.0, 0, time.perf_counter()
        for b in range(0, len(order), cfg.batch_size):
            idx = torch.tensor(order[b:b + cfg.batch_size], device=device)
            width = int(mask[idx].sum(1).max())                  # trim the batch's padding
            memory, memory_mask = decoder.memory(states[idx], smask[idx], frames[idx], fmask[idx])
            memory_mask = drop_memory(decoder, memory_mask, frames.shape[1], cfg.caption_memory_drop, gen)
            loss = caption_loss(decoder, memory, memory_mask, ids[idx, :width], mask[idx, :width])
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            sums, count = sums + float(loss.detach()), count + 1
            if metrics is not None and step % cfg.log_every == 0:
                _log(metrics, "step", epoch, first_step + step, sched, sums / count)
        if metrics is not None:
            _log(metrics, "epoch", epoch, first_step + step, sched, sums / max(count, 1),
                 clips_per_s=round(len(order) / max(time.perf_counter() - start, 1e-9), 2))
    note_shortlist(decoder, ids, mask)
    return decoder.eval()


def caption_tokens(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the captions a decoder trains on, as its second stage reads them."""
    tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    return tokens["input_ids"], tokens["attention_mask"]


def note_shortlist(decoder: Captioner, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Record in the decoder's config the tokens its training captions (`caption_tokens`) hold: a loaded decoder
    scores only those (trainer.captioner.ShortlistHead)."""
    decoder.lm.config.output_shortlist = caption_shortlist(ids, mask, decoder.config.eos_token_id)


def _log(path: Path, kind: str, epoch: int, step: int, sched, loss: float, **extra) -> None:
    row = {"kind": f"caption_{kind}", "stage": "captioner", "epoch": epoch + 1, "step": step,
           "lr": sched.get_last_lr()[0], "caption_loss": round(loss, 5), **extra}
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def save_captioner(decoder: Captioner | None, out_dir: Path) -> None:
    """Write the decoder to `out_dir/captioner/` (config.json, model.safetensors, generation_config.json, and
    frame_memory.safetensors for a frame projection), replacing any earlier one only once the new one is
    complete; None removes an earlier one."""
    from safetensors.torch import save_file

    target = Path(out_dir) / CAPTIONER_DIR
    if decoder is None:
        shutil.rmtree(target, ignore_errors=True)
        return
    scratch = Path(out_dir) / f".{CAPTIONER_DIR}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    decoder.lm.save_pretrained(scratch)
    if decoder.frames is not None:
        save_file({k: v.contiguous() for k, v in decoder.frames.state_dict().items()}, scratch / FRAME_MEMORY_FILE)
    old = Path(out_dir) / f".{CAPTIONER_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(scratch, target)
    shutil.rmtree(old, ignore_errors=True)


def load_captioner(model_dir, device) -> Captioner | None:
    """The decoder saved in a model dir, or None for a model trained without one."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = Path(model_dir) / CAPTIONER_DIR
    if not (path / "config.json").is_file():
        return None
    lm = AutoModelForCausalLM.from_pretrained(path)
    frames = new_frame_memory(lm.config)
    if frames is not None:
        weights = path / FRAME_MEMORY_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: the caption decoder's config names a frame memory but its "
                                    "weights are missing")
        frames.load_state_dict(load_file(weights))
    return use_shortlist(Captioner(lm, frames).to(device).eval())


def train_captioner(manifests, model_dir, captioner: str = "bert", epochs: int | None = None,
                    lr: float | None = None, device: str = "auto", cache_dir=None, workers: int = 2,
                    progress: bool = True, frames: bool | None = None, memory_drop: float | None = None):
    """Train (or replace) the caption decoder of an existing model dir on its frozen encoder; returns the dir.

    The sampling, frame count and encoder settings are the model's own (its train_config.json), so a model
    trained without a decoder, or before decoders existed, gains one without retraining VideoBERT.
    """
    import dataclasses

    from transformers import AutoTokenizer

    from .modeling import VideoBertForPreTraining
    from .training import TRAIN_CONFIG_FILE, METRICS, _text_model_dir, load_examples, plot_losses, setup_distributed
    from .vocab import VisualVocabulary

    model_dir = Path(model_dir)
    saved = json.loads((model_dir / TRAIN_CONFIG_FILE).read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    cfg = dataclasses.replace(cfg, captioner=captioner, caption_epochs=epochs or cfg.caption_epochs,
                              caption_frames=cfg.caption_frames if frames is None else frames,
                              caption_lr=lr or cfg.caption_lr, device=device, cache_dir=cache_dir or cfg.cache_dir,
                              caption_memory_drop=cfg.caption_memory_drop if memory_drop is None else memory_drop,
                              workers=workers, progress=progress, resume=False)
    cfg.check()
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    dist = setup_distributed(cfg.device)
    model = VideoBertForPreTraining.from_pretrained(model_dir).to(dist.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = VisualVocabulary.load(model_dir)
    from .encoders import load_frame_encoder

    texts, feats = load_examples([manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests),
                                 cfg, dist, load_frame_encoder(cfg.frame_encoder, dist.device))
    feats = [np.ascontiguousarray(f, dtype=np.float32) for f in feats]
    metrics = model_dir / METRICS
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    rows = [r for r in rows if r.get("stage") != "captioner"]            # a replaced decoder's losses go too
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    decoder = fit_captioner(model, tokenizer, texts, feats, [vocab.quantize(f) for f in feats], cfg, dist.device,
                            _text_model_dir(cfg), metrics, first_step=max([r.get("step", 0) for r in rows] or [0]))
    save_captioner(decoder, model_dir)
    (model_dir / TRAIN_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    plot_losses(metrics, model_dir / "loss.png")
    return model_dir
