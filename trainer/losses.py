"""The VideoBERT objectives as plain functions of tensors: token prediction, alignment, InfoNCE and captioning."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over masked positions: logits (B, L, V), labels (B, L) with -100 where not masked.

    Returns zero (still attached to the graph) when nothing was masked, so a batch never yields NaN.
    """
    flat = labels.reshape(-1)
    if not (flat != -100).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100)


def alignment_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the alignment classifier; positives are up-weighted to balance the negatives."""
    labels = labels.to(logits.dtype)
    pos = labels.sum()
    neg = labels.numel() - pos
    pos_weight = (neg / pos.clamp(min=1)).clamp(min=1.0)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pos_weight.float())


def info_nce(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor,
             extra_video: torch.Tensor | None = None, max_scale: float = 100.0) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised text (B, D) and video (B, D); pair i is the positive.

    `extra_video` (E, D) are additional negatives for the text->video direction only (e.g. time-reversed
    clips). The learnable temperature is exp(logit_scale), clamped as in CLIP for stability.
    """
    scale = logit_scale.exp().clamp(max=max_scale)
    candidates = video if extra_video is None else torch.cat([video, extra_video])
    t2v = scale * text.float() @ candidates.float().T                 # (B, B + E)
    v2t = scale * video.float() @ text.float().T                      # (B, B)
    target = torch.arange(text.shape[0], device=text.device)
    return 0.5 * (F.cross_entropy(t2v, target) + F.cross_entropy(v2t, target))


def caption_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a caption decoder: logits (B, L, V) at positions 0..L-1 predict ids 1..L.

    mask (B, L) marks real tokens; padding is never a target. The mean is over the batch's target tokens.
    """
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=-100)
